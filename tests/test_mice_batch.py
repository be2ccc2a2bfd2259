"""The MICE child's item loop (:func:`pxproto.node.mice.run_child`) with one-item and batch stages, over a real
socketpair: each input's outputs come before its DONE, lineages as the one-item API gives them, nothing lost."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from pxproto.node import mice
from pxproto.package import keyed_records

STAGES = """
from pxproto.node.mice import batch

def one(item, ctx):
    if item.startswith(b"drop"):
        return ()
    return [item.upper(), item + b"!"] if item.startswith(b"two") else [item.upper()]

@batch
def many(items, ctx):
    assert len(items) == len(ctx.lineages)
    return [() if i.startswith(b"drop") else [i.upper(), i + b"!"] if i.startswith(b"two") else [i.upper()]
            for i in items]

@batch
def sink(items, ctx):
    for lin, item in zip(ctx.lineages, items):
        ctx.commit("out", item, lineage=lin)
    return None

@batch
def wrong(items, ctx):
    return [None]
"""


def run(
    tmp: Path,
    entry: str,
    items: list[tuple[int, bytes]],
    chunks: int = 2,
    stages: str = STAGES,
    module: str = "batchstages",
) -> list[tuple[int, int, bytes]]:
    """Hand ``items`` to a MICE child running ``entry`` of ``stages`` (written as ``module``) in ``chunks`` messages
    over a socketpair; the records it sends back."""
    (tmp / f"{module}.py").write_text(stages)  # a module name of its own: imports are cached per process
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctx = mice.Context(1, 1, entry, 0, 1, store=mice.LocalStore(str(tmp / "store")))
    t = threading.Thread(target=mice.run_child, args=(child, str(tmp), f"{module}:{entry}", ctx))
    t.start()
    step = max(1, len(items) // chunks)
    for i in range(0, len(items), step):
        parent.send(mice.pack_records(mice.ITEM, items[i : i + step]))
    parent.send(mice.REC.pack(mice.STOP, 0, 0))
    t.join(10)
    got: list[tuple[int, int, bytes]] = []
    parent.setblocking(False)
    while True:
        try:
            got.extend(mice.records(parent.recv(mice.SEQPACKET_MAX)))
        except BlockingIOError:
            break
    parent.close()
    child.close()
    return got


ITEMS = [(1 << 48 | i + 1, w) for i, w in enumerate([b"a", b"two", b"drop", b"b", b"twox", b"c"] * 7)]


def test_a_batch_stage_gives_what_the_one_item_stage_gives(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = run(tmp_path / "a", "one", ITEMS, chunks=1)
    many = run(tmp_path / "b", "many", ITEMS, chunks=3)
    assert one == many
    dones = [lin for k, lin, _ in one if k == mice.DONE]
    assert dones == [lin for lin, _ in ITEMS]
    # the OUT records before each DONE are that input's outputs, lineages as derive_lineage gives them
    outs: list[int] = []
    for k, lin, _ in one:
        if k == mice.OUT:
            outs.append(lin)
        else:
            assert outs == [mice.derive_lineage(lin, i) for i in range(len(outs))]
            outs = []
    assert sum(k == mice.OUT for k, _, _ in one) == 7 * 7  # a, two (2), drop (0), b, twox (2), c; 7 times


def test_a_batch_sink_commits_each_lineage_once(tmp_path: Path) -> None:
    got = run(tmp_path, "sink", ITEMS, chunks=4)
    assert [lin for k, lin, _ in got if k == mice.DONE] == [lin for lin, _ in ITEMS]
    again = run(tmp_path, "sink", ITEMS[:10], chunks=2)  # a replay after a repair: nothing written twice
    assert len(again) == 10
    raw = mice.LocalStore(str(tmp_path / "store")).records("out")
    assert len(raw) == len(ITEMS)
    assert sorted(lin for lin, _ in keyed_records(raw)) == sorted(lin for lin, _ in ITEMS)


def test_a_batch_stage_returning_the_wrong_count_is_a_fault(tmp_path: Path) -> None:
    got = run(tmp_path, "wrong", ITEMS[:5], chunks=1)
    faults = [(lin, data.decode()) for k, lin, data in got if k == mice.FAULT]
    assert len(faults) == 1 and "returned 1 entries for 5 items" in faults[0][1], got
    assert not any(k == mice.DONE for k, _, _ in got)


@pytest.mark.parametrize("n", [1, 300, 2000])
def test_a_source_yielding_one_item_at_a_time_gets_consecutive_lineages(tmp_path: Path, n: int) -> None:
    (tmp_path / f"src{n}.py").write_text(f"def src(ctx):\n    for i in range({n}):\n        yield b'%d' % i\n")
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (parent, child):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    ctx = mice.Context(1, 3, "src", 0, 1, first=5)
    t = threading.Thread(target=mice.run_child, args=(child, str(tmp_path), f"src{n}:src", ctx))
    t.start()
    parent.settimeout(10)
    got: list[tuple[int, int, bytes]] = []
    while not any(k == mice.EOF for k, _, _ in got):
        got.extend(mice.records(parent.recv(mice.SEQPACKET_MAX)))
    parent.send(mice.REC.pack(mice.STOP, 0, 0))
    t.join(10)
    outs = [(lin, data) for k, lin, data in got if k == mice.OUT]
    assert outs == [(mice.source_lineage(3, i), b"%d" % i) for i in range(5, n)]
    parent.close()
    child.close()
