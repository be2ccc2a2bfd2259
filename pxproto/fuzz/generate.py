"""Fast, seeded hostile-frame generation: valid frames, then mutators over their bytes.

Hypothesis's ``.example()`` is far too slow for a million frames, so this
module draws valid frames with a plain :class:`random.Random` from the same
code tables the strategies in :mod:`pxproto.testing` use (every frame goes
through the reference encoder, which refuses anything the decoder would
reject), keeps a pool of them, and mutates their bytes.  The field tables of
:mod:`pxproto.wire.layout` say where each field sits, so "valid but for one
field" hits real fields, not random offsets.

Every :class:`Case` carries the name of the mutator that made it; the same
seed gives the same frames, in the same order, on every run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from pxproto.errors import ProtocolError
from pxproto.wire import ethertypes, layout, spec
from pxproto.wire.codec import encode
from pxproto.wire.codes import (
    ACL_ENTRY_SIZE,
    DIME_ALL,
    FIXED_TLV_SIZES,
    STATE_ANY,
    TLV_ENUMS,
    TLV_KINDS,
    Command,
    DataFlag,
    DimeState,
    DiscoveryOp,
    Fcaps,
    FrameClass,
    HeaderFlag,
    Op,
    Scope,
    Status,
    TlvKind,
    TlvType,
)
from pxproto.wire.frame import Auth, Body, Data, DimeInfo, Discovery, Frame, Heartbeat, Signaling, Tlv, body_length

KINDS = ("valid", "field", "truncate", "extend", "flip", "ethertype", "scope", "splice", "random")
"""Every mutator, by name; ``valid`` sends a pool frame unchanged but for its sequence number."""
HOSTILE_KINDS = KINDS[1:]

ETH = spec.ETH_LEN
BODY = spec.BODY_OFFSET
_HEADER_FIELDS = [(f, ETH + f.offset) for f in layout.fields(spec.Header)]
_BODY_FIELDS = {
    FrameClass.SIGNALING: layout.fields(spec.SignalingFixed),
    FrameClass.DATA: layout.fields(spec.DataFixed),
    FrameClass.DISCOVERY: layout.fields(spec.DiscoveryFixed),
    FrameClass.HEARTBEAT: layout.fields(spec.HeartbeatBody),
}
_AUTH_FIELDS = layout.fields(spec.AuthTrailer)
_SEQ_OFF = next(off for f, off in _HEADER_FIELDS if f.name == "seq")
_LEN_OFF = next(off for f, off in _HEADER_FIELDS if f.name == "length")
_FLAGS_OFF = next(off for f, off in _HEADER_FIELDS if f.name == "flags")
_DST_DIME_OFF = next(off for f, off in _HEADER_FIELDS if f.name == "dst_dime")
RULED_FIELDS = frozenset(
    {"version", "length", "src_dime", "dst_dime", "tlv_count", "state_filter", "count", "probe_id", "msg_len",
     "frag_offset", "frag_index", "frag_count", "ack", "credit", "period_ms", "cpu_permille", "key_id", "counter"}
)  # fmt: skip
"""Fields the decoder has a rule for beyond their width; "valid but one field" aims at them most."""
_UINT_BYTES = {TlvKind.U8: 1, TlvKind.U16: 2, TlvKind.U32: 4, TlvKind.U64: 8}


@dataclass(frozen=True, slots=True)
class Case:
    """One generated frame: its bytes and the mutator that made it."""

    raw: bytes
    kind: str


# ----------------------------------------------------------------- valid frames


def _mac(rng: random.Random, macs: Sequence[bytes] | None) -> bytes:
    if macs:
        return rng.choice(macs)
    return rng.randbytes(6)


def _tlv_value(rng: random.Random, t: TlvType) -> int | str | bytes:
    kind = TLV_KINDS[t]
    if t in TLV_ENUMS:
        return int(rng.choice(list(TLV_ENUMS[t])))
    if kind in _UINT_BYTES:
        return rng.getrandbits(8 * _UINT_BYTES[kind])
    if kind is TlvKind.TEXT:
        return "".join(rng.choice("abcdefghij-_é中") for _ in range(rng.randrange(24)))
    if kind in FIXED_TLV_SIZES:
        return rng.randbytes(FIXED_TLV_SIZES[kind])
    if kind is TlvKind.ACL:
        n = rng.randrange(5)
        return b"".join(rng.randbytes(6) + bytes([rng.randrange(1 << len(Fcaps)), 0]) for _ in range(n))
    return rng.randbytes(rng.randrange(48))


def random_signaling(rng: random.Random) -> Signaling:
    op = rng.choice(list(Op))
    status = Status.OK if op is Op.REQUEST else rng.choice(list(Status))
    types: list[int] = rng.sample(list(TlvType), rng.randrange(6))
    if rng.random() < 0.1:
        types.append(rng.randrange(200, 0x10000))  # an unknown type: kept as bytes
    params = []
    for t in types:
        if t in TlvType._value2member_map_:
            params.append(Tlv(TlvType(t), _tlv_value(rng, TlvType(t))))
        else:
            params.append(Tlv(t, rng.randbytes(rng.randrange(32))))
    return Signaling(rng.choice(list(Command)), op, rng.getrandbits(32), status, tuple(params))


def random_data(rng: random.Random, max_payload: int = 1400) -> Data:
    flags = DataFlag(rng.randrange(4))
    ack, credit = (rng.getrandbits(32), rng.getrandbits(16)) if flags & DataFlag.ACK else (0, 0)
    if flags & DataFlag.ACK and rng.random() < 0.3:
        return Data(rng.getrandbits(16), rng.getrandbits(32), b"", 0, 0, 0, 0, ack, credit, flags)
    payload = rng.randbytes(rng.choice((1, 8, 64, rng.randrange(1, max_payload + 1))))
    count = rng.choice((1, 1, 2, rng.randrange(1, 0x10000)))
    index = rng.randrange(count)
    offset = 0 if index == 0 else rng.randrange(0, 2**32 - len(payload))
    end = offset + len(payload)
    msg_len = end if index == count - 1 else rng.randrange(end, 2**32)
    return Data(rng.getrandbits(16), rng.getrandbits(32), payload, msg_len, offset, index, count, ack, credit, flags)


def random_discovery(rng: random.Random) -> Discovery:
    op = rng.choice(list(DiscoveryOp))
    dimes: list[DimeInfo] = []
    if op is not DiscoveryOp.PROBE:
        for _ in range(rng.randrange(9)):
            total = rng.getrandbits(32)
            dimes.append(
                DimeInfo(
                    rng.randrange(DIME_ALL),
                    rng.getrandbits(16),
                    rng.choice(list(DimeState)),
                    total,
                    rng.randint(0, total),
                    rng.getrandbits(32),
                )
            )
    probe_id = 0 if op is DiscoveryOp.GRATUITOUS else rng.getrandbits(32)
    state_filter = rng.choice([STATE_ANY, *[int(s) for s in DimeState]])
    return Discovery(op, probe_id, rng.getrandbits(32), rng.getrandbits(32), state_filter, tuple(dimes))


def random_heartbeat(rng: random.Random) -> Heartbeat:
    g = rng.getrandbits
    return Heartbeat(
        g(32), rng.choice(list(DimeState)), rng.randint(1, 0xFFFF), rng.randint(0, 1000), g(16), g(32), g(32), g(32),
        g(32), g(32),
    )  # fmt: skip


_BODY_MAKERS: dict[FrameClass, Callable[[random.Random], Body]] = {
    FrameClass.SIGNALING: random_signaling,
    FrameClass.DATA: random_data,
    FrameClass.DISCOVERY: random_discovery,
    FrameClass.HEARTBEAT: random_heartbeat,
}


def random_frame(
    rng: random.Random, cls: FrameClass | None = None, macs: Sequence[bytes] | None = None, auth: float = 0.25
) -> Frame:
    """A valid frame of ``cls`` (any class when None), drawn like :func:`pxproto.testing.frames`."""
    cls = cls or rng.choice(list(FrameClass))
    body: Body = _BODY_MAKERS[cls](rng)
    if cls is FrameClass.DATA:
        scope = Scope.DIME
    elif cls is FrameClass.SIGNALING:
        scope = rng.choice(list(Scope))
    else:
        scope = Scope.SYSTEM
    dst = rng.randrange(DIME_ALL) if scope is Scope.DIME else DIME_ALL
    src = rng.randrange(DIME_ALL) if cls is FrameClass.HEARTBEAT else rng.getrandbits(16)
    trailer = None
    if rng.random() < auth:
        trailer = Auth(rng.randint(1, 0xFFFF), rng.randint(1, 2**64 - 1), rng.randbytes(16))
    frame = Frame(
        body, scope, src, rng.getrandbits(16), dst, rng.getrandbits(16), rng.getrandbits(64),
        _mac(rng, macs), _mac(rng, macs), trailer,
    )  # fmt: skip
    size = BODY + body_length(body) + (spec.AUTH_LEN if trailer else 0)
    if size < spec.MIN_ETHERNET_FRAME and rng.random() < 0.5:
        frame.padding = spec.MIN_ETHERNET_FRAME - size
    return frame


def valid_pool(rng: random.Random, n: int, macs: Sequence[bytes] | None = None) -> list[bytes]:
    """``n`` encoded valid frames, every class equally often."""
    out: list[bytes] = []
    classes = list(FrameClass)
    while len(out) < n:
        try:
            out.append(encode(random_frame(rng, classes[len(out) % len(classes)], macs)))
        except ProtocolError:  # a drawn combination the protocol forbids: draw again
            continue
    return out


# ----------------------------------------------------------------- mutators


def _frame_class(raw: bytes) -> FrameClass | None:
    if len(raw) < ETH:
        return None
    return ethertypes.current().classify(int.from_bytes(raw[12:14], "big"))


def _boundary(rng: random.Random, size: int) -> int:
    top = (1 << (8 * size)) - 1
    return rng.choice((0, 1, top, top - 1, top >> 1, (top >> 1) + 1, rng.getrandbits(8 * size)))


def mutate_field(rng: random.Random, raw: bytes) -> bytes:
    """One fixed field (header, class body or trailer) set to a boundary or random value."""
    cls = _frame_class(raw)
    spots = list(_HEADER_FIELDS)
    if cls is not None:
        spots += [(f, BODY + f.offset) for f in _BODY_FIELDS[cls]]
    if len(raw) > BODY and raw[_FLAGS_OFF] & HeaderFlag.AUTH:
        body_end = BODY + int.from_bytes(raw[_LEN_OFF : _LEN_OFF + 2], "big")
        spots += [(f, body_end + f.offset) for f in _AUTH_FIELDS]
    spots = [(f, off) for f, off in spots if off + f.size <= len(raw)]
    if not spots:
        return mutate_flip(rng, raw)
    ruled = [(f, off) for f, off in spots if f.kind in ("enum", "flags") or f.name in RULED_FIELDS]
    f, off = rng.choice(ruled if ruled and rng.random() < 0.8 else spots)
    if f.kind == "enum" and f.values and rng.random() < 0.5:
        unused = [v for v in range(1 << (8 * f.size)) if v not in f.values] if f.size == 1 else [max(f.values) + 1]
        value = rng.choice(unused)
    elif f.kind == "bytes":
        return raw[:off] + rng.randbytes(f.size) + raw[off + f.size :]
    else:
        value = _boundary(rng, f.size)
    return raw[:off] + value.to_bytes(f.size, "big") + raw[off + f.size :]


def mutate_truncate(rng: random.Random, raw: bytes) -> bytes:
    """Cut the frame: at a structural boundary or anywhere."""
    n = len(raw)
    marks = [0, ETH - 1, ETH, BODY - 1, BODY, n - 1, n - spec.AUTH_LEN, n - spec.TAG_LEN, rng.randrange(max(n, 1))]
    cut = rng.choice([m for m in marks if 0 <= m < n] or [0])
    return raw[:cut]


def mutate_extend(rng: random.Random, raw: bytes) -> bytes:
    """Bytes after the frame's end: zeros (almost padding), or random."""
    extra = rng.randint(1, 64)
    return raw + (bytes(extra) if rng.random() < 0.3 else rng.randbytes(extra))


