"""pxfuzz as a library and a command: generation, wires, probes, campaigns, saving and replay."""

from __future__ import annotations

import random
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.dime.endpoint import Address
from pxproto.dime.signaling import Responder
from pxproto.errors import ProtocolError
from pxproto.fuzz import (
    HOSTILE_KINDS,
    KINDS,
    OK,
    Campaign,
    FrameGenerator,
    FunctionWire,
    PingProbe,
    StreamWire,
    UdpWire,
    load_cases,
    reference_verdict,
    replay,
    tally,
)
from pxproto.fuzz.cli import main as pxfuzz
from pxproto.testing import random_frame
from pxproto.testing.hostile import mutate_field, mutate_scope
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import Command, Status

SERVER = bytes.fromhex("020000000001")


def ping_handler() -> tuple[Responder, object]:
    """An in-process target: a signaling responder that answers PING, fed raw frames."""
    resp = Responder(Address(SERVER), {Command.PING: lambda r: (Status.OK, r.params)})
    clock = [0.0]

    def handle(raw: bytes) -> list[bytes]:
        try:
            frame = decode(raw)
        except ProtocolError:
            return []
        if frame.dst_mac != SERVER:
            return []
        clock[0] += 0.001
        return [encode(f) for f in resp.receive(frame, clock[0]).frames]

    return resp, handle


# ------------------------------------------------------------------ generation


def test_same_seed_same_frames_and_other_seed_other_frames() -> None:
    a = [c.raw for c in FrameGenerator(5, pool_size=32).take(500)]
    b = [c.raw for c in FrameGenerator(5, pool_size=32).take(500)]
    c = [c.raw for c in FrameGenerator(6, pool_size=32).take(500)]
    assert a == b
    assert a != c


def test_every_mutator_is_used_and_hostile_ones_are_mostly_rejected() -> None:
    cases = FrameGenerator(11, pool_size=64).take(4000)
    kinds = Counter(c.kind for c in cases)
    assert set(kinds) == set(KINDS)
    by_kind: dict[str, Counter[str]] = {}
    for c in cases:
        by_kind.setdefault(c.kind, Counter())[reference_verdict(c.raw)] += 1
    assert set(by_kind["valid"]) == {OK}
    for k in HOSTILE_KINDS:
        rejected = sum(n for v, n in by_kind[k].items() if v != OK)
        # flips and one-field changes may land on a field with no rule (a MAC, seq, a payload byte)
        assert rejected >= by_kind[k].total() * {"flip": 0.35, "field": 0.5}.get(k, 0.9), (k, by_kind[k])


def test_the_pool_holds_valid_frames_of_every_class_and_verdicts_name_many_fields() -> None:
    g = FrameGenerator(3, pool_size=40)
    assert all(reference_verdict(r) == OK for r in g.pool)
    assert len({r[12:14] for r in g.pool}) == 4
    fields = tally(c.raw for c in g.take(3000))
    assert len(fields) >= 20, fields


def test_one_field_and_scope_mutators_change_only_what_they_say(rng: random.Random) -> None:
    raw = encode(random_frame(rng))
    for _ in range(200):
        m = mutate_field(rng, raw)
        assert len(m) == len(raw)
        assert sum(x != y for x, y in zip(m, raw, strict=True)) <= 32
        s = mutate_scope(rng, raw)
        assert len(s) == len(raw) and s != raw


def test_generator_rejects_unknown_kinds_and_honours_min_len() -> None:
    with pytest.raises(ValueError, match="unknown mutator"):
        FrameGenerator(kinds=["nope"])
    g = FrameGenerator(2, kinds=["truncate", "random"], min_len=1, pool_size=8)
    assert all(len(c.raw) >= 1 for c in g.take(2000))


# ------------------------------------------------------------------ campaigns in process


def test_campaign_against_a_live_responder_keeps_it_answering(tmp_path: Path) -> None:
    _, handle = ping_handler()
    wire = FunctionWire(handle)  # type: ignore[arg-type]
    save = tmp_path / "c.pcapng"
    r = Campaign(wire, FrameGenerator(1, pool_size=64), PingProbe(wire, SERVER), count=3000, burst=100, save=save).run()
    assert r.alive, r.summary()
    assert r.sent == 3000 and r.bursts == 30 and r.probes == 30
    assert r.verdicts.total() == 3000 and r.kinds.total() == 3000
    saved = load_cases(save)
    assert [s.index for s in saved] == list(range(3000))
    assert Counter(s.verdict for s in saved) == r.verdicts
    assert all(reference_verdict(s.raw) == s.verdict for s in saved[:500])


