"""pxdump live capture on a veth pair between two network namespaces the test creates.

Needs root (CI runs as root); elsewhere it is skipped with the reason.  The
peer namespace sends frames with an AF_PACKET socket; pxdump's filter is
compiled to BPF, and the kernel's own count of frames that passed it shows
the kernel, not pxdump, dropped the others.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.capture.pcapng import read_packets
from pxproto.wire import encode
from pxproto.wire.codes import Command, DimeState, Scope
from pxproto.wire.frame import Frame, Heartbeat, Signaling

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
    a, b = f"pxda{tag}", f"pxdb{tag}"
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


SENDER = """
import socket, sys
raws = [bytes.fromhex(x) for x in sys.stdin.read().split()]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("vb", 0))
for r in raws:
    s.send(r)
"""


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
    subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SENDER],
        input=" ".join(r.hex() for r in raws).encode(),
        check=True,
        timeout=30,
    )


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
