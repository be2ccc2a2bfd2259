"""The bare-metal server on a pxswitch port: QEMU's dgram netdev is one UDP port of the switch (or its
stream netdev a stream port, or its tap device an AF_PACKET port, in a network namespace of the test's
own), this test is another, and discovery and a signed PING cross the switch both ways."""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pxproto.wire.codes import Command, DiscoveryOp, Status, TlvType
from pxproto.wire.frame import Discovery, Frame, Signaling, Tlv
from tests import test_baremetal_net as net
from tests.test_baremetal_net import KEY, KEY_ID, OUR_MAC, Guest, response_to

pytestmark = net.pytestmark


NETNS = f"switch-bm-{os.getpid() % 100000}"
TAP = "swbmtap0"
CLONE_NEWNET = 0x40000000


@contextmanager
def _in_netns(name: str) -> Iterator[None]:
    """This thread inside network namespace ``name`` (what it opens and starts there stays there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)
        os.close(there)


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SwitchedGuest(Guest):
    """A guest whose wire is a pxswitch: the switch's UDP port ``vm`` faces QEMU, ``test`` faces us."""

    def __init__(self, tmp: Path, append: str, wire: str = "dgram") -> None:
        """``wire``: QEMU's netdev, ``dgram`` (UDP to a switch UDP port), ``stream`` (a UNIX socket
        the switch listens on) or ``tap`` (QEMU's own tap device, with its default vnet_hdr, which the
        switch takes as an AF_PACKET port; QEMU, the switch and this test's socket live in :data:`NETNS`)."""
        self.netns = ""
        if wire == "tap":
            self.netns = NETNS
            subprocess.run(["ip", "netns", "add", NETNS], check=True)
            subprocess.run(["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"], check=True)
            with _in_netns(NETNS):
                self._start(tmp, append, wire)
        else:
            self._start(tmp, append, wire)

    def _start(self, tmp: Path, append: str, wire: str) -> None:
        self.switch_vm, self.switch_test = _port(), _port()
        env = {**os.environ, "PYTHONPATH": str(net.ROOT)}
        vm_sock = tmp / "vm.sock"
        if wire == "tap":
            netdev = f"tap,id=n0,ifname={TAP},script=no,downscript=no"
            super().__init__(smp=2, append=append, logdir=tmp, netdev=netdev)
            for _ in range(100):  # QEMU creates the device at start: the switch opens it
                if _has_link(TAP):
                    break
                time.sleep(0.1)
            subprocess.run(["ip", "link", "set", TAP, "up"], check=True)
            self.switch = self._switch(tmp, env, f"afpacket:interface={TAP}")
        elif wire == "stream":
            vm_port = f"stream:address={vm_sock},listen=true"
            self.switch = self._switch(tmp, env, vm_port)
            for _ in range(100):  # QEMU connects at start: the switch must be listening
                if vm_sock.exists():
                    break
                time.sleep(0.1)
            netdev = f"stream,id=n0,server=off,addr.type=unix,addr.path={vm_sock}"
            super().__init__(smp=2, append=append, logdir=tmp, netdev=netdev)
        else:
            super().__init__(smp=2, append=append, logdir=tmp, remote_port=self.switch_vm)
            vm_port = f"udp:local=127.0.0.1:{self.switch_vm},remote=127.0.0.1:{self.qemu_port}"
            self.switch = self._switch(tmp, env, vm_port)
        self.peer = ("127.0.0.1", self.switch_test)

    def _switch(self, tmp: Path, env: dict[str, str], vm_port: str) -> subprocess.Popen[bytes]:
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []  # its /sys too
        return subprocess.Popen(
            [*inside, sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp / "switch.sock"),
             "-p", vm_port, "-p", f"udp:local=127.0.0.1:{self.switch_test}"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "switch.err", "w"),
        )  # fmt: skip

    def close(self) -> None:
        self.switch.kill()
        self.switch.wait()
        super().close()
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], check=False)


def _has_link(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def _can_tap() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and os.path.exists("/dev/net/tun")


@pytest.fixture(params=["dgram", "stream", "tap"])
def switched(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchedGuest]:
    if request.param == "tap" and not _can_tap():
        pytest.skip("a tap port needs root, iproute2 and /dev/net/tun")
    net.build()
    g = SwitchedGuest(tmp_path_factory.mktemp("switched"), f"key={KEY_ID}:{KEY.hex()} hb=300", request.param)
    try:
        yield g
    finally:
        g.close()


def test_discovery_and_ping_through_pxswitch(switched: SwitchedGuest) -> None:
    switched.wait_serial("boot: 2 DIME(s) up")
    answer = None
    for attempt in range(20):  # the switch may still be starting: probe until it forwards
        switched.send(Frame(Discovery(DiscoveryOp.PROBE, 77 + attempt), src_mac=OUR_MAC))
        for frame, _ in switched.frames(2.0):
            if isinstance(frame.body, Discovery) and frame.body.op is DiscoveryOp.ANNOUNCE:
                answer = frame.body
                break
        if answer:
            break
        time.sleep(0.5)
    assert answer is not None and [d.dime for d in answer.dimes] == [0, 1]
    req = net.request(Command.PING, 1, 900, Tlv(TlvType.ECHO, b"via switch"))
    switched.send(req)
    frame, _ = switched.expect(response_to(900), timeout=30)
    assert isinstance(frame.body, Signaling) and frame.body.status is Status.OK
    assert frame.body.param(TlvType.ECHO) == b"via switch" and frame.src_dime == 1
