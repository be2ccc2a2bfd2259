"""pxswitch's in-kernel fast path (pxproto/switch/kpath.py).

- The assembler (no privileges).
- The filter program against the userspace switch, frame by frame: random
  and mutated frames go through the loaded filter (BPF_PROG_TEST_RUN) and
  through :class:`Switch`; whenever the filter takes a frame, the switch must
  have sent it to that one port, learned nothing and found nothing wrong.
- The ingress program forwards only the frame its filter decided on.
- Real frames through veth ports: each delivered exactly once, the kernel
  carrying most of them, aging kept by the kernel's hits, a moved source
  handled by userspace.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxproto.switch import bpf, kpath, kprog
from pxproto.switch.core import Switch, SwitchPolicy
from pxproto.switch.fdb import PyFdb, fdb_key
from pxproto.switch.frames import data, heartbeat, mac, signaling
from pxproto.switch.linkports import control_ethertypes
from pxproto.wire import ethertypes
from pxproto.wire.frame import BROADCAST
from tests._helpers import NETNS


def _bpf_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for bpf(2)"
    try:
        os.close(bpf.map_create(bpf.MAP_ARRAY, 4, 4, 1, "pxs_probe"))
    except OSError as exc:
        return f"bpf(2) refused: {exc}"
    return None


MISSING = _bpf_missing()
NEEDS_BPF = [pytest.mark.root, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


# ---------------------------------------------------------------- the assembler


def test_assembler_resolves_labels_both_ways() -> None:
    a = bpf.Asm()
    a.label("top")
    a.movi(bpf.R0, 1)
    a.jimm("==", bpf.R0, 7, "end")
    a.jmp("top")
    a.label("end")
    a.exit()
    code = a.code()
    assert len(code) == 4 * 8
    ops = [struct.unpack_from("<BBhi", code, i * 8) for i in range(4)]
    assert ops[0] == (0xB7, 0, 0, 1)
    assert ops[1] == (0x15, 0, 1, 7)  # jeq r0, 7 -> +1 (past the jump back)
    assert ops[2] == (0x05, 0, -3, 0)  # ja -> top
    assert ops[3] == (0x95, 0, 0, 0)


def test_assembler_refuses_unknown_and_repeated_labels() -> None:
    a = bpf.Asm()
    a.jmp("nowhere")
    with pytest.raises(ValueError, match="nowhere"):
        a.code()
    b = bpf.Asm()
    b.label("x")
    b.label("x")
    with pytest.raises(ValueError, match="twice"):
        b.code()


def test_kernel_keys_follow_the_table_keys() -> None:
    for m, dime in ((mac(1), 3), (b"\xff" * 6, 0xFFFF), (mac(0x1234), 0)):
        key = fdb_key(m, dime)
        raw = kprog.fdb_bytes(key)
        assert raw == m + dime.to_bytes(2, "big")
        assert kprog.fdb_int(raw) == key


# ---------------------------------------------------------------- the programs against the switch

IFINDEX = {0: 101, 1: 102, 2: 103}
MTU = {0: 1500, 1: 1000, 2: 1500}
MODES = {0: kprog.MODE_PEER, 1: kprog.MODE_REDIRECT, 2: kprog.MODE_NONE}
"""Port 2 stands for a port the kernel cannot send to (a UDP port, say)."""
SKB = 184
"""Bytes of the ``__sk_buff`` context given to a test run (up to ``hwtstamp``)."""


class Rig:
    """The kernel path's maps and three ports' filters, beside a userspace switch with the same ports."""

    def __init__(self) -> None:
        self.ctrl = control_ethertypes()
        self.kp = kpath.KernelPath(256, ethertypes.current().data, self.ctrl)
        self.core = Switch(SwitchPolicy(max_macs=0), fdb=PyFdb(256, 300.0))
        self.filters: dict[int, int] = {}
        for pid in range(3):
            assert self.core.add_port(f"p{pid}", MTU[pid]) == pid
            value = kprog.port_value(IFINDEX[pid], MTU[pid] + 18, MODES[pid])
            bpf.map_update(self.kp.maps["ports"], struct.pack("I", pid), value)
            prog = kprog.filter_program(
                self.kp.maps, pid, IFINDEX[pid], MTU[pid] + 18, ethertypes.current().data, self.ctrl
            )
            self.filters[pid] = bpf.prog_load(bpf.PROG_SOCKET_FILTER, prog, f"pxs_t{pid}")
        self.ncpu = bpf.possible_cpus()

    def close(self) -> None:
        for fd in self.filters.values():
            os.close(fd)
        self.kp.close()

    def slots(self) -> list[tuple[int, ...]]:
        raw = bpf.map_lookup(self.kp.maps["slot"], struct.pack("I", 0), kprog.SLOT_SIZE * self.ncpu)
        assert raw is not None
        return [struct.unpack_from("=IIIIHHB", raw, i * kprog.SLOT_SIZE) for i in range(self.ncpu)]

    def clear(self) -> None:
        bpf.map_update(self.kp.maps["slot"], struct.pack("I", 0), bytes(kprog.SLOT_SIZE * self.ncpu))

    def decide(self, pid: int, frame: bytes) -> tuple[int, tuple[int, ...] | None]:
        """The filter's return value and the slot it filled, if any.  (A test run takes the first 14 bytes as
        the Ethernet header and starts the packet after them, where a packet socket's filter starts it.)"""
        self.clear()
        ret = bpf.prog_test_run(self.filters[pid], bytes(14) + frame)[0]
        filled = [s for s in self.slots() if s[0]]
        assert len(filled) <= 1
        return ret, (filled[0] if filled else None)

    def route(self, pid: int, frame: bytes, now: float) -> tuple[list[int], bool, bool]:
        """What the userspace switch does with ``frame``: the ports it queued it on, whether its table changed,
        whether it found the frame malformed."""
        core = self.core
        gen = core.fdb.generation
        before = {p: len(core.ports[p].queue) for p in core.ports}
        bad = core.ports[pid].counters["rx_malformed"]
        core.receive(pid, frame, now)
        grew = [p for p in core.ports if len(core.ports[p].queue) > before[p]]
        for p in core.ports:
            core.consume(p, core.pending(p))
        return grew, core.fdb.generation != gen, core.ports[pid].counters["rx_malformed"] != bad


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.close()


