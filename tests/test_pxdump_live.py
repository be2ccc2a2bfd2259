"""pxdump live capture on a veth pair between two network namespaces the test creates.

Needs root (CI runs as root); elsewhere it is skipped with the reason.  The
peer namespace sends frames with an AF_PACKET socket; pxdump's filter is
compiled to BPF, and the kernel's own count of frames that passed it shows
the kernel, not pxdump, dropped the others.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.capture.pcapng import read_packets
from pxproto.wire import encode
from pxproto.wire.codes import Command, DimeState, Scope
from pxproto.wire.frame import Data, Frame, Heartbeat, Signaling
from pxproto.wire.record import send_in_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root and network namespaces"),
]

ROOT = Path(__file__).resolve().parent.parent


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    tag = f"{os.getpid() % 100000}"
    a, b = f"pxd13-a{tag}", f"pxd13-b{tag}"
    sh("ip", "netns", "add", a)
    try:
        sh("ip", "netns", "add", b)
        try:
            sh("ip", "link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b)
            for ns, dev in ((a, "va"), (b, "vb")):
                subprocess.run(
                    ["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"],
                    capture_output=True,
                )
                sh("ip", "-n", ns, "link", "set", dev, "up")
            yield a, b
        finally:
            subprocess.run(["ip", "netns", "del", b], capture_output=True)
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True)


def hb(dime: int, epoch: int) -> bytes:
    return encode(
        Frame(Heartbeat(epoch, DimeState.BUSY, 100, 250), src_dime=dime, src_mac=bytes.fromhex("020000000003"))
    )


def ping(req_id: int) -> bytes:
    return encode(Frame(Signaling(Command.PING, req_id=req_id), Scope.DIME, 0xFFFF, 0, 3, 1, req_id))


def start_pxdump(ns: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "pxproto.dump.cli", "-i", "va", "-l", "-tt", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert "listening on va" in line, line + proc.stderr.read().decode()
    time.sleep(0.2)
    return proc


def send(ns: str, raws: list[bytes]) -> None:
    send_in_netns(ns, "vb", raws, timeout=30)


def test_live_capture_kernel_filter(veth: tuple[str, str], tmp_path: Path) -> None:
    a, b = veth
    out = tmp_path / "live.pcapng"
    proc = start_pxdump(a, "-c", "3", "-w", str(out), "--print", "heartbeat", "and", "dime", "3")
    others = [hb(4, e) for e in range(3)] + [ping(7 + i) for i in range(3)]
    wanted = [hb(3, e) for e in range(3)]
    send(b, others + wanted)
    stdout, stderr = proc.communicate(timeout=30)
    lines = stdout.decode().splitlines()
    assert proc.returncode == 0, stderr.decode()
    assert len(lines) == 3 and all(" HB 3.0 > *.0 epoch " in x for x in lines), lines
    err = stderr.decode()
    assert "3 frames captured" in err
    # libpcap's count of frames that passed the kernel filter: the 6 others never reached pxdump.
    received = int(err.split(" frames received by filter")[0].split()[-1])
    assert received == 3, err
    assert "frames dropped by kernel" in err
    assert [p.data for p in read_packets(open(out, "rb"))] == wanted


def test_live_raw_bpf_and_malformed(veth: tuple[str, str]) -> None:
    a, b = veth
    proc = start_pxdump(a, "-c", "2", "-F", "ether proto 0xabba")
    broken = bytearray(ping(1))
    broken[14] = 9  # version
    send(b, [hb(3, 1), bytes(broken), ping(2)])
    stdout, stderr = proc.communicate(timeout=30)
    lines = stdout.decode().splitlines()
    assert proc.returncode == 0, stderr.decode()
    assert "[malformed: version at byte 14: version 9" in lines[0]
    assert " SIG *.0 > 3.1 PING request id 2 " in lines[1]


def test_live_unknown_interface_is_one_line(veth: tuple[str, str]) -> None:
    a, _ = veth
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        ["ip", "netns", "exec", a, sys.executable, "-m", "pxproto.dump.cli", "-i", "nosuch0"],
        capture_output=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 1
    assert len(r.stderr.decode().splitlines()) == 1 and "nosuch0" in r.stderr.decode()


def data(seq: int) -> bytes:
    """A 60-byte DATA frame, dime-scoped, from 3.1 to 4.1."""
    return encode(
        Frame(
            Data(1, seq, b"!", 1),
            Scope.DIME,
            3,
            1,
            4,
            1,
            seq,
            bytes.fromhex("020000000004"),
            bytes.fromhex("020000000003"),
        )
    )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> tuple[str, str, float]:
    """Signal pxdump; its stdout, stderr and the seconds it took to exit."""
    time.sleep(0.3)
    t = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    return stdout.decode(), stderr.decode(), time.monotonic() - t


def counts(err: str) -> tuple[int, int, int]:
    """(captured, received by filter, dropped by kernel) from pxdump's closing lines."""
    got = {}
    for line in err.splitlines():
        for key in ("frames captured", "frames received by filter", "frames dropped by kernel"):
            if line.endswith(key):
                got[key] = int(line.split()[0])
    assert len(got) == 3, err
    return got["frames captured"], got["frames received by filter"], got["frames dropped by kernel"]


