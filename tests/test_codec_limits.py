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
    STATE_ANY,
    TEXT_MAX,
    Command,
    DimeState,
    DiscoveryOp,
    Fcaps,
    Op,
    Scope,
    Status,
    TlvType,
)
from pxproto.wire.frame import Auth, Data, DimeInfo, Discovery, Frame, Heartbeat, Signaling, Tlv

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


def announce(mem_total: int, mem_free: int) -> bytes:
    """An announce listing one DIME with any mem_total/mem_free (patched in after encoding a valid one)."""
    body = Discovery(DiscoveryOp.GRATUITOUS, 0, 1, 0, STATE_ANY, (DimeInfo(1, 0, DimeState.FREE, 4, 4, 1),))
    raw = bytearray(codec.encode(Frame(body, scope=Scope.SYSTEM, src_dime=DIME_ALL, dst_dime=DIME_ALL)))
    rec = spec.BODY_OFFSET + spec.DiscoveryFixed.sizeof()
    struct.pack_into(">I", raw, rec + OFF["disc.dime"]["mem_total"], mem_total)
    struct.pack_into(">I", raw, rec + OFF["disc.dime"]["mem_free"], mem_free)
    return bytes(raw)


def fragment(msg_len: int, frag_offset: int, payload: bytes, frag_index: int = 0, frag_count: int = 3) -> bytes:
    """A DATA fragment with any msg_len/frag_offset (patched in after encoding an empty valid one)."""
    data = Data(channel=1, msg_id=1, payload=payload, msg_len=len(payload), frag_count=frag_count)
    raw = bytearray(codec.encode(Frame(data, scope=Scope.DIME, src_dime=1, dst_dime=2)))
    struct.pack_into(">I", raw, spec.BODY_OFFSET + OFF["data"]["msg_len"], msg_len)
    struct.pack_into(">I", raw, spec.BODY_OFFSET + OFF["data"]["frag_offset"], frag_offset)
    struct.pack_into(">H", raw, spec.BODY_OFFSET + OFF["data"]["frag_index"], frag_index)
    return bytes(raw)


@pytest.mark.parametrize("impl", CODECS)
def test_a_dime_with_more_free_than_total_memory_is_rejected(impl: Any) -> None:
    assert impl.decode(announce(8, 8)).body.dimes[0].mem_free == 8
    where = spec.BODY_OFFSET + spec.DiscoveryFixed.sizeof() + OFF["disc.dime"]["mem_free"]
    assert rejects(impl, announce(8, 9)) == ("disc.dime.mem_free", where)


@pytest.mark.parametrize("impl", CODECS)
def test_the_first_fragment_starts_at_offset_zero(impl: Any) -> None:
    assert impl.decode(fragment(10, 0, b"abcde")).body.frag_offset == 0
    assert impl.decode(fragment(10, 1, b"abcde", frag_index=1)).body.frag_offset == 1
    where = spec.BODY_OFFSET + OFF["data"]["frag_offset"]
    assert rejects(impl, fragment(10, 1, b"abcde")) == ("data.frag_offset", where)


@pytest.mark.parametrize("impl", CODECS)
def test_an_empty_fragment_of_a_non_empty_message_is_rejected(impl: Any) -> None:
    assert impl.decode(fragment(0, 0, b"")).body.msg_len == 0
    where = spec.ETH_LEN + OFF[""]["length"]
    assert rejects(impl, fragment(1, 0, b"")) == ("len", where)


@pytest.mark.parametrize("impl", CODECS)
def test_a_fragment_index_must_be_below_the_count(impl: Any) -> None:
    assert impl.decode(fragment(10, 5, b"abcde", frag_index=1, frag_count=2)).body.frag_index == 1
    where = spec.BODY_OFFSET + OFF["data"]["frag_index"]
    assert rejects(impl, fragment(10, 5, b"abcde", frag_index=2, frag_count=2)) == ("data.frag_index", where)


