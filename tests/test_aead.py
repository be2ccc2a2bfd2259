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


def test_a_dime_opens_sealed_signaling_answers_sealed_and_drops_replays_and_forgeries() -> None:
    """The node machine with ``encrypt=(signaling, data)``: a sealed PING is opened (tag, replay window) and
    answered sealed; the same frame again is a replay, a flipped ciphertext bit a forgery, both dropped and
    counted; its heartbeats (not chosen) go signed in clear; its data fragments leave room for the trailer."""
    from pxproto.dime.channel import fragment_size
    from pxproto.dime.endpoint import Address
    from pxproto.dime.keys import KeyRing
    from pxproto.dime.signaling import Requester, ResponseReceived, RetransmitPolicy
    from pxproto.node.machine import DimeMachine, MachineConfig
    from pxproto.wire.codes import Command, CounterId, TlvType
    from pxproto.wire.frame import Heartbeat, Tlv
    from tests.test_node_machine import DIME, ME, FakeHost

    keys = {1: KEY}
    chosen = (int(FrameClass.SIGNALING), int(FrameClass.DATA))
    m = DimeMachine(MachineConfig(DIME, has_store=True, keys=keys, encrypt=chosen), FakeHost())
    m.start(10.0)
    me = KeyRing(keys, epoch=7, encrypt=chosen)
    req = Requester(ME, RetransmitPolicy(retries=0))

    def sealed_ping(echo: bytes) -> bytes:
        _, out = req.request(DIME, Command.PING, [Tlv(TlvType.ECHO, echo)], now=10.0)
        raw = me.protect(fp.encode(out.frames[0]), FrameClass.SIGNALING)
        assert aead.is_sealed(raw) and b"secret" not in raw
        return raw

    raw = sealed_ping(b"secret-1")
    m.on_frame(raw, 10.0)
    out = [r for r, _ in m.take_outbox()]
    assert len(out) == 1 and aead.is_sealed(out[0]) and b"secret-1" not in out[0]
    got = me.open_frame(fp.decode(out[0]), out[0], 10.0, fp.decode)
    assert not isinstance(got, str)
    events = req.receive(got[0], 10.0).events
    assert next(e.params for e in events if isinstance(e, ResponseReceived))[0] == Tlv(TlvType.ECHO, b"secret-1")
    before = dict(m.counters)
    m.on_frame(raw, 10.1)  # the same sealed frame again
    forged = bytearray(sealed_ping(b"secret-2"))
    forged[spec.BODY_OFFSET + 2] ^= 0x01
    m.on_frame(bytes(forged), 10.2)
    assert not m.take_outbox()
    assert m.counters[CounterId.REJECTED_REPLAY] == before.get(CounterId.REJECTED_REPLAY, 0) + 1
    assert m.counters[CounterId.REJECTED_AUTH] == before.get(CounterId.REJECTED_AUTH, 0) + 1
    assert m.reasons["auth:replayed"] == 1 and m.reasons["auth:bad_tag"] == 1
    m.handle_timer(10.3)
    beats = [r for r, _ in m.take_outbox()]
    assert beats and all(not aead.is_sealed(b) and isinstance(fp.decode(b).body, Heartbeat) for b in beats)
    assert m.plane.sender(Address(ME.mac, 4, 0), 1).frag_size == fragment_size(m.cfg.mtu, auth=True)
    # a kernel without the key cannot open it: counted, never read
    keyless = DimeMachine(MachineConfig(DIME, has_store=True, insecure=True), FakeHost())
    keyless.start(10.0)
    keyless.on_frame(sealed_ping(b"secret-3"), 10.0)
    assert not keyless.take_outbox() and keyless.reasons["auth:no_key"] == 1


