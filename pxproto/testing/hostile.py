"""The one table of mutations: hostile bytes made from valid ones.

:data:`MUTATIONS` names every mutator with what it does; ``pxfuzz``, the
hypothesis strategy :func:`pxproto.testing.mutations`, the differential tests
and the fuzz targets all draw from it.  Nothing here is kept by hand:

- where each field sits, its width and its code table come from the layout
  tables (:mod:`pxproto.wire.layout`, read off :mod:`pxproto.wire.spec`);
- which fields the protocol has a rule for beyond their width (the ones
  "valid but for one field" aims at most) is asked of the reference decoder
  itself: :func:`ruled_fields` sets each field of a fixed set of valid frames
  to its boundary values and keeps those the decoder refuses.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pxproto.errors import ProtocolError
from pxproto.wire import ethertypes, layout, spec
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import DIME_ALL, PROTOCOL_VERSION, FrameClass, HeaderFlag
from pxproto.wire.layout import FieldInfo

Spot = tuple[FieldInfo, int]
"""A field and its byte offset from the start of the frame."""

ETH = spec.ETH_LEN
BODY = spec.BODY_OFFSET
ETH_SPOTS: list[Spot] = [(f, f.offset) for f in layout.fields(spec.Ethernet)]
HEADER_SPOTS: list[Spot] = [(f, ETH + f.offset) for f in layout.fields(spec.Header)]
BODY_FIELDS: dict[FrameClass, list[FieldInfo]] = {
    cls: layout.fields(spec.FIXED_BODIES[cls.name.lower()]) for cls in FrameClass
}
AUTH_FIELDS = layout.fields(spec.AuthTrailer)
FIXED_BODY_MAX = max(s.sizeof() for s in spec.FIXED_BODIES.values())
_AT = {f.key: (f, off) for f, off in ETH_SPOTS + HEADER_SPOTS}


def _slot(key: str) -> slice:
    f, off = _AT[key]
    return slice(off, off + f.size)


ETHERTYPE, VERSION, FLAGS, LENGTH, DST_DIME, SEQ = (
    _slot(key) for key in ("px.eth.type", "px.version", "px.flags", "px.len", "px.dime.dst", "px.seq")
)


def _put(raw: bytes, where: slice, value: int) -> bytes:
    return raw[: where.start] + value.to_bytes(where.stop - where.start, "big") + raw[where.stop :]


def frame_class(raw: bytes) -> FrameClass | None:
    if len(raw) < ETH:
        return None
    return ethertypes.current().classify(int.from_bytes(raw[ETHERTYPE], "big"))


def spots(raw: bytes) -> list[Spot]:
    """Every fixed field ``raw`` holds: the header, its class's fixed body, and the trailer when flagged."""
    out = list(HEADER_SPOTS)
    cls = frame_class(raw)
    if cls is not None:
        out += [(f, BODY + f.offset) for f in BODY_FIELDS[cls]]
    if len(raw) > BODY and raw[FLAGS.start] & HeaderFlag.AUTH:
        body_end = BODY + int.from_bytes(raw[LENGTH], "big")
        out += [(f, body_end + f.offset) for f in AUTH_FIELDS]
    return [(f, off) for f, off in out if off + f.size <= len(raw)]


def boundaries(f: FieldInfo) -> tuple[int, ...]:
    top = (1 << (8 * f.size)) - 1
    return (0, 1, top, top - 1, top >> 1, (top >> 1) + 1)


@functools.cache
def ruled_fields() -> frozenset[str]:
    """The ``px.*`` keys of the fixed fields the reference decoder has a rule for beyond their width.

    Found by asking the decoder, once per process: for valid frames drawn with a
    fixed seed (every class, with and without a trailer), each field is set in
    turn to each of its :func:`boundaries`; a field is ruled when one of them makes
    the decoder refuse the frame.  Enum and flags fields are ruled by their codes.
    """
    from pxproto.testing.draw import random_frame, valid_pool

    rng = random.Random(0)
    pool = valid_pool(rng, 32) + [encode(random_frame(rng, cls, auth=1.0)) for cls in FrameClass]
    ruled = set()
    for raw in pool:
        for f, off in spots(raw):
            if f.key in ruled:
                continue
            for value in boundaries(f):
                bad = raw[:off] + value.to_bytes(f.size, "big") + raw[off + f.size :]
                try:
                    decode(bad)
                except ProtocolError:
                    ruled.add(f.key)
                    break
    return frozenset(ruled)


# ----------------------------------------------------------------- mutators


def _boundary(rng: random.Random, f: FieldInfo) -> int:
    return rng.choice((*boundaries(f), rng.getrandbits(8 * f.size)))


def mutate_field(rng: random.Random, raw: bytes) -> bytes:
    """One fixed field (header, class body or trailer) set to a boundary, random or unknown-code value;
    fields with a rule are chosen four times in five."""
    here = spots(raw)
    if not here:
        return mutate_flip(rng, raw)
    ruled_keys = ruled_fields()
    ruled = [(f, off) for f, off in here if f.key in ruled_keys]
    f, off = rng.choice(ruled if ruled and rng.random() < 0.8 else here)
    if f.kind == "enum" and f.values and rng.random() < 0.5:
        unused = [v for v in range(1 << (8 * f.size)) if v not in f.values] if f.size == 1 else [max(f.values) + 1]
        value = rng.choice(unused)
    elif f.kind == "bytes":
        return raw[:off] + rng.randbytes(f.size) + raw[off + f.size :]
    else:
        value = _boundary(rng, f)
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
    span = min(len(b), BODY + FIXED_BODY_MAX) if rng.random() < 0.5 else len(b)
    for _ in range(rng.randint(1, 4)):
        b[rng.randrange(span)] ^= 1 << rng.randrange(8)
    return bytes(b)


