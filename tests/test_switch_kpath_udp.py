"""pxswitch's kernel path for UDP ports on loopback (``udp_program`` in pxproto/switch/kprog.py).

- The program against the userspace switch, datagram by datagram (BPF_PROG_TEST_RUN): whenever it re-addresses
  a datagram, the switch would have sent that frame to that one port, learned nothing and found nothing wrong;
  the datagram then leaves from that port's address to its peer's with valid checksums and the frame untouched;
  every other datagram goes on unchanged.
- Real datagrams through a switch in a network namespace: each frame once, from the switch's port address, the
  kernel carrying most of them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.switch import bpf, kpath, kprog
from pxproto.switch.core import Switch, SwitchPolicy
from pxproto.switch.fdb import PyFdb, fdb_key
from pxproto.switch.frames import heartbeat, mac
from pxproto.switch.linkports import control_ethertypes
from pxproto.wire import ethertypes
from tests._helpers import NETNS
from tests.test_switch_kpath import NEEDS_BPF, Bed, _random_frame, switch_bed

LOCAL = {3: ("127.0.0.1", 5003), 4: ("127.0.0.1", 5004), 5: ("127.0.0.2", 5005)}
REMOTE: dict[int, tuple[str, int] | None] = {3: ("127.0.0.1", 6003), 4: ("127.0.0.1", 6004), 5: None}
"""Port 5's peer is not known yet: nothing goes to or comes from it in the kernel."""
MTU = {3: 1500, 4: 1000, 5: 1500}
HOME = {mac(1): 3, mac(2): 4, mac(3): 5}


def _sum16(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _udp_sum(ip: bytes, udp: bytes) -> int:
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    return _sum16(pseudo + udp)


def datagram(src: tuple[str, int], dst: tuple[str, int], frame: bytes, csum: bool = True) -> bytes:
    """lo's Ethernet header, IPv4 (DF), UDP with a checksum (or 0), then ``frame``."""
    udp_len = 8 + len(frame)
    ip = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + udp_len,
            0,
            0x4000,
            64,
            17,
            0,
            socket.inet_aton(src[0]),
            socket.inet_aton(dst[0]),
        )
    )
    ip[10:12] = struct.pack("!H", 0xFFFF ^ _sum16(bytes(ip)))
    udp = bytearray(struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + frame)
    if csum:
        c = 0xFFFF ^ _udp_sum(bytes(ip), bytes(udp))
        udp[6:8] = struct.pack("!H", c or 0xFFFF)
    return bytes(12) + b"\x08\x00" + bytes(ip) + bytes(udp)


class UdpRig:
    """The kernel path's maps with three UDP ports (and the UDP program, loaded but attached nowhere), beside a
    userspace switch with the same ports."""

    def __init__(self) -> None:
        et = ethertypes.current().data
        self.kp = kpath.KernelPath(256, et, control_ethertypes())
        self.prog = bpf.prog_load(bpf.PROG_SCHED_CLS, kprog.udp_program(self.kp.maps, et), "pxs_tudp")
        self.core = Switch(SwitchPolicy(max_macs=0), fdb=PyFdb(256, 300.0))
        for pid in range(6):
            assert self.core.add_port(f"p{pid}", MTU.get(pid, 1500)) == pid
        for pid, (host, port) in LOCAL.items():
            key = socket.inet_aton(host) + struct.pack("!H", port) + b"\0\0"
            bpf.map_update(self.kp.maps["udp"], key, struct.pack("I", pid))
            here = (socket.inet_aton(host), struct.pack("!H", port))
            r = REMOTE[pid]
            value = (
                kprog.port_value(0, 0, kprog.MODE_NONE)
                if r is None
                else kprog.port_value(
                    0, MTU[pid] + 18, kprog.MODE_UDP, here, (socket.inet_aton(r[0]), struct.pack("!H", r[1]))
                )
            )
            bpf.map_update(self.kp.maps["ports"], struct.pack("I", pid), value)

    def close(self) -> None:
        os.close(self.prog)
        self.kp.close()


@pytest.fixture
def bed() -> Iterator[Bed]:
    yield from switch_bed()


@pytest.fixture
def rig() -> Iterator[UdpRig]:
    r = UdpRig()
    try:
        yield r
    finally:
        r.close()


def _check_rewritten(out: bytes, before: bytes, out_port: int, had_csum: bool) -> None:
    ip, udp = out[14:34], out[34:]
    assert _sum16(ip) == 0xFFFF  # the IPv4 header checksum holds
    r = REMOTE[out_port]
    assert r is not None
    assert (socket.inet_ntoa(ip[12:16]), struct.unpack("!H", udp[0:2])[0]) == LOCAL[out_port]
    assert (socket.inet_ntoa(ip[16:20]), struct.unpack("!H", udp[2:4])[0]) == r
    if had_csum:
        assert _udp_sum(ip, udp) == 0xFFFF
    else:
        assert udp[6:8] == b"\0\0"
    assert out[42:] == before[42:] and out[14:24] == before[14:24] and out[38:40] == before[38:40]