def _learn(rig: Rig, now: float) -> None:
    for m, dime, port in ((mac(1), 1, 0), (mac(2), 3, 1), (mac(3), 4, 2)):
        rig.core.fdb.learn(fdb_key(m), port, now)
        rig.core.fdb.learn(fdb_key(m, dime), port, now)
    rig.kp.sync(rig.core.fdb, now)


HOME = {mac(1): 0, mac(2): 1, mac(3): 2}
"""The port each source MAC is learned on (and mostly sends from)."""


def _random_frame(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.05:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
    if kind < 0.12:
        return signaling(mac(rng.choice((1, 2, 3))), mac(rng.choice((1, 2, 9))), dst_dime=rng.choice((1, 3, None)))
    if kind < 0.15:
        return heartbeat(mac(rng.choice((1, 2))), dime=rng.choice((1, 3)))
    src = rng.choice((mac(1), mac(1), mac(1), mac(2), mac(3), mac(9)))
    dst = rng.choice((mac(2), mac(2), mac(2), mac(3), mac(1), mac(8), BROADCAST))
    f = bytearray(
        data(
            dst,
            src,
            dst_dime=rng.choice((3, 3, 3, 4, 1, 5)),
            src_dime=rng.choice((1, 1, 1, 2, 3, 4)),
            seq=rng.getrandbits(32),
            size=rng.choice((60, 61, 64, 200, 1000, 1018, 1019, 1500, 1518, 1519)),
        )
    )
    r = rng.random()
    if r < 0.3:  # a field the header rules judge
        off = rng.choice((14, 15, 16, 17, 18, 19, 22, 23, 12, 13, 0, 6))
        f[off] = rng.choice((0, 1, 2, 3, 4, 5, 7, 0x80, 0xFF, f[off] ^ 1))
    elif r < 0.4:  # anywhere
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(f))
            f[i] = rng.getrandbits(8)
    elif r < 0.45:
        f = f[: rng.randrange(len(f))] if rng.random() < 0.5 else f + bytes(rng.randrange(1, 8))
    elif r < 0.5:  # the AUTH trailer's room
        f[15] |= 0x02
    return bytes(f)


