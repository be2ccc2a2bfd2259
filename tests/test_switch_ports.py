"""pxswitch end to end over rootless ports: UDP (QEMU dgram framing) and stream (QEMU stream framing)."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pxproto.capture.pcapng import read_packets
from pxproto.link import VIRTUAL_MTU
from pxproto.switch.config import PortSpec, SwitchConfig
from pxproto.switch.control import query
from pxproto.switch.core import SwitchPolicy
from pxproto.switch.daemon import Daemon
from pxproto.switch.frames import data, heartbeat, mac, saturation, signaling


def spin(d: Daemon, until: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, "timed out"
        d.step(0.01)


def ask(d: Daemon, path: str, request: str) -> Any:
    """Query the control socket from a thread while the daemon turns."""
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(query(path, request)))
    t.start()
    spin(d, lambda: bool(box))
    t.join()
    return box[0]


class UdpPeer:
    """A QEMU ``-netdev dgram`` guest: one Ethernet frame per datagram."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.switch: tuple[str, int] | None = None
        self.got: list[bytes] = []

    @property
    def addr(self) -> str:
        return "{}:{}".format(*self.sock.getsockname())

    def send(self, frame: bytes) -> None:
        assert self.switch is not None
        self.sock.sendto(frame, self.switch)

    def poll(self) -> list[bytes]:
        while True:
            try:
                self.got.append(self.sock.recv(70000))
            except BlockingIOError:
                return self.got


@pytest.fixture
def udp_switch(tmp_path: Path) -> Iterator[tuple[Daemon, list[UdpPeer]]]:
    peers = [UdpPeer() for _ in range(3)]
    specs = [PortSpec(f"u{i}", "udp", (("local", "127.0.0.1:0"), ("remote", p.addr))) for i, p in enumerate(peers)]
    cfg = SwitchConfig(
        SwitchPolicy(queue_data=32), specs, mirror=str(tmp_path / "m.pcapng"), control=str(tmp_path / "c.sock")
    )
    d = Daemon(cfg)
    for pid, p in zip(sorted(d.ports), peers, strict=True):
        p.switch = d.ports[pid].address  # type: ignore[attr-defined]
    yield d, peers
    d.close()
    for p in peers:
        p.sock.close()


def test_udp_learn_flood_and_control_socket(udp_switch: tuple[Daemon, list[UdpPeer]], tmp_path: Path) -> None:
    d, (p0, p1, p2) = udp_switch
    hb = heartbeat(mac(1), dime=4)
    p0.send(hb)
    spin(d, lambda: len(p1.poll()) == 1 and len(p2.poll()) == 1)
    assert p1.got == [hb] and p2.got == [hb]
    f = data(mac(1), mac(2), dst_dime=4)
    p1.send(f)
    spin(d, lambda: len(p0.poll()) == 1)
    time.sleep(0.05)
    d.step(0.01)
    assert p0.got == [f] and len(p2.poll()) == 1  # learned: not flooded to u2
    stats = ask(d, str(tmp_path / "c.sock"), "stats")
    assert stats["ports"]["u0"]["rx_class"]["heartbeat"] == 1
    assert stats["ports"]["u0"]["tx_class"]["data"] == 1
    fdb = ask(d, str(tmp_path / "c.sock"), "fdb")
    assert {(r["mac"], r["dime"], r["port"]) for r in fdb} >= {
        ("02:00:00:00:00:01", 4, "u0"),
        ("02:00:00:00:00:02", 1, "u1"),
    }
    d.close()
    with open(tmp_path / "m.pcapng", "rb") as fh:
        assert [bytes(p.data) for p in read_packets(fh)] == [hb, f]


