"""The compiled AF_PACKET loop, rootless: its ports are UNIX datagram socket pairs (recvmmsg/sendmmsg work on them).

Every verdict of the loop is checked against the sans-I/O core given the same
policy: what it forwards where, and, under ``validation=full``, the field each
malformed frame is counted under (the loop calls the fast path's px_view; the
core calls the reference decoder).
"""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxproto.capture.pcapng import PcapngWriter, read_packets
from pxproto.switch.core import Switch, SwitchPolicy
from pxproto.switch.frames import data, heartbeat, mac, signaling
from pxproto.testing import frames, hostile_bytes, mutations
from pxproto.wire import encode

afpacket = pytest.importorskip("pxproto.switch._afpacket")
_fdb = pytest.importorskip("pxproto.switch._fdb")


def test_compiled_loop_is_built_when_required() -> None:
    if os.environ.get("PXPROTO_REQUIRE_COMPILED") == "1":
        assert hasattr(afpacket, "FastLoop") and hasattr(afpacket, "PacketRing")


class Rig:
    """A FastLoop over ``n`` socket pairs: the test holds ``outer[i]``, the loop reads and writes ``inner[i]``."""

    def __init__(self, n: int = 3, validation: str = "header", malformed: str = "drop", mirror: bool = False):
        self.fdb = _fdb.Fdb(1024, 300.0)
        self.loop = afpacket.FastLoop(self.fdb)
        self.loop.validation = afpacket.VALIDATION[validation]
        self.loop.malformed_drop = malformed == "drop"
        if mirror:
            self.loop.set_mirror(1 << 20)
        self.outer: list[socket.socket] = []
        self.inner: list[socket.socket] = []
        for i in range(n):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            a.setblocking(False)
            b.setblocking(False)
            self.outer.append(a)
            self.inner.append(b)
            self.loop.set_port(i, b.fileno(), -1, None, f"p{i}")

    def pump(self, port: int, now: float = 1.0) -> tuple[int, list[bytes]]:
        got, slow, retry, failed = self.loop.pump(port, now)
        assert retry == [] and failed == []
        return got, slow

    def heard(self, port: int) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.outer[port].recv(70000))
            except BlockingIOError:
                return out

    def close(self) -> None:
        for s in self.outer + self.inner:
            s.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_flood_learn_and_forward(rig: Rig) -> None:
    hb = heartbeat(mac(1), dime=3)
    rig.outer[0].send(hb)
    assert rig.pump(0) == (1, [])
    assert rig.heard(1) == [hb] and rig.heard(2) == [hb]
    d = data(mac(1), mac(2), dst_dime=3)
    rig.outer[1].send(d)
    rig.pump(1)
    assert rig.heard(0) == [d] and rig.heard(2) == []  # (mac 1, DIME 3) was learned on port 0
    c = rig.loop.counters(0)
    assert c[0] == 1 and c[2] == 1  # rx 1 heartbeat, tx 1 data
    assert rig.loop.switch_counters()["flooded"] == 1


def test_control_frames_leave_before_data(rig: Rig) -> None:
    rig.outer[1].send(heartbeat(mac(2), dime=1))
    rig.pump(1)
    rig.heard(0)
    rig.heard(2)
    batch = [data(mac(2), mac(1), dst_dime=1, seq=i) for i in range(5)] + [signaling(mac(2), mac(1), seq=99)]
    for f in batch:
        rig.outer[0].send(f)
    rig.pump(0)
    assert rig.heard(1) == [batch[-1], *batch[:-1]]


def test_header_errors_go_to_python(rig: Rig) -> None:
    bad = bytearray(heartbeat(mac(1)))
    bad[14] = 9  # version
    rig.outer[0].send(bytes(bad))
    assert rig.pump(0) == (1, [bytes(bad)])  # the core counts it under "version"