@pytest.mark.parametrize("seed", [1, 2])
@NEEDS_BPF[0]
@NEEDS_BPF[1]
def test_filter_takes_only_what_the_switch_sends_to_one_port(rig: Rig, seed: int) -> None:
    rng = random.Random(seed)
    now = 1000.0
    _learn(rig, now)
    fast = kept = 0
    for i in range(3000):
        frame = _random_frame(rng)
        home = HOME.get(frame[6:12]) if len(frame) >= 12 else None
        pid = home if home is not None and rng.random() < 0.9 else rng.choice((0, 1, 2))  # else it moves
        ret, slot = rig.decide(pid, frame)
        grew, learned, malformed = rig.route(pid, frame, now)
        where = f"frame {i} in port {pid}: {frame[:40].hex()}"
        if slot is not None:
            fast += 1
            assert ret == 0, where
            in_ifindex, out_ifindex, length, _, in_port, out_port, mode = slot
            assert (in_ifindex, in_port, length) == (IFINDEX[pid], pid, len(frame)), where
            assert grew == [out_port] and not learned and not malformed, where
            assert (out_ifindex, mode) == (IFINDEX[out_port], MODES[out_port]) and mode != kprog.MODE_NONE, where
        elif ret == 0:  # what the classic filter dropped: no EtherType, or a control frame (its own socket)
            assert len(frame) < 14 or int.from_bytes(frame[12:14], "big") in rig.ctrl, where
        else:
            assert ret == kprog.SNAP, where
            kept += 1
        rig.kp.sync(rig.core.fdb, now)  # what the switch learned, as the daemon copies it
        now += 0.001
    assert fast > 250 and kept > 250, (fast, kept)


def _pin() -> set[int]:
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # the slot is per CPU: filter and ingress program on one
    return cpus


def _tc(rig: Rig, frame: bytes, ifindex: int) -> int:
    ctx = bytearray(SKB)
    struct.pack_into("I", ctx, 36, ifindex)  # ingress_ifindex
    return bpf.prog_test_run(rig.kp.tc, frame, bytes(ctx))[0]


@NEEDS_BPF[0]
@NEEDS_BPF[1]
def test_ingress_program_forwards_only_the_decided_frame(rig: Rig) -> None:
    cpus = _pin()
    try:
        _learn(rig, 1000.0)
        f = data(mac(2), mac(1), dst_dime=3, src_dime=1, seq=77)
        ret, slot = rig.decide(0, f)
        assert ret == 0 and slot is not None and slot[5] == 1
        assert _tc(rig, f, IFINDEX[0]) == 7  # TC_ACT_REDIRECT
        assert rig.kp.counters(0) == (1, len(f), 0, 0) and rig.kp.counters(1) == (0, 0, 1, len(f))
        assert _tc(rig, f, IFINDEX[0]) == -1  # the slot was taken: next program, then the stack
        other = data(mac(2), mac(1), dst_dime=3, src_dime=1, seq=78)
        for frame, ifindex in ((other, IFINDEX[0]), (f, IFINDEX[1]), (f + b"\0", IFINDEX[0])):
            assert rig.decide(0, f)[1] is not None
            assert _tc(rig, frame, ifindex) == -1
        assert rig.kp.counters(0)[0] == 1
    finally:
        os.sched_setaffinity(0, cpus)


@NEEDS_BPF[0]
@NEEDS_BPF[1]
def test_refresh_turns_hits_into_the_tables_refresh(rig: Rig) -> None:
    _learn(rig, 1000.0)
    f = data(mac(2), mac(1), dst_dime=3, src_dime=1)
    assert rig.decide(0, f)[1] is not None
    assert rig.kp.refresh(rig.core.fdb, 1200.0) == 2  # mac(1) and (mac(1), DIME 1)
    ages = {k: age for k, _, age in rig.core.fdb.entries(1250.0)}
    assert ages[fdb_key(mac(1))] == 50.0 and ages[fdb_key(mac(1), 1)] == 50.0
    assert ages[fdb_key(mac(2))] == 250.0
    assert rig.kp.refresh(rig.core.fdb, 1300.0) == 0  # the marks were cleared
    rig.core.fdb.expire(1350.0)  # mac(2) and mac(3) age out; the kernel's copy follows
    rig.kp.sync(rig.core.fdb, 1350.0)
    assert set(rig.kp.copy) == {kprog.fdb_bytes(fdb_key(mac(1))), kprog.fdb_bytes(fdb_key(mac(1), 1))}
    assert rig.decide(0, f) == (kprog.SNAP, None)  # the destination is unknown now: flooded by userspace


