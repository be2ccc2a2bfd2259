"""SIGHUP reload of a running `pxswitch run -c FILE` on loopback UDP ports: a bad file, or a port that cannot open,
refuses the reload as a whole (one line) and the switch forwards on its old ports (audit D8)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pxproto.switch.control import query
from pxproto.switch.frames import data, mac

ROOT = str(Path(__file__).resolve().parents[1])


def free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    proc: subprocess.Popen[bytes]
    conf: Path
    log: Path
    control: str
    peers: list[socket.socket]
    switch: list[tuple[str, int]]

    def config(self, extra: str = "", mtu_a: int | None = None) -> str:
        text = f'[switch]\ncontrol = "{self.control}"\n'
        for name, peer, (host, port) in zip("ab", self.peers, self.switch, strict=True):
            text += f'\n[[port]]\nname = "{name}"\ntype = "udp"\nlocal = "{host}:{port}"\n'
            text += 'remote = "{}:{}"\n'.format(*peer.getsockname())
            if name == "a" and mtu_a is not None:
                text += f"mtu = {mtu_a}\n"
        return text + extra

    def reload(self, text: str, says: str) -> list[str]:
        """Write ``text`` over the file, SIGHUP, wait for a log line with ``says``; the lines the reload logged."""
        before = len(self.log.read_text().splitlines())
        self.conf.write_text(text)
        self.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while says not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < end, self.log.read_text()
            time.sleep(0.05)
        time.sleep(0.2)  # (a line more would come now)
        return self.log.read_text().splitlines()[before:]

    def stats(self) -> Any:
        return query(self.control, "stats")

    def forwards(self) -> bool:
        """A frame from each peer reaches the other through the switch."""
        for src, dst, sw in ((0, 1, self.switch[0]), (1, 0, self.switch[1])):
            frame = data(mac(src + 1), mac(dst + 1), size=100 + src)
            self.peers[src].sendto(frame, sw)
            self.peers[dst].settimeout(3)
            try:
                while self.peers[dst].recv(70000) != frame:
                    pass
            except TimeoutError:
                return False
        return True


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for p in peers:
        p.bind(("127.0.0.1", 0))
    sw = Live(
        None,  # type: ignore[arg-type]
        tmp_path / "sw.toml",
        tmp_path / "log",
        str(tmp_path / "c.sock"),
        peers,
        [("127.0.0.1", free_udp()), ("127.0.0.1", free_udp())],
    )
    sw.conf.write_text(sw.config())
    with sw.log.open("wb") as log:
        sw.proc = subprocess.Popen(
            [sys.executable, "-m", "pxproto.switch.cli", "run", "-c", str(sw.conf)],
            stderr=log,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
    try:
        end = time.monotonic() + 10
        while True:
            assert sw.proc.poll() is None and time.monotonic() < end, sw.log.read_text()
            try:
                sw.stats()
                break
            except OSError:
                time.sleep(0.05)
        assert sw.forwards()
        yield sw
    finally:
        sw.proc.terminate()
        assert sw.proc.wait(10) == 0, sw.log.read_text()
        for p in peers:
            p.close()
    assert "Traceback" not in sw.log.read_text()


def _held_port(holder: socket.socket) -> str:
    """A port c on an address ``holder`` holds."""
    holder.bind(("127.0.0.1", 0))
    return f'\n[[port]]\nname = "c"\ntype = "udp"\nlocal = "127.0.0.1:{holder.getsockname()[1]}"\n'


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("ints", "port[0]: must be a table ([[port]]), not 1"),  # the switch died of an AttributeError
        ("mtu5", "port[0].mtu: mtu 5: 68..65517"),  # port a closed, its new self failed: 0 ports
        ("held", "port c (udp): cannot open: address already in use"),  # a new port that cannot open
        ("changed+held", "port c (udp): cannot open: address already in use"),  # a is closed, then opened again
    ],
)
def test_a_bad_reload_is_refused_and_the_old_ports_forward(live: Live, case: str, says: str) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if case == "ints":
            text = "port = [1, 2]\n"
        elif case == "mtu5":
            text = live.config(mtu_a=5)
        else:
            text = live.config(_held_port(holder), mtu_a=1400 if case == "changed+held" else None)
        lines = live.reload(text, "reload refused")
    finally:
        holder.close()
    assert len(lines) == 1 and says in lines[0], lines
    assert live.proc.poll() is None
    ports = live.stats()["ports"]
    assert set(ports) == {"a", "b"} and all(p["up"] for p in ports.values()), ports
    assert ports["a"]["mtu"] == ports["b"]["mtu"] == 65000  # a's as it was
    assert live.forwards()
    # the next good file is taken: the refused one left nothing half done
    lines = live.reload(live.config(mtu_a=1400), "reloaded")
    assert lines[-1].startswith(f"pxswitch: reloaded {live.conf}: 2 ports"), lines
    assert live.stats()["ports"]["a"]["mtu"] == 1400
    assert live.forwards()


def test_a_reload_that_adds_and_removes_ports_still_works(live: Live) -> None:
    text = live.config().replace('name = "b"', 'name = "b2"')  # b closes; b2 takes its address
    lines = live.reload(text, "reloaded")
    assert any("port b closed by reload" in line for line in lines), lines
    assert set(live.stats()["ports"]) == {"a", "b2"}
    assert live.forwards()