def mutate_flip(rng: random.Random, raw: bytes) -> bytes:
    """One to four bit flips: in the headers and fixed body half the time, else anywhere (payloads are long)."""
    if not raw:
        return bytes([1 << rng.randrange(8)])
    b = bytearray(raw)
    span = min(len(b), BODY + 28) if rng.random() < 0.5 else len(b)
    for _ in range(rng.randint(1, 4)):
        b[rng.randrange(span)] ^= 1 << rng.randrange(8)
    return bytes(b)


def mutate_ethertype(rng: random.Random, raw: bytes) -> bytes:
    """Move the frame to another class's EtherType, or to a non-Parallax one."""
    if len(raw) < ETH:
        return mutate_extend(rng, raw)
    current = int.from_bytes(raw[12:14], "big")
    values = [v for v in ethertypes.current().as_dict().values() if v != current]
    et = rng.choice([*values, *values, 0x0800, 0x88B5, rng.randrange(0x600, 0x10000)])
    return raw[:12] + et.to_bytes(2, "big") + raw[14:]


def mutate_scope(rng: random.Random, raw: bytes) -> bytes:
    """Break the scope rules: flip the SCOPE_DIME flag, or give the destination DIME id the other scope's value."""
    if len(raw) < BODY:
        return mutate_truncate(rng, raw)
    b = bytearray(raw)
    how = rng.randrange(3)
    if how == 0:
        b[_FLAGS_OFF] ^= HeaderFlag.SCOPE_DIME
    elif how == 1:
        dst = int.from_bytes(b[_DST_DIME_OFF : _DST_DIME_OFF + 2], "big")
        new = rng.randrange(DIME_ALL) if dst == DIME_ALL else DIME_ALL
        b[_DST_DIME_OFF : _DST_DIME_OFF + 2] = new.to_bytes(2, "big")
    else:
        b[_FLAGS_OFF] ^= HeaderFlag.AUTH  # claims (or drops) a trailer
    return bytes(b)


