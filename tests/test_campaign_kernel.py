"""The hostile-frame campaign at a running pxkernel server (behind a pxswitch, authentication on).

Hostile frames are aimed at the server's MAC (and, for DIME-scope frames, at
its DIME ids, or one it does not have) so they get past the switch and the
server's router; legitimate signed PINGs to every DIME go on between bursts.
Every frame routed to a DIME is accounted for: the DIME's REJECTED_MALFORMED,
REJECTED_UNAUTHENTICATED and REJECTED_AUTH(+REPLAY) counters must grow by
exactly what the reference decoder says of the frames routed to it (the
server's own router, pxproto.node.fastrx.route, says where each frame goes).  The
server and its DIME processes must not restart and must stay within an RSS bound.

Short form in the default run; ``pytest -m slow`` sends 1,000,000 frames.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest

from pxproto.dime.signaling import ResponseReceived
from pxproto.fuzz import Case, FrameGenerator, Report
from pxproto.fuzz.verdict import OK, reference_verdict
from pxproto.node import fastrx
from pxproto.node.testbed import Cluster
from pxproto.wire.codec import encode
from pxproto.wire.codes import DIME_ALL, Command, Scope, Status, TlvType
from pxproto.wire.frame import Data, Frame, Tlv
from tests._helpers import survive_campaign

DIMES = 2
RSS_GROWTH_BOUND_KIB = 96 * 1024
"""Server plus DIME processes may grow by at most 96 MiB in all over the campaign."""
MALFORMED, AUTH, REPLAY, UNAUTH = 11, 12, 13, 20


class ClientWire:
    """The cluster client's UDP port on the switch, as a pxfuzz wire."""

    def __init__(self, cluster: Cluster) -> None:
        self.client = cluster.client

    def send(self, frames: Sequence[bytes]) -> int:
        for f in frames:
            if f:
                self.client.send_raw(f)
        return len(frames)

    def recv(self, timeout: float) -> list[bytes]:
        self.client.poll(timeout)
        return []

    def close(self) -> None:
        pass


class AimedGenerator(FrameGenerator):
    """Frames aimed at one server: its MAC (or broadcast) as destination, its DIME ids (and one past them)."""

    def __init__(self, seed: int, server: bytes) -> None:
        super().__init__(seed, min_len=1, pool_size=256)
        self.server = server

    def next(self) -> Case:
        c = super().next()
        while is_k2(c.raw):  # a known DIME killer (finding K2, below): kept out so the run can go on past it
            c = super().next()
        raw = bytearray(c.raw)
        if len(raw) >= 6 and self.rng.random() < 0.9:
            raw[:6] = self.server if self.rng.random() < 0.9 else b"\xff" * 6
        if len(raw) >= 24 and raw[15] & 1 and self.rng.random() < 0.9:
            raw[22:24] = self.rng.randrange(DIMES + 1).to_bytes(2, "big")
        return Case(bytes(raw), c.kind)


def is_k2(raw: bytes) -> bool:
    """A DATA frame from DIME id 0xffff (the codec allows it; a DIME's channel code refuses it by raising)."""
    return len(raw) >= 20 and raw[12:14] == b"\xab\xbb" and raw[18:20] == b"\xff\xff"


def _tree_rss_kib(pid: int) -> int:
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(x) for x in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(x) for x in f.read().split())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("kfuzz"), kernels=1, dimes=DIMES, key=True)
    yield c
    c.close()


def _counters(c: Cluster, dime: int) -> dict[int, int]:
    out = {}
    for cid in (MALFORMED, AUTH, REPLAY, UNAUTH):
        r = c.ask(c.dime(0, dime), Command.COUNTERS, Tlv(TlvType.COUNTER_ID, cid))
        out[cid] = int(r.param(TlvType.VALUE))  # type: ignore[arg-type]
    return out


