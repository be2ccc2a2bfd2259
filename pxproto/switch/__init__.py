"""pxswitch: a userspace L2 switch that understands Parallax frames.

The forwarding logic is :class:`~pxproto.switch.core.Switch`, a sans-I/O
class (frames and ``now`` in; per-port output queues, counters and the next
timer out).  :mod:`pxproto.switch.ports` holds the thin port drivers and
:mod:`pxproto.switch.daemon` the event loop that joins them.
"""

from pxproto.switch.core import Switch, SwitchPolicy
from pxproto.switch.peek import Peek, peek

__all__ = ["Peek", "Switch", "SwitchPolicy", "peek"]
