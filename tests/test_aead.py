"""The AEAD frame mode (header flag ENCRYPTED, pxproto.wire.aead): sealing and opening, what the tag
binds, nonce separation between senders, and the same answer from every codec for sealed frames."""

from __future__ import annotations

import dataclasses

import pytest

import pxproto.fastpath as fp
from pxproto.errors import ProtocolError
from pxproto.fastpath import pure
from pxproto.wire import aead, codec, samples, spec
from pxproto.wire.codes import FrameClass, HeaderFlag
from pxproto.wire.frame import Data, Frame, Sealed

KEY = samples.SAMPLE_KEY
CLEAR = samples.signaling_samples() + samples.data_samples() + samples.discovery_samples() + samples.heartbeat_samples()


def _bare(f: Frame) -> Frame:
    return dataclasses.replace(f, auth=None, padding=0)


@pytest.mark.parametrize("name,frame", CLEAR, ids=[n for n, _ in CLEAR])
def test_seal_open_round_trip_and_every_codec_agrees(name: str, frame: Frame) -> None:
    raw = aead.seal(frame, 7, 1 << 32 | 5, KEY)
    clear_raw = codec.encode(_bare(frame))
    assert len(raw) == max(
        spec.MIN_ETHERNET_FRAME,
        len(codec.encode(dataclasses.replace(frame, padding=0))) + (0 if frame.auth else spec.AUTH_LEN),
    )
    ref = codec.decode(raw)
    assert isinstance(ref.body, Sealed) and ref.cls is frame.cls
    assert ref.flags & HeaderFlag.ENCRYPTED and ref.auth is not None and ref.auth.counter == 1 << 32 | 5
    body = clear_raw[spec.BODY_OFFSET : spec.BODY_OFFSET + len(ref.body.ciphertext)]
    assert ref.body.ciphertext != body  # encrypted, not copied
    d = ref.to_dict()
    assert d["px.flags.encrypted"] and not any(k.startswith(("px.cmd", "px.data.", "px.hb.", "px.disc.")) for k in d)
    for dec in (fp.decode, fp.view, pure.decode):
        got = dec(raw)
        assert got == ref and got.to_dict() == d
    assert fp.check(raw) == ("", 0)
    assert fp.encode(ref) == raw == codec.encode(ref)
    opened = aead.open_frame(raw, KEY)
    assert _bare(opened) == _bare(frame)
    assert opened.auth is not None and opened.auth.tag == ref.auth.tag


def test_the_tag_binds_header_addresses_class_and_counter() -> None:
    frame = dict(CLEAR)["heartbeat BUSY"]
    raw = aead.seal(frame, 7, 99, KEY)
    assert aead.open_raw(raw, KEY) is not None
    assert aead.open_raw(raw, bytes(32)) is None  # another key
    end = len(raw) - spec.AUTH_LEN
    spots = {
        "dst MAC": 0,
        "src MAC": 6,
        "seq": spec.HEADER_OFFSET + 19,
        "src thread": spec.HEADER_OFFSET + 7,
        "ciphertext": spec.BODY_OFFSET + 3,
        "key id": end + 1,
        "counter": end + 9,
        "tag": len(raw) - 1,
    }
    for what, at in spots.items():
        bad = bytearray(raw)
        bad[at] ^= 0x01
        assert aead.open_raw(bytes(bad), KEY) is None, what
    # the same bytes relabelled as another class (EtherType) do not open either
    sig = aead.seal(dict(CLEAR)["PING request"], 7, 99, KEY)
    relabelled = bytearray(sig)
    relabelled[12:14] = raw[12:14]
    assert aead.open_raw(sig, KEY) is not None and aead.open_raw(bytes(relabelled), KEY) is None


def test_one_counter_from_two_senders_never_shares_a_keystream() -> None:
    """The nonce is the sender's counter; the frame key is per sender and class, so two senders (or two
    classes) that happen to use the same counter under one cluster key get unrelated keystreams."""
    base = Frame(Data(1, 1, bytes(64), 64), src_dime=1, dst_dime=2, src_mac=bytes(6), dst_mac=b"\x02" * 6)
    from pxproto.wire.codes import Scope

    base = dataclasses.replace(base, scope=Scope.DIME)
    a = aead.seal(base, 1, 42, KEY)
    b = aead.seal(dataclasses.replace(base, src_dime=3), 1, 42, KEY)
    c = aead.seal(dataclasses.replace(base, src_mac=b"\x00" * 5 + b"\x01"), 1, 42, KEY)
    ks = [r[spec.BODY_OFFSET : spec.BODY_OFFSET + 89] for r in (a, b, c)]  # plaintext identical: ct = keystream ^ pt
    assert len({bytes(k) for k in ks}) == 3
    assert aead.frame_key(KEY, bytes(6), 1, FrameClass.DATA) != aead.frame_key(KEY, bytes(6), 1, FrameClass.SIGNALING)