def test_udp_random_bytes_and_truncation(udp_switch: tuple[Daemon, list[UdpPeer]]) -> None:
    d, (p0, p1, _) = udp_switch
    rnd = random.Random(7)
    for i in range(300):
        p0.send(rnd.randbytes(rnd.randrange(0, 200)) if i % 3 else heartbeat(mac(1))[: rnd.randrange(0, 40)])
        if i % 20 == 0:
            d.step(0)  # keep the loopback socket buffer from overflowing
    p0.send(b"")
    good = signaling(mac(9), mac(1))
    p0.send(good)
    spin(d, lambda: good in p1.poll())
    st = d.stats()
    assert st["ports"]["u0"]["rx"] == 302
    assert st["ports"]["u0"]["rx_malformed"] > 100
    assert len(d.core.fdb) <= d.core.policy.fdb_capacity


class StreamPeer:
    """A QEMU ``-netdev stream`` guest, written from the framing: a 4-byte big-endian length, then the frame."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.buf = b""

    def send(self, frame: bytes) -> None:
        self.sock.sendall(len(frame).to_bytes(4, "big") + frame)

    def frames(self) -> list[bytes]:
        try:
            while chunk := self.sock.recv(65536):
                self.buf += chunk
        except BlockingIOError:
            pass
        out = []
        while len(self.buf) >= 4 and len(self.buf) >= 4 + int.from_bytes(self.buf[:4], "big"):
            n = int.from_bytes(self.buf[:4], "big")
            out.append(self.buf[4 : 4 + n])
            self.buf = self.buf[4 + n :]
        return out


@pytest.fixture
def stream_switch(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    specs = [
        PortSpec(f"s{i}", "stream", (("address", str(tmp_path / f"s{i}.sock")), ("listen", True))) for i in range(3)
    ]
    d = Daemon(SwitchConfig(SwitchPolicy(), specs, control=str(tmp_path / "c.sock")))
    yield d, tmp_path
    d.close()


def test_qemu_stream_framing(stream_switch: tuple[Daemon, Path]) -> None:
    d, tmp = stream_switch
    a, b = StreamPeer(str(tmp / "s0.sock")), StreamPeer(str(tmp / "s1.sock"))
    spin(d, lambda: d.stats()["ports"]["s0"]["up"] and d.stats()["ports"]["s1"]["up"])
    hb = heartbeat(mac(1))
    wire = _framed(hb) * 2
    a.sock.sendall(wire[:12])  # a frame split across writes, and the next in the same write
    d.step(0.01)
    a.sock.sendall(wire[12:])
    got: list[bytes] = []
    spin(d, lambda: len(got.extend(b.frames()) or got) == 2)  # type: ignore[func-returns-value]
    assert got == [hb, hb]
    f = data(mac(1), mac(2))
    b.send(f)
    spin(d, lambda: a.frames() == [f])


def test_stream_peer_closing_and_garbage(stream_switch: tuple[Daemon, Path]) -> None:
    d, tmp = stream_switch
    a, b, c = (StreamPeer(str(tmp / f"s{i}.sock")) for i in range(3))
    spin(d, lambda: all(p["up"] for p in d.stats()["ports"].values()))
    c.sock.sendall(b"\xff\xff\xff\xff" + os.urandom(64))  # an impossible length: the stream is dropped
    spin(d, lambda: not d.stats()["ports"]["s2"]["up"])
    assert d.stats()["ports"]["s2"]["errors"]["bad_length_prefix"] == 1
    b.sock.close()
    spin(d, lambda: not d.stats()["ports"]["s1"]["up"])
    hb = heartbeat(mac(3))
    c2 = StreamPeer(str(tmp / "s2.sock"))  # a new guest on the listening port
    spin(d, lambda: d.stats()["ports"]["s2"]["up"])
    rnd = random.Random(3)
    for _ in range(200):
        a.send(rnd.randbytes(rnd.randrange(1, 100)))
    a.send(hb)
    got: list[bytes] = []
    spin(d, lambda: hb in (got.extend(c2.frames()) or got))  # type: ignore[func-returns-value]
    assert d.stats()["ports"]["s0"]["rx"] == 201


def test_priority_under_saturation_no_control_lost(stream_switch: tuple[Daemon, Path]) -> None:
    """s1's guest stops reading: its queue fills with data; every signaling/heartbeat frame still arrives."""
    d, tmp = stream_switch
    a, b = StreamPeer(str(tmp / "s0.sock")), StreamPeer(str(tmp / "s1.sock"))
    spin(d, lambda: d.stats()["ports"]["s1"]["up"])
    b.send(heartbeat(mac(1), dime=1))
    spin(d, lambda: len(a.frames()) == 1)
    control = []
    wire = bytearray()
    flood = _framed(data(mac(1), mac(2), size=512))
    for i in range(8000):
        wire += flood
        if i % 200 == 0:
            c = signaling(mac(1), mac(2), dst_dime=1, seq=i) if i % 400 else heartbeat(mac(2), dime=2, seq=i)
            control.append(c)
            wire += _framed(c)
    view = memoryview(wire)
    while view:
        try:
            view = view[a.sock.send(view) :]
        except BlockingIOError:
            pass
        d.step(0)
    for _ in range(20):
        d.step(0.005)
    p1 = d.stats()["ports"]["s1"]
    assert p1["tx_queue_drop"] > 1000, p1  # data saturated the port
    assert p1["tx_queue_drop_control"] == 0
    got: list[bytes] = []
    spin(d, lambda: [f for f in (got.extend(b.frames()) or got) if len(f) != 512] == control)  # type: ignore[func-returns-value]