def test_full_validation_drops_and_counts_by_field() -> None:
    rig = Rig(validation="full")
    try:
        good = signaling(mac(2), mac(1))
        bad = bytearray(good)
        bad[34 + 4] = 0xEE  # the command byte of the signaling body: the header is fine, the body is not
        rig.outer[0].send(bytes(bad))
        rig.outer[0].send(good)
        assert rig.pump(0) == (2, [])
        assert rig.heard(1) == [good]
        assert rig.loop.malformed_by_field() == {"cmd": 1}
        assert rig.loop.counters(0)[5] == 1
    finally:
        rig.close()


def core_verdict(frame: bytes, validation: str) -> tuple[set[int], dict[str, int]]:
    """Where the core sends ``frame`` from port 0 with an empty table, and the fields it counts malformed."""
    sw = Switch(SwitchPolicy(validation=validation))  # type: ignore[arg-type]
    for i in range(3):
        sw.add_port(f"p{i}")
    sw.receive(0, frame, 1.0)
    return {p for p in (1, 2) if sw.pending(p)}, sw.malformed


def loop_verdict(frame: bytes, validation: str) -> tuple[set[int], dict[str, int]] | None:
    """The same from the compiled loop, or None when it handed the frame to the core."""
    rig = Rig(validation=validation)
    try:
        rig.outer[0].send(frame)
        got, slow = rig.pump(0)
        assert got == 1
        if slow:
            assert slow == [frame]
            return None
        return {p for p in (1, 2) if rig.heard(p)}, rig.loop.malformed_by_field()
    finally:
        rig.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(frames().map(encode), frames().map(encode).flatmap(mutations), hostile_bytes()))
def test_full_validation_agrees_with_the_reference_decoder(raw: bytes) -> None:
    if not raw or len(raw) > 16000:
        return  # an empty datagram is no frame; the loop's slots hold 16 KiB
    want = core_verdict(raw, "full")
    got = loop_verdict(raw, "full")
    if got is not None:
        assert got == want


@settings(max_examples=100, deadline=None)
@given(st.one_of(frames().map(encode), frames().map(encode).flatmap(mutations)))
def test_header_validation_agrees_with_the_core(raw: bytes) -> None:
    if not raw:
        return
    got = loop_verdict(raw, "header")
    if got is not None:
        assert got == core_verdict(raw, "header")


def test_mirror_blocks_are_pcapng() -> None:
    rig = Rig(mirror=True)
    try:
        sent = [heartbeat(mac(1), dime=3), data(mac(1), mac(2), dst_dime=3, size=61), signaling(mac(9), mac(1))]
        for f in sent:
            rig.outer[0].send(f)
        rig.pump(0)
        blocks = rig.loop.take_mirror()
        assert rig.loop.take_mirror() == b""
        buf = io.BytesIO()
        PcapngWriter(buf)
        buf.write(blocks)
        buf.seek(0)
        pkts = list(read_packets(buf))
        assert [p.data for p in pkts] == sent
        assert all(p.comment == "in p0" and p.ts_ns > 1_600_000_000 * 10**9 for p in pkts)
    finally:
        rig.close()


def test_mirror_buffer_is_bounded() -> None:
    rig = Rig()
    rig.loop.set_mirror(300)
    try:
        for i in range(5):
            rig.outer[0].send(heartbeat(mac(1), dime=3, seq=i))
        rig.pump(0)
        assert len(rig.loop.take_mirror()) <= 300
        assert rig.loop.switch_counters()["mirror_dropped"] >= 2
    finally:
        rig.close()


def test_run_polls_and_forwards_until_python_has_work(rig: Rig) -> None:
    import threading
    import time

    hb = heartbeat(mac(1), dime=3)
    rig.outer[0].send(hb)
    t0 = time.monotonic()
    assert rig.loop.run([], 0.05) == []  # forwarded inside; nothing for Python; back after the timeout
    assert time.monotonic() - t0 >= 0.04
    assert rig.heard(1) == [hb] and rig.heard(2) == [hb]
    bad = bytearray(hb)
    bad[14] = 9
    rig.outer[1].send(bytes(bad))
    assert rig.loop.run([], 5.0) == [(1, [bytes(bad)], [], [])]  # a frame for the core: back at once
    r, w = socket.socketpair()
    try:
        threading.Timer(0.05, lambda: w.send(b"x")).start()
        t0 = time.monotonic()
        assert rig.loop.run([r.fileno()], 5.0) == []  # a watched descriptor woke it
        assert time.monotonic() - t0 < 4.0
    finally:
        r.close()
        w.close()