def test_decoders_reject_encrypted_without_trailer_and_seal_refuses_a_signed_frame() -> None:
    raw = aead.seal(dict(CLEAR)["heartbeat BUSY"], 7, 1, KEY)
    off = spec.HEADER_OFFSET + 1
    no_auth = bytearray(raw[: len(raw) - spec.AUTH_LEN])
    no_auth[off] &= ~int(HeaderFlag.AUTH) & 0xFF
    for dec in (codec.decode, fp.decode):
        with pytest.raises(ProtocolError) as e:
            dec(bytes(no_auth))
        assert (e.value.field, e.value.offset) == ("flags", off)
    with pytest.raises(ProtocolError):
        aead.seal_raw(raw, 7, 2, KEY)
    with pytest.raises(ProtocolError):
        codec.encode(Frame(Sealed(FrameClass.HEARTBEAT, bytes(32)), src_dime=1))  # no trailer: not a frame
    with pytest.raises(ProtocolError):
        fp.encode(Frame(Sealed(FrameClass.HEARTBEAT, bytes(32)), src_dime=1))


def test_parse_classes() -> None:
    assert aead.parse_classes("data,signaling") == {FrameClass.DATA, FrameClass.SIGNALING}
    assert aead.parse_classes("all") == set(FrameClass)
    assert aead.parse_classes("none") == set()
    with pytest.raises(ValueError, match="--encrypt: unknown frame class 'dta'"):
        aead.parse_classes("dta")


@pytest.mark.parametrize("cls", list(FrameClass), ids=[c.name for c in FrameClass])
def test_sealed_frames_differential(cls: FrameClass) -> None:
    """Drawn encrypted frames of ``cls`` (any ciphertext, any trailer), their variants and hostile mutations:
    the fast path and the reference codec give the same frame or the same (field, offset)."""
    import random

    from pxproto.testing import draw, mutate, variant

    rng = random.Random(15)
    counts = {"sealed": 0, "rejected": 0}
    for _ in range(40):
        seed = draw.frame(draw.RandomSource(rng), cls, sealed_share=1.0)
        for k in range(25):
            f = seed if k == 0 else variant(rng, seed)
            raw = fp.encode(f)
            assert raw == codec.encode(f)
            ref = codec.decode(raw)
            assert ref == f and isinstance(ref.body, Sealed)
            got = fp.decode(raw)
            assert got == ref and got.to_dict() == ref.to_dict() and fp.view(raw) == ref
            counts["sealed"] += 1
            for bad in (mutate(rng, raw), mutate(rng, mutate(rng, raw))):
                a = _outcome(codec.decode, bad)
                b = _outcome(fp.decode, bad)
                assert a == b, (bad.hex(), a, b)
                counts["rejected"] += isinstance(a, tuple)
    assert counts["sealed"] == 1000 and counts["rejected"] > 100, counts


def _outcome(decode, raw: bytes):  # type: ignore[no-untyped-def]
    try:
        return decode(raw)
    except ProtocolError as exc:
        return (exc.field, exc.offset)


def test_pxswitch_forwards_sealed_frames_at_every_validation_depth() -> None:
    """The switch reads only the clear header of a sealed frame: every class forwards at every depth of
    validation (Python peek, and the compiled loop where built), and ENCRYPTED without AUTH is malformed."""
    from pxproto.switch.peek import peek

    sealed = [aead.seal(f, 7, 1, KEY) for _, f in CLEAR]
    for raw, (_, f) in zip(sealed, CLEAR, strict=True):
        for depth in ("none", "header", "full"):
            p = peek(raw, depth)  # type: ignore[arg-type]
            assert (p.cls, p.src_dime, p.dst_dime) == (f.cls, f.src_dime, f.dst_dime)
    bad = bytearray(sealed[0][: len(sealed[0]) - spec.AUTH_LEN])
    bad[spec.HEADER_OFFSET + 1] &= 0xFF ^ int(HeaderFlag.AUTH)
    for depth in ("header", "full"):
        with pytest.raises(ProtocolError) as e:
            peek(bytes(bad), depth)  # type: ignore[arg-type]
        assert e.value.field == "flags"
    try:
        from tests.test_switch_fastloop import core_verdict, loop_verdict
    except pytest.skip.Exception:
        return  # no compiled switch loop here
    fits = [raw for raw in sealed if len(raw) <= 1514]  # a port's MTU (the node's sealed fragments leave room)
    for raw in [*fits[::5], bytes(bad)]:  # some of each class, and the tagless one
        for depth in ("header", "full"):
            got = loop_verdict(raw, depth)
            want = core_verdict(raw, depth)
            assert got is None or got == want, (depth, raw[:40].hex(), got, want)
            if raw == bytes(bad):
                assert want == (set(), {"flags": 1}), (depth, want)
            else:
                assert want[0] == {1, 2}, (depth, want)  # flooded to both other ports