def run_kernel_campaign(c: Cluster, count: int, seed: int) -> None:
    server = c.servers[0]
    pid = c.procs[0].pid
    dime_pids = _children(pid)
    before = {d: _counters(c, d) for d in range(DIMES)}
    expected: dict[int, Counter[str]] = {d: Counter() for d in range(DIMES)}

    def book(cases: Sequence[Case]) -> None:
        for case in cases:
            d = fastrx.route(case.raw, server)
            if d not in expected:
                continue
            v = reference_verdict(case.raw)
            if v != OK:
                expected[d]["malformed"] += 1
            elif case.raw[12:14] == b"\xab\xba" or case.raw[15] & 4:
                # signaling: the DIME checks its trailer; an encrypted frame of any class (ENCRYPTED, which
                # comes with AUTH) is opened first, and a hostile one fails its tag
                expected[d]["auth" if case.raw[15] & 2 else "unauth"] += 1

    def probe() -> bool:
        for d in range(DIMES):
            r = c.client.request(c.dime(0, d), Command.PING, [Tlv(TlvType.ECHO, os.urandom(8))], timeout=5.0)
            if not (isinstance(r, ResponseReceived) and r.status is Status.OK):
                return False
        return True

    rss0 = [0]

    def check(r: Report) -> list[str]:
        rss = _tree_rss_kib(pid)
        if r.bursts == 1:
            rss0[0] = rss
        problems = []
        if c.procs[0].poll() is not None:
            problems.append(f"pxkernel exited with {c.procs[0].returncode}")
        elif _children(pid) != dime_pids:
            problems.append(f"DIME processes restarted: {dime_pids} -> {_children(pid)}\n{c.log_text()[-2000:]}")
        if rss - rss0[0] > RSS_GROWTH_BOUND_KIB:
            problems.append(f"RSS grew {rss - rss0[0]} KiB (bound {RSS_GROWTH_BOUND_KIB})")
        return problems

    c.client.keep_heartbeats = False
    report = survive_campaign(
        ClientWire(c), AimedGenerator(seed, server), count=count, burst=100, probes=50,
        probe=probe, rate=2000, check=check, on_burst=book,
    )  # fmt: skip
    c.client.wait_for(lambda: False, 0.5)
    after = {d: _counters(c, d) for d in range(DIMES)}
    for d in range(DIMES):
        delta = {k: after[d][k] - before[d][k] for k in after[d]}
        exp = expected[d]
        assert delta[MALFORMED] == exp["malformed"], (d, delta, exp)
        assert delta[UNAUTH] == exp["unauth"], (d, delta, exp)
        assert delta[AUTH] + delta[REPLAY] == exp["auth"], (d, delta, exp)
    print(report.summary())
    print({d: dict(expected[d]) for d in expected}, f"server+DIMEs RSS {_tree_rss_kib(pid)} KiB")


def test_kernel_survives_a_short_campaign_and_counts_what_reaches_its_dimes(cluster: Cluster) -> None:
    run_kernel_campaign(cluster, 3000, seed=3)


def test_k2_one_data_frame_from_dime_0xffff_does_not_kill_a_dime(cluster: Cluster) -> None:
    # Found by the long campaign after about 20,000 frames: pxproto/node/dime.py _data makes a ChannelReceiver for
    # any new (channel, MAC, DIME) and ChannelReceiver raises ValueError for DIME 0xffff, so the DIME process
    # dies and the server restarts it (new epoch).  DATA frames are not signed: anyone on the wire can do it.
    pid = cluster.procs[0].pid
    before = _children(pid)
    body = Data(channel=9, msg_id=1, payload=b"x", msg_len=1, frag_count=1)
    frame = Frame(body, Scope.DIME, DIME_ALL, 0, 0, 0, 1, cluster.servers[0], bytes.fromhex("02bad0000001"))
    raw = encode(frame)
    assert is_k2(raw)
    cluster.client.send_raw(raw)
    cluster.client.wait_for(lambda: False, 1.0)
    assert _children(pid) == before, cluster.log_text()[-1500:]


def test_k3_data_fragments_from_unknown_senders_do_not_grow_a_dime(cluster: Cluster) -> None:
    # Found by the long campaign: the DIMEs stopped answering PING after about 700,000 hostile frames.
    # pxproto/node/dime.py _data makes a ChannelReceiver (holding the fragment) for every new (channel, MAC, DIME)
    # that sends DATA, connected or not, and DATA is not signed: each new sender costs about 1.5 KiB that is
    # never given back (measured: +45 MiB and PING 1 ms -> 119 ms after 30,000 such fragments).
    server_pid = cluster.procs[0].pid  # the server and its DIME processes
    cluster.client.wait_for(lambda: False, 1.0)
    before = _tree_rss_kib(server_pid)
    for i in range(6000):
        body = Data(channel=i & 0x7FFF, msg_id=1, payload=b"x" * 64, msg_len=128, frag_count=2)
        src = bytes([2, 0xBB]) + i.to_bytes(4, "big")
        cluster.client.send_raw(encode(Frame(body, Scope.DIME, i & 0xFFF, 0, 1, 0, i, cluster.servers[0], src)))
        if i % 200 == 0:
            cluster.client.poll(0.02)
    cluster.client.wait_for(lambda: False, 1.0)
    assert _tree_rss_kib(server_pid) - before < 4 * 1024, "a DIME grows with every unknown DATA sender"


@pytest.mark.slow
def test_kernel_survives_a_million_hostile_frames(cluster: Cluster) -> None:
    run_kernel_campaign(cluster, 1_000_000, seed=4)
