"""The MICE's per-item loops: the compiled ones (``pxproto.node._miceloop``) and their pure twins
(``mice._emit_source_py``, ``mice._run_items_py``) answer the same tests: the slow-source flush, lineages, ``first``,
lists, the errors that name the stage, outputs and DONE records, end of file through the child process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pxproto.fastpath import select
from pxproto.node import mice
from tests.test_items_codec import _Sent

C: Any = select.compiled("pxproto.node._miceloop")


def sent_records(sock: _Sent) -> list[tuple[int, int, bytes]]:
    return [r for m in sock.sent for r in mice.records(m)]


@pytest.fixture(params=["py", "c"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which loops ``mice._emit_source``, ``mice._run_items`` and ``mice._run_link`` are (run_child calls them by
    those names)."""
    if request.param == "c":
        if C is None:
            pytest.skip("pxproto.node._miceloop is not built")
        monkeypatch.setattr(mice, "_loop", C)
        monkeypatch.setattr(mice, "_emit_source", mice._emit_source_c)
        monkeypatch.setattr(mice, "_run_items", mice._run_items_c)
        monkeypatch.setattr(mice, "_run_link", mice._run_link_c)
    else:
        monkeypatch.setattr(mice, "_emit_source", mice._emit_source_py)
        monkeypatch.setattr(mice, "_run_items", mice._run_items_py)
        monkeypatch.setattr(mice, "_run_link", mice._run_link_py)
    return str(request.param)


def source_records(made: list[Any], first: int = 0, stage: int = 3) -> list[tuple[int, int, bytes]]:
    sock = _Sent()
    out = mice.Batcher(sock)  # type: ignore[arg-type]
    n = mice._emit_source(out, iter(made), mice.Context(1, stage, "src", 0, 1, first=first), 0)
    out.flush()
    assert n == sum(len(m) if isinstance(m, list | tuple) else 1 for m in made)
    assert all(len(m) <= mice.BATCH_BYTES or len(mice.records(m)) == 1 for m in sock.sent)
    return sent_records(sock)


def test_the_compiled_clock_is_time_monotonic() -> None:
    if C is None:
        pytest.skip("pxproto.node._miceloop is not built")
    a = time.monotonic_ns()
    b = C.monotonic_ns()
    assert a <= b <= time.monotonic_ns()


@pytest.mark.parametrize("first", [0, 1, 7, mice.SOURCE_RUN, mice.SOURCE_RUN + 3, 700, 900])
def test_source_lineages_and_first(impl: str, first: int) -> None:
    """Single items, lists, tuples, bytearrays and memoryviews in one source: each item's lineage is its index, the
    items before ``first`` are dropped, all in order, every message within BATCH_BYTES or one large item."""
    flat = [bytes([i % 251]) * (i % 300 if i % 97 else mice.GATHER_BYTES + i) for i in range(800)]
    made: list[Any] = [*flat[:300], flat[300:310], bytearray(flat[310]), memoryview(flat[311]), tuple(flat[312:320])]
    made += flat[320:]
    got = source_records(made, first)
    assert got == [(mice.OUT, mice.source_lineage(3, i), flat[i]) for i in range(first, 800)]


def test_a_slow_source_item_sends_what_was_made(impl: str) -> None:
    """An item that took longer than SOURCE_SLOW to make flushes the run it ends (and the batch); fast items do not,
    however many (runs of SOURCE_RUN are packed, not sent)."""
    n = 3 * mice.SOURCE_RUN + 21

    def gen() -> Iterator[bytes]:
        for i in range(n):
            if i == 10:
                time.sleep(mice.SOURCE_SLOW * 5)
            yield bytes([i % 256])

    sock = _Sent()
    out = mice.Batcher(sock)  # type: ignore[arg-type]
    mice._emit_source(out, gen(), mice.Context(1, 3, "src", 0, 1), 0)
    ends = [mice.records(m)[-1][1] for m in sock.sent]
    assert mice.source_lineage(3, 10) in ends  # items 0..10 went, flushed after the slow one
    assert len(sock.sent) <= 3  # the fast ones wait (on a loaded host one may be descheduled for over SOURCE_SLOW)
    out.flush()
    assert [lin for m in sock.sent for _, lin, _ in mice.records(m)] == [mice.source_lineage(3, i) for i in range(n)]