def flood(ns: str, frame: bytes, n: int, rate: int) -> None:
    """``n`` copies of ``frame`` at ``rate`` frames/s with trafgen."""
    cfg = "{ " + ", ".join(f"0x{x:02x}" for x in frame) + " }"
    cmd = ["ip", "netns", "exec", ns, "trafgen", "-o", "vb", "-n", str(n), "-P", "1", "-C", "-Q"]
    subprocess.run([*cmd, "-b", f"{rate}pps", cfg], check=True, capture_output=True, timeout=120)


needs_trafgen = pytest.mark.skipif(shutil.which("trafgen") is None, reason="needs trafgen (netsniff-ng)")


@needs_trafgen
@pytest.mark.parametrize("mode", [["-q"], [], ["-w", "/dev/null"]], ids=["stats", "one-line", "write"])
def test_live_counts_every_frame_at_a_moderate_rate(veth: tuple[str, str], mode: list[str]) -> None:
    a, b = veth
    n = 20_000
    proc = start_pxdump(a, *mode)
    flood(b, data(1), n, 20_000)
    out, err, _ = stop(proc)
    assert proc.returncode == 0, err
    assert counts(err) == (n, n, 0)
    if mode == ["-q"]:
        assert out.startswith(f"{n} frames, {n * 60} bytes")
        assert f"  DATA{n:>32}" in out
    elif not mode:
        lines = out.splitlines()
        assert len(lines) == n and all(" DATA 3.1 > 4.1 " in x for x in lines[:: n // 10]), lines[:3]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("mode", [["-q"], [], ["-w", "/dev/null"]], ids=["stats", "one-line", "write"])
def test_signal_on_an_idle_interface_stops_at_once(veth: tuple[str, str], sig: int, mode: list[str]) -> None:
    a, _ = veth
    proc = start_pxdump(a, *mode)
    time.sleep(0.5)
    _, err, took = stop(proc, sig)
    assert proc.returncode == 0, err
    assert took < 1.0, took
    assert counts(err) == (0, 0, 0)


def test_live_write_only_count_keeps_frames_untouched(veth: tuple[str, str], tmp_path: Path) -> None:
    """-w with nothing printed writes without decoding, and -c cuts the batch at N."""
    a, b = veth
    out = tmp_path / "w.pcapng"
    proc = start_pxdump(a, "-c", "5", "-w", str(out))
    sent = [data(i) for i in range(10)]
    send(b, sent)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()
    assert counts(stderr.decode())[0] == 5
    got = list(read_packets(open(out, "rb")))
    assert [p.data for p in got] == sent[:5]
    assert all(p.orig_len == 60 and p.ts_ns > 1_600_000_000 * 10**9 for p in got)


def test_live_filter_applies_to_written_frames(veth: tuple[str, str], tmp_path: Path) -> None:
    a, b = veth
    out = tmp_path / "f.pcapng"
    proc = start_pxdump(a, "-w", str(out), "scope", "dime")
    sent = [hb(3, 1), data(1), ping(2), hb(4, 2), data(2)]
    send(b, sent)
    _, err, _ = stop(proc)
    assert proc.returncode == 0, err
    assert [p.data for p in read_packets(open(out, "rb"))] == [data(1), ping(2), data(2)]


def test_live_snaplen_truncates_but_keeps_the_wire_length(veth: tuple[str, str], tmp_path: Path) -> None:
    a, b = veth
    out = tmp_path / "s.pcapng"
    proc = start_pxdump(a, "-s", "20", "-w", str(out))
    send(b, [data(1)])
    _, err, _ = stop(proc)
    assert proc.returncode == 0, err
    (p,) = read_packets(open(out, "rb"))
    assert p.data == data(1)[:20] and p.orig_len == 60


@needs_trafgen
def test_live_write_rotates_by_size(veth: tuple[str, str], tmp_path: Path) -> None:
    """-C 1: a new file after each 10^6 bytes, named as tcpdump names them; no frame lost or doubled."""
    a, b = veth
    out = tmp_path / "r.pcapng"
    n = 30_000  # 92 bytes a record: about 2.8 MB
    proc = start_pxdump(a, "-C", "1", "-w", str(out))
    flood(b, data(5), n, 50_000)
    _, err, _ = stop(proc)
    assert proc.returncode == 0, err
    files = [out, *(tmp_path / f"r.pcapng{i}" for i in range(1, 3))]
    assert sorted(tmp_path.iterdir()) == sorted(files)
    total = 0
    for f in files:
        packets = list(read_packets(open(f, "rb")))
        assert all(p.data == data(5) for p in packets)
        total += len(packets)
    assert total == n
    assert all(1_000_000 <= f.stat().st_size < 1_000_000 + 92 for f in files[:-1])