@NEEDS_BPF[0]
@NEEDS_BPF[1]
def test_refresh_does_not_undo_a_move_the_copy_has_not_seen(rig: Rig) -> None:
    _learn(rig, 1000.0)
    f = data(mac(2), mac(1), dst_dime=3, src_dime=1)
    assert rig.decide(0, f)[1] is not None  # mac(1) hit on port 0 in the kernel's copy
    rig.core.fdb.learn(fdb_key(mac(1)), 2, 1000.5)  # then the switch sees it behind port 2 (not copied yet)
    rig.kp.refresh(rig.core.fdb, 1001.0)
    assert rig.core.fdb.lookup(fdb_key(mac(1)), 1001.0) == 2
    rig.kp.sync(rig.core.fdb, 1001.0)
    assert rig.decide(0, f) == (kprog.SNAP, None)  # from port 0 now a move: userspace


class Bed:
    """Network namespaces and the switches a test starts in them; all stopped (each must exit 0) and deleted after."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, ns: str, tmp: Path, *ports: str, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        from tests.test_switch_root import start_switch

        proc = start_switch(ns, tmp, *ports, extra=extra)
        self.procs.append(proc)
        return proc


def switch_bed() -> Iterator[Bed]:
    """The ``bed`` fixture's body (the UDP tests' module has the same fixture)."""
    from tests.test_switch_root import Net

    b = Bed(Net())
    try:
        yield b
        for proc in b.procs:
            proc.terminate()
            assert proc.wait(10) == 0  # SIGTERM: a clean shutdown
    finally:
        for proc in b.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        b.net.close()


@pytest.fixture
def bed() -> Iterator[Bed]:
    yield from switch_bed()


# ---------------------------------------------------------------- real frames through veth

SENDER = r"""
import socket, sys, time
from pxproto.switch.frames import data, mac
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((sys.argv[1], 3))
first, n, rate = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t0 = time.monotonic()
for i in range(first, first + n):
    s.send(data(mac(2), mac(1), dst_dime=3, src_dime=1, seq=i))
    delay = t0 + (i - first + 1) / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""
KEEPALIVE = r"""
import socket, sys, time
from pxproto.switch.frames import heartbeat, mac
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((sys.argv[1], 3))
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.send(heartbeat(mac(2), dime=3))
    time.sleep(0.3)
"""


COUNT = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((sys.argv[1], 3))
s.settimeout(0.1)
et = int(sys.argv[3]).to_bytes(2, "big")
print("ready", flush=True)
seqs = []
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    if f[12:14] == et:
        seqs.append(int.from_bytes(f[26:34], "big"))