def test_large_source_items_are_packed_a_run_at_a_time(impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Items of GATHER_BYTES or more (sent as a header and the item) are packed SOURCE_RUN at a time, in one
    ``Batcher.add_run`` call each run, by either loop (one call per item cost the compiled loop twice the CPU per
    64 KiB item)."""
    calls: list[int] = []
    add_run = mice.Batcher.add_run

    def counted(self: Any, kind: int, first: int, items: Any, start: int = 0) -> None:
        calls.append(len(items) - start)
        add_run(self, kind, first, items, start)

    monkeypatch.setattr(mice.Batcher, "add_run", counted)
    # No item is "slow" here, even when a loaded host deschedules the loop for over SOURCE_SLOW between two
    # items (that flushed a run early in a full-suite run: [204, 256, 62]).
    monkeypatch.setattr(mice, "SOURCE_SLOW", 60.0)
    big = [bytes([i % 251]) * (mice.GATHER_BYTES + i) for i in range(2 * mice.SOURCE_RUN + 10)]
    got = source_records(big)
    assert [d for _, _, d in got] == big
    assert [lin for _, lin, _ in got] == [mice.source_lineage(3, i) for i in range(len(big))]
    assert calls == [mice.SOURCE_RUN, mice.SOURCE_RUN, 10]


class _Ring:
    """A stand-in for the shared ring's link: each message sent, its parts joined."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, msg: Any) -> None:
        self.sent.append(b"".join(msg) if isinstance(msg, list | tuple) else bytes(msg))


@pytest.mark.parametrize("ring", [False, True])
def test_large_items_share_a_ring_message_up_to_large_batch_bytes(
    impl: str, ring: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into the shared ring, 64 KiB items go four to a message (LARGE_BATCH_BYTES); on the socketpair, whose
    messages stop at SEQPACKET_MAX, one to a message; small items around them are still packed BATCH_BYTES at most."""
    monkeypatch.setattr(mice, "SOURCE_SLOW", 60.0)  # (no item is slow, however the host schedules the loop)
    sock, link = _Sent(), _Ring()
    out = mice.Batcher(sock, link if ring else None)  # type: ignore[arg-type]
    big = [bytes([i]) * (64 * 1024) for i in range(10)]
    made: list[Any] = [b"s0", *big, b"s1", bytes(100) * 100]
    mice._emit_source(out, iter(made), mice.Context(1, 3, "src", 0, 1), 0)
    out.flush()
    sent = link.sent if ring else sock.sent
    assert not (sock.sent if ring else link.sent)
    assert [r for m in sent for r in mice.records(m)] == [
        (mice.OUT, mice.source_lineage(3, i), d) for i, d in enumerate(made)
    ]
    per_msg = [sum(len(d) >= mice.GATHER_BYTES for _, _, d in mice.records(m)) for m in sent]
    assert sum(per_msg) == 10
    assert [n for n in per_msg if n] == ([3, 4, 3] if ring else [1] * 10)  # (the first message holds b"s0" too)
    assert all(len(m) <= (mice.LARGE_BATCH_BYTES if ring else mice.SEQPACKET_MAX) for m in sent)
    assert all(len(m) <= mice.BATCH_BYTES for m, n in zip(sent, per_msg, strict=True) if not n)


def test_a_slow_source_list_flushes_too(impl: str) -> None:
    """A list (the batch API) that took long to make is flushed with what came before it."""

    def gen() -> Iterator[Any]:
        yield b"a"
        yield b"b"
        time.sleep(mice.SOURCE_SLOW * 5)
        yield [b"c", b"d"]
        yield b"e"

    sock = _Sent()
    out = mice.Batcher(sock)  # type: ignore[arg-type]
    assert mice._emit_source(out, gen(), mice.Context(1, 3, "src", 0, 1), 0) == 5
    assert [[d for _, _, d in mice.records(m)] for m in sock.sent] == [[b"a", b"b", b"c", b"d"]]


@pytest.mark.parametrize(
    ("made", "error", "text"),
    [
        ([b"ok", "text"], TypeError, "stage src yielded str, items are bytes"),
        ([b"ok", 5], TypeError, "stage src yielded int, items are bytes"),
        ([b"ok", bytes(mice.MAX_ITEM + 1)], ValueError, f"stage src yielded an item of {mice.MAX_ITEM + 1} bytes"),
        ([b"ok", [b"a", bytes(mice.MAX_ITEM + 1)]], ValueError, f"an item of {mice.MAX_ITEM + 1} bytes"),
    ],
)
def test_a_bad_source_item_is_named(impl: str, made: list[Any], error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        source_records(made)


def test_a_source_that_raises_raises_its_error(impl: str) -> None:
    def gen() -> Iterator[bytes]:
        yield b"a"
        raise KeyError("broken source")

    with pytest.raises(KeyError, match="broken source"):
        mice._emit_source(mice.Batcher(_Sent()), gen(), mice.Context(1, 3, "src", 0, 1), 0)  # type: ignore[arg-type]


def item_records(fn: Callable[..., Any], n: int) -> list[tuple[int, int, bytes]]:
    sock = _Sent()
    out = mice.Batcher(sock)  # type: ignore[arg-type]
    lins = [mice.source_lineage(2, i) for i in range(n)]
    mice._run_items(out, fn, lins, [bytes([i % 256]) * (i % 5 + 1) for i in range(n)], mice.Context(1, 3, "st", 0, 1))
    out.flush()
    return sent_records(sock)


@pytest.mark.parametrize("n", [0, 1, 5, mice.DONES_MAX + 5])
def test_item_stage_outputs_then_done(impl: str, n: int) -> None:
    """Per item, in order: its outputs (lineages derived from its own, which ``ctx.lineage`` shows the stage),
    then its DONE; None, () and [] are no outputs, a generator or tuple is outputs."""
    seen: list[int] = []

    def stage(item: bytes, ctx: mice.Context) -> Any:
        seen.append(ctx.lineage)
        k = item[0] % 5
        if k == 0:
            return None
        if k == 1:
            return ()
        if k == 2:
            return [] if item[0] % 2 else (item + b"!",)
        return (bytes([j]) + item for j in range(k - 2))

    got = item_records(stage, n)
    lins = [mice.source_lineage(2, i) for i in range(n)]
    want: list[tuple[int, int, bytes]] = []
    for i, lin in enumerate(lins):
        item = bytes([i % 256]) * (i % 5 + 1)
        for k, o in enumerate(list(stage(item, mice.Context(1, 3, "st", 0, 1)) or ())):
            want.append((mice.OUT, mice.derive_lineage(lin, k), o))
        want.append((mice.DONE, lin, b""))
    assert seen[:n] == lins
    assert got == want


@pytest.mark.parametrize(
    ("result", "error", "text"),
    [
        (5, TypeError, "'int' object is not iterable"),
        ([b"ok", "text"], TypeError, "stage st yielded str, items are bytes"),
        ([bytes(mice.MAX_ITEM + 1)], ValueError, f"stage st yielded an item of {mice.MAX_ITEM + 1} bytes"),
    ],
)
def test_a_bad_stage_result_is_named(impl: str, result: Any, error: type[Exception], text: str) -> None:
    def stage(item: bytes, ctx: mice.Context) -> Any:
        return result if item[0] == 2 else ()

    with pytest.raises(error, match=text):
        item_records(stage, 4)


def test_a_stage_that_raises_raises_its_error(impl: str) -> None:
    def stage(item: bytes, ctx: mice.Context) -> Any:
        if item == b"\x03\x03\x03\x03":
            raise ZeroDivisionError("stage bug")
        return ()

    with pytest.raises(ZeroDivisionError, match="stage bug"):
        item_records(stage, 6)


class FakeLink:
    """A hand-over that gives ``msgs`` one by one as views of a buffer it scribbles over when each is done (so an item
    read after :meth:`done` would show it)."""

    def __init__(self, msgs: list[bytes]) -> None:
        self.msgs = list(msgs)
        self.buf = bytearray()
        self.released = 0

    def recv(self) -> memoryview | None:
        if not self.msgs:
            return None
        self.buf[:] = self.msgs.pop(0)
        return memoryview(self.buf)

    def done(self) -> None:
        self.released += 1
        self.buf[:] = b"\xee" * len(self.buf)


def mixed(item: bytes, ctx: mice.Context) -> Any:
    """None, (), [] or one to three outputs, by the item's first byte."""
    k = item[0] % 6
    return [None, (), []][k] if k < 3 else [item + bytes([j]) for j in range(k - 2)]


def expected(pairs: list[tuple[int, bytes]]) -> list[tuple[int, int, bytes]]:
    want: list[tuple[int, int, bytes]] = []
    for lin, item in pairs:
        for k, o in enumerate(mixed(item, mice.Context(1, 3, "st", 0, 1)) or ()):
            want.append((mice.OUT, mice.derive_lineage(lin, k), o))
        want.append((mice.DONE, lin, b""))
    return want


@pytest.mark.parametrize("n", [1, 7, mice.DONES_MAX + 300])
def test_a_hand_over_message_through_an_item_stage(impl: str, n: int) -> None:
    """One ring message through ``_run_link``: the items are the message's (copied out before it is released, once),
    each item's outputs then its DONE, in order, whatever the mix, every batch sent within BATCH_BYTES."""
    pairs = [(mice.source_lineage(1, i), bytes([i % 256, 7]) * (i % 4 + 1)) for i in range(n)]
    other = mice.pack_records(mice.OUT, [(5, b"not an item")])
    link = FakeLink([other + mice.pack_records(mice.ITEM, pairs)])
    sock = _Sent()
    out = mice.Batcher(sock)  # type: ignore[arg-type]
    size, stop = mice._run_link(out, mixed, link, mice.Context(1, 3, "st", 0, 1))
    out.flush()
    assert (size, stop, link.released) == (len(other) + len(mice.pack_records(mice.ITEM, pairs)), False, 1)
    assert all(len(m) <= mice.BATCH_BYTES for m in sock.sent)
    assert sent_records(sock) == expected(pairs)


def test_a_hand_over_message_stops_at_stop(impl: str) -> None:
    pairs = [(mice.source_lineage(1, i), bytes([i + 3])) for i in range(6)]
    msg = mice.pack_records(mice.ITEM, pairs[:4]) + mice.REC.pack(mice.STOP, 0, 0) + mice.pack_records(mice.ITEM, pairs)
    link = FakeLink([msg])
    sock = _Sent()
    out = mice.Batcher(sock)  # type: ignore[arg-type]
    assert mice._run_link(out, mixed, link, mice.Context(1, 3, "st", 0, 1)) == (len(msg), True)
    out.flush()
    assert sent_records(sock) == expected(pairs[:4])
    assert mice._run_link(out, mixed, link, mice.Context(1, 3, "st", 0, 1)) == (0, False)  # the DIME is gone


def test_a_bad_hand_over_message_or_stage_raises_and_releases_it(impl: str) -> None:
    out = mice.Batcher(_Sent())  # type: ignore[arg-type]
    link = FakeLink([mice.pack_records(mice.ITEM, [(9, b"abc")])[:-1]])
    with pytest.raises(ValueError, match="record at byte 0 says 3 bytes, 2 left"):
        mice._run_link(out, mixed, link, mice.Context(1, 3, "st", 0, 1))
    assert link.released == 1

    def bad(item: bytes, ctx: mice.Context) -> Any:
        if item == b"b":
            raise ZeroDivisionError(f"bad at {ctx.lineage}")
        return ()

    link = FakeLink([mice.pack_records(mice.ITEM, [(9, b"a"), (10, b"b"), (11, b"c")])])
    with pytest.raises(ZeroDivisionError, match="bad at 10"):
        mice._run_link(out, bad, link, mice.Context(1, 3, "st", 0, 1))
    assert link.released == 1
    link = FakeLink([mice.pack_records(mice.ITEM, [(9, b"a"), (10, b"\x05")])])
    with pytest.raises(TypeError, match="stage st yielded int, items are bytes"):
        mice._run_link(
            out, lambda item, ctx: [b"ok", 5] if item == b"\x05" else None, link, mice.Context(1, 3, "st", 0, 1)
        )


STAGES = """
def src(ctx):
    for i in range(ctx.params["n"]):
        yield i.to_bytes(4, "big")
    if ctx.params.get("bad"):
        yield "not bytes"

def up(item, ctx):
    if item == b"boom":
        raise ValueError("boom at " + str(ctx.lineage))
    return () if item.startswith(b"drop") else [item.upper()]
"""


def child(tmp: Path, entry: str, params: dict[str, Any], send: list[bytes]) -> list[tuple[int, int, bytes]]:
    """Run a MICE child (:func:`mice.run_child`) on ``entry`` over a socketpair, send it ``send`` then STOP; the
    records it sent (checked against its exit status: 2 after a FAULT, else 0)."""
    (tmp / "loopstages.py").write_text(STAGES)
    parent, kid = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (parent, kid):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
    ctx = mice.Context(1, 4, entry, 0, 1, params=params)
    status: list[int] = []
    t = threading.Thread(target=lambda: status.append(mice.run_child(kid, str(tmp), f"loopstages:{entry}", ctx)))
    t.start()
    for m in send:
        parent.send(m)
    parent.send(mice.REC.pack(mice.STOP, 0, 0))
    t.join(10)
    kid.shutdown(socket.SHUT_WR)  # the child is done: what it sent, then end of file
    got = [r for m in iter(lambda: parent.recv(mice.SEQPACKET_MAX), b"") for r in mice.records(m)]
    parent.close()
    kid.close()
    assert status and status[0] == (0 if got[-1][0] != mice.FAULT else 2)
    return got


@pytest.mark.parametrize("n", [0, 1, 600])
def test_a_source_child_sends_its_items_then_eof(impl: str, tmp_path: Path, n: int) -> None:
    got = child(tmp_path, "src", {"n": n}, [])
    want = [(mice.OUT, mice.source_lineage(4, i), i.to_bytes(4, "big")) for i in range(n)]
    assert got == [*want, (mice.EOF, 0, b"")]


def test_a_source_child_yielding_a_bad_item_faults_naming_the_stage(impl: str, tmp_path: Path) -> None:
    got = child(tmp_path, "src", {"n": 3, "bad": True}, [])
    assert got[-1][:2] == (mice.FAULT, int(mice.FaultCode.MICE_CRASHED))
    assert got[-1][2] == b"stage src: TypeError: stage src yielded str, items are bytes"


def test_an_item_child_runs_each_item(impl: str, tmp_path: Path) -> None:
    lins = [mice.source_lineage(0, i) for i in range(1, 301)]
    items = [b"drop%d" % i if i % 3 == 0 else b"it%d" % i for i in range(300)]
    pairs = list(zip(lins, items, strict=True))
    batches = [mice.pack_records(mice.ITEM, pairs[:100]), mice.pack_records(mice.ITEM, pairs[100:])]
    got = child(tmp_path, "up", {}, batches)
    want: list[tuple[int, int, bytes]] = []
    for lin, item in pairs:
        if not item.startswith(b"drop"):
            want.append((mice.OUT, lin, item.upper()))
        want.append((mice.DONE, lin, b""))
    assert got == want


def test_an_item_child_faults_naming_the_stage_when_it_raises(impl: str, tmp_path: Path) -> None:
    """The batch's records made before the raise are not sent (the DIME replays the batch to a replacement)."""
    lins = [mice.source_lineage(0, i) for i in range(1, 5)]
    batch = mice.pack_records(mice.ITEM, list(zip(lins, [b"a", b"drop", b"boom", b"b"], strict=True)))
    got = child(tmp_path, "up", {}, [batch])
    assert got == [(mice.FAULT, int(mice.FaultCode.MICE_CRASHED), f"stage up: ValueError: boom at {lins[2]}".encode())]


def test_an_item_child_over_the_shared_ring(impl: str, tmp_path: Path) -> None:
    """The child's loop over a real shared-memory hand-over (``_run_link``): every item's outputs and DONE, in
    order, across messages, until STOP."""
    from pxproto.node import shmring

    if not shmring.available():
        pytest.skip("pxproto.node._shmring is not built")
    (tmp_path / "loopstages.py").write_text(STAGES)
    dime, kid = shmring.Link.pair()
    lins = [mice.source_lineage(0, i) for i in range(1, 2001)]
    items = [b"drop%d" % i if i % 3 == 0 else b"it%d" % i for i in range(2000)]
    pairs = list(zip(lins, items, strict=True))
    status: list[int] = []
    ctx = mice.Context(1, 4, "up", 0, 1)
    t = threading.Thread(
        target=lambda: status.append(mice.run_child(kid.sock, str(tmp_path), "loopstages:up", ctx, kid))
    )
    t.start()
    got: list[tuple[int, int, bytes]] = []
    try:
        for i in range(0, 2000, 300):
            dime.send(mice.pack_records(mice.ITEM, pairs[i : i + 300]))
        dime.send(mice.REC.pack(mice.STOP, 0, 0))
        t.join(10)
        while (view := dime.recv_view()) is not None:
            got.extend(mice.records(bytes(view)))
            dime.done()
    finally:
        dime.sock.close()
        kid.sock.close()
    want: list[tuple[int, int, bytes]] = []
    for lin, item in pairs:
        if not item.startswith(b"drop"):
            want.append((mice.OUT, lin, item.upper()))
        want.append((mice.DONE, lin, b""))
    assert status == [0]
    assert got == want


def test_items_a_stage_keeps_or_hashes_stay_what_they_were(impl: str) -> None:
    """The compiled loop reuses the bytes objects of items a stage let go of: an item the stage keeps, outputs or
    hashed keeps its bytes and its hash, across many messages of one length."""
    kept: list[bytes] = []
    seen: dict[bytes, int] = {}

    def stage(item: bytes, ctx: mice.Context) -> Any:
        seen[item] = seen.get(item, 0) + 1  # hashed, and kept as a key only the first time
        if item.endswith(b"7"):
            kept.append(item)
        return [item] if item.endswith(b"3") else None

    rounds, per = 20, 50
    msgs = []
    for r in range(rounds):
        pairs = [(mice.source_lineage(1, r * per + i), b"%06d" % (r * per + i % 10)) for i in range(per)]
        msgs.append(mice.pack_records(mice.ITEM, pairs))
    link = FakeLink(msgs)
    sock = _Sent()
    out = mice.Batcher(sock)  # type: ignore[arg-type]
    while mice._run_link(out, stage, link, mice.Context(1, 3, "st", 0, 1))[0]:
        out.flush()
    assert kept == [b"%06d" % (r * per + 7) for r in range(rounds) for _ in range(per // 10)]
    assert seen == {b"%06d" % (r * per + i): per // 10 for r in range(rounds) for i in range(10)}
    assert all(hash(k) == hash(bytes(bytearray(k))) for k in seen)
    outs = [d for k, _, d in sent_records(sock) if k == mice.OUT]
    assert outs == [b"%06d" % (r * per + 3) for r in range(rounds) for _ in range(per // 10)]
    if impl == "c":
        assert C.pooled() > 0  # (the items let go of were reused: this test saw that path)