@pytest.mark.parametrize("seed", [3, 4])
@NEEDS_BPF[0]
@NEEDS_BPF[1]
def test_udp_program_readdresses_only_what_the_switch_sends_to_one_port(rig: UdpRig, seed: int) -> None:
    rng = random.Random(seed)
    now = 1000.0
    for m, dime, port in ((mac(1), 1, 3), (mac(2), 3, 4), (mac(3), 4, 5)):
        rig.core.fdb.learn(fdb_key(m), port, now)
        rig.core.fdb.learn(fdb_key(m, dime), port, now)
    rig.kp.sync(rig.core.fdb, now)
    fast = passed = 0
    for i in range(3000):
        frame = _random_frame(rng)
        home = HOME.get(frame[6:12]) if len(frame) >= 12 else None
        pid = home if home is not None and rng.random() < 0.9 else rng.choice((3, 4, 5))
        src = REMOTE[pid] or ("127.0.0.1", 7005)
        if rng.random() < 0.1:
            src = ("127.0.0.1", 7777)  # another sender
        csum = rng.random() < 0.8
        pkt = bytearray(datagram(src, LOCAL[pid], frame, csum))
        proper = src == REMOTE[pid]
        r = rng.random()
        if r < 0.03:
            pkt[14] = 0x46  # options
            proper = False
        elif r < 0.06:
            pkt[20] |= 0x20  # more fragments
            proper = False
        elif r < 0.08:
            pkt[23] = 6  # TCP
            proper = False
        elif r < 0.1:
            pkt += b"\0"  # a byte past the IPv4 length
            proper = False
        ret, out = bpf.prog_test_run(rig.prog, bytes(pkt))
        where = f"datagram {i} to port {pid} from {src}: {frame[:40].hex()}"
        grew: list[int] = []
        learned = malformed = False
        if proper:  # what the switch's socket would have received
            gen, bad = rig.core.fdb.generation, rig.core.ports[pid].counters["rx_malformed"]
            before = {p: len(rig.core.ports[p].queue) for p in rig.core.ports}
            rig.core.receive(pid, frame, now)
            grew = [p for p in rig.core.ports if len(rig.core.ports[p].queue) > before[p]]
            learned, malformed = rig.core.fdb.generation != gen, rig.core.ports[pid].counters["rx_malformed"] != bad
            for p in rig.core.ports:
                rig.core.consume(p, rig.core.pending(p))
        if ret == 0:
            fast += 1
            assert proper, where
            dst = (socket.inet_ntoa(out[30:34]), struct.unpack("!H", out[36:38])[0])
            out_port = next(p for p, rem in REMOTE.items() if rem == dst)
            assert grew == [out_port] and not learned and not malformed, where
            assert len(frame) <= MTU[pid] + 18 and len(frame) <= MTU[out_port] + 18, where
            _check_rewritten(out, bytes(pkt), out_port, csum)
        else:
            assert ret == -1, where  # TCX_NEXT: on, unchanged
            assert out == bytes(pkt), where
            passed += 1
        rig.kp.sync(rig.core.fdb, now)
        now += 0.001
    assert fast > 150 and passed > 250, (fast, passed)


# ---------------------------------------------------------------- real datagrams in a namespace

NODES = r"""
import json, socket, sys, time
from pxproto.switch.frames import data, heartbeat, mac
from pxproto.wire import ethertypes
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 47201))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("127.0.0.1", 47202))
b.setsockopt(socket.SOL_SOCKET, 33, 1 << 26)  # SO_RCVBUFFORCE: every datagram waits for the read
step, n = sys.argv[1], int(sys.argv[2])
if step == "teach":
    b.sendto(heartbeat(mac(2), dime=3), ("127.0.0.1", 47102))
    a.sendto(heartbeat(mac(1), dime=1), ("127.0.0.1", 47101))
    print("{}")
    sys.exit()
et = ethertypes.current().data.to_bytes(2, "big")
if step == "move":  # node a comes back on another port: the switch follows it, and so must the kernel
    a.close()
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 47203))
    a.setsockopt(socket.SOL_SOCKET, 33, 1 << 26)
    a.sendto(heartbeat(mac(1), dime=1), ("127.0.0.1", 47101))
    time.sleep(0.3)
    a, b = b, a  # b's frames to the moved a
    for i in range(n):
        a.sendto(data(mac(1), mac(2), dst_dime=1, src_dime=3, seq=i, size=1400), ("127.0.0.1", 47102))
        if i % 64 == 63:
            time.sleep(0.001)
for i in range(n if step == "send" else 0):
    a.sendto(data(mac(2), mac(1), dst_dime=3, src_dime=1, seq=i, size=1400), ("127.0.0.1", 47101))
    if i % 64 == 63:
        time.sleep(0.001)
seqs, senders = [], set()
b.settimeout(1.0)
while True:
    try:
        f, addr = b.recvfrom(65535)
    except socket.timeout:
        break
    senders.add(addr)
    if f[12:14] == et:
        seqs.append(int.from_bytes(f[26:34], "big"))
print(json.dumps({"seqs": seqs, "senders": sorted(senders)}))
"""


