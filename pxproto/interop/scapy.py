"""Scapy layers for Parallax frames, built from the spec's field tables.

Every field (name, width, code table) comes from :mod:`pxproto.wire.layout`;
nothing is bound on import::

    from scapy.all import rdpcap
    from pxproto.interop import scapy as pxs

    pxs.bind()                        # Ether.type -> PxHeader for the configured EtherTypes
    pkts = rdpcap("captures/all.pcapng")
    pkts[0].show()
    pxs.to_dict(pkts[0])              # == pxproto.wire.decode(bytes(pkts[0])).to_dict()
    pxs.unbind()

A frame dissects as ``Ether / PxHeader / <body> [/ PxAuth] [/ Padding]``, the
body layer chosen by the EtherType's class: :class:`PxSignaling` (with a list
of :class:`PxTlv`), :class:`PxData`, :class:`PxDiscovery` (with a list of
:class:`PxDimeRecord`) or :class:`PxHeartbeat`.  Length and count fields left
as ``None`` are filled when a packet is built, so ``fuzz()`` and hand-made
packets build.  scapy decodes leniently: the reference codec
(:func:`pxproto.wire.decode`) says whether a frame is valid.
"""

from __future__ import annotations

from typing import Any

from scapy.fields import (
    ByteEnumField,
    ByteField,
    FieldLenField,
    FlagsField,
    IntEnumField,
    IntField,
    LongField,
    PacketListField,
    ShortEnumField,
    ShortField,
    StrFixedLenField,
    StrLenField,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Padding, Raw, bind_layers, split_layers

from pxproto.dump.pxdict import BODY_PREFIX, Decoded
from pxproto.dump.pxdict import to_dict as _px_dict
from pxproto.wire import ethertypes, layout
from pxproto.wire.codes import FrameClass, HeaderFlag

_UINT = {1: ByteField, 2: ShortField, 4: IntField, 8: LongField}
_ENUM = {1: ByteEnumField, 2: ShortEnumField, 4: IntEnumField}
_COUNTED = {("sig", "tlv_count"): "params", ("disc", "count"): "dimes", ("tlv", "length"): "value"}
"""Fields that count or measure another field of the same layer (filled on build when None)."""


def _fields(prefix: str) -> list[Any]:
    """Scapy fields of one layout table, in wire order."""
    out: list[Any] = []
    for f in layout.struct_tables()[prefix][1]:
        counted = _COUNTED.get((prefix, f.name))
        if counted == "value":
            out.append(FieldLenField(f.name, None, length_of=counted, fmt="!" + {1: "B", 2: "H", 4: "I"}[f.size]))
        elif counted is not None:
            out.append(FieldLenField(f.name, None, count_of=counted, fmt="!" + {1: "B", 2: "H", 4: "I"}[f.size]))
        elif f.kind == "enum":
            out.append(_ENUM[f.size](f.name, 0, dict(f.values)))
        elif f.kind == "flags":
            bits = [f.values.get(1 << b, f"bit{b}") for b in range(8 * f.size)]
            out.append(FlagsField(f.name, 0, 8 * f.size, bits))
        elif f.kind == "uint":
            default = None if (prefix, f.name) == ("", "length") else 0  # the header length: filled on build
            out.append(_UINT[f.size](f.name, default))  # type: ignore[arg-type]
        else:
            out.append(StrFixedLenField(f.name, b"\x00" * f.size, f.size))
    return out


def _trailer_class(pkt: Packet) -> type[Packet]:
    """After a body: the authentication trailer when the header's AUTH flag is set."""
    header = pkt.underlayer
    if isinstance(header, PxHeader) and int(header.flags) & HeaderFlag.AUTH:
        return PxAuth
    return Raw


class PxTlv(Packet):
    name = "Parallax TLV"
    fields_desc = [*_fields("tlv"), StrLenField("value", b"", length_from=lambda p: p.length)]  # noqa: RUF012

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class PxDimeRecord(Packet):
    name = "Parallax DIME record"
    fields_desc = _fields("disc.dime")

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class _Body(Packet):
    px_class: FrameClass

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return _trailer_class(self)


class PxSignaling(_Body):
    name = "Parallax signaling"
    px_class = FrameClass.SIGNALING
    fields_desc = [*_fields("sig"), PacketListField("params", [], PxTlv, count_from=lambda p: p.tlv_count)]  # noqa: RUF012


class PxData(_Body):
    name = "Parallax data"
    px_class = FrameClass.DATA
    fields_desc = [*_fields("data"), StrLenField("load", b"", length_from=lambda p: _data_payload_len(p))]  # noqa: RUF012


class PxDiscovery(_Body):
    name = "Parallax discovery"
    px_class = FrameClass.DISCOVERY
    fields_desc = [*_fields("disc"), PacketListField("dimes", [], PxDimeRecord, count_from=lambda p: p.count)]  # noqa: RUF012


class PxHeartbeat(_Body):
    name = "Parallax heartbeat"
    px_class = FrameClass.HEARTBEAT
    fields_desc = _fields("hb")


class PxAuth(Packet):
    name = "Parallax authentication trailer"
    fields_desc = _fields("auth")


_DATA_FIXED = sum(f.size for f in layout.struct_tables()["data"][1])
_AUTH_LEN = sum(f.size for f in layout.struct_tables()["auth"][1])
BODIES: dict[FrameClass, type[_Body]] = {b.px_class: b for b in (PxSignaling, PxData, PxDiscovery, PxHeartbeat)}


def _data_payload_len(p: Packet) -> int:
    header = p.underlayer
    if isinstance(header, PxHeader) and header.length is not None:
        return max(0, int(header.length) - _DATA_FIXED)
    return 0


class PxHeader(Packet):
    """The common header; its payload is the body of the class the EtherType names."""

    name = "Parallax"
    fields_desc = _fields("")

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        end = int(self.length or 0) + (_AUTH_LEN if int(self.flags) & HeaderFlag.AUTH else 0)
        return s[:end], s[end:]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        eth = self.underlayer
        cls = _BOUND.get(int(eth.type)) if isinstance(eth, Ether) else None
        return BODIES[cls] if cls is not None else Raw

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.length is None:
            body = len(pay) - (_AUTH_LEN if int(self.flags) & HeaderFlag.AUTH else 0)
            off = next(f.offset for f in layout.struct_tables()[""][1] if f.name == "length")
            pkt = pkt[:off] + max(0, body).to_bytes(2, "big") + pkt[off + 2 :]
        return pkt + pay


_BOUND: dict[int, FrameClass] = {}
"""EtherType -> class of the bindings in force (empty until bind())."""


def bind() -> dict[int, FrameClass]:
    """Bind PxHeader under Ether for the EtherTypes of the configured map
    (:mod:`pxproto.wire.ethertypes`); returns EtherType -> class. Call again after changing the map."""
    unbind()
    for name, value in ethertypes.current().as_dict().items():
        bind_layers(Ether, PxHeader, type=value)
        _BOUND[value] = FrameClass[name.upper()]
    return dict(_BOUND)


def unbind() -> None:
    """Undo :func:`bind`."""
    for value in list(_BOUND):
        split_layers(Ether, PxHeader, type=value)
    _BOUND.clear()


def frame(cls: FrameClass, **header: Any) -> Packet:
    """``Ether / PxHeader / <body of cls>`` with the class's EtherType, to fill in (or ``fuzz()``)."""
    return Ether(type=ethertypes.current().of(cls)) / PxHeader(**header) / BODIES[cls]()


def to_dict(pkt: Packet) -> dict[str, Any]:
    """The ``px.*`` dict of a dissected frame, as ``pxproto.wire.decode(bytes(pkt)).to_dict()`` gives it."""
    eth, header = pkt[Ether], pkt[PxHeader]
    body = header.payload
    if not isinstance(body, _Body):
        raise ValueError("not a Parallax frame under a bound EtherType")
    values = {f.name: body.getfieldval(f.name) for f in layout.struct_tables()[BODY_PREFIX[body.px_class]][1]}
    auth = pkt[PxAuth] if PxAuth in pkt else None
    return _px_dict(
        Decoded(
            body.px_class,
            {"dst": bytes.fromhex(eth.dst.replace(":", "")), "src": bytes.fromhex(eth.src.replace(":", ""))},
            {f.name: header.getfieldval(f.name) for f in layout.struct_tables()[""][1]},
            values,
            tlvs=[(int(t.type), bytes(t.value)) for t in getattr(body, "params", [])],
            dimes=[
                {f.name: r.getfieldval(f.name) for f in layout.struct_tables()["disc.dime"][1]}
                for r in getattr(body, "dimes", [])
            ],
            payload=bytes(getattr(body, "load", b"")),
            auth=None
            if auth is None
            else {f.name: auth.getfieldval(f.name) for f in layout.struct_tables()["auth"][1]},
            padding=len(pkt[Padding].load) if Padding in pkt else 0,
        )
    )