print(json.dumps(seqs), flush=True)
"""
"""Listens on an interface and prints, at the end, the sequence numbers of the DATA frames it saw (a line per
frame would fill the pipe before the test reads it)."""


def count(ns: str, dev: str, seconds: float) -> subprocess.Popen[str]:
    et = str(ethertypes.current().data)
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", COUNT, dev, str(seconds), et],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def seqs(p: subprocess.Popen[str]) -> list[int]:
    return list(json.loads(p.communicate(timeout=30)[0]))


@NEEDS_BPF[0]
@NEEDS_BPF[1]
@NETNS[1]
def test_veth_frames_once_each_through_the_kernel(bed: Bed, tmp_path: Path) -> None:
    from tests.test_switch_root import query, send

    net = bed.net
    sw, h1, h2, h3 = net.add("ksw"), net.add("kh1"), net.add("kh2"), net.add("kh3")
    for i, h in enumerate((h1, h2, h3)):
        net.veth(h, "eth0", sw, f"s{i}")
    ports = [f"afpacket:interface=s{i},name=s{i}" for i in range(3)]
    bed.start(sw, tmp_path, *ports, extra=("--aging", "3"))
    st = query(tmp_path, "stats")
    assert isinstance(st, dict)
    if "kernel" not in st["ports"]["s0"]:
        pytest.skip("the kernel fast path did not start here (pxswitch logs why)")
    send(h1, "eth0", heartbeat(mac(1), dime=1))
    send(h2, "eth0", heartbeat(mac(2), dime=3))
    end = time.monotonic() + 5
    while query(tmp_path, "stats")["switch"]["kernel_fdb"] < 4:  # type: ignore[index]
        assert time.monotonic() < end, "the kernel's table copy did not fill"
        time.sleep(0.1)
    learned = query(tmp_path, "stats")["switch"]["learned"]  # type: ignore[index]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    keep = subprocess.Popen(["ip", "netns", "exec", h2, sys.executable, "-c", KEEPALIVE, "eth0", "6"], env=env)
    l2, l3 = count(h2, "eth0", 8.0), count(h3, "eth0", 8.0)
    n = 2000  # over 4 s, longer than the aging: the kernel's hits must keep the source alive
    sender = subprocess.Popen(
        ["ip", "netns", "exec", h1, sys.executable, "-c", SENDER, "eth0", "0", str(n), "500"], env=env
    )
    time.sleep(3.6)  # (the sender's first frame left 3.3 s ago at the latest: past the aging)
    rows = query(tmp_path, "fdb")
    assert isinstance(rows, list)
    ages = {(r["mac"], r["dime"]): r["age"] for r in rows}
    assert ages.get(("02:00:00:00:00:01", 1), 9.9) < 2.0 and ages.get(("02:00:00:00:00:01", None), 9.9) < 2.0
    assert sender.wait(20) == 0
    keep.wait(10)
    got, flooded = seqs(l2), seqs(l3)
    assert sorted(got) == list(range(n)), f"{len(got)} data frames for {n} sent, {len(set(got))} distinct"
    assert flooded == []
    st = query(tmp_path, "stats")
    assert isinstance(st, dict)
    assert st["ports"]["s0"]["kernel"]["rx"] >= n * 0.9 and st["ports"]["s1"]["kernel"]["tx"] >= n * 0.9
    assert st["ports"]["s0"]["rx_class"]["data"] >= n
    assert st["switch"]["learned"] == learned  # nothing aged out and came back
    send(h1, "eth0", heartbeat(mac(1), dime=1))  # (the listeners outlived the aging: learn mac(1) again)
    # mac(1) shows up behind s2: userspace learns the move, then takes it back when s0 speaks again
    send(h3, "eth0", data(mac(2), mac(1), dst_dime=3, src_dime=1, seq=10**6))
    l2 = count(h2, "eth0", 5.0)
    subprocess.run(
        ["ip", "netns", "exec", h1, sys.executable, "-c", SENDER, "eth0", "5000", "300", "1000"],
        env=env,
        check=True,
    )
    got = seqs(l2)
    assert sorted(got) == list(range(5000, 5300)), f"{len(got)} frames, {len(set(got))} distinct"
    assert query(tmp_path, "stats")["switch"]["moved"] >= 2  # type: ignore[index]
    text = subprocess.run(
        [sys.executable, "-m", "pxproto.switch.cli", "stats", "--control", str(tmp_path / "c.sock")],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    assert "s0               in the kernel fast path (peer): rx " in text, text


@NEEDS_BPF[0]
@NEEDS_BPF[1]
@NETNS[1]
def test_kernel_key_required_or_refused(bed: Bed, tmp_path: Path) -> None:
    """``kernel=true`` where the path cannot run stops the switch naming the port; ``kernel=false`` keeps the
    port in userspace."""
    from tests.test_switch_root import ROOT, query

    net = bed.net
    sw, h = net.add("kk"), net.add("kk1")
    net.veth(h, "eth0", sw, "s0")
    args = [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp_path / "x.sock")]
    r = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            sw,
            *args,
            "--validation",
            "full",
            "--port",
            "afpacket:interface=s0,name=s0,kernel=true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert r.returncode != 0
    assert "port s0 (afpacket)" in r.stderr and "kernel fast path: off with validation full" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr
    bed.start(sw, tmp_path, "afpacket:interface=s0,name=s0,kernel=false")
    st = query(tmp_path, "stats")
    assert isinstance(st, dict) and "kernel" not in st["ports"]["s0"] and "kernel_fdb" not in st["switch"]
