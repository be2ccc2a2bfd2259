"""``@batch(views=True)``: a batch stage given its items as views of the shared-memory hand-over, not copies.

The items are memoryviews of the ring's message (no bytes object per item: a 64 KiB item is not copied once more
for the stage); they are released after the call, so a view the stage kept raises instead of showing bytes the DIME
wrote over; outputs and commits made of them are copies.  Over a socket hand-over the items are bytes."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import pytest
from test_mice_batch import run as socket_run  # tests/ is on the path (rootdir conftest)

from pxproto.node import items as codecs
from pxproto.node import mice, shmring
from pxproto.package import keyed_records

STAGES = """
from pxproto.node.mice import batch

SEEN = {"types": set(), "kept": None}

@batch(views=True)
def vsink(items, ctx):
    for lin, item in zip(ctx.lineages, items):
        SEEN["types"].add((type(item).__name__, getattr(item, "readonly", True)))
        hash(item)  # read only, so hashable (a dict key, a set member)
        ctx.commit("out", item, lineage=lin)
    SEEN["kept"] = items[0]  # kept past the call: released by then
    return None

@batch(views=True)
def vup(items, ctx):
    return [[bytes(i).upper(), i] for i in items]  # an output may be the view itself: it is copied

@batch
def plain(items, ctx):
    return [[i] for i in items]