def test_a_target_that_dies_is_reported_with_its_suspects_and_replay_finds_the_frame(tmp_path: Path) -> None:
    _, answer = ping_handler()
    poison = {"armed": False, "dead": False}

    def handle(raw: bytes) -> list[bytes]:
        if poison["dead"]:
            return []
        # This target dies on the first frame truncated inside the Parallax header, once armed.
        if poison["armed"] and 14 < len(raw) < 34 and raw[12:14] == b"\xab\xba":
            poison["dead"] = True
            return []
        return answer(raw)  # type: ignore[operator,no-any-return]

    wire = FunctionWire(handle)
    save = tmp_path / "dead.pcapng"
    gen = FrameGenerator(4, kinds=["valid", "truncate"], pool_size=32)
    poison["armed"] = True
    r = Campaign(wire, gen, PingProbe(wire, SERVER, timeout=0.01), count=2000, burst=50, save=save).run()
    assert not r.alive and r.stopped_after is not None and r.suspects is not None
    first, last = r.suspects
    assert last - first + 1 == 50 and last == r.stopped_after
    culprits = [s for s in load_cases(save) if first <= (s.index or -1) <= last]
    expected = next(s.index for s in culprits if 14 < len(s.raw) < 34 and s.raw[12:14] == b"\xab\xba")
    # Restart the target and bisect by replaying one frame per probe.
    poison["dead"] = False
    again = replay(save, wire, PingProbe(wire, SERVER, timeout=0.01), first, last)
    assert again.stopped_after == expected
    assert not again.alive


def test_legit_frames_are_mixed_in_and_saved_apart(tmp_path: Path) -> None:
    _, handle = ping_handler()
    wire = FunctionWire(handle)  # type: ignore[arg-type]
    probe = PingProbe(wire, SERVER)
    save = tmp_path / "l.pcapng"
    r = Campaign(
        wire,
        FrameGenerator(8, pool_size=16),
        None,
        count=200,
        burst=20,
        save=save,
        legit=lambda n: [probe.request()[2]],
    ).run()
    assert r.legit_sent == 10
    assert sum(1 for s in load_cases(save) if s.kind == "legit") == 10


def test_a_check_hook_stops_the_campaign_and_is_reported() -> None:
    wire = FunctionWire(lambda raw: None)
    r = Campaign(
        wire, FrameGenerator(1, pool_size=8), count=1000, burst=10, check=lambda rep: ["over"] * (rep.sent >= 50)
    ).run()
    assert r.sent == 50 and r.check_failures == ["over"] and not r.alive


# ------------------------------------------------------------------ real sockets and the command


