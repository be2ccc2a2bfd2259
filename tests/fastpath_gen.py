"""Cheap, seeded generators for the differential tests.

Hypothesis draws a few hundred frames of each class from pxproto.testing.frames();
``variants`` then re-draws every field the rules leave free (a frame's length and
structure stay the same, so it stays valid) with a seeded RNG, which gives tens of
thousands of distinct valid frames per class at a fraction of hypothesis' cost per
example.  ``mutate`` makes hostile bytes the way pxproto.testing.mutations does,
plus field-aimed overwrites that reach the deeper rules.
"""

from __future__ import annotations

import random
from dataclasses import replace

from pxproto.wire import spec
from pxproto.wire.codes import (
    DIME_ALL,
    TLV_ENUMS,
    TLV_KINDS,
    Command,
    DimeState,
    DiscoveryOp,
    Op,
    Scope,
    Status,
    TlvKind,
    TlvType,
)
from pxproto.wire.frame import Auth, Data, DimeInfo, Discovery, Frame, Heartbeat, Signaling, Tlv

_UINT_BITS = {TlvKind.U8: 8, TlvKind.U16: 16, TlvKind.U32: 32, TlvKind.U64: 64}


def _bytes(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "big") if n else b""


def _tlv(rng: random.Random, p: Tlv) -> Tlv:
    if p.type not in TlvType._value2member_map_:
        return Tlv(p.type, _bytes(rng, len(p.value)))  # type: ignore[arg-type]
    t = TlvType(p.type)
    kind = TLV_KINDS[t]
    if t in TLV_ENUMS:
        return Tlv(t, int(rng.choice(list(TLV_ENUMS[t]))))
    if kind in _UINT_BITS:
        return Tlv(t, rng.getrandbits(_UINT_BITS[kind]))
    if kind in (TlvKind.BYTES, TlvKind.MAC, TlvKind.DIGEST):
        return Tlv(t, _bytes(rng, len(p.value)))  # type: ignore[arg-type]
    return p  # TEXT and ACL keep their (valid) value


def _body(rng: random.Random, b: object) -> object:
    if isinstance(b, Signaling):
        status = Status.OK if b.op is Op.REQUEST else rng.choice(list(Status))
        params = tuple(_tlv(rng, p) for p in b.params)
        return Signaling(rng.choice(list(Command)), b.op, rng.getrandbits(32), status, params)
    if isinstance(b, Data):
        ack, credit = (rng.getrandbits(32), rng.getrandbits(16)) if b.flags & 1 else (0, 0)
        return replace(
            b,
            channel=rng.getrandbits(16),
            msg_id=rng.getrandbits(32),
            payload=_bytes(rng, len(b.payload)),
            ack=ack,
            credit=credit,
        )
    if isinstance(b, Discovery):
        dimes = []
        for _ in b.dimes:
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
        probe = 0 if b.op is DiscoveryOp.GRATUITOUS else rng.getrandbits(32)
        return replace(b, probe_id=probe, sw_version=rng.getrandbits(32), caps=rng.getrandbits(32), dimes=tuple(dimes))
    assert isinstance(b, Heartbeat)
    return Heartbeat(
        rng.getrandbits(32),
        rng.choice(list(DimeState)),
        rng.randint(1, 0xFFFF),
        rng.randint(0, 1000),
        rng.getrandbits(16),
        rng.getrandbits(32),
        rng.getrandbits(32),
        rng.getrandbits(32),
        rng.getrandbits(32),
        rng.getrandbits(32),
    )


def variant(rng: random.Random, f: Frame) -> Frame:
    """A frame of the same shape as ``f`` with every free field re-drawn."""
    dst = rng.randrange(DIME_ALL) if f.scope is Scope.DIME else DIME_ALL
    src = rng.randrange(DIME_ALL) if isinstance(f.body, Heartbeat) else rng.getrandbits(16)
    auth = None
    if f.auth is not None:
        auth = Auth(rng.randint(1, 0xFFFF), rng.randint(1, 2**64 - 1), _bytes(rng, 16))
    return Frame(
        _body(rng, f.body),  # type: ignore[arg-type]
        f.scope,
        src,
        rng.getrandbits(16),
        dst,
        rng.getrandbits(16),
        rng.getrandbits(64),
        _bytes(rng, 6),
        _bytes(rng, 6),
        auth,
        f.version,
        f.padding,
    )


# Byte offsets worth aiming at: every header field and the first bytes of every body.
_AIMS = list(range(12, spec.BODY_OFFSET + 40))


def mutate(rng: random.Random, raw: bytes, ethertypes: list[int]) -> bytes:
    how = rng.randrange(8)
    if how == 0:
        return raw[: rng.randrange(len(raw))]
    if how == 1:
        return raw + _bytes(rng, rng.randint(1, 64))
    if how == 2:
        b = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if how == 3:
        b = bytearray(raw)
        i = rng.randrange(len(b))
        chunk = _bytes(rng, rng.randint(1, 8))
        b[i : i + len(chunk)] = chunk[: len(b) - i]
        return bytes(b)
    if how == 4:
        return raw[:12] + rng.choice(ethertypes).to_bytes(2, "big") + raw[14:]
    if how == 5:
        return _bytes(rng, rng.randrange(128))
    b = bytearray(raw)  # aimed: one byte of a header or body field set to an edge or random value
    i = rng.choice(_AIMS)
    if i < len(b):
        b[i] = rng.choice([0, 1, 0xFF, 0x80, rng.randrange(256)])
    if how == 7 and len(b) > spec.BODY_OFFSET:
        j = rng.randrange(spec.BODY_OFFSET, len(b))
        b[j] = rng.randrange(256)
    return bytes(b)
