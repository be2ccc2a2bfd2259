"""Drawing valid frames: one piece of code for hypothesis and for a seeded RNG.

Every drawing function takes a :class:`Source`: :class:`RandomSource` wraps a
:class:`random.Random` (fast and seeded: ``pxfuzz``, the differential tests),
and :class:`pxproto.testing.strategies.DrawSource` wraps a hypothesis ``draw``
(shrinkable: the property tests).  Field widths come from the layout tables
(:mod:`pxproto.wire.layout`), code tables from :mod:`pxproto.wire.codes`; only
the protocol's value rules (a period above 0, ``cpu_permille`` up to 1000,
fragment bounds) are written here, because a valid frame must keep them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from pxproto.errors import ProtocolError
from pxproto.wire import codes, layout, spec
from pxproto.wire.codec import encode
from pxproto.wire.frame import Auth, Body, Data, DimeInfo, Discovery, Frame, Heartbeat, Signaling, Tlv, body_length
from pxproto.wire.frame import Sealed as Sealed

T = TypeVar("T")
FIELDS: dict[str, layout.FieldInfo] = {
    f.key: f for _prefix, (_struct, infos) in layout.struct_tables().items() for f in infos
}
"""Every fixed field of the spec by its ``px.*`` key: offset (inside its struct), size, kind, code table."""
MAX_BODY = 9000  # a jumbo frame's payload
MAX_PAYLOAD = 1500
MAC_SIZE = FIELDS["px.eth.src"].size
TAG_SIZE = FIELDS["px.auth.tag"].size


def bits(key: str) -> int:
    """The width in bits of the field ``key`` (``px.hb.epoch``)."""
    return 8 * FIELDS[key].size


class Source(Protocol):
    """Where the choices come from: a seeded RNG or a hypothesis ``draw``."""

    def uint(self, nbits: int) -> int: ...
    def between(self, lo: int, hi: int) -> int: ...
    def pick(self, options: Sequence[T]) -> T: ...
    def blob(self, lo: int, hi: int) -> bytes: ...
    def chance(self, p: float) -> bool: ...
    def text(self, max_bytes: int) -> str: ...


class RandomSource:
    """A :class:`Source` over :class:`random.Random`: same seed, same frames."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def uint(self, nbits: int) -> int:
        return self.rng.getrandbits(nbits) if nbits else 0

    def between(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def pick(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def blob(self, lo: int, hi: int) -> bytes:
        n = lo if lo == hi else self.rng.choice((lo, min(lo + 8, hi), min(64, hi), self.rng.randint(lo, hi)))
        return self.rng.randbytes(max(n, lo))

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def text(self, max_bytes: int) -> str:
        s = "".join(self.rng.choice("abcdefghij-_é中") for _ in range(self.rng.randrange(24)))
        return s if len(s.encode()) <= max_bytes else ""


def uint(src: Source, key: str) -> int:
    """Any value of field ``key``'s width."""
    return src.uint(bits(key))


def mac(src: Source, macs: Sequence[bytes] | None = None) -> bytes:
    return src.pick(macs) if macs else src.blob(MAC_SIZE, MAC_SIZE)


def tlv_value(src: Source, t: codes.TlvType) -> int | str | bytes:
    kind = codes.TLV_KINDS[t]
    if t in codes.TLV_ENUMS:
        return int(src.pick(list(codes.TLV_ENUMS[t])))
    if kind in (codes.TlvKind.U8, codes.TlvKind.U16, codes.TlvKind.U32, codes.TlvKind.U64):
        return src.uint(8 * codes.FIXED_TLV_SIZES[kind])
    if kind is codes.TlvKind.TEXT:
        return src.text(codes.TEXT_MAX)
    if kind in codes.FIXED_TLV_SIZES:
        n = codes.FIXED_TLV_SIZES[kind]
        return src.blob(n, n)
    if kind is codes.TlvKind.ACL:
        entries = [
            mac(src) + bytes([src.uint(len(codes.Fcaps))]) + bytes(codes.ACL_ENTRY_SIZE - MAC_SIZE - 1)
            for _ in range(src.between(0, 5))
        ]
        return b"".join(entries)
    return src.blob(0, 48)


def tlvs(src: Source, max_count: int = 6) -> tuple[Tlv, ...]:
    """Up to ``max_count`` TLVs of distinct types; now and then one of a type the codec does not know."""
    types: list[int] = []
    known = list(codes.TlvType)
    for _ in range(src.between(0, max_count)):
        t = src.pick(known) if src.chance(0.9) else src.between(200, (1 << bits("px.tlv.type")) - 1)
        if t not in types:
            types.append(t)
    out = []
    for t in types:
        if t in codes.TlvType._value2member_map_:
            out.append(Tlv(codes.TlvType(t), tlv_value(src, codes.TlvType(t))))
        else:
            out.append(Tlv(t, src.blob(0, 32)))  # an unknown type: kept as bytes
    return tuple(out)


def signaling(src: Source) -> Signaling:
    op = src.pick(list(codes.Op))
    status = codes.Status.OK if op is codes.Op.REQUEST else src.pick(list(codes.Status))
    return Signaling(src.pick(list(codes.Command)), op, uint(src, "px.req_id"), status, tlvs(src))


def data(src: Source, max_payload: int = MAX_PAYLOAD) -> Data:
    flags = codes.DataFlag(src.between(0, int(codes.DataFlag.ACK | codes.DataFlag.FIN)))
    ack, credit = (uint(src, "px.data.ack"), uint(src, "px.data.credit")) if flags & codes.DataFlag.ACK else (0, 0)
    if flags & codes.DataFlag.ACK and src.chance(0.3):  # acknowledgement only
        return Data(uint(src, "px.data.channel"), uint(src, "px.data.msg_id"), b"", 0, 0, 0, 0, ack, credit, flags)
    payload = src.blob(1, max_payload)
    count = src.pick((1, 1, 2, src.between(1, (1 << bits("px.data.frag_count")) - 1)))
    index = src.between(0, count - 1)
    top = (1 << bits("px.data.msg_len")) - 1
    offset = 0 if index == 0 else src.between(0, top - len(payload))
    end = offset + len(payload)
    msg_len = end if index == count - 1 else src.between(end, top)
    return Data(
        uint(src, "px.data.channel"), uint(src, "px.data.msg_id"), payload, msg_len, offset, index, count, ack,
        credit, flags,
    )  # fmt: skip


def dime_info(src: Source) -> DimeInfo:
    total = uint(src, "px.disc.dime.mem_total")
    return DimeInfo(
        src.between(0, codes.DIME_ALL - 1), uint(src, "px.disc.dime.core"), src.pick(list(codes.DimeState)), total,
        src.between(0, total), uint(src, "px.disc.dime.epoch"),
    )  # fmt: skip


def discovery(src: Source) -> Discovery:
    op = src.pick(list(codes.DiscoveryOp))
    dimes = () if op is codes.DiscoveryOp.PROBE else tuple(dime_info(src) for _ in range(src.between(0, 8)))
    probe_id = 0 if op is codes.DiscoveryOp.GRATUITOUS else uint(src, "px.disc.probe_id")
    state_filter = src.pick([codes.STATE_ANY, *[int(s) for s in codes.DimeState]])
    return Discovery(op, probe_id, uint(src, "px.disc.sw_version"), uint(src, "px.disc.caps"), state_filter, dimes)


def heartbeat(src: Source) -> Heartbeat:
    fields: dict[str, Any] = {f.name: uint(src, f.key) for f in layout.fields(spec.HeartbeatBody)}
    fields["state"] = src.pick(list(codes.DimeState))
    fields["period_ms"] = src.between(1, (1 << bits("px.hb.period_ms")) - 1)
    fields["cpu_permille"] = src.between(0, 1000)
    return Heartbeat(**fields)


BODIES: dict[codes.FrameClass, Callable[[Source], Body]] = {
    codes.FrameClass.SIGNALING: signaling,
    codes.FrameClass.DATA: data,
    codes.FrameClass.DISCOVERY: discovery,
    codes.FrameClass.HEARTBEAT: heartbeat,
}


def auth(src: Source) -> Auth:
    return Auth(
        src.between(1, (1 << bits("px.auth.key_id")) - 1),
        src.between(1, (1 << bits("px.auth.counter")) - 1),
        src.blob(TAG_SIZE, TAG_SIZE),
    )


def frame(
    src: Source,
    cls: codes.FrameClass | None = None,
    macs: Sequence[bytes] | None = None,
    auth_share: float = 0.25,
    sealed_share: float = 0.0,
) -> Frame:
    """A valid frame of ``cls`` (any class when None); with ``sealed_share``, an encrypted one (ENCRYPTED:
    the body a blob as long as a clear body, always with a trailer) that often."""
    cls = cls or src.pick(list(codes.FrameClass))
    body: Body = BODIES[cls](src)
    sealed = sealed_share > 0 and src.chance(sealed_share)
    if sealed:
        n = body_length(body)
        body = Sealed(cls, src.blob(n, n))
    if cls is codes.FrameClass.DATA:
        scope = codes.Scope.DIME
    elif cls is codes.FrameClass.SIGNALING:
        scope = src.pick(list(codes.Scope))
    else:
        scope = codes.Scope.SYSTEM
    dst = src.between(0, codes.DIME_ALL - 1) if scope is codes.Scope.DIME else codes.DIME_ALL
    src_dime = src.between(0, codes.DIME_ALL - 1) if cls is codes.FrameClass.HEARTBEAT else uint(src, "px.dime.src")
    trailer = auth(src) if sealed or src.chance(auth_share) else None
    f = Frame(
        body, scope, src_dime, uint(src, "px.thread.src"), dst, uint(src, "px.thread.dst"), uint(src, "px.seq"),
        mac(src, macs), mac(src, macs), trailer,
    )  # fmt: skip
    size = spec.BODY_OFFSET + body_length(body) + (spec.AUTH_LEN if trailer else 0)
    if size < spec.MIN_ETHERNET_FRAME and src.chance(0.5):
        f.padding = spec.MIN_ETHERNET_FRAME - size
    return f


def random_frame(
    rng: random.Random, cls: codes.FrameClass | None = None, macs: Sequence[bytes] | None = None, auth: float = 0.25
) -> Frame:
    """A valid frame of ``cls`` (any class when None) from a seeded RNG."""
    return frame(RandomSource(rng), cls, macs, auth)


def valid_pool(rng: random.Random, n: int, macs: Sequence[bytes] | None = None) -> list[bytes]:
    """``n`` encoded valid frames, every class equally often."""
    out: list[bytes] = []
    classes = list(codes.FrameClass)
    while len(out) < n:
        try:
            out.append(encode(random_frame(rng, classes[len(out) % len(classes)], macs)))
        except ProtocolError:  # a drawn combination the protocol forbids: draw again
            continue
    return out


# ----------------------------------------------------------------- variants


def _same_tlv(src: Source, p: Tlv) -> Tlv:
    if p.type not in codes.TlvType._value2member_map_:
        return Tlv(p.type, src.blob(len(p.value), len(p.value)))  # type: ignore[arg-type]
    t = codes.TlvType(p.type)
    kind = codes.TLV_KINDS[t]
    if kind in (codes.TlvKind.TEXT, codes.TlvKind.ACL):
        return p  # their length is part of the shape; the value stays valid
    if kind is codes.TlvKind.BYTES:
        assert isinstance(p.value, bytes)
        return Tlv(t, src.blob(len(p.value), len(p.value)))
    return Tlv(t, tlv_value(src, t))


def _same_body(src: Source, b: Body) -> Body:
    if isinstance(b, Signaling):
        status = codes.Status.OK if b.op is codes.Op.REQUEST else src.pick(list(codes.Status))
        params = tuple(_same_tlv(src, p) for p in b.params)
        return Signaling(src.pick(list(codes.Command)), b.op, uint(src, "px.req_id"), status, params)
    if isinstance(b, Data):
        ack, credit = (
            (uint(src, "px.data.ack"), uint(src, "px.data.credit")) if b.flags & codes.DataFlag.ACK else (0, 0)
        )
        n = len(b.payload)
        return Data(
            uint(src, "px.data.channel"), uint(src, "px.data.msg_id"), src.blob(n, n), b.msg_len, b.frag_offset,
            b.frag_index, b.frag_count, ack, credit, b.flags,
        )  # fmt: skip
    if isinstance(b, Sealed):
        n = len(b.ciphertext)
        return Sealed(b.cls, src.blob(n, n))
    if isinstance(b, Discovery):
        probe = 0 if b.op is codes.DiscoveryOp.GRATUITOUS else uint(src, "px.disc.probe_id")
        dimes = tuple(dime_info(src) for _ in b.dimes)
        return Discovery(b.op, probe, uint(src, "px.disc.sw_version"), uint(src, "px.disc.caps"), b.state_filter, dimes)
    return heartbeat(src)


def variant(rng: random.Random, f: Frame) -> Frame:
    """A frame of the same shape (class, scope, lengths, trailer) as ``f`` with every free field re-drawn:
    many distinct valid frames for the cost of one draw."""
    src = RandomSource(rng)
    dst = src.between(0, codes.DIME_ALL - 1) if f.scope is codes.Scope.DIME else codes.DIME_ALL
    src_dime = src.between(0, codes.DIME_ALL - 1) if isinstance(f.body, Heartbeat) else uint(src, "px.dime.src")
    return Frame(
        _same_body(src, f.body), f.scope, src_dime, uint(src, "px.thread.src"), dst, uint(src, "px.thread.dst"),
        uint(src, "px.seq"), mac(src), mac(src), auth(src) if f.auth is not None else None, f.version, f.padding,
    )  # fmt: skip
