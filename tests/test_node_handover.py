"""The sink's hand-over queue (:class:`pxproto.node.handover.MiceQueue`) splitting a chunk without copying it, and the
packing of completion lineages: each compiled helper against its pure twin."""

from __future__ import annotations

import random
import struct

import pytest

from pxproto.node import channels, handover, mice
from pxproto.node.flow import loops
from pxproto.node.handover import MiceQueue

needs_compiled = pytest.mark.skipif(loops is None, reason="pxproto.node._flowc is not built")


def records(pairs: list[tuple[int, bytes]]) -> bytes:
    return mice.pack_records(mice.ITEM, pairs)


def pairs_of(first: int, sizes: list[int]) -> list[tuple[int, bytes]]:
    return [(first + i, bytes([(first + i) % 251]) * size) for i, size in enumerate(sizes)]


@needs_compiled
def test_split_from_is_its_pure_twin() -> None:
    rnd = random.Random(7)
    pairs = pairs_of(1 << 48 | 1, [rnd.choice([0, 1, 16, 700, 1400]) for _ in range(60)])
    recs = records(pairs)
    starts = [0]
    for _, data in pairs:
        starts.append(starts[-1] + mice.REC.size + len(data))
    assert loops is not None
    for off in starts:
        for max_k in (1, 2, 7, 100):
            for room in (1, 13, 1500, 5000, 1 << 20):
                got = loops.split_from(recs, off, max_k, room)
                assert got == handover.split_from_py(recs, off, max_k, room), (off, max_k, room)
    with pytest.raises(ValueError, match="offset 99999 outside"):
        loops.split_from(recs, 99999, 1, 1)


@pytest.mark.parametrize("gather", [False, True])
def test_take_splits_a_chunk_with_views_and_hands_over_the_same_records(gather: bool) -> None:
    """Chunks of small items split at every limit: what is taken is a view of the chunk (gathered) or joined, the
    records are those of the items in order, the rest of the chunk stays whole with an offset."""
    rnd = random.Random(3)
    chunks = [pairs_of(1 << 48 | 1 + 100 * c, [rnd.choice([16, 1400]) for _ in range(rnd.randint(1, 12))])
              for c in range(30)]  # fmt: skip
    want = [p for c in chunks for p in c]
    q = MiceQueue()
    for c in chunks:
        q.add(len(c), c[0][0], records(c))
    assert list(q) == want and q.size == len(records(want))
    got: list[tuple[int, bytes]] = []
    views = 0
    while len(q):
        max_n, limit = rnd.randint(1, 9), rnd.choice([1, 100, 3000, 20000])
        size_before = q.size
        msg, n, first = q.take(max_n, limit, gather)
        if gather and isinstance(msg, list):
            views += sum(isinstance(part, memoryview) for part in msg)
            msg = b"".join(msg)
        assert isinstance(msg, bytes)
        taken = [(lin, data) for _, lin, data in mice.records(msg)]
        assert len(taken) == n and 1 <= n <= max_n and first == taken[0][0]
        assert len(msg) == size_before - q.size
        got += taken
        assert list(q) == want[len(got) :]  # what waits, the split chunk's rest included
    assert got == want and q.size == 0 and q.off == 0
    assert views > 0 or not gather  # splits went out as views of their chunks


def test_take_of_a_split_chunk_does_not_copy_its_rest() -> None:
    pairs = pairs_of(5 << 48 | 1, [1400] * 6)
    recs = records(pairs)
    q = MiceQueue()
    q.add(6, pairs[0][0], recs)
    msg, n, first = q.take(2, 1 << 20, gather=True)
    assert n == 2 and first == pairs[0][0] and isinstance(msg, list)
    head = msg[0]
    assert isinstance(head, memoryview) and head.obj is recs  # a view of the chunk, not a copy
    assert q.chunks[0] == (4, pairs[2][0], recs) and q.off == 2 * (mice.REC.size + 1400)  # the chunk itself
    rest, n, first = q.take(10, 1 << 20, gather=True)
    assert n == 4 and first == pairs[2][0] and isinstance(rest, list)
    tail = rest[0]
    assert isinstance(tail, memoryview) and tail.obj is recs
    assert bytes(head) + bytes(tail) == recs and not q.chunks and q.off == 0


@pytest.mark.parametrize("count", [0, 1, 5, 1000])
def test_pack_lineages_is_struct_pack(count: int) -> None:
    lineages = [(i % 7) << 48 | i for i in range(1, 1200)] + [(1 << 64) - 1]
    start = len(lineages) - count
    want = struct.pack(f"!{count}Q", *lineages[start:])
    assert handover.pack_lineages_py(lineages, start, count) == want
    if loops is not None:
        assert loops.pack_lineages(lineages, start, count) == want


@needs_compiled
def test_pack_lineages_refuses_what_it_cannot_pack() -> None:
    assert loops is not None
    with pytest.raises(ValueError, match="3 lineages from 2 are not in a list of 4"):
        loops.pack_lineages([1, 2, 3, 4], 2, 3)
    with pytest.raises(OverflowError):
        loops.pack_lineages([1, -2], 0, 2)
    with pytest.raises(OverflowError):
        loops.pack_lineages([1 << 64], 0, 1)


def test_completions_go_in_messages_of_a_fragment_each_every_lineage_once() -> None:
    """The sink's flush of completions: each upstream's lineages in order, as many a message as fit a fragment."""
    from test_node_datawire import SNK, SRC, machine

    from pxproto.fastpath import decode
    from pxproto.wire.frame import Data

    m = machine(SNK, 0)
    up = (1, SRC.mac, SRC.dime)
    lineages = [1 << 48 | i for i in range(1, 2501)]
    m.plane.completions[up] = list(lineages)
    m.plane._flush_completions(12.0)
    assert m.plane.completions[up] == []
    tx = m.plane.senders[(1 | channels.COMPLETION_BIT, SRC.mac, SRC.dime)]
    per = tx.frag_size // 8
    bodies = [decode(raw).body for raw, _ in m.take_outbox()]
    payloads = [b.payload for b in bodies if isinstance(b, Data) and b.channel == 1 | channels.COMPLETION_BIT]
    assert [len(p) // 8 for p in payloads] == [per] * (2500 // per) + [2500 % per]
    assert struct.unpack(f"!{2500}Q", b"".join(payloads)) == tuple(lineages)
