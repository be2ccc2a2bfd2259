"""The compiled item codecs (pxproto.node._items) against their pure twins in pxproto.node.mice.

Both run on the same inputs, well-formed and malformed (truncated headers, lengths past the end, lineage 0),
and must give the same results and the same ValueError text; the pure twins are also checked against the
format itself (struct), so agreeing on a wrong answer fails too.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from typing import Any

import pytest

from pxproto.fastpath import select
from pxproto.node import handover, mice

C: Any = select.compiled("pxproto.node._items")
needs_c = pytest.mark.skipif(C is None, reason="pxproto.node._items is not built")


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(*args))
    except ValueError as exc:
        return ("ValueError", str(exc))


def random_items(rng: random.Random, n: int) -> list[tuple[int, bytes]]:
    return [(rng.randrange(1, 1 << 64), rng.randbytes(rng.choice((0, 1, 16, 300, 1400)))) for _ in range(n)]


def mutations(rng: random.Random, msg: bytes) -> list[bytes]:
    """Truncations, a byte changed in a header, and junk appended."""
    out = [msg[:k] for k in sorted({0, 1, 7, 8, 9, 12, 13, 19, 20, len(msg) - 1}) if k <= len(msg)]
    for _ in range(20):
        b = bytearray(msg)
        if b:
            b[rng.randrange(min(len(b), 40))] = rng.randrange(256)
        out.append(bytes(b))
    out.append(msg + b"\x00" * rng.randrange(1, 14))
    return out


def test_pure_twins_follow_the_format() -> None:
    items = [(1, b"ab"), (2**64 - 1, b"")]
    packed = mice.pack_items_py(items)
    assert packed == bytes(8) + struct.pack("!QI", 1, 2) + b"ab" + struct.pack("!QI", 2**64 - 1, 0)
    assert mice.unpack_items_py(packed) == items
    assert mice.unpack_items_py(struct.pack("!Q", 7) + b"xyz") == [(7, b"xyz")]
    recs = mice.pack_records_py(mice.ITEM, items)
    assert recs == struct.pack("!BQI", 1, 1, 2) + b"ab" + struct.pack("!BQI", 1, 2**64 - 1, 0)
    assert mice.records_py(recs) == [(1, 1, b"ab"), (1, 2**64 - 1, b"")]
    msg, n = mice.pack_run_py(mice.OUT, 10, [b"a", b"bb", b"c"], 1, 1000, 100)
    assert (msg, n) == (struct.pack("!BQI", 2, 10, 2) + b"bb" + struct.pack("!BQI", 2, 11, 1) + b"c", 2)


@needs_c
def test_compiled_and_pure_decode_alike() -> None:
    rng = random.Random(14)
    for _ in range(200):
        items = random_items(rng, rng.randrange(1, 6))
        batch = mice.pack_items_py(items)
        single = struct.pack("!Q", items[0][0]) + items[0][1]
        recs = mice.pack_records_py(rng.choice((1, 2, 3)), items)
        for msg in [batch, single, *mutations(rng, batch), *mutations(rng, single)]:
            assert outcome(C.unpack_items, msg) == outcome(mice.unpack_items_py, msg), msg.hex()
        for msg in [recs, *mutations(rng, recs)]:
            assert outcome(C.records, msg) == outcome(mice.records_py, msg), msg.hex()


@needs_c
def test_compiled_and_pure_encode_alike() -> None:
    rng = random.Random(15)
    for _ in range(200):
        items = random_items(rng, rng.randrange(0, 8))
        assert C.pack_items(items) == mice.pack_items_py(items)
        assert C.pack_records(3, items) == mice.pack_records_py(3, items)
        data: list[Any] = [d for _, d in items] + [bytearray(b"ba"), memoryview(b"mv")]
        start = rng.randrange(len(data))
        limit = rng.choice((1, 40, 400, 5000))
        assert C.pack_run(2, 99, data, start, limit, 2000) == mice.pack_run_py(2, 99, data, start, limit, 2000)
        qa, qb = deque(items), deque(items)
        max_n, lim = rng.randrange(0, 6), rng.choice((1, 100, 10_000))
        assert C.take_records(1, qa, max_n, lim) == mice.take_records_py(1, qb, max_n, lim)
        assert qa == qb


def test_item_lists_and_pack_dones_follow_the_format() -> None:
    msg = mice.pack_records_py(mice.ITEM, [(5, b"ab"), (6, b"")]) + mice.REC.pack(mice.EOF, 9, 1) + b"z"
    msg += mice.pack_records_py(mice.ITEM, [(7, b"c")])
    assert mice.item_lists_py(msg, mice.ITEM, mice.STOP) == ([5, 6, 7], [b"ab", b"", b"c"], False)
    stopped = msg + mice.REC.pack(mice.STOP, 0, 0) + mice.pack_records_py(mice.ITEM, [(8, b"d")])
    assert mice.item_lists_py(stopped, mice.ITEM, mice.STOP) == ([5, 6, 7], [b"ab", b"", b"c"], True)
    assert mice.pack_dones_py(mice.DONE, [1, 2**64 - 1]) == struct.pack("!BQIBQI", 3, 1, 0, 3, 2**64 - 1, 0)


@needs_c
def test_compiled_and_pure_item_lists_and_dones_alike() -> None:
    rng = random.Random(16)
    for _ in range(200):
        parts = [mice.pack_records_py(rng.choice((1, 1, 1, 4, 5)), random_items(rng, rng.randrange(0, 4)))]
        parts += [mice.pack_records_py(mice.ITEM, random_items(rng, rng.randrange(0, 4)))]
        msg = b"".join(parts)
        for m in [msg, *mutations(rng, msg)]:
            assert outcome(C.item_lists, m, mice.ITEM, mice.STOP) == outcome(mice.item_lists_py, m, 1, 5), m.hex()
        lins = [lin for lin, _ in random_items(rng, rng.randrange(0, 9))]
        assert C.pack_dones(mice.DONE, lins) == mice.pack_dones_py(mice.DONE, lins)
        max_k, room = rng.randrange(1, 6), rng.choice((1, 30, 400, 5000))
        assert handover.split_from(msg, 0, max_k, room) == handover.split_from_py(msg, 0, max_k, room)
        k, used, nxt = handover.split_from_py(msg, 0, max_k, room)
        recs = mice.records_py(msg)
        assert 0 < k <= max_k or not recs
        assert mice.records_py(msg[:used]) == recs[:k] and nxt == (recs[k][1] if k < len(recs) else 0)


class _Sent:
    """A socket that keeps each message sent (whole: ``sendmsg`` gathers its parts)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def sendmsg(self, parts: list[bytes]) -> int:
        self.sent.append(b"".join(parts))
        return len(self.sent[-1])


