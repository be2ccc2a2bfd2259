"""pxswitch refuses to start half-working: bad ports, taken UDP ports and live control sockets (issue 16, 3)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pxproto.switch.cli import main
from pxproto.switch.config import SwitchConfig, default_control, parse_port_arg
from pxproto.switch.core import SwitchPolicy
from pxproto.switch.daemon import Daemon, StartError

ROOT = str(Path(__file__).resolve().parents[1])


def _run(tmp_path: Path, *ports: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp_path / "c.sock")]
    for p in ports:
        args += ["--port", p]
    return subprocess.run(args, capture_output=True, text=True, timeout=30, env={"PYTHONPATH": ROOT})


@pytest.mark.parametrize(
    ("port", "reason"),
    [
        ("udp:local=127.0.0.1", "expected HOST:PORT"),
        ("udp:local=127.0.0.1:99999", "out of range"),
        ("afpacket:interface=pxs16-nosuch", "no interface 'pxs16-nosuch'"),
        ("afpacket:interface=lo,ring=7", "ring 7"),
        ("stream:address=/nonexistent/pxs16.sock", "no such file or directory"),
    ],
)
def test_a_bad_port_stops_the_switch_with_one_line(tmp_path: Path, port: str, reason: str) -> None:
    """Regression: each of these printed 'cannot open' and ran on with 0 ports, exit status 0."""
    r = _run(tmp_path, "udp:name=good,local=127.0.0.1:0", port)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pxswitch: port ") and reason in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "c.sock").exists()  # nothing left behind


def test_a_udp_port_another_process_holds_is_refused(tmp_path: Path) -> None:
    """Regression: a second switch bound the same address with SO_REUSEADDR and took the traffic."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # even a holder that allows reuse
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        r = _run(tmp_path, f"udp:name=u,local=127.0.0.1:{port}")
        assert r.returncode == 1 and "address already in use" in r.stderr.lower(), r.stderr
    finally:
        holder.close()


def _cfg(tmp_path: Path, control: Path) -> SwitchConfig:
    spec = parse_port_arg("udp:name=u,local=127.0.0.1:0", 0)
    return SwitchConfig(SwitchPolicy(), [spec], control=str(control))


def test_a_live_control_socket_is_refused_and_a_stale_one_replaced(tmp_path: Path) -> None:
    """Regression: two switches shared /tmp/pxswitch.sock and the newer one took it over silently."""
    ctl = tmp_path / "c.sock"
    first = Daemon(_cfg(tmp_path, ctl))
    try:
        with pytest.raises(StartError, match="in use by another live process"):
            Daemon(_cfg(tmp_path, ctl))
        assert ctl.exists()  # the first switch keeps its socket
    finally:
        first.close()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(ctl))  # bound, never listening, then closed: what a killed switch leaves
    stale.close()
    second = Daemon(_cfg(tmp_path, ctl))
    second.close()
    ctl.write_text("not a socket")
    with pytest.raises(StartError, match="not a socket"):
        Daemon(_cfg(tmp_path, ctl))


def test_a_live_stream_listener_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vm.sock"
    spec = parse_port_arg(f"stream:name=vm,address={path},listen=true", 0)
    a = Daemon(SwitchConfig(SwitchPolicy(), [spec], control=str(tmp_path / "a.sock")))
    try:
        with pytest.raises(StartError, match=r"port vm .*in use"):
            Daemon(SwitchConfig(SwitchPolicy(), [spec], control=str(tmp_path / "b.sock")))
    finally:
        a.close()


def test_default_control_socket_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_control() == str(tmp_path / "pxswitch.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    import os

    assert default_control() == f"/tmp/pxswitch-{os.geteuid()}.sock"


def test_help_documents_every_port_type_and_key(capsys: pytest.CaptureFixture[str]) -> None:
    from pxproto.switch.config import PORT_OPTIONS

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for kind, options in PORT_OPTIONS.items():
        assert f"{kind}:" in text
        for key in options:
            assert key in text, (kind, key)
    assert "-netdev dgram" in text and "-netdev stream" in text and "other" in text


def test_help_states_the_mtu_the_virtual_ports_take(capsys: pytest.CaptureFixture[str]) -> None:
    """The help's default MTU for udp and stream ports is the one those port classes take."""
    from pxproto.switch.sockports import StreamPort, UdpPort

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert UdpPort.mtu == StreamPort.mtu
    assert f"default {UdpPort.mtu} on udp and stream ports" in text


def test_a_second_switch_on_the_same_udp_address_is_refused(tmp_path: Path) -> None:
    """A UDP port with a remote binds two sockets with SO_REUSEPORT (control steered to its own): a second
    pxswitch on that address is still refused with one line, and a same-user socket that joins the group with
    SO_REUSEPORT gets nothing (the steering program picks only the port's two sockets)."""
    from pxproto.switch.frames import data, heartbeat, mac
    from pxproto.switch.sockports import UdpPort

    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    remote = f"127.0.0.1:{peer.getsockname()[1]}"
    first = UdpPort("u", "127.0.0.1:0", remote)
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        host, port = first.address
        r = _run(tmp_path, f"udp:name=u,local={host}:{port},remote={remote}")
        assert r.returncode == 1 and "address already in use" in r.stderr.lower(), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        intruder.bind((host, port))
        intruder.setblocking(False)
        frames = [heartbeat(mac(1), seq=i) if i % 2 else data(mac(2), mac(1), seq=i) for i in range(40)]
        for f in frames:
            peer.sendto(f, (host, port))
        got: list[bytes] = []
        for _ in range(100):
            got += first.recv_batch()
            if len(got) == len(frames):
                break
            time.sleep(0.01)
        assert sorted(got) == sorted(frames)
        with pytest.raises(BlockingIOError):
            intruder.recv(2000)
    finally:
        first.close()
        intruder.close()
        peer.close()


def test_the_steering_lock_refuses_a_second_holder() -> None:
    from pxproto.switch import udpsteer

    fd = udpsteer.lock_address("127.0.0.1", 1)
    try:
        with pytest.raises(OSError, match="another pxswitch"):
            udpsteer.lock_address("127.0.0.1", 1)
    finally:
        udpsteer.unlock_address("127.0.0.1", 1, fd)
    assert not os.path.exists(udpsteer.lock_path("127.0.0.1", 1))
    udpsteer.unlock_address("127.0.0.1", 1, udpsteer.lock_address("127.0.0.1", 1))  # free again