def _framed(frame: bytes) -> bytes:
    return len(frame).to_bytes(4, "big") + frame


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_vxlan_remote_table_ages_and_is_capped() -> None:
    """A MAC learned behind one VTEP gets unicast there until it ages out; then frames to it flood every VTEP."""
    from pxproto.switch.ports import VXLAN_HDR, VxlanPort

    vteps = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for i, v in enumerate(vteps):
        v.bind((f"127.0.0.{i + 2}", 0))  # one host per VTEP, as on a real underlay
    clock = Clock()
    remotes = ["{}:{}".format(*v.getsockname()) for v in vteps]
    port = VxlanPort("up", "127.0.0.1:0", remotes, 42, aging=30.0, clock=clock)
    here = port.sock.getsockname()
    try:
        hdr = VXLAN_HDR.pack(0x08, 42 << 8)
        vteps[1].sendto(hdr + heartbeat(mac(5), dime=1), here)
        deadline = time.monotonic() + 2
        while not port.recv_batch():
            assert time.monotonic() < deadline
        to5 = data(mac(5), mac(1))

        def heard() -> list[int]:
            out = []
            for i, v in enumerate(vteps):
                v.setblocking(False)
                try:
                    while v.recv(70000):
                        out.append(i)
                except BlockingIOError:
                    pass
            return out

        assert port.send_batch([to5]) == 1
        time.sleep(0.1)
        assert heard() == [1]  # learned: unicast to VTEP 1
        clock.t += 29
        port.send_batch([to5])
        time.sleep(0.1)
        assert heard() == [1]
        clock.t += 2  # 31 s since it was seen: aged out
        port.send_batch([to5])
        time.sleep(0.1)
        assert sorted(heard()) == [0, 1]  # flooded to both VTEPs
        assert port.describe()["vteps_learned"] == 0
        # a table of random source MACs stays bounded, and expire() empties it once they age
        for i in range(port.LEARN_CAP + 50):
            port.where[i.to_bytes(6, "big")] = (("127.0.0.1", 1), clock.t)
        vteps[0].sendto(hdr + heartbeat(mac(6), dime=1), here)
        deadline = time.monotonic() + 2
        while not port.recv_batch():
            assert time.monotonic() < deadline
        assert len(port.where) <= port.LEARN_CAP + 50 and mac(6) in port.where
        clock.t += 31
        port.check()
        assert len(port.where) == 0
    finally:
        port.close()
        for v in vteps:
            v.close()


