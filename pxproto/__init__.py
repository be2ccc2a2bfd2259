"""pxproto: the Parallax DIME network protocol stack and packet toolkit."""

from pxproto.errors import ProtocolError

__all__ = ["ProtocolError", "__version__"]
__version__ = "0.1.0"