def mutate_splice(rng: random.Random, raw: bytes, other: bytes) -> bytes:
    """The head of one frame on the tail of another."""
    i = rng.randrange(len(raw) + 1)
    j = rng.randrange(len(other) + 1)
    return raw[:i] + other[j:]


def random_bytes(rng: random.Random, parallax: bool) -> bytes:
    """Random bytes, sometimes dressed with a Parallax EtherType and version 1 to reach past the first checks."""
    b = bytearray(rng.randbytes(rng.randrange(0, 160)))
    if parallax and len(b) >= ETH + 1:
        et = rng.choice(list(ethertypes.current().as_dict().values()))
        b[12:14] = et.to_bytes(2, "big")
        b[14] = 1
        if len(b) > ETH + 1:
            b[15] = rng.randrange(4)
    return bytes(b)


# ----------------------------------------------------------------- the generator


class FrameGenerator:
    """A seeded, endless source of :class:`Case`; same seed, same frames.

    ``pool`` frames (from :func:`valid_pool`, or a capture) are the material;
    ``kinds`` and ``weights`` choose the mutators.  ``min_len`` > 0 keeps
    empty frames out (a stream wire cannot carry them); ``max_len`` bounds them.
    """

    def __init__(
        self,
        seed: int = 0,
        kinds: Iterable[str] = KINDS,
        weights: Sequence[float] | None = None,
        pool: Sequence[bytes] | None = None,
        pool_size: int = 256,
        macs: Sequence[bytes] | None = None,
        min_len: int = 0,
        max_len: int = 9000 + BODY + spec.AUTH_LEN + 64,
    ) -> None:
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"unknown mutator(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
        if weights is not None and len(weights) != len(self.kinds):
            raise ValueError(f"{len(weights)} weights for {len(self.kinds)} kinds")
        self.weights = list(weights) if weights is not None else None
        self.rng = random.Random(seed)
        self.pool = list(pool) if pool else valid_pool(self.rng, pool_size, macs)
        self.min_len = min_len
        self.max_len = max_len
        self.made = 0

    def _mutate(self, kind: str, raw: bytes) -> bytes:
        rng = self.rng
        if kind == "valid":
            if len(raw) >= _SEQ_OFF + 8:
                return raw[:_SEQ_OFF] + rng.getrandbits(64).to_bytes(8, "big") + raw[_SEQ_OFF + 8 :]
            return raw
        if kind == "field":
            return mutate_field(rng, raw)
        if kind == "truncate":
            return mutate_truncate(rng, raw)
        if kind == "extend":
            return mutate_extend(rng, raw)
        if kind == "flip":
            return mutate_flip(rng, raw)
        if kind == "ethertype":
            return mutate_ethertype(rng, raw)
        if kind == "scope":
            return mutate_scope(rng, raw)
        if kind == "splice":
            return mutate_splice(rng, raw, rng.choice(self.pool))
        return random_bytes(rng, rng.random() < 0.7)

    def next(self) -> Case:
        kind = self.rng.choices(self.kinds, self.weights)[0] if self.weights else self.rng.choice(self.kinds)
        raw = self._mutate(kind, self.rng.choice(self.pool))
        if len(raw) < self.min_len:
            raw = raw + bytes(self.min_len - len(raw))
        self.made += 1
        return Case(raw[: self.max_len], kind)

    def take(self, n: int) -> list[Case]:
        return [self.next() for _ in range(n)]

    def __iter__(self) -> Iterator[Case]:
        while True:
            yield self.next()


__all__ = [
    "ACL_ENTRY_SIZE",
    "HOSTILE_KINDS",
    "KINDS",
    "Case",
    "FrameGenerator",
    "mutate_ethertype",
    "mutate_extend",
    "mutate_field",
    "mutate_flip",
    "mutate_scope",
    "mutate_splice",
    "mutate_truncate",
    "random_bytes",
    "random_frame",
    "valid_pool",
]