def mutate_ethertype(rng: random.Random, raw: bytes) -> bytes:
    """Move the frame to another class's EtherType, or to a non-Parallax one."""
    if len(raw) < ETH:
        return mutate_extend(rng, raw)
    current = int.from_bytes(raw[ETHERTYPE], "big")
    values = [v for v in ethertypes.current().as_dict().values() if v != current]
    et = rng.choice([*values, *values, 0x0800, 0x88B5, rng.randrange(0x600, 0x10000)])
    return _put(raw, ETHERTYPE, et)


def mutate_scope(rng: random.Random, raw: bytes) -> bytes:
    """Break the scope rules: flip the SCOPE_DIME flag, give the destination DIME id the other scope's
    value, or flip the AUTH flag (claim or drop a trailer)."""
    if len(raw) < BODY:
        return mutate_truncate(rng, raw)
    flags = raw[FLAGS.start]
    how = rng.randrange(3)
    if how == 0:
        return _put(raw, FLAGS, flags ^ HeaderFlag.SCOPE_DIME)
    if how == 1:
        dst = int.from_bytes(raw[DST_DIME], "big")
        return _put(raw, DST_DIME, rng.randrange(DIME_ALL) if dst == DIME_ALL else DIME_ALL)
    return _put(raw, FLAGS, flags ^ HeaderFlag.AUTH)


def mutate_splice(rng: random.Random, raw: bytes, other: bytes) -> bytes:
    """The head of one frame on the tail of another."""
    i = rng.randrange(len(raw) + 1)
    j = rng.randrange(len(other) + 1)
    return raw[:i] + other[j:]


def random_bytes(rng: random.Random, parallax: bool) -> bytes:
    """Random bytes, sometimes dressed with a Parallax EtherType and version to reach past the first checks."""
    b = rng.randbytes(rng.randrange(0, 160))
    if parallax and len(b) >= VERSION.stop:
        b = _put(b, ETHERTYPE, rng.choice(list(ethertypes.current().as_dict().values())))
        b = _put(b, VERSION, PROTOCOL_VERSION)
        if len(b) >= FLAGS.stop:
            b = _put(b, FLAGS, rng.randrange(int(HeaderFlag.SCOPE_DIME | HeaderFlag.AUTH) + 1))
    return b


def new_seq(rng: random.Random, raw: bytes) -> bytes:
    """The frame unchanged but for a new sequence number: still valid."""
    return _put(raw, SEQ, rng.getrandbits(8 * (SEQ.stop - SEQ.start))) if len(raw) >= SEQ.stop else raw


# ----------------------------------------------------------------- the table


@dataclass(frozen=True)
class Mutation:
    """One mutator: ``apply(rng, raw, pool)``; ``pool`` gives splice its second frame."""

    name: str
    help: str
    apply: Callable[[random.Random, bytes, Sequence[bytes]], bytes]


MUTATIONS: dict[str, Mutation] = {
    m.name: m
    for m in (
        Mutation("valid", "a valid frame (new seq)", lambda r, raw, _p: new_seq(r, raw)),
        Mutation(
            "field",
            "valid but for one field (header, body or trailer) set to a boundary or unknown code",
            lambda r, raw, _p: mutate_field(r, raw),
        ),
        Mutation("truncate", "cut at a structural boundary or anywhere", lambda r, raw, _p: mutate_truncate(r, raw)),
        Mutation("extend", "bytes after the end (zeros or random)", lambda r, raw, _p: mutate_extend(r, raw)),
        Mutation("flip", "1-4 bit flips", lambda r, raw, _p: mutate_flip(r, raw)),
        Mutation(
            "ethertype", "another class's EtherType, or a non-Parallax one", lambda r, raw, _p: mutate_ethertype(r, raw)
        ),
        Mutation(
            "scope",
            "scope flag, destination DIME id or AUTH flag contradicting the class",
            lambda r, raw, _p: mutate_scope(r, raw),
        ),
        Mutation(
            "splice",
            "head of one frame, tail of another",
            lambda r, raw, pool: mutate_splice(r, raw, r.choice(pool) if pool else raw),
        ),
        Mutation(
            "random",
            "random bytes (often dressed with a Parallax EtherType)",
            lambda r, _raw, _p: random_bytes(r, r.random() < 0.7),
        ),
    )
}
"""Every mutator, by name, in a fixed order (seeded runs depend on it)."""
KINDS = tuple(MUTATIONS)
"""Every mutator's name; ``valid`` sends a frame unchanged but for its sequence number."""
HOSTILE_KINDS = KINDS[1:]


def mutate(rng: random.Random, raw: bytes, kind: str | None = None, pool: Sequence[bytes] = ()) -> bytes:
    """``raw`` made hostile by mutator ``kind`` (any hostile one when None)."""
    return MUTATIONS[kind or rng.choice(HOSTILE_KINDS)].apply(rng, raw, pool)
