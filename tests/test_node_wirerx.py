"""The sink's compiled wire receive loop (``pxproto.node._fastrx.WireRx``) against the per-frame path it bypasses.

Two DIMEs read the same frames from their own UDP wire sockets: one with ``WireRx`` (clear DATA fragments of wired
inputs go from the receive buffer into reassembly in C), one with it switched off (``recv_batch`` and
``Dime._from_server`` per frame).  They must hand their MICE the same records, send the same acks in the same order
and count the same.  Then large items: the queue keeps them as parts (no copy), the ring gathers them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from test_node_datawire import SNK, SRC, data_frame, machine, pair, wired_sink

from pxproto.dime.endpoint import frame_to
from pxproto.fastpath import decode, encode
from pxproto.node import fastrx, mice
from pxproto.node.channels import KEY_AT
from pxproto.node.dime import Dime, DimeConfig
from pxproto.node.handover import MiceQueue
from pxproto.wire.codes import CounterId
from pxproto.wire.frame import Data

pytestmark = pytest.mark.skipif(fastrx.wire_rx() is None, reason="pxproto.node._fastrx is not built")

COUNTED = [
    CounterId.FRAMES_RX,
    CounterId.BYTES_RX,
    CounterId.ACKS_MERGED,
    CounterId.REJECTED_DATA,
    CounterId.REJECTED_MALFORMED,
    CounterId.REJECTED_AUTH,
    CounterId.FRAME_BUGS,
    CounterId.ITEMS_IN,
]


def source_frames(sizes: list[int], per: int = 1) -> list[bytes]:
    """The DATA frames a source sends for items of ``sizes`` (mtu 9000; its MICE gives them ``per`` a batch), its
    acks answered by a sink machine."""
    src, snk = pair()
    seen: list[bytes] = []
    assert snk.mice is not None
    lineage = 1 << 48 | 1
    now = 11.0
    for i in range(0, len(sizes), per):
        batch = [bytes([(lineage + j) % 251]) * size for j, size in enumerate(sizes[i : i + per])]
        msg, k = mice.pack_run(mice.OUT, lineage, batch, 0, 1 << 30, mice.MAX_ITEM)
        assert k == len(batch)
        lineage += k
        src.mice_message(msg, now)
        src.mice_batch_done(now)
    for _ in range(100):
        now += 0.001
        src.handle_timer(now)
        out = [raw for raw, _ in src.take_outbox()]
        seen += out
        for raw in out:
            snk.on_frame_guarded(raw, now)
        snk.plane.flush_acks()
        for raw, _ in snk.take_outbox():
            src.on_frame_guarded(raw, now)
        if not out and not src.plane.flow.queue:
            break
    assert not src.plane.flow.queue
    return seen


class Bed:
    """A sink Dime on its own UDP wire socket (no MICE process: what it hands over stays in ``pending_tx``), the
    socket frames go to it on, and the server end of its socketpair, where what it sends arrives."""

    def __init__(self, tmp: Path, compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(Dime, "start_mice", lambda self, *a: 0)
        self.wire = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.wire.bind(("127.0.0.1", 0))
        self.wire.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        cfg = DimeConfig(
            dime=SNK.dime, core=0, mac=SNK.mac.hex(), fd=theirs.fileno(), state_dir=str(tmp),
            local_store=str(tmp / "store"), mtu=9000, pin=False, wire_fd=os.dup(self.wire.fileno()), wire_rx=True,
        )  # fmt: skip
        self.d = d = Dime(cfg, theirs)
        assert (d.wire_rx is not None) is True
        if not compiled:
            d.wire_rx = None
        assert d.wire is not None
        d.wire.setblocking(False)
        wired_sink(d.m)
        self.sent()
        self.to = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def sent(self) -> list[bytes]:
        got = []
        while True:
            try:
                got.append(self.ours.recv(65536))
            except BlockingIOError:
                return got

    def feed(self, frames: list[bytes], now: float) -> None:
        """The frames onto the wire socket, then the loop's turn for it (as ``Dime.run`` takes one)."""
        for raw in frames:
            self.to.sendto(raw, self.wire.getsockname())
        self.d._from_wire(now)
        self.d.rx_run = 0
        self.d.m.plane.flush_acks(now)
        self.d._flush()

    def close(self) -> None:
        assert self.d.wire is not None
        self.d.wire.close()
        for s in (self.wire, self.ours, self.to, self.d.sock):
            s.close()


def handed(d: Dime) -> list[tuple[int, int, bytes]]:
    assert d.m.mice is not None
    return [rec for msg in d.m.mice.pending_tx for rec in mice.records(msg)]


