"""pxkernel over veth with AF_PACKET, the server in one network namespace and the client in another (root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.dime.endpoint import Address
from pxproto.dime.signaling import ResponseReceived
from pxproto.link import PacketPort
from pxproto.node.client import Client
from pxproto.node.testbed import ENV
from pxproto.wire.codes import Command, Status, TlvType
from pxproto.wire.frame import Tlv

pytestmark = pytest.mark.root


def _setns(fd: int) -> None:
    """Enter a network namespace (os.setns arrived in Python 3.12)."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def veth_pair() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    tag = uuid.uuid4().hex[:6]
    ns_a, ns_b = f"pxka{tag}", f"pxkb{tag}"
    try:
        _ip("netns", "add", ns_a)
        _ip("netns", "add", ns_b)
        _ip("link", "add", f"va{tag}", "netns", ns_a, "type", "veth", "peer", "name", f"vb{tag}", "netns", ns_b)
        _ip("-n", ns_a, "link", "set", f"va{tag}", "up")
        _ip("-n", ns_b, "link", "set", f"vb{tag}", "up")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make namespaces: {exc.stderr!r}")
    try:
        yield ns_a, ns_b
    finally:
        subprocess.run(["ip", "netns", "del", ns_a], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns_b], capture_output=True)


def test_probe_and_ping_over_veth(veth_pair: tuple[str, str], tmp_path: Path) -> None:
    ns_a, ns_b = veth_pair
    tag = ns_a[4:]
    cmd = ["ip", "netns", "exec", ns_a, sys.executable, "-m", "pxproto.node.cli", "--iface", f"va{tag}", "--dimes", "2"]
    cmd += ["--insecure"]
    cmd += ["--state-dir", str(tmp_path / "state")]
    log = tmp_path / "kernel.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, env=ENV, stdout=f, stderr=subprocess.STDOUT)
    netns_fd = os.open(f"/run/netns/{ns_b}", os.O_RDONLY)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        _setns(netns_fd)
        wire = PacketPort(f"vb{tag}")
        _setns(own)
        client = Client(wire)
        found: list[bytes] = []
        end = time.monotonic() + 20
        while not found and time.monotonic() < end:
            found = [mac for mac, ann in client.probe(0.3) if len(ann.dimes) == 2 and all(d.epoch for d in ann.dimes)]
        assert found, log.read_text()
        r = client.request(Address(found[0], 1), Command.PING, [Tlv(TlvType.ECHO, b"veth")])
        assert isinstance(r, ResponseReceived) and r.status is Status.OK and r.param(TlvType.ECHO) == b"veth"
        wire.close()
    finally:
        _setns(own)
        os.close(netns_fd)
        os.close(own)
        proc.terminate()
        proc.wait(timeout=10)
    assert "returned to the system" in log.read_text()