def test_run_returns_when_the_mirror_buffer_is_half_full() -> None:
    rig = Rig()
    rig.loop.set_mirror(4096)
    try:
        for i in range(40):
            rig.outer[0].send(heartbeat(mac(1), dime=3, seq=i))
        assert rig.loop.run([], 5.0) == []
        assert len(rig.loop.take_mirror()) > 2048
    finally:
        rig.close()


def test_run_reads_whichever_of_a_ports_two_sockets_poll_found_readable() -> None:
    """run() skips a socket poll did not report (no empty read per wake-up): a control frame alone, a data frame
    alone, and both at once (control first) all still go through."""
    rig = Rig(n=2)
    ca, cb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for s in (ca, cb):
            s.setblocking(False)
        rig.loop.set_port(0, rig.inner[0].fileno(), cb.fileno(), None, "p0")  # port 0 with a control socket
        hb = heartbeat(mac(1), dime=3)
        d = data(mac(2), mac(1), seq=1)
        ca.send(hb)  # only the control socket is readable
        assert rig.loop.run([], 0.05) == []
        assert rig.heard(1) == [hb]
        rig.outer[0].send(d)  # only the data socket
        assert rig.loop.run([], 0.05) == []
        assert rig.heard(1) == [d]
        rig.outer[0].send(d)
        ca.send(hb)  # both, the data frame first: the control frame still leads
        assert rig.loop.run([], 0.05) == []
        assert rig.heard(1) == [hb, d]
        assert rig.loop.counters(0)[0] == 4
    finally:
        rig.close()
        ca.close()
        cb.close()


def _stream(sock: socket.socket, seconds: float, gap: float) -> int:
    """A child process writing heartbeats into ``sock`` for ``seconds``, ``gap`` apart (0: as fast as it can);
    the parent gets its pid (no GIL between the writer and the loop)."""
    pid = os.fork()
    if pid:
        return pid
    try:
        import time

        sock.setblocking(True)
        hb = heartbeat(mac(1), dime=3)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sock.send(hb)
            if gap:
                time.sleep(gap)
    finally:
        os._exit(0)


@pytest.mark.parametrize(("adaptive", "gap", "spins"), [(50e-6, 0.0, True), (0.0, 0.0, False), (50e-6, 0.005, False)])
def test_adaptive_busy_polling_spins_only_while_frames_keep_coming(adaptive: float, gap: float, spins: bool) -> None:
    """busy_adaptive: a stream of frames (each look finds work within 50 µs of the last) keeps the loop polling
    without sleeping, so it counts looks that found nothing; frames 5 ms apart (heartbeats) never start it, nor
    does any stream with busy_adaptive 0; every frame is read either way."""
    rig = Rig(n=1)  # one port: frames are read and learned, nothing is sent
    rig.loop.busy_adaptive = adaptive
    try:
        pid = _stream(rig.outer[0], 0.3, gap)
        import time

        end = time.monotonic() + 0.45
        while time.monotonic() < end:
            rig.loop.run([], 0.05)
        assert os.waitpid(pid, 0)[1] == 0
        rig.loop.run([], 0.01)
        c = rig.loop.switch_counters()
        assert (c["busy_spins"] > 0) is spins, c
        assert c["poll_waits"] > 0  # it slept in poll at least between the runs' ends
        assert rig.loop.counters(0)[0] > (0 if gap else 100)
        if gap:
            assert 20 <= rig.loop.counters(0)[0] <= 61  # one every 5 ms for 0.3 s, none lost
    finally:
        rig.close()