def test_udp_port_enforces_its_mtu(udp_switch: tuple[Daemon, list[UdpPeer]], tmp_path: Path) -> None:
    """Regression (issue 15, 8): UDP ports forwarded frames past their MTU; now refused and shown in stats."""
    d, (p0, p1, _) = udp_switch
    huge = data(mac(1), mac(2), size=VIRTUAL_MTU + 19)  # one byte past mtu + 18, still one UDP datagram
    ok = heartbeat(mac(2))
    p0.send(huge)
    p0.send(ok)
    spin(d, lambda: len(p1.poll()) == 1)
    assert p1.got == [ok]
    stats = ask(d, str(tmp_path / "c.sock"), "stats")
    assert stats["ports"]["u0"]["rx_oversize"] == 1
    assert stats["ports"]["u0"]["mtu"] == VIRTUAL_MTU and stats["ports"]["u0"]["max_macs"] == 2048


def test_connected_udp_ports_forward_in_the_compiled_loop(udp_switch: tuple[Daemon, list[UdpPeer]]) -> None:
    """A UDP port with a fixed remote is a connected socket: the compiled loop reads it with recvmmsg and writes
    it with sendmmsg, like an AF_PACKET port; a peer that went away (ICMP port unreachable, reported to the
    switch's socket as ECONNREFUSED on a later call) costs frames, not the port."""
    d, (p0, p1, p2) = udp_switch
    if d.fast is None:
        pytest.skip("the compiled pxproto.switch._afpacket is not built")
    assert all(d._is_fast(pid) for pid in d.ports)
    p2.sock.close()  # u2's remote now answers with ICMP port unreachable
    frames = [heartbeat(mac(1), dime=4, seq=i) for i in range(50)]
    for f in frames:
        p0.send(f)
        d.step(0.001)
    spin(d, lambda: len(p1.poll()) == len(frames))
    assert p1.got == frames
    assert sorted(d.core.ports[pid].name for pid in d.ports) == ["u0", "u1", "u2"]  # u2 stays
    u0, u1 = sorted(d.ports)[:2]
    assert d.fast.counters(u0)[0] == len(frames) and d.fast.counters(u1)[2] == len(frames)
    p1.send(data(mac(1), mac(2), dst_dime=4))
    spin(d, lambda: len(p0.poll()) == 1)


