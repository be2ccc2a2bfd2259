"""The limits at the edge of each rule, on every codec (reference, pure twin, compiled fast path,
and the C header itself in test_px_codec_c.py): one past the limit is rejected at the field and
offset the reference names, the limit itself is accepted.  Each test fails if its rule is mutated
(1000 -> 1001, five FCAPS bits -> six, TEXT_MAX -> TEXT_MAX + 1)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from pxproto.errors import ProtocolError
from pxproto.wire import codec, layout, spec
from pxproto.wire.codes import (
    ACL_ENTRY_SIZE,
    CPU_PERMILLE_MAX,
    DIME_ALL,
    TEXT_MAX,
    Command,
    DimeState,
    Fcaps,
    Op,
    Scope,
    Status,
    TlvType,
)
from pxproto.wire.frame import Frame, Heartbeat, Signaling, Tlv

# the codecs under test, as in test_fastpath.py
from tests.test_fastpath import CODECS

OFF = {prefix: {f.name: f.offset for f in fields} for prefix, (_s, fields) in layout.struct_tables().items()}
TLV_AT = spec.BODY_OFFSET + spec.SignalingFixed.sizeof()
"""Offset of the first TLV of a signaling frame."""


def heartbeat(cpu_permille: int) -> bytes:
    """A heartbeat with any cpu_permille (patched in after encoding a valid one)."""
    raw = bytearray(
        codec.encode(
            Frame(
                Heartbeat(epoch=1, state=DimeState.BUSY, period_ms=100, cpu_permille=0),
                scope=Scope.SYSTEM,
                src_dime=3,
                dst_dime=DIME_ALL,
            )
        )
    )
    struct.pack_into(">H", raw, spec.BODY_OFFSET + OFF["hb"]["cpu_permille"], cpu_permille)
    return bytes(raw)


def one_tlv(t: TlvType, value: bytes) -> bytes:
    """A SET request carrying one TLV of type ``t`` with any value: encoded as an ECHO (raw bytes,
    no rule) and its type patched, so the value reaches the decoder unchecked."""
    frame = Frame(
        Signaling(Command.SET_PARAM, Op.REQUEST, 1, Status.OK, (Tlv(TlvType.ECHO, value),)),
        scope=Scope.DIME,
        src_dime=DIME_ALL,
        dst_dime=1,
    )
    raw = bytearray(codec.encode(frame))
    struct.pack_into(">H", raw, TLV_AT + OFF["tlv"]["type"], int(t))
    return bytes(raw)


def acl(mask: int, reserved: int = 0) -> bytes:
    entry = bytes(6) + bytes([mask, reserved])
    assert len(entry) == ACL_ENTRY_SIZE
    return one_tlv(TlvType.ACL, entry)


def rejects(impl: Any, raw: bytes) -> tuple[str, int]:
    with pytest.raises(ProtocolError) as exc:
        impl.decode(raw)
    return exc.value.field, exc.value.offset


@pytest.mark.parametrize("impl", CODECS)
def test_cpu_permille_over_the_maximum_is_rejected(impl: Any) -> None:
    assert impl.decode(heartbeat(CPU_PERMILLE_MAX)).body.cpu_permille == CPU_PERMILLE_MAX
    where = spec.BODY_OFFSET + OFF["hb"]["cpu_permille"]
    assert rejects(impl, heartbeat(CPU_PERMILLE_MAX + 1)) == ("hb.cpu_permille", where)
    assert rejects(impl, heartbeat(0xFFFF)) == ("hb.cpu_permille", where)


@pytest.mark.parametrize("impl", CODECS)
def test_acl_mask_bits_above_the_fcaps_bits_are_rejected(impl: Any) -> None:
    every_area = (1 << len(Fcaps)) - 1
    assert impl.decode(acl(every_area)).body.params[0].type == TlvType.ACL
    where = TLV_AT + spec.TlvHeader.sizeof() + ACL_ENTRY_SIZE - 2
    for bit in range(len(Fcaps), 8):
        assert rejects(impl, acl(every_area | (1 << bit))) == ("tlv.acl", where), bit
    assert rejects(impl, acl(every_area, reserved=1)) == ("tlv.acl", where)


@pytest.mark.parametrize("impl", CODECS)
def test_text_of_text_max_plus_one_bytes_is_rejected(impl: Any) -> None:
    assert impl.decode(one_tlv(TlvType.MICE_NAME, b"a" * TEXT_MAX)).body.params[0].value == "a" * TEXT_MAX
    where = TLV_AT + OFF["tlv"]["length"]
    assert rejects(impl, one_tlv(TlvType.MICE_NAME, b"a" * (TEXT_MAX + 1))) == ("tlv.mice_name", where)
    assert rejects(impl, one_tlv(TlvType.TEXT, b"a" * (TEXT_MAX + 1))) == ("tlv.text", where)


@pytest.mark.parametrize("impl", CODECS)
def test_the_encoders_refuse_what_the_decoders_reject(impl: Any) -> None:
    hb = codec.decode(heartbeat(CPU_PERMILLE_MAX))
    hb.body.cpu_permille = CPU_PERMILLE_MAX + 1
    with pytest.raises(ProtocolError) as exc:
        impl.encode(hb)
    assert exc.value.field == "hb.cpu_permille"
    sig = codec.decode(one_tlv(TlvType.MICE_NAME, b"a"))
    sig.body.params = (Tlv(TlvType.MICE_NAME, "a" * (TEXT_MAX + 1)),)
    with pytest.raises(ProtocolError) as exc:
        impl.encode(sig)
    assert exc.value.field == "tlv.mice_name"


def limit_frames() -> list[tuple[str, bytes]]:
    """The frames above, for the C header's own check (test_px_codec_c.py)."""
    return [
        ("cpu_permille max", heartbeat(CPU_PERMILLE_MAX)),
        ("cpu_permille max + 1", heartbeat(CPU_PERMILLE_MAX + 1)),
        ("acl every area", acl((1 << len(Fcaps)) - 1)),
        *[(f"acl bit {b}", acl(1 << b)) for b in range(8)],
        ("acl reserved", acl(1, reserved=1)),
        ("text max", one_tlv(TlvType.MICE_NAME, b"a" * TEXT_MAX)),
        ("text max + 1", one_tlv(TlvType.MICE_NAME, b"a" * (TEXT_MAX + 1))),
    ]