@NEEDS_BPF[0]
@NEEDS_BPF[1]
@NETNS[1]
def test_udp_frames_once_each_through_lo(bed: Bed, tmp_path: Path) -> None:
    from tests.test_switch_root import ROOT, query

    net = bed.net
    ns = net.add("ku")
    ports = ("udp:name=a,local=127.0.0.1:47101", "udp:name=b,local=127.0.0.1:47102,remote=127.0.0.1:47202")
    bed.start(ns, tmp_path, *ports)
    env = {**os.environ, "PYTHONPATH": ROOT}

    def nodes(step: str, n: int = 0) -> dict:  # type: ignore[type-arg]
        r = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", NODES, step, str(n)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return dict(json.loads(r.stdout.splitlines()[-1]))

    nodes("teach")
    end = time.monotonic() + 5
    while True:
        st = query(tmp_path, "stats")
        assert isinstance(st, dict)
        if st["switch"].get("kernel_fdb", 0) >= 4 and "kernel" in st["ports"]["a"]:
            break
        assert time.monotonic() < end, f"the UDP ports did not join the kernel path: {st['ports']}"
        time.sleep(0.1)
    n = 8000
    out = nodes("send", n)
    assert sorted(out["seqs"]) == list(range(n)), f"{len(out['seqs'])} frames, {len(set(out['seqs']))} distinct"
    assert out["senders"] == [["127.0.0.1", 47102]]  # as from the switch's port b
    st = query(tmp_path, "stats")
    assert isinstance(st, dict)
    assert st["ports"]["a"]["kernel"]["rx"] >= n * 0.9 and st["ports"]["b"]["kernel"]["tx"] >= n * 0.9
    assert st["ports"]["a"]["rx_class"]["data"] >= n and st["ports"]["b"]["tx_class"]["data"] >= n
    out = nodes("move", 2000)
    assert sorted(out["seqs"]) == list(range(2000)), f"{len(out['seqs'])} frames, {len(set(out['seqs']))} distinct"
    assert ["127.0.0.1", 47101] in out["senders"]
    st = query(tmp_path, "stats")
    assert isinstance(st, dict)
    assert st["ports"]["a"]["kernel"]["tx"] >= 1800  # the kernel sent to a's new address


@NEEDS_BPF[0]
@NEEDS_BPF[1]
@NETNS[1]
def test_udp_kernel_true_off_loopback_is_refused(bed: Bed, tmp_path: Path) -> None:
    from tests.test_switch_root import ROOT

    net = bed.net
    ns = net.add("kr")
    r = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "pxproto.switch.cli", "run", "--control",
         str(tmp_path / "c.sock"), "--port", "udp:name=x,local=0.0.0.0:47301,kernel=true"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT},
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "pxswitch: port x (udp): cannot open: kernel fast path: local address 0.0.0.0 is not IPv4 loopback"
    ]


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to drop capabilities"
)
def test_without_capabilities_one_line_and_userspace(tmp_path: Path) -> None:
    """A switch that may not load programs (no CAP_BPF) says so once and forwards every frame itself."""
    from pxproto.switch.frames import data
    from tests.test_switch_root import ROOT

    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    holders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in (*peers, *holders):
        s.bind(("127.0.0.1", 0))
    ports = [h.getsockname()[1] for h in holders]
    for h in holders:
        h.close()
    args = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m", "pxproto.switch.cli", "run"]
    args += ["--control", str(tmp_path / "c.sock")]
    for port, peer in zip(ports, peers, strict=True):
        args += ["--port", f"udp:local=127.0.0.1:{port},remote=127.0.0.1:{peer.getsockname()[1]}"]
    sw = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert sw.stderr is not None
        first = sw.stderr.readline()
        assert first.startswith("pxswitch: kernel fast path: ") and "not permitted" in first, first
        assert first.rstrip().endswith("; every frame goes through the switch"), first
        assert "running" in sw.stderr.readline()
        peers[1].sendto(heartbeat(mac(2), dime=3), ("127.0.0.1", ports[1]))
        peers[0].settimeout(5)
        assert peers[0].recv(65535) == heartbeat(mac(2), dime=3)  # flooded to port 0's peer
        f = data(mac(2), mac(1), dst_dime=3)
        peers[0].sendto(f, ("127.0.0.1", ports[0]))
        peers[1].settimeout(5)
        assert peers[1].recv(65535) == f
    finally:
        sw.terminate()
        sw.communicate(timeout=10)
        for s in peers:
            s.close()
