"""The bare-metal server on a pxswitch port: QEMU's dgram netdev is one UDP port of the switch,
this test is another, and discovery and a signed PING cross the switch both ways."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.wire.codes import Command, DiscoveryOp, Status, TlvType
from pxproto.wire.frame import Discovery, Frame, Signaling, Tlv
from tests import test_baremetal_net as net
from tests.test_baremetal_net import KEY, KEY_ID, OUR_MAC, Guest, response_to

pytestmark = net.pytestmark


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SwitchedGuest(Guest):
    """A guest whose wire is a pxswitch: the switch's UDP port ``vm`` faces QEMU, ``test`` faces us."""

    def __init__(self, tmp: Path, append: str, wire: str = "dgram") -> None:
        """``wire``: QEMU's netdev, ``dgram`` (UDP to a switch UDP port) or ``stream`` (a UNIX socket
        the switch listens on)."""
        self.switch_vm, self.switch_test = _port(), _port()
        env = {**os.environ, "PYTHONPATH": str(net.ROOT)}
        vm_sock = tmp / "vm.sock"
        if wire == "stream":
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
        return subprocess.Popen(
            [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp / "switch.sock"),
             "-p", vm_port, "-p", f"udp:local=127.0.0.1:{self.switch_test}"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "switch.err", "w"),
        )  # fmt: skip

    def close(self) -> None:
        self.switch.kill()
        self.switch.wait()
        super().close()


@pytest.fixture(params=["dgram", "stream"])
def switched(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchedGuest]:
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
