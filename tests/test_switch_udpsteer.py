"""A pxswitch process stopped (SIGSTOP) while a UDP port is saturated with data loses no control frame."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pxproto.switch.frames import heartbeat, mac, saturation

ROOT = str(Path(__file__).resolve().parents[1])


def _sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    return s


def _free_port() -> int:
    s = _sock()
    port: int = s.getsockname()[1]
    s.close()
    return port


def test_a_stopped_switch_loses_no_control_frame_of_a_saturated_udp_port(tmp_path: Path) -> None:
    p0, p1 = _sock(), _sock()
    s0, s1 = _free_port(), _free_port()
    args = [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp_path / "c.sock")]
    for name, local, peer in (("u0", s0, p0), ("u1", s1, p1)):
        args += ["--port", f"udp:name={name},local=127.0.0.1:{local},remote=127.0.0.1:{peer.getsockname()[1]}"]
    sw = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert sw.stderr is not None
        line = sw.stderr.readline()
        assert "running" in line, line
        p1.sendto(heartbeat(mac(2), dime=1), ("127.0.0.1", s1))  # mac 2 is behind u1
        p0.settimeout(5)
        assert p0.recv(2000)[12:14] == heartbeat(mac(2))[12:14]
        ctrl, n_data = set(), 0
        os.kill(sw.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            for i in range(60000):  # far past what the data socket's buffer (4 MiB) holds
                f, is_ctrl = saturation(i)
                if is_ctrl:
                    ctrl.add(f)
                else:
                    n_data += 1
                p0.sendto(f, ("127.0.0.1", s0))
            time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))
        finally:
            os.kill(sw.pid, signal.SIGCONT)
        got_ctrl, got_data = 0, 0
        p1.settimeout(1)
        try:
            while True:  # until the switch has forwarded all it kept
                f = p1.recv(2000)
                if f in ctrl:
                    got_ctrl += 1
                else:
                    got_data += 1
        except TimeoutError:
            pass
        assert got_ctrl == len(ctrl) == 6000
        assert got_data < n_data  # the data socket overflowed while the switch was stopped
    finally:
        sw.terminate()
        sw.wait(10)
        p0.close()
        p1.close()