def both_take(beds: dict[bool, Bed], stream: list[bytes], burst: int, n: int) -> tuple[Bed, Bed]:
    """Feed ``stream`` to both beds ``burst`` frames a turn; both handed their MICE (or queued) the same ``n`` items,
    each once, sent the same frames and counted the same.  Returns (the compiled loop's bed, the other)."""
    now = 12.0
    for i in range(0, len(stream), burst):
        now += 0.001
        for bed in beds.values():
            bed.feed(stream[i : i + burst], now)
    fast, slow = beds[True], beds[False]
    assert handed(fast.d) == handed(slow.d)
    assert list(fast.d.m.plane.mice_queue) == list(slow.d.m.plane.mice_queue)  # (what waits for the MICE)
    lineages = [lin for _, lin, _ in handed(fast.d)] + [lin for lin, _ in fast.d.m.plane.mice_queue]
    assert sorted(lineages) == [1 << 48 | i for i in range(1, n + 1)]  # every item, once
    assert fast.sent() == slow.sent()
    for cid in COUNTED:
        assert fast.d.m.counters[cid] == slow.d.m.counters[cid], cid
    return fast, slow


def test_wirerx_does_what_the_per_frame_path_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = source_frames([3000] * 20 + [20000] * 6 + [100] * 5 + [8000] * 4)
    assert len(frames) > 30 and any(frag_count(f) > 1 for f in frames)  # multi-fragment messages among them
    other = data_frame(type(SRC)(b"\x02\x00\x00\x00\x00\x09", 4, 0), SNK, 1)  # from a sender never wired
    broken = bytearray(frames[5])
    broken[14] = 0x7F  # a bad header version: malformed
    # in order, then a duplicate, two swapped, an unwired sender, a malformed frame, a truncated one
    last = decode(frames[-1]).body
    assert isinstance(last, Data)
    bad = Data(1, msg_id=last.msg_id + 1, payload=bytes(8) + b"\x01", msg_len=9, frag_count=1)  # a truncated item
    sealed = bytearray(frames[7])
    sealed[15] |= 0x04  # the ENCRYPTED header flag: the decoding path's, never the compiled one's
    stream = [*frames[:4], frames[2], frames[5], frames[4], other, bytes(broken), frames[6][:40], *frames[6:7]]
    stream += [bytes(sealed), *frames[7:]]
    stream.append(encode(frame_to(SRC, SNK, bad)))
    beds = {c: Bed(tmp_path / str(c), c, monkeypatch) for c in (True, False)}
    try:
        fast, slow = both_take(beds, stream, 12, 35)
        assert fast.d.m.counters[CounterId.REJECTED_DATA] == 1
        assert fast.d.m.counters[CounterId.REJECTED_MALFORMED] == 3 and fast.d.m.reasons["malformed:flags"] == 1
        assert fast.d.m.reasons == slow.d.m.reasons
        assert fast.d.m.reasons["bad_item"] == slow.d.m.reasons["bad_item"] == 1
        key = (1, SRC.mac, SRC.dime)
        assert fast.d.m.plane.receivers[key].counters == slow.d.m.plane.receivers[key].counters
        rx = fast.d.wire_rx
        assert rx is not None and rx.fast > len(frames) // 2 and rx.slow >= 4  # the first frame wires the receiver
    finally:
        for bed in beds.values():
            bed.close()