@pytest.mark.parametrize("n", [1, 3, mice.DONES_MAX + 5])
def test_item_stages_send_outputs_then_done_in_order(n: int) -> None:
    """Both stage forms, on the same items: each item's OUT records come before its DONE, in item order, and a
    batch stage that returns None sends one DONE per item (more than one message's worth too)."""

    def one(item: bytes, ctx: mice.Context) -> list[bytes]:
        return [item + b"!"] if item[0] % 3 == 0 else []

    @mice.batch
    def many(items: list[bytes], ctx: mice.Context) -> list[list[bytes]] | None:
        return [one(i, ctx) for i in items]

    @mice.batch
    def quiet(items: list[bytes], ctx: mice.Context) -> None:
        return None

    lins = [mice.source_lineage(2, i) for i in range(n)]
    items = [bytes([i % 256]) for i in range(n)]
    expect = []
    for lin, item in zip(lins, items, strict=True):
        if item[0] % 3 == 0:
            expect.append((mice.OUT, lin, item + b"!"))
        expect.append((mice.DONE, lin, b""))
    for fn, run, want in [
        (one, mice._run_items, expect),
        (many, mice._run_batch, expect),
        (quiet, mice._run_batch, [(mice.DONE, lin, b"") for lin in lins]),
    ]:
        sock = _Sent()
        out = mice.Batcher(sock)  # type: ignore[arg-type]
        run(out, fn, list(lins), list(items), mice.Context(1, 3, "st", 0, 1))
        out.flush()
        assert all(len(m) <= mice.BATCH_BYTES for m in sock.sent)
        assert [r for m in sock.sent for r in mice.records(m)] == want, fn.__name__