@pytest.mark.parametrize("path", [[], ["--reference"]], ids=["fast", "reference"])
def test_pxdump_shows_encrypted_frames_and_opens_them_with_a_private_key_file(
    tmp_path: pytest.TempPathFactory, path: list[str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    import os
    from pathlib import Path

    from pxproto.capture.pcapng import PcapngWriter
    from pxproto.dime.keys import write_keyfile
    from pxproto.dump import cli

    tmp = Path(str(tmp_path))
    frames = [f for _, f in CLEAR if len(codec.encode(f)) <= 1400][::6]
    cap = tmp / "sealed.pcapng"
    with open(cap, "wb") as fh:
        w = PcapngWriter(fh)
        for i, f in enumerate(frames):
            w.write(aead.seal(f, 1, 100 + i, KEY), 1_700_000_000_000_000_000 + i * 1000)
    assert cli.main(["-t", "-r", str(cap), *path]) == 0
    shut = capsysbinary.readouterr().out.decode().splitlines()
    assert len(shut) == len(frames) and all(" encrypted auth seq " in ln for ln in shut), shut[:3]
    good = tmp / "good.key"
    write_keyfile(good, {1: KEY})
    assert cli.main(["-t", "-r", str(cap), "--key", str(good), *path]) == 0
    opened = capsysbinary.readouterr().out.decode().splitlines()
    assert opened == _lines(cli, capsysbinary, frames, tmp)  # what the same frames print in clear
    assert not any("encrypted" in ln for ln in opened) and any(" PING request " in ln for ln in opened), opened[:3]
    wrong = tmp / "wrong.key"
    write_keyfile(wrong, {1: bytes(32)})
    assert cli.main(["-t", "-r", str(cap), "--key", str(wrong), *path]) == 0  # a wrong key: they stay encrypted
    assert capsysbinary.readouterr().out.decode().splitlines() == shut
    open_to_all = tmp / "open.key"
    open_to_all.write_text(f"1 {KEY.hex()}\n")
    os.chmod(open_to_all, 0o644)
    assert cli.main(["-r", str(cap), "--key", str(open_to_all)]) == 2
    err = capsysbinary.readouterr().err.decode().splitlines()
    assert len(err) == 2 and "refused" in err[0] and err[0].startswith("pxdump: --key: ")
    assert cli.main(["-r", str(cap), "--key", str(good), "-w", str(tmp / "out.pcapng")]) == 2


def _lines(cli, capsysbinary, frames, tmp):  # type: ignore[no-untyped-def]
    """pxdump's lines for the clear frames, each with a trailer (what an opened frame is)."""
    from pxproto.capture.pcapng import PcapngWriter

    cap = tmp / "clear.pcapng"
    with open(cap, "wb") as fh:
        w = PcapngWriter(fh)
        for i, f in enumerate(frames):
            clear = aead.open_raw(aead.seal(f, 1, 100 + i, KEY), KEY)
            assert clear is not None
            w.write(clear, 1_700_000_000_000_000_000 + i * 1000)
    assert cli.main(["-t", "-r", str(cap)]) == 0
    return capsysbinary.readouterr().out.decode().splitlines()


def test_the_orchestrator_driver_opens_sealed_frames_and_seals_what_it_chooses() -> None:
    """pxorch's driver: encrypted heartbeats are opened (replays and forgeries counted, never reaching the
    core); with ``encrypt=signaling`` its own requests go out sealed, its probes (discovery) signed."""
    from typing import Any

    from pxproto.dime.endpoint import Address, Output, frame_to
    from pxproto.dime.keys import KeyRing
    from pxproto.orch.core import Orchestrator
    from pxproto.orch.driver import Driver
    from pxproto.sim import ORCH_MAC, server_mac
    from pxproto.wire.codes import DIME_ALL, Command, DimeState, TlvType
    from pxproto.wire.frame import BROADCAST, Heartbeat, Signaling, Tlv

    class Wire:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def send(self, raw: bytes) -> None:
            self.sent.append(raw)

        def fileno(self) -> int:
            return -1

    def beat(dime: int) -> bytes:
        hb = Heartbeat(1, DimeState.FREE, 50)
        return codec.encode(frame_to(Address(server_mac(0), dime), Address(BROADCAST, DIME_ALL), hb))

    wire: Any = Wire()
    d = Driver(Orchestrator(ORCH_MAC), wire, {1: KEY}, encrypt=[FrameClass.SIGNALING])
    dime = KeyRing({1: KEY}, epoch=5, encrypt=[FrameClass.HEARTBEAT])
    good = dime.protect(beat(0), FrameClass.HEARTBEAT)
    assert aead.is_sealed(good)
    d._frame(good, 1.0)
    d._frame(good, 1.1)  # replayed
    forged = bytearray(dime.protect(beat(1), FrameClass.HEARTBEAT))
    forged[spec.BODY_OFFSET] ^= 1
    d._frame(bytes(forged), 1.2)
    assert d.core.counters["heartbeats"] == 1 and len(d.core.pool) == 1
    assert (d.counters["rejected_replayed"], d.counters["rejected_bad_tag"]) == (1, 1)
    d.send(d.core.probe(2.0))
    ping = Signaling(Command.PING, req_id=9, params=(Tlv(TlvType.ECHO, b"secret-ping"),))
    d.send(Output(frames=[frame_to(d.core.local, Address(server_mac(0), 0), ping)]))
    classes = [codec.decode(raw).cls for raw in wire.sent]
    assert FrameClass.DISCOVERY in classes and FrameClass.SIGNALING in classes, classes
    for raw, cls in zip(wire.sent, classes, strict=True):
        assert aead.is_sealed(raw) == (cls is FrameClass.SIGNALING), cls
    assert not any(b"secret-ping" in raw for raw in wire.sent)