def test_udp_ports_without_a_remote_go_to_the_compiled_loop_and_follow_the_sender(tmp_path: Path) -> None:
    """A UDP port without a fixed remote (the node's rootless wire, QEMU dgram without ``remote``) is read by Python
    until its first datagram names the sender, then by the compiled loop (recvmmsg/sendmmsg); replies still go to
    the sender of the last datagram: a peer that moves to a new address gets the frames there, from the compiled
    loop and from Python's queue (a flood) alike."""
    peers = [UdpPeer() for _ in range(2)]
    # (kernel=false: as root, learned data between two loopback UDP ports would go through the kernel instead)
    specs = [PortSpec(f"u{i}", "udp", (("local", "127.0.0.1:0"), ("kernel", False))) for i in range(2)]
    d = Daemon(SwitchConfig(SwitchPolicy(), specs, control=str(tmp_path / "c.sock")))
    moved = UdpPeer()
    try:
        if d.fast is None:
            pytest.skip("the compiled pxproto.switch._afpacket is not built")
        u0, u1 = sorted(d.ports)
        for pid, p in zip((u0, u1), peers, strict=True):
            p.switch = d.ports[pid].address  # type: ignore[attr-defined]
        assert not d._is_fast(u0) and not d._is_fast(u1)  # nobody to send to yet
        peers[0].send(heartbeat(mac(1), dime=2))  # flood: u1 has no sender yet, so no one gets it there
        peers[1].send(heartbeat(mac(2), dime=1))  # to u0's sender
        spin(d, lambda: len(peers[0].poll()) == 1)
        assert d._is_fast(u0) and d._is_fast(u1)
        before = d.fast.counters(u1)[0]
        frames = [data(mac(1), mac(2), dst_dime=2, seq=i) for i in range(200)]
        for f in frames:
            peers[1].send(f)
        spin(d, lambda: len(peers[0].poll()) == 1 + len(frames))
        assert peers[0].got[1:] == frames
        assert d.fast.counters(u1)[0] - before == len(frames)  # read and forwarded by the compiled loop
        moved.switch = peers[0].switch
        moved.send(heartbeat(mac(1), dime=2, seq=1))  # u0's peer now sends from a new address
        spin(d, lambda: len(peers[1].poll()) == 1)
        f = data(mac(1), mac(2), dst_dime=2, seq=999)
        peers[1].send(f)
        spin(d, lambda: moved.poll() == [f])  # the compiled loop followed the sender
        assert d.fast.dest(u0)[1] >= 1
        flood = heartbeat(mac(2), dime=1, seq=7)  # broadcast: queued by Python's core when a port is not fast
        d.fast.force_slow = True
        peers[1].send(flood)
        spin(d, lambda: flood in moved.poll())
        assert len(peers[0].poll()) == 1 + len(frames)  # the old address gets nothing more
        assert d.ports[u0].remote == moved.sock.getsockname()  # type: ignore[attr-defined]
    finally:
        d.close()
        for p in (*peers, moved):
            p.sock.close()


def test_a_raw_sockaddr_reads_back_as_its_address() -> None:
    from pxproto.switch import udpsteer

    for fam, addr in ((socket.AF_INET, ("127.0.0.1", 4789)), (socket.AF_INET6, ("fe80::1", 65535))):
        assert udpsteer.address(udpsteer.sockaddr(addr, fam)) == addr
    with pytest.raises(ValueError, match="family 1 and 4 bytes"):
        udpsteer.address(b"\x01\x00\x00\x00")
    with pytest.raises(ValueError, match="of 2 bytes"):
        udpsteer.address(b"\x02\x00")


def _stream_run(tmp: Path, compiled: bool) -> tuple[list[list[bytes]], dict[str, Any], list[bytes], int]:
    specs = [PortSpec(f"s{i}", "stream", (("address", str(tmp / f"s{i}.sock")), ("listen", True))) for i in range(3)]
    d = Daemon(SwitchConfig(SwitchPolicy(), specs, mirror=str(tmp / "m.pcapng"), control=str(tmp / "c.sock")))
    try:
        if d.fast is None:
            pytest.skip("the compiled pxproto.switch._afpacket is not built")
        d.fast.force_slow = not compiled  # every frame to Switch.receive: the reference
        peers = [StreamPeer(str(tmp / f"s{i}.sock")) for i in range(3)]
        spin(d, lambda: all(p["up"] for p in d.stats()["ports"].values()))
        frames = [
            heartbeat(mac(1), dime=4),  # flood, learns mac 1 on s0
            data(mac(1), mac(2), dst_dime=4),  # unknown unicast: flood, learns mac 2 on s1
            data(mac(2), mac(1), dst_dime=1),  # known: s1 only
            bytes(data(mac(2), mac(1), dst_dime=1))[:20],  # malformed (truncated header)
            mac(9) + mac(1) + b"\x08\x00" + bytes(46),  # non-Parallax, unknown: flood
            signaling(mac(2), mac(1), dst_dime=1),  # control, known
        ]
        senders = [0, 1, 0, 0, 0, 0]
        got: list[list[bytes]] = [[], [], []]
        for i, (f, s) in enumerate(zip(frames, senders, strict=True)):
            peers[s].send(f)
            name, want = f"s{s}", sum(1 for x in senders[: i + 1] if x == s)
            spin(d, lambda name=name, want=want: d.stats()["ports"][name]["rx"] >= want)  # type: ignore[misc]
            for _ in range(5):
                d.step(0.005)
        for _ in range(20):
            d.step(0.005)
        for k, p in enumerate(peers):
            got[k].extend(p.frames())
        st = d.stats()
        handled = d.fast.counters(0)[0]
    finally:
        d.close()
    with open(tmp / "m.pcapng", "rb") as fh:
        mirrored = [bytes(p.data) for p in read_packets(fh)]
    keep = ("rx", "rx_bytes", "tx", "tx_bytes", "rx_malformed", "rx_class", "tx_class")
    summary = {
        "ports": {n: {k: p[k] for k in keep} for n, p in st["ports"].items()},
        "switch": st["switch"],
        "malformed": st["malformed"],
    }
    return got, summary, mirrored, handled