@needs_c
def test_pack_run_takes_any_memoryview() -> None:
    strided = memoryview(bytes(range(10)))[::2]  # not contiguous
    got = C.pack_run(2, 5, [b"ab", strided, bytearray(b"c")], 0, 1000, 100)
    assert got == (
        struct.pack("!BQI", 2, 5, 2)
        + b"ab"
        + struct.pack("!BQI", 2, 6, 5)
        + bytes(range(0, 10, 2))
        + struct.pack("!BQI", 2, 7, 1)
        + b"c",
        3,
    )


@needs_c
@pytest.mark.parametrize("impl", ["c", "py"])
def test_pack_run_refuses_a_bad_item(impl: str) -> None:
    fn = C.pack_run if impl == "c" else mice.pack_run_py
    with pytest.raises(TypeError):
        fn(2, 1, [b"ok", "text"], 0, 1000, 100)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        fn(2, 1, [b"ok", b"x" * 101], 0, 1000, 100)


def test_a_source_batch_keeps_the_lineages_of_one_by_one() -> None:
    """A source yielding lists (the packed run) sends the same records as one yielding each item."""

    def run(gen, first: int) -> list[tuple[int, int, bytes]]:  # type: ignore[no-untyped-def]
        sock = _Sent()
        out = mice.Batcher(sock)  # type: ignore[arg-type]
        ctx = mice.Context(1, 3, "src", 0, 1, first=first)
        mice._emit(out, gen, None, ctx, 0)
        out.flush()
        return [r for m in sock.sent for r in mice.records(m)]

    items = [bytes([i % 251]) * (i % 700 if i % 37 else mice.GATHER_BYTES + i) for i in range(500)]  # some large
    for first in (0, 7, 120, 499, 600):
        one_by_one = run(iter(items), first)
        batched = run(iter([items[:100], items[100:101], items[101:350], items[350:]]), first)  # type: ignore[arg-type]
        assert batched == one_by_one
        assert [lin for _, lin, _ in batched] == [mice.source_lineage(3, i) for i in range(first, 500)]


def test_a_bad_item_in_a_source_batch_is_named() -> None:
    out = mice.Batcher(_Sent())  # type: ignore[arg-type]
    ctx = mice.Context(1, 3, "src", 0, 1)
    with pytest.raises(TypeError, match="stage src yielded str, items are bytes"):
        mice._emit(out, iter([[b"a", "b"]]), None, ctx, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"an item of {mice.MAX_ITEM + 1} bytes"):
        mice._emit(out, iter([[b"a", bytes(mice.MAX_ITEM + 1)]]), None, ctx, 0)  # type: ignore[arg-type]


def test_a_slow_source_item_sends_what_was_made() -> None:
    """A source item that took longer than SOURCE_SLOW to make flushes the batch it ends; fast items do not."""
    import time

    def gen():  # type: ignore[no-untyped-def]
        for i in range(21):
            if i == 10:
                time.sleep(mice.SOURCE_SLOW * 5)
            yield bytes([i])

    sock = _Sent()
    out = mice.Batcher(sock)  # type: ignore[arg-type]
    mice._emit_source(out, gen(), mice.Context(1, 3, "src", 0, 1), 0)
    assert len(sock.sent) == 1  # items 0..10, flushed after the slow one
    out.flush()
    got = [[lin for _, lin, _ in mice.records(m)] for m in sock.sent]
    assert got == [[mice.source_lineage(3, i) for i in range(11)], [mice.source_lineage(3, i) for i in range(11, 21)]]