@pytest.mark.parametrize("impl", CODECS)
def test_a_probe_lists_no_dime(impl: Any) -> None:
    one = (DimeInfo(1, 0, DimeState.FREE, 4, 4, 1),)
    probe = Discovery(DiscoveryOp.PROBE, 5, 1, 0, STATE_ANY, ())
    assert impl.decode(codec.encode(Frame(probe, Scope.SYSTEM, DIME_ALL, 0, DIME_ALL))).body.dimes == ()
    raw = bytearray(codec.encode(Frame(Discovery(DiscoveryOp.ANNOUNCE, 5, 1, 0, STATE_ANY, one), Scope.SYSTEM)))
    raw[spec.BODY_OFFSET + OFF["disc"]["op"]] = int(DiscoveryOp.PROBE)  # the same frame, now a probe with a DIME
    assert rejects(impl, bytes(raw)) == ("disc.count", spec.BODY_OFFSET + OFF["disc"]["count"])


def signed(key_id: int, counter: int) -> bytes:
    """A signed heartbeat with any key id and counter (patched into a valid trailer)."""
    raw = bytearray(codec.encode(Frame(Heartbeat(1, DimeState.FREE, 100), Scope.SYSTEM, 3, auth=Auth(1, 1, bytes(16)))))
    trailer = len(raw) - spec.AuthTrailer.sizeof()
    struct.pack_into(">H", raw, trailer + OFF["auth"]["key_id"], key_id)
    struct.pack_into(">Q", raw, trailer + OFF["auth"]["counter"], counter)
    return bytes(raw)


@pytest.mark.parametrize("impl", CODECS)
def test_an_auth_trailer_with_key_id_or_counter_0_is_rejected(impl: Any) -> None:
    frame = Frame(Heartbeat(1, DimeState.FREE, 100), Scope.SYSTEM, 3, auth=Auth(7, 1, bytes(16)))
    raw = codec.encode(frame)
    trailer = len(raw) - spec.AuthTrailer.sizeof()
    assert impl.decode(raw).auth == Auth(7, 1, bytes(16))
    for field in ("key_id", "counter"):
        bad = bytearray(raw)
        at = trailer + OFF["auth"][field]
        bad[at : at + (2 if field == "key_id" else 8)] = bytes(2 if field == "key_id" else 8)
        assert rejects(impl, bytes(bad)) == (f"auth.{field}", at), field


UTF8_EDGES_OK = [b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xf0\x90\x80\x80",
                 b"\xf4\x8f\xbf\xbf"]  # fmt: skip
"""The first and last sequences of each range the UTF-8 rules single out (RFC 3629 table)."""
UTF8_EDGES_BAD = [b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xed\xa0\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80",
                  b"\xf5\x80\x80\x80", b"\xe1\x80", b"\x80"]  # fmt: skip
"""One step past each edge: overlong, surrogate, above U+10FFFF, cut short, a stray continuation byte."""


@pytest.mark.parametrize("impl", CODECS)
def test_text_utf8_edges_are_judged_like_the_reference(impl: Any) -> None:
    for good in UTF8_EDGES_OK:
        assert impl.decode(one_tlv(TlvType.TEXT, b"a" + good)).body.params[0].value == "a" + good.decode(), good
    for bad in UTF8_EDGES_BAD:
        assert rejects(impl, one_tlv(TlvType.TEXT, b"a" + bad)) == ("tlv.text", TLV_AT + 4 + 1), bad


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
        *[(f"utf-8 {v.hex()}", one_tlv(TlvType.TEXT, b"a" + v)) for v in UTF8_EDGES_OK + UTF8_EDGES_BAD],
        ("mem_free = mem_total", announce(8, 8)),
        ("mem_free > mem_total", announce(8, 9)),
        ("first fragment at 1", fragment(10, 1, b"abcde")),
        ("empty fragment of 1 byte", fragment(1, 0, b"")),
        ("fragment index = count", fragment(10, 5, b"abcde", frag_index=2, frag_count=2)),
        ("auth key id 0", signed(0, 1)),
        ("auth counter 0", signed(7, 0)),
        ("auth 1/1", signed(1, 1)),
    ]