def test_stream_frames_decided_in_the_compiled_loop_match_the_core(tmp_path: Path) -> None:
    """Frames a stream port reads are decided by the compiled loop (route): the same outputs, counters, table
    events and mirror as the pure core's Switch.receive."""
    (tmp_path / "c").mkdir()
    (tmp_path / "p").mkdir()
    fast = _stream_run(tmp_path / "c", compiled=True)
    ref = _stream_run(tmp_path / "p", compiled=False)
    assert fast[3] > 0 and ref[3] == 0  # the compiled loop handled frames itself only when allowed to
    assert fast[0] == ref[0]
    assert fast[1] == ref[1]
    assert sorted(fast[2]) == sorted(ref[2])


@pytest.mark.parametrize("fixed", [True, False], ids=["remote", "learned-remote"])
def test_a_udp_port_loses_no_control_frame_under_data_saturation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixed: bool
) -> None:
    """While the switch does not run, the peer sends data far past what the socket buffer holds, with a control
    frame in every ten: the kernel drops data, but steers every control frame to the port's control socket
    (a one-socket port lost control frames with the data here).  With a remote the compiled loop reads the port
    from the start, without one from its first datagram on."""
    from pxproto.switch.sockports import UdpPort

    monkeypatch.setattr(UdpPort, "BUF", 1 << 18)
    peers = [UdpPeer() for _ in range(2)]
    peers[1].sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
    specs = [
        PortSpec(f"u{i}", "udp", (("local", "127.0.0.1:0"),) + ((("remote", p.addr),) if fixed else ()))
        for i, p in enumerate(peers)
    ]
    d = Daemon(SwitchConfig(SwitchPolicy(), specs, control=str(tmp_path / "c.sock")))
    try:
        for pid, p in zip(sorted(d.ports), peers, strict=True):
            p.switch = d.ports[pid].address  # type: ignore[attr-defined]
        peers[0].send(heartbeat(mac(1), dime=2))  # u0 learns its peer (without a remote)
        for _ in range(10):
            d.step(0.01)
        peers[1].send(heartbeat(mac(2), dime=1))  # mac 2 is behind u1
        spin(d, lambda: len(peers[0].poll()) == 1)
        peers[1].poll()
        peers[1].got.clear()
        ctrl, n_data = [], 0
        for i in range(20000):  # the switch does not turn: about 80 times what the data socket's buffer holds
            f, is_ctrl = saturation(i)
            if is_ctrl:
                ctrl.append(f)
            else:
                n_data += 1
            peers[0].send(f)
        spin(d, lambda: sum(f in ctrl for f in peers[1].poll()) == len(ctrl))
        for _ in range(20):  # what data is left in the socket comes through
            d.step(0.01)
        peers[1].poll()
        got_data = sum(1 for f in peers[1].got if f[12:14] == data(mac(2), mac(1), dst_dime=1)[12:14])
        assert got_data < n_data // 2  # the data socket overflowed: the kernel dropped data
        assert len(ctrl) == 2000
    finally:
        d.close()
        for p in peers:
            p.sock.close()
