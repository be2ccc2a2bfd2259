"""Frames for a DIME go from the UDP wire straight to its own socket (pxproto.node.steer), the rest to the server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pxproto.dime.endpoint import Address, frame_to
from pxproto.dime.signaling import ResponseReceived
from pxproto.fastpath import select
from pxproto.link import PacketPort, Port, UdpPort
from pxproto.node import steer
from pxproto.node.testbed import Cluster
from pxproto.package import LocalStore
from pxproto.wire import ethertypes, spec
from pxproto.wire.codec import encode
from pxproto.wire.codes import DIME_ALL, Command, CounterId, FrameClass, HeaderFlag, ServerCounterId, Status, TlvType
from pxproto.wire.frame import Signaling, Tlv
from tests._helpers import manifest, packaged_cluster, start

MAC = bytes.fromhex("02aabbccdd01")
OTHER = bytes.fromhex("02aabbccdd02")
SRC = bytes.fromhex("02aabbccdd99")


def raw_frame(dst: bytes, cls: FrameClass, flags: int, dst_dime: int, body: bytes = b"x" * 40) -> bytes:
    """A frame whose header has the fields the program reads (the rest as the codec lays it out)."""
    head = struct.pack("!BBHHHHHQ", 1, flags, len(body), 7, 0, dst_dime, 0, 1)
    assert len(head) == spec.BODY_OFFSET - spec.HEADER_OFFSET
    return dst + SRC + ethertypes.current().of(cls).to_bytes(2, "big") + head + body


@pytest.fixture
def steered() -> Iterator[tuple[socket.socket, UdpPort, list[socket.socket]]]:
    switch = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    switch.bind(("127.0.0.1", 0))
    switch.settimeout(2.0)
    port = UdpPort("127.0.0.1", switch.getsockname()[1])
    socks = steer.open_group(port, MAC, 3)
    yield switch, port, socks
    for s in socks:
        s.close()
    port.close()
    switch.close()


def where(send: Callable[[bytes], object], group: list[socket.socket], frame: bytes) -> int | None:
    """Which socket of ``group`` a frame ``send`` puts on the wire lands on (its index), None when none does
    within a second (other traffic a socket meets meanwhile is passed over)."""
    send(frame)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        for i, s in enumerate(group):
            with contextlib.suppress(BlockingIOError):
                while True:
                    if s.recv(70000) == frame:
                        return i
        time.sleep(0.002)
    return None


def to_port(switch: socket.socket, port: UdpPort) -> Callable[[bytes], object]:
    return lambda frame: switch.sendto(frame, port.sock.getsockname())


def cases(mac: bytes) -> list[tuple[bytes, int]]:
    """(frame, where it must land: 0 the server's socket, 1 + k DIME k's) for a server of 3 DIMEs at ``mac``."""
    dime = int(HeaderFlag.SCOPE_DIME)
    out = []
    for k in range(3):
        out.append((raw_frame(mac, FrameClass.DATA, dime, k), 1 + k))
        out.append((raw_frame(mac, FrameClass.SIGNALING, dime, k), 1 + k))
    sealed = dime | HeaderFlag.AUTH | HeaderFlag.ENCRYPTED  # the AEAD mode: the header is in clear
    out.append((raw_frame(mac, FrameClass.DATA, int(sealed), 2), 3))
    out.append((encode(frame_to(Address(SRC, 1, 0), Address(mac, 1, 0), Signaling(Command.PING))), 2))
    server = [
        raw_frame(mac, FrameClass.DATA, dime, 3),  # a DIME this server does not have
        raw_frame(mac, FrameClass.DATA, dime, 0xFFFF),
        raw_frame(mac, FrameClass.SIGNALING, 0, DIME_ALL),  # system scope
        raw_frame(mac, FrameClass.SIGNALING, 0, 1),  # no SCOPE_DIME flag
        raw_frame(mac, FrameClass.HEARTBEAT, dime, 1),
        raw_frame(mac, FrameClass.DISCOVERY, dime, 1),
        raw_frame(OTHER, FrameClass.DATA, dime, 1),
        raw_frame(b"\xff" * 6, FrameClass.DATA, dime, 1),  # broadcast: the server relays it by id
        raw_frame(mac[:4] + OTHER[4:], FrameClass.DATA, dime, 1),
        raw_frame(mac, FrameClass.DATA, dime, 1)[: spec.BODY_OFFSET - 1],  # short
        mac + SRC + b"\x08\x00" + bytes(40),  # IPv4
    ]
    return out + [(f, 0) for f in server]


def test_the_kernel_steers_each_dime_its_frames_and_the_server_the_rest(
    steered: tuple[socket.socket, UdpPort, list[socket.socket]],
) -> None:
    switch, port, socks = steered
    assert len(socks) == 3, "SO_REUSEPORT with a reuseport program: expected on Linux"
    for frame, index in cases(MAC):
        assert where(to_port(switch, port), [port.sock, *socks], frame) == index, frame.hex()


def test_the_port_sends_from_its_address_and_takes_only_the_switch(
    steered: tuple[socket.socket, UdpPort, list[socket.socket]],
) -> None:
    switch, port, socks = steered
    port.send(b"hello")
    got, addr = switch.recvfrom(100)
    assert got == b"hello" and addr == port.sock.getsockname()
    assert all(s.getsockname() == addr for s in socks)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stranger.sendto(raw_frame(MAC, FrameClass.DATA, int(HeaderFlag.SCOPE_DIME), 1), addr)
        time.sleep(0.05)
        for s in [port.sock, *socks]:
            with pytest.raises(BlockingIOError):
                s.recv(100)
    finally:
        stranger.close()


def test_a_full_dime_socket_counts_its_drops(steered: tuple[socket.socket, UdpPort, list[socket.socket]]) -> None:
    switch, port, socks = steered
    socks[1].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel's least: a few frames
    assert steer.dropped(socks[1]) == 0
    frame = raw_frame(MAC, FrameClass.DATA, int(HeaderFlag.SCOPE_DIME), 1, bytes(1000))
    for _ in range(200):
        switch.sendto(frame, port.sock.getsockname())
    time.sleep(0.05)
    lost = steer.dropped(socks[1])
    kept = 0
    with contextlib.suppress(BlockingIOError):
        while socks[1].recv(2000):
            kept += 1
    assert lost > 0 and kept + lost == 200, (kept, lost)
    assert steer.dropped(socks[0]) == 0


def test_no_steering_where_the_wire_cannot_have_it() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert steer.open_group(Port(a, "stream:test"), MAC, 2) == []
    finally:
        a.close()
        b.close()
    with pytest.raises(ValueError, match=r"1\.\.255 DIMEs, not 0"):
        steer.steer_program(MAC, 0)
    with pytest.raises(ValueError, match="a MAC is 6 bytes, not 5"):
        steer.steer_program(MAC[:5], 2)


def test_without_a_program_or_a_group_the_port_still_carries_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    from pxproto.switch import udpsteer

    switch = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    switch.bind(("127.0.0.1", 0))
    switch.settimeout(2.0)
    frame = raw_frame(MAC, FrameClass.DATA, int(HeaderFlag.SCOPE_DIME), 1)
    try:
        for broken in ("attach", "sender_program"):  # no reuseport program; no group at all

            def refuse(*args: object) -> bytes:
                raise OSError(92, "protocol not available")

            with monkeypatch.context() as m:
                m.setattr(udpsteer, broken, refuse)
                port = UdpPort("127.0.0.1", switch.getsockname()[1])
                assert steer.open_group(port, MAC, 2) == []
            try:
                port.send(b"out")
                got, addr = switch.recvfrom(100)
                assert got == b"out" and addr == port.sock.getsockname()
                assert where(to_port(switch, port), [port.sock], frame) == 0  # the relay's to carry
            finally:
                port.close()
    finally:
        switch.close()


def fanout_check(port_if: str, peer_if: str) -> None:
    """Run inside a namespace where ``port_if`` and ``peer_if`` are the two ends of a veth: the AF_PACKET group
    steers as the UDP one does, and what a DIME sends on its socket does not come back to the group."""
    port = PacketPort(port_if)
    assert port.mac is not None
    socks = steer.open_group(port, port.mac, 3)
    assert len(socks) == 3, "PACKET_FANOUT with a CBPF program: expected on Linux"
    sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sender.bind((peer_if, 0))
    group = [port.sock, *socks]
    for frame, index in cases(port.mac):
        assert where(sender.send, group, frame) == index, frame.hex()
    own = raw_frame(port.mac, FrameClass.DATA, int(HeaderFlag.SCOPE_DIME), 1)
    assert where(socks[0].send, group, own) is None  # out on the wire only (IGNORE_OUTGOING)
    print("fanout steering ok")


@pytest.mark.root
def test_af_packet_fanout_steers_like_the_udp_group() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    tag = uuid.uuid4().hex[:6]
    ns, a, b = f"dpsteer{tag}", f"dsa{tag}", f"dsb{tag}"
    ip = ["ip", "-n", ns]
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        subprocess.run([*ip, "link", "add", a, "type", "veth", "peer", "name", b], check=True, capture_output=True)
        for dev in (a, b):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"])
            subprocess.run([*ip, "link", "set", dev, "up"], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot make a namespace: {exc.stderr!r}")
    root = str(Path(__file__).resolve().parents[1])
    try:
        code = f"from tests.test_node_steer import fanout_check; fanout_check({a!r}, {b!r})"
        r = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
            timeout=120,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert r.returncode == 0 and "fanout steering ok" in r.stdout, r.stdout + r.stderr


# ------------------------------------------------------------------ real pxkernel processes

STAGES_PY = """
def source(ctx):
    for i in range(ctx.params["count"]):
        yield i.to_bytes(4, "big") + bytes(20000)