@pytest.fixture()
def udp_ping_server() -> Iterator[tuple[str, list[int]]]:
    """A UDP virtual wire with a PING responder on the far end, in a thread."""
    _, handle = ping_handler()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()
    received = [0]

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(70000)
            except TimeoutError:
                continue
            received[0] += 1
            for reply in handle(data):  # type: ignore[operator]
                sock.sendto(reply, addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield "{}:{}".format(*sock.getsockname()), received
    stop.set()
    t.join()
    sock.close()


def test_udp_wire_campaign_and_cli(udp_ping_server: tuple[str, list[int]], tmp_path: Path, capsys) -> None:
    addr, _ = udp_ping_server
    wire = UdpWire(addr)
    r = Campaign(wire, FrameGenerator(2, pool_size=32), PingProbe(wire, SERVER), count=500, burst=50, rate=20000).run()
    wire.close()
    assert r.alive, r.summary()
    out = tmp_path / "cli.pcapng"
    rc = pxfuzz(
        ["run", f"udp:{addr}", "-n", "300", "--burst", "100", "--probe", "ping:02:00:00:00:00:01", "-w", str(out)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "sent 300 hostile" in text and "probes 3, failed 0" in text
    assert len(load_cases(out)) == 300
    rc = pxfuzz(["replay", str(out), f"udp:{addr}", "--start", "10", "--end", "19", "--probe", "ping:020000000001"])
    assert rc == 0
    assert "sent 10 hostile" in capsys.readouterr().out


def test_cli_reports_a_silent_target_and_bad_arguments(tmp_path: Path, capsys) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    addr = "{}:{}".format(*silent.getsockname())
    rc = pxfuzz(["run", f"udp:{addr}", "-n", "20", "--probe", "ping:020000000001", "--probe-timeout", "0.05", "--json"])
    silent.close()
    assert rc == 1
    assert '"stopped_after": 19' in capsys.readouterr().out
    assert pxfuzz(["run", "tcp:1.2.3.4:5"]) == 2
    assert "expected udp:" in capsys.readouterr().err
    assert pxfuzz(["run", f"udp:{addr}", "--probe", "ping:zz"]) == 2
    assert pxfuzz(["run", f"udp:{addr}", "--kinds", "flip,bogus"]) == 2
    assert "unknown mutator" in capsys.readouterr().err
    assert pxfuzz(["replay", str(tmp_path / "none.pcapng"), f"udp:{addr}"]) == 2
    assert pxfuzz(["gen", "-n", "50", "-o", str(tmp_path / "g.pcapng"), "--kinds", "random"]) == 0
    assert len(load_cases(tmp_path / "g.pcapng")) == 50
    capsys.readouterr()
    for count in ("-5", "0"):  # -5 wrote an empty file and exited 0
        assert pxfuzz(["gen", "-n", count, "-o", str(tmp_path / "neg.pcapng")]) == 2
        assert capsys.readouterr().err == "pxfuzz: --count must be at least 1\n"
    assert not (tmp_path / "neg.pcapng").exists()
    assert pxfuzz(["kinds"]) == 0


def test_stream_wire_frames_both_ways_and_refuses_empty_frames(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    wire = StreamWire(path)
    conn, _ = srv.accept()
    wire.send([b"\x01" * 20, b"\x02" * 70])
    got = b""
    while len(got) < 4 + 20 + 4 + 70:
        got += conn.recv(4096)
    assert got == b"\x00\x00\x00\x14" + b"\x01" * 20 + b"\x00\x00\x00\x46" + b"\x02" * 70
    conn.sendall(b"\x00\x00\x00\x03abc\x00\x00\x00\x02d")
    assert wire.recv(0.5) == [b"abc"]
    conn.sendall(b"e")
    assert wire.recv(0.5) == [b"de"]
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        wire.send([b""])
    wire.close()
    conn.close()
    srv.close()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--burst", "0"], "pxfuzz: --burst must be at least 1\n"),
        (["--probe", "ping:zz"], "pxfuzz: --probe 'ping:zz': MAC 'zz': six bytes, like 02:00:00:00:00:01\n"),
        (["--probe", "ping:020000000001/zz"], "pxfuzz: --probe 'ping:020000000001/zz': DIME 'zz': a number 0..65535\n"),
        (["--probe", "heartbeat:zz"], "pxfuzz: --probe 'heartbeat:zz': MAC 'zz': six bytes, like 02:00:00:00:00:01\n"),
        (["--start", "3", "--end", "1"], "pxfuzz: --start 3 --end 1: the end comes before the start: no frame\n"),
        (["--start", "-1"], "pxfuzz: --start -1: must be at least 0 (a frame index)\n"),
    ],
)
def test_replay_refuses_bad_options_naming_them(args: list[str], says: str, tmp_path: Path, capsys) -> None:
    """``--burst 0`` said "range() arg 3 must not be zero", ``--probe ping:zz`` "non-hexadecimal number found in
    fromhex() arg", and ``--start 3 --end 1`` sent nothing and exited 0."""
    saved = tmp_path / "s.pcapng"
    assert pxfuzz(["gen", "-n", "5", "-o", str(saved)]) == 0
    capsys.readouterr()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        rc = pxfuzz(["replay", str(saved), "udp:{}:{}".format(*silent.getsockname()), *args])
    finally:
        silent.close()
    out, err = capsys.readouterr()
    assert (rc, out, err) == (2, "", says)


@pytest.mark.parametrize("cmd", ["replay", "gen"])
def test_a_damaged_capture_is_named_with_its_offset(cmd: str, tmp_path: Path, capsys) -> None:
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes((Path(__file__).resolve().parent.parent / "captures" / "all.pcapng").read_bytes()[:1000])
    argv = ["replay", str(cut), "udp:127.0.0.1:9"] if cmd == "replay" else ["gen", "--from-pcap", str(cut), "-n", "3"]
    rc = pxfuzz([*argv, *(["-o", str(tmp_path / "g.pcapng")] if cmd == "gen" else [])])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"pxfuzz: {cut}: pcapng.block at byte 980: "), err


def test_a_capture_damaged_part_way_is_replayed_up_to_the_damage(tmp_path: Path, capsys) -> None:
    """``replay`` sends a capture as it reads it: the frames before a damage go (each one datagram), the report
    says where the damage is, and the exit status is 2 with the damage named."""
    from pxproto.capture.pcapng import CaptureError
    from pxproto.fuzz.campaign import iter_cases

    whole = (Path(__file__).resolve().parent.parent / "captures" / "all.pcapng").read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(whole[: len(whole) // 2])
    before = []
    with pytest.raises(CaptureError):
        for s in iter_cases(cut):
            before.append(s.raw)
    assert len(before) > 10
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sink.bind(("127.0.0.1", 0))
    try:
        rc = pxfuzz(["replay", str(cut), "udp:{}:{}".format(*sink.getsockname()), "--burst", "7"])
        sink.settimeout(1.0)
        got = [sink.recv(70_000) for _ in before]
        sink.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sink.recv(70_000)
    finally:
        sink.close()
    out, err = capsys.readouterr()
    assert got == before
    assert rc == 2 and err.startswith(f"pxfuzz: {cut}: pcapng.block at byte "), err
    assert f"sent {len(before)} hostile" in out and "CAPTURE DAMAGED: pcapng.block at byte" in out
