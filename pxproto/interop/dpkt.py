"""dpkt classes for Parallax frames, their headers built from the spec's field tables.

Every ``__hdr__`` comes from :mod:`pxproto.wire.layout`; dpkt's Ethernet type
table is changed only by :func:`register`::

    import dpkt
    from pxproto.interop import dpkt as pxd

    pxd.register()                                # the configured EtherTypes
    eth = dpkt.ethernet.Ethernet(raw)
    eth.data                                      # a PxSignalingFrame, PxDataFrame, ...
    eth.data.body.cmd, eth.data.body.tlvs, eth.data.auth
    pxd.to_dict(eth)                              # == pxproto.wire.decode(raw).to_dict()
    pxd.unregister()

A frame class (one per EtherType) is the common header; ``.body`` is the
class's body (:class:`PxSignaling` with ``.tlvs``, :class:`PxData` with
``.data`` the payload, :class:`PxDiscovery` with ``.dimes``,
:class:`PxHeartbeat`), ``.auth`` the trailer or None, ``.padding`` the bytes
after the frame.  dpkt decodes leniently; a frame too short for what its
header announces raises ``dpkt.NeedData`` (Ethernet then keeps the raw bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import dpkt
import dpkt.ethernet

from pxproto.dump.pxdict import BODY_PREFIX, Decoded
from pxproto.dump.pxdict import to_dict as _px_dict
from pxproto.wire import ethertypes, layout
from pxproto.wire.codes import FrameClass, HeaderFlag

_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _hdr(prefix: str) -> tuple[tuple[str, str, Any], ...]:
    """dpkt ``__hdr__`` of one layout table."""
    return tuple(
        (f.name, _FMT[f.size] if f.kind != "bytes" else f"{f.size}s", 0 if f.kind != "bytes" else bytes(f.size))
        for f in layout.struct_tables()[prefix][1]
    )


class _Px(dpkt.Packet):
    data: bytes
    """What follows the header (dpkt's name); each class narrows it to its own content."""
    _list: tuple[str, str, type[Any], Callable[[Any], int]] | None = None
    """Records that follow the header: (attribute, count field, record class, size of a record)."""

    def unpack(self, buf: bytes) -> None:
        dpkt.Packet.unpack(self, buf)
        if self._list is not None:
            name, count, cls, size = self._list
            records, self.data = _records(self.data, getattr(self, count), cls, size)
            setattr(self, name, records)


_P = TypeVar("_P", bound=_Px)


def _records(rest: bytes, count: int, cls: type[_P], size: Callable[[_P], int]) -> tuple[list[_P], bytes]:
    """``count`` records of ``cls`` off the front of ``rest`` (``size`` bytes each): them, and what follows."""
    out = []
    for _ in range(count):
        rec = cls(rest)
        out.append(rec)
        rest = rest[size(rec) :]
    return out, rest


class PxTlv(_Px):
    __hdr__ = _hdr("tlv")

    def unpack(self, buf: bytes) -> None:
        dpkt.Packet.unpack(self, buf)
        if len(self.data) < self.length:
            raise dpkt.NeedData(f"TLV value: {len(self.data)} of {self.length} bytes")
        self.value = self.data[: self.length]
        self.data = b""


class PxDimeRecord(_Px):
    __hdr__ = _hdr("disc.dime")


class PxSignaling(_Px):
    __hdr__ = _hdr("sig")
    tlvs: list[PxTlv]
    _list = ("tlvs", "tlv_count", PxTlv, lambda t: t.__hdr_len__ + t.length)


class PxData(_Px):
    """``.data`` is the payload."""

    __hdr__ = _hdr("data")


class PxDiscovery(_Px):
    __hdr__ = _hdr("disc")
    dimes: list[PxDimeRecord]
    _list = ("dimes", "count", PxDimeRecord, lambda r: r.__hdr_len__)


class PxHeartbeat(_Px):
    __hdr__ = _hdr("hb")


class PxAuth(_Px):
    __hdr__ = _hdr("auth")


BODIES: dict[FrameClass, type[dpkt.Packet]] = {
    FrameClass.SIGNALING: PxSignaling,
    FrameClass.DATA: PxData,
    FrameClass.DISCOVERY: PxDiscovery,
    FrameClass.HEARTBEAT: PxHeartbeat,
}


class PxFrame(_Px):
    """The common header; subclasses name the class (dpkt dispatches on the EtherType)."""

    __hdr__ = _hdr("")
    px_class: FrameClass

    def unpack(self, buf: bytes) -> None:
        dpkt.Packet.unpack(self, buf)
        rest = self.data
        if len(rest) < self.length:
            raise dpkt.NeedData(f"body: {len(rest)} of {self.length} bytes")
        self.body = BODIES[self.px_class](rest[: self.length])
        rest = rest[self.length :]
        self.auth: PxAuth | None = None
        if self.flags & HeaderFlag.AUTH:
            self.auth = PxAuth(rest)
            rest = rest[self.auth.__hdr_len__ :]
        self.padding = rest
        self.data = b""


class PxSignalingFrame(PxFrame):
    px_class = FrameClass.SIGNALING


class PxDataFrame(PxFrame):
    px_class = FrameClass.DATA


class PxDiscoveryFrame(PxFrame):
    px_class = FrameClass.DISCOVERY


class PxHeartbeatFrame(PxFrame):
    px_class = FrameClass.HEARTBEAT


FRAMES: dict[FrameClass, type[PxFrame]] = {
    c.px_class: c for c in (PxSignalingFrame, PxDataFrame, PxDiscoveryFrame, PxHeartbeatFrame)
}
_REGISTERED: dict[int, Any] = {}
"""EtherType -> what dpkt's table held before register()."""


def register() -> dict[int, FrameClass]:
    """Put the frame classes in dpkt's Ethernet type table for the configured EtherTypes
    (:mod:`pxproto.wire.ethertypes`); returns EtherType -> class. Call again after changing the map."""
    unregister()
    table = dpkt.ethernet.Ethernet._typesw
    out: dict[int, FrameClass] = {}
    for name, value in ethertypes.current().as_dict().items():
        cls = FrameClass[name.upper()]
        _REGISTERED[value] = table.get(value)
        table[value] = FRAMES[cls]
        out[value] = cls
    return out


def unregister() -> None:
    """Undo :func:`register`."""
    table = dpkt.ethernet.Ethernet._typesw
    for value, before in _REGISTERED.items():
        if before is None:
            table.pop(value, None)
        else:
            table[value] = before
    _REGISTERED.clear()


def _fields(pkt: dpkt.Packet, prefix: str) -> dict[str, Any]:
    return {f.name: getattr(pkt, f.name) for f in layout.struct_tables()[prefix][1]}


def to_dict(eth: dpkt.ethernet.Ethernet) -> dict[str, Any]:
    """The ``px.*`` dict of a decoded frame, as ``pxproto.wire.decode(bytes(eth)).to_dict()`` gives it."""
    frame = eth.data
    if not isinstance(frame, PxFrame):
        raise ValueError("not a Parallax frame under a registered EtherType")
    body = frame.body
    return _px_dict(
        Decoded(
            frame.px_class,
            {"dst": eth.dst, "src": eth.src},
            _fields(frame, ""),
            _fields(body, BODY_PREFIX[frame.px_class]),
            tlvs=[(t.type, t.value) for t in getattr(body, "tlvs", [])],
            dimes=[_fields(r, "disc.dime") for r in getattr(body, "dimes", [])],
            payload=body.data if isinstance(body, PxData) else b"",
            auth=None if frame.auth is None else _fields(frame.auth, "auth"),
            padding=len(frame.padding),
        )
    )
