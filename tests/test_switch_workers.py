"""pxswitch with worker threads (``--workers``): AF_PACKET data spread over PACKET_FANOUT sockets.

(Forwarding, learning and a vanishing port with workers: test_switch_root.test_veth_forwarding_and_vanished_port.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pxproto.switch.frames import data, mac
from tests._helpers import NETNS
from tests.test_switch_root import Net, net, query, send, start_switch

pytestmark = NETNS
__all__ = ["net"]  # the fixture, imported

COUNT = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 3))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.settimeout(0.2)
print("ready", flush=True)
n, end, last = 0, time.monotonic() + float(sys.argv[2]), time.monotonic()
while time.monotonic() < end and (n == 0 or time.monotonic() - last < 2):
    try:
        if s.recv(65535)[0:6] == bytes.fromhex(sys.argv[3]):
            n += 1
            last = time.monotonic()
    except socket.timeout:
        pass
print(n, flush=True)
"""


def test_a_backlog_spills_over_to_the_workers(net: Net, tmp_path: Path) -> None:
    """With the switch stopped, the main loop's ring fills past three quarters and the kernel rolls the rest
    over to the workers' sockets; once it runs again every frame arrives, some through a worker."""
    sw, h1, h2 = net.add("sw"), net.add("h1"), net.add("h2")
    net.veth(h1, "eth0", sw, "s0")
    net.veth(h2, "eth0", sw, "s1")
    proc = start_switch(sw, tmp_path, "afpacket:interface=s0,name=s0", "afpacket:interface=s1,name=s1",
                        extra=("--workers", "2"))  # fmt: skip
    n = 3000  # the main ring holds 2048 frames, each lane as many: more than 3/4 of one, less than both
    try:
        send(h2, "eth0", data(mac(1), mac(2)))  # the switch learns mac 2 behind s1
        time.sleep(0.5)
        counter = subprocess.Popen(
            ["ip", "netns", "exec", h2, sys.executable, "-c", COUNT, "eth0", "60", mac(2).hex()],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert counter.stdout is not None and counter.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            send(h1, "eth0", *[data(mac(2), mac(1), seq=i) for i in range(n)])
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        got = int(counter.communicate(timeout=90)[0].split()[-1])
        st = query(tmp_path, "stats")
        assert got == n, st
        assert 0 < st["switch"]["worker_rx"] < n, st["switch"]  # type: ignore[index]
        assert st["ports"]["s0"]["kernel_drops"] == 0  # type: ignore[index]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