def sink(item, ctx):
    ctx.store.append(f"sink-{ctx.service_id}", ctx.lineage.to_bytes(8, "big") + item[:4])
    return ()
"""
N = 1500


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    toml = manifest("steer", ["source", "sink"], version="1", params={"source": {"count": N}})
    c = packaged_cluster(tmp_path_factory.mktemp("steer"), toml, STAGES_PY, kernels=2, dimes=2)
    yield c
    c.close()


def server_counter(c: Cluster, server: int, cid: ServerCounterId) -> int:
    r = c.ask(Address(c.servers[server], DIME_ALL, 0), Command.COUNTERS, Tlv(TlvType.COUNTER_ID, int(cid)))
    assert r.status is Status.OK, r
    value = r.param(TlvType.VALUE)
    assert isinstance(value, int)
    return value


def dime_counter(c: Cluster, dest: Address, cid: CounterId) -> int:
    value = c.ask(dest, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, int(cid))).param(TlvType.VALUE)
    assert isinstance(value, int)
    return value


def test_data_for_a_dime_skips_its_server_and_survives_a_kill(bed: Cluster) -> None:
    if select.compiled("pxproto.switch._afpacket") is None:
        pytest.skip("the kernel steers only with the compiled batch I/O (recvmmsg) built")
    c = bed
    src, snk = c.dime(0, 0), c.dime(1, 1)
    rx0 = server_counter(c, 1, ServerCounterId.WIRE_RX)
    frames0 = dime_counter(c, snk, CounterId.FRAMES_RX)
    start(c, snk, 9, 1, "sink")
    start(c, src, 9, 0, "source")
    c.connect(src, snk, 1)
    store = LocalStore(c.tmp / "state1" / "store")
    assert c.client.wait_for(lambda: len(store.records("sink-9")) >= N, 60), len(store.records("sink-9"))
    assert sorted(int.from_bytes(r[8:12], "big") for r in store.records("sink-9")) == list(range(N))
    frames = dime_counter(c, snk, CounterId.FRAMES_RX) - frames0
    relayed = server_counter(c, 1, ServerCounterId.WIRE_RX) - rx0
    # Two 20 KB items a frame: hundreds of data frames reached the sink DIME; its server read only its own
    # (heartbeats of the other DIMEs, the test's signaling to 0xffff), where the relay read every one.
    assert frames >= N // 4, frames
    assert relayed < frames // 4, (relayed, frames)
    # kill -9: the server starts the DIME again on the same socket; it answers signaling sent to it directly
    pid = c.dime_pid(1, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert c.client.wait_for(lambda: c.dime_pid(1, 1) not in (None, pid), 20)
    deadline = time.monotonic() + 20
    while True:  # the new DIME answers once it runs: until then the request times out
        r = c.client.request(snk, Command.PING, (Tlv(TlvType.ECHO, b"back"),))
        if isinstance(r, ResponseReceived) or time.monotonic() > deadline:
            break
    assert isinstance(r, ResponseReceived) and r.status is Status.OK and r.param(TlvType.ECHO) == b"back", r
    r = c.ask(Address(c.servers[1], DIME_ALL, 0), Command.PING, Tlv(TlvType.ECHO, b"server"))
    assert r.status is Status.OK and r.param(TlvType.ECHO) == b"server"  # system scope: still the server's
