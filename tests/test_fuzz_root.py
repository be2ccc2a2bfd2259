"""pxfuzz on a real interface: AF_PACKET across a veth pair between two network namespaces.

A PING responder listens on one end; ``pxfuzz run afpacket:...`` fires
hostile frames from the other, probing between bursts.  While it answers,
pxfuzz exits 0; once it is gone, pxfuzz exits 1 and names the frames to blame.
Namespaces are created and deleted by the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.fuzz import load_cases
from tests._helpers import NETNS

pytestmark = NETNS
ROOT = str(Path(__file__).resolve().parents[1])
TAG = f"pxf{os.getpid() % 10000}"
SERVER = "02:00:00:00:00:01"

RESPONDER = r"""
import sys, time
sys.path.insert(0, sys.argv[3])
from pxproto.dime.endpoint import Address
from pxproto.dime.signaling import Responder
from pxproto.errors import ProtocolError
from pxproto.link import AfPacketWire
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import Command, Status
me = bytes.fromhex("020000000001")
resp = Responder(Address(me), {Command.PING: lambda r: (Status.OK, r.params)})
wire = AfPacketWire(sys.argv[1])
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for raw in wire.recv(0.1):
        try:
            f = decode(raw)
        except ProtocolError:
            continue
        if f.dst_mac == me:
            wire.send([encode(x) for x in resp.receive(f, time.monotonic()).frames])
"""


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, capture_output=True)


@pytest.fixture()
def veth() -> Iterator[tuple[str, str]]:
    a, b = f"{TAG}a", f"{TAG}b"
    try:
        for ns in (a, b):
            sh(f"ip netns add {ns}")
            sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        sh(f"ip link add fz0 netns {a} type veth peer name fz1 netns {b}")
        sh(f"ip netns exec {a} ip link set fz0 up")
        sh(f"ip netns exec {b} ip link set fz1 up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def pxfuzz(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "pxproto.fuzz.cli", *args]
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_pxfuzz_over_af_packet_keeps_a_live_responder_answering_and_names_a_dead_one(
    veth: tuple[str, str], tmp_path: Path
) -> None:
    a, b = veth
    responder = subprocess.Popen(
        ["ip", "netns", "exec", b, sys.executable, "-c", RESPONDER, "fz1", "60", ROOT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert responder.stdout is not None and responder.stdout.readline().strip() == "ready"
        save = tmp_path / "af.pcapng"
        p = pxfuzz(
            a, "run", "afpacket:fz0", "-n", "2000", "--burst", "200", "--probe", f"ping:{SERVER}", "-w", str(save)
        )
        assert p.returncode == 0, p.stdout + p.stderr
        assert "sent 2000 hostile" in p.stdout and "probes 10, failed 0" in p.stdout
        cases = load_cases(save)
        assert len(cases) == 2000 and all(14 <= len(c.raw) <= 1514 for c in cases)
    finally:
        responder.kill()
        responder.wait()
    p = pxfuzz(
        a, "run", "afpacket:fz0", "-n", "300", "--burst", "100", "--probe", f"ping:{SERVER}", "--probe-timeout", "0.2"
    )
    assert p.returncode == 1
    assert "TARGET STOPPED ANSWERING after frame #99; suspects #0..#99" in p.stdout
