"""Port drivers: each moves whole Ethernet frames between the switch core and one wire.

Every driver is non-blocking and has the same small interface
(:class:`Port`): ``fileno()`` to poll, ``recv_batch()`` for the frames that
are waiting, ``send_batch()`` that takes as many frames as the wire will
accept now, ``close()``.  A port that vanishes (interface deleted, peer
closed) raises :class:`PortGone` from any of them; the daemon reports it and
keeps the other ports forwarding.  Bad bytes from a peer are counted in
``errors`` and never raise.

The drivers live in three modules, re-exported here: :mod:`~pxproto.switch.portbase`
(the interface and what the drivers share), :mod:`~pxproto.switch.sockports`
(UDP, stream and VXLAN) and :mod:`~pxproto.switch.linkports` (TAP and AF_PACKET).
"""

from pxproto.switch.linkports import (
    DEFAULT_RING,
    AfPacketPort,
    TapPort,
    attach_filter,
    control_ethertypes,
    ethertype_filter,
    set_link_up,
)
from pxproto.switch.portbase import GONE_ERRNOS, MAX_FRAME, DatagramPort, Port, PortGone, claim_unix_path, port_error
from pxproto.switch.sockports import VXLAN_FLAG_I, VXLAN_HDR, VXLAN_PORT, StreamPort, UdpPort, VxlanPort

__all__ = [
    "DEFAULT_RING",
    "GONE_ERRNOS",
    "MAX_FRAME",
    "VXLAN_FLAG_I",
    "VXLAN_HDR",
    "VXLAN_PORT",
    "AfPacketPort",
    "DatagramPort",
    "Port",
    "PortGone",
    "StreamPort",
    "TapPort",
    "UdpPort",
    "VxlanPort",
    "attach_filter",
    "claim_unix_path",
    "control_ethertypes",
    "ethertype_filter",
    "port_error",
    "set_link_up",
]