"""


def _items(n: int) -> list[tuple[int, bytes]]:
    sizes = [16, 1400, 65536, 3]
    return [(mice.source_lineage(0, i + 1), bytes([65 + i % 26]) * sizes[i % len(sizes)]) for i in range(n)]


@pytest.mark.parametrize("compiled", [True, False])
def test_item_views_are_views_of_the_message(compiled: bool) -> None:
    if compiled and not codecs.COMPILED:
        pytest.skip("pxproto.node._items is not built")
    fn = codecs.item_views if compiled else codecs.item_views_py
    pairs = _items(9)
    tail = mice.REC.pack(mice.STOP, 0, 0) + mice.REC.pack(mice.ITEM, 7, 0)  # nothing after STOP is taken
    buf = bytearray(mice.pack_records(mice.ITEM, pairs) + tail)
    lineages, views, stop = fn(memoryview(buf), mice.ITEM, mice.STOP)
    assert stop is True and lineages == [lin for lin, _ in pairs]
    assert all(type(v) is memoryview and v.obj is buf for v in views)  # no copy: views of the message itself
    assert [bytes(v) for v in views] == [data for _, data in pairs]
    buf[mice.REC.size] ^= 0xFF  # the message changes: so does the view
    assert bytes(views[0][:1]) == bytes([pairs[0][1][0] ^ 0xFF])
    assert fn(memoryview(b""), mice.ITEM, mice.STOP) == ([], [], False)
    with pytest.raises(ValueError):
        fn(memoryview(bytes(buf[:-20])[: mice.REC.size + 5]), mice.ITEM, mice.STOP)  # a record cut short


Records = list[tuple[int, int, bytes]]


def _ring_child(tmp: Path, entry: str, pairs: list[tuple[int, bytes]]) -> tuple[list[int], Records]:
    """Run a MICE child on ``entry`` over a real shared-memory hand-over; hand it ``pairs`` in messages of at most
    300 items (large items alone, as the DIME gathers them), then STOP; its exit status and records."""
    if not shmring.available():
        pytest.skip("pxproto.node._shmring is not built")
    dime, kid = shmring.Link.pair()
    status: list[int] = []
    ctx = mice.Context(1, 4, entry, 0, 1, store=mice.LocalStore(str(tmp / "store")))
    t = threading.Thread(target=lambda: status.append(mice.run_child(kid.sock, str(tmp), f"vstages:{entry}", ctx, kid)))
    got: list[tuple[int, int, bytes]] = []

    def collect() -> None:
        while (view := dime.recv_view()) is not None:
            got.extend(mice.records(bytes(view)))
            dime.done()

    t.start()
    try:
        i = 0
        while i < len(pairs):
            chunk = [pairs[i]]
            i += 1
            while i < len(pairs) and len(chunk) < 300 and len(pairs[i][1]) < 4096 and len(chunk[-1][1]) < 4096:
                chunk.append(pairs[i])
                i += 1
            while not dime.try_send(mice.pack_records(mice.ITEM, chunk)):
                collect()
                dime.tx.writer_awake()
            dime.wake()
            collect()
        while not dime.try_send(mice.REC.pack(mice.STOP, 0, 0)):
            collect()
        dime.wake()
        deadline = time.monotonic() + 20
        while t.is_alive() and time.monotonic() < deadline:  # its outputs may outgrow the ring: read them meanwhile
            collect()
            t.join(0.01)
        collect()
    finally:
        dime.sock.close()
        kid.sock.close()
    return status, got


def test_a_views_sink_commits_exactly_and_its_kept_view_is_released(tmp_path: Path) -> None:
    (tmp_path / "vstages.py").write_text(STAGES)
    pairs = _items(400)
    status, got = _ring_child(tmp_path, "vsink", pairs)
    assert status == [0]
    assert got == [(mice.DONE, lin, b"") for lin, _ in pairs]  # every item done once, in order
    store = mice.LocalStore(str(tmp_path / "store"))
    assert sorted(keyed_records(store.records("out"))) == sorted(pairs)  # each committed once, whole
    import vstages  # type: ignore[import-not-found]  # (the child ran in this process: its module is loaded)

    assert vstages.SEEN["types"] == {("memoryview", True)}  # views of the ring, read only
    with pytest.raises(ValueError):
        bytes(vstages.SEEN["kept"])  # released after its call: it cannot show bytes the DIME wrote over


def test_a_views_transform_outputs_copies(tmp_path: Path) -> None:
    (tmp_path / "vstages.py").write_text(STAGES)
    pairs = _items(120)
    status, got = _ring_child(tmp_path, "vup", pairs)
    assert status == [0]
    want: list[tuple[int, int, bytes]] = []
    for lin, data in pairs:
        want += [(mice.OUT, lin, data.upper()), (mice.OUT, mice.derive_lineage(lin, 1), data), (mice.DONE, lin, b"")]
    assert got == want


def test_a_views_stage_over_a_socket_gets_bytes(tmp_path: Path) -> None:
    """Without the ring (a SOCK_SEQPACKET hand-over) the same stage runs on bytes."""
    pairs = _items(8)[:3] + _items(8)[4:7]  # no 64 KiB item: one socket message
    got = socket_run(tmp_path, "vsink", pairs, chunks=1, stages=STAGES, module="vstages")
    assert got == [(mice.DONE, lin, b"") for lin, _ in pairs]
    store = mice.LocalStore(str(tmp_path / "store"))
    assert sorted(keyed_records(store.records("out"))) == sorted(pairs)


@pytest.mark.parametrize("compiled", [True, False])
def test_release_views_leaves_a_view_with_a_buffer_taken(compiled: bool) -> None:
    if compiled and not codecs.COMPILED:
        pytest.skip("pxproto.node._items is not built")
    fn = codecs.release_views if compiled else codecs.release_views_py
    base = memoryview(bytearray(b"abcdef"))
    a, b = base[:3], base[3:]
    held = struct.iter_unpack("c", b)  # holds a buffer of ``b``: it cannot be released, and is left as it is
    fn([a, b])
    with pytest.raises(ValueError):
        bytes(a)
    assert bytes(b) == b"def" and next(held) == (b"d",)


def test_batch_marks_both_ways() -> None:
    def f(items: list[bytes], ctx: object) -> None:
        return None

    assert mice.batch(f) is f and f.px_batch and not f.px_views  # type: ignore[attr-defined]

    def g(items: list[bytes], ctx: object) -> None:
        return None

    assert mice.batch(views=True)(g) is g and g.px_batch and g.px_views  # type: ignore[attr-defined]