@pytest.mark.parametrize("size", [16, 1400])
def test_small_items_go_from_the_receive_buffer_into_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Small items in one-fragment messages: the compiled loop gives ``arrive_at`` an in-order message where it lies
    in the receive buffer (no payload bytes made: ``lent`` counts them); one out of order, or repeated, waits in its
    own bytes.  What the MICE is handed, what waits, the acks and the counters are those of the per-frame path."""
    n, per = (6000, 300) if size == 16 else (400, 50)
    frames = [f for f in source_frames([size] * n, per) if isinstance(decode(f).body, Data)]  # (no heartbeat)
    assert all(frag_count(f) == 1 for f in frames) and len(frames) > 8  # several items a frame, one fragment each
    stream = [*frames[:3], frames[1], frames[4], frames[3], *frames[5:]]  # a duplicate, two swapped
    beds = {c: Bed(tmp_path / str(c), c, monkeypatch) for c in (True, False)}
    try:
        fast, slow = both_take(beds, stream, 5, n)
        assert all(len(d) == size for _, _, d in handed(fast.d))
        key = (1, SRC.mac, SRC.dime)
        frx, srx = fast.d.m.plane.receivers[key], slow.d.m.plane.receivers[key]
        assert frx.counters == srx.counters and frx.counters["duplicates"] == 1
        # every message in order but the one that came early (and the first, which wires the receiver)
        assert frx.lent == len(frames) - 2 and srx.lent == 0
    finally:
        for bed in beds.values():
            bed.close()


def frag_count(frame: bytes) -> int:
    return int.from_bytes(frame[KEY_AT + 33 : KEY_AT + 35], "big")  # (channels.KEY: frag_count at KEY_AT + 33)


def big_items(n: int, size: int) -> list[bytes]:
    return [bytes([i + 1]) * size for i in range(n)]


@pytest.mark.parametrize(("n", "size"), [(1, 65000), (3, 20000), (7, 5000)])
def test_large_items_are_queued_as_views_and_handed_over_whole(n: int, size: int) -> None:
    """The compiled arrive keeps large items as (record header, view) parts; what the MICE gets is the same as the
    pure twin's packed records, joined or gathered."""
    from pxproto.node import flow as flow_mod

    assert flow_mod.loops is not None
    items = big_items(n, size)
    msg = (
        mice.pack_items([(1 << 48 | (i + 1), it) for i, it in enumerate(items)])
        if n > 1
        else ((1 << 48 | 1).to_bytes(8, "big") + items[0])
    )
    want = [(1 << 48 | (i + 1), it) for i, it in enumerate(items)]
    m = machine(SNK, 0)
    q = MiceQueue()
    assert flow_mod.loops.arrive(msg, m.plane.flow, (1, SRC.mac, SRC.dime), q) == []
    assert len(q) == n and not isinstance(q.chunks[0][2], bytes)  # parts: no copy of the items
    assert list(q) == want
    assert q.size == sum(mice.REC.size + size for _ in items)
    twin = MiceQueue()
    for pair_ in want:
        twin.append(pair_)
    for limit in (1, size + 20, 10 * size):  # one item at least; a limit between; everything
        a, b, c = MiceQueue(), MiceQueue(), MiceQueue()
        for dst in (a, b):
            dst.add(n, q.chunks[0][1], list(q.chunks[0][2]))
        for pair_ in want:
            c.append(pair_)
        while len(c):
            got_join, k1, f1 = a.take(2, limit)
            got_parts, k2, f2 = b.take(2, limit, gather=True)
            wanted, k3, f3 = c.take(2, limit)
            assert isinstance(got_join, bytes) and got_join == wanted
            assert isinstance(got_parts, list)  # parts, gathered by the ring: never joined here
            joined = b"".join(got_parts)
            assert joined == wanted and (k1, f1) == (k2, f2) == (k3, f3)
            assert a.size == b.size == c.size and len(a) == len(b) == len(c)
        assert not len(a) and not len(b)


def test_a_gathered_hand_over_goes_through_the_ring_as_one_message() -> None:
    from pxproto.node import shmring

    if not shmring.available():
        pytest.skip("no shared-memory ring here")
    ours, theirs = shmring.Link.pair()
    try:
        q = MiceQueue()
        items = big_items(2, 30000)
        m = machine(SNK, 0)
        from pxproto.node.flow import loops

        assert loops is not None
        loops.arrive(mice.pack_items([(7 << 48 | (i + 1), it) for i, it in enumerate(items)]), m.plane.flow,
                     (1, SRC.mac, SRC.dime), q)  # fmt: skip
        msg, k, first = q.take(10, 1 << 20, gather=True)
        assert isinstance(msg, list) and k == 2 and first == 7 << 48 | 1
        assert ours.try_send(msg)
        view = theirs.recv_view()
        assert view is not None
        assert [(lin, bytes(d)) for _, lin, d in mice.records(bytes(view))] == [
            (7 << 48 | (i + 1), it) for i, it in enumerate(items)
        ]
    finally:
        ours.sock.close()
        theirs.sock.close()


@pytest.mark.parametrize("ring", [True, False])
def test_large_items_go_to_a_ring_two_a_message(ring: bool) -> None:
    """Over a shared ring (which gathers parts) a hand-over of large items holds up to GATHER_BYTES: two 64 KiB items
    a message; over the socket, each goes alone (BATCH_BYTES), joined into one bytes."""
    from pxproto.node.channels import GATHER_BYTES
    from pxproto.node.flow import loops

    assert loops is not None and 2 * (mice.REC.size + 65536) >= GATHER_BYTES > mice.REC.size + 65536
    m = machine(SNK, 0)
    if ring:
        m.host.mice_link = object()  # type: ignore[attr-defined]  # (feed_mice only asks whether there is one)
    items = big_items(3, 65536)
    for i, it in enumerate(items):
        loops.arrive(
            (1 << 48 | (i + 1)).to_bytes(8, "big") + it, m.plane.flow, (1, SRC.mac, SRC.dime), m.plane.mice_queue
        )
    m.plane.feed_mice(12.0)
    assert m.mice is not None
    sent = list(m.mice.pending_tx)
    assert [isinstance(msg, list) for msg in sent] == ([True, True] if ring else [False, False, False])
    got = [[(lin, d) for _, lin, d in mice.records(b"".join(msg) if ring else msg)] for msg in sent]
    want = [(1 << 48 | (i + 1), it) for i, it in enumerate(items)]
    assert got == ([want[:2], want[2:]] if ring else [[w] for w in want])
    assert m.plane.mice_inflight == 3 and m.plane.mice_inflight_bytes == 3 * (mice.REC.size + 65536)
