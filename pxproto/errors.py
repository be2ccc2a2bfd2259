"""The one exception a peer's bad bytes can raise."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A frame (or file) broke the Parallax protocol.

    ``field`` names the offending field in the ``px.*`` vocabulary of
    :meth:`pxproto.wire.Frame.to_dict` (without the ``px.`` prefix) and
    ``offset`` is the byte offset of that field from the start of the
    Ethernet frame.
    """

    def __init__(self, field: str, offset: int, reason: str) -> None:
        super().__init__(f"{field} at byte {offset}: {reason}")
        self.field = field
        self.offset = offset
        self.reason = reason

    def __reduce__(self) -> tuple[type[ProtocolError], tuple[str, int, str]]:
        return (type(self), (self.field, self.offset, self.reason))
