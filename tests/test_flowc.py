"""The compiled per-item loops of the item flow (``pxproto.node._flowc``) against their pure twins.

Seeded random walks of one DIME's flow: item messages from two upstreams (with copies of items in
progress and of completed ones), MICE record batches (outputs, DONE in order and out of order, a
re-run source's repeated lineages, EOF/READY), completions from downstream and output batches taken
for a channel.  Each step runs on two flows, one through ``_flowc`` and one through the Python loops
of ``channels.py``/``flow.py``, and the whole state must be the same after every step.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import pytest

from pxproto.node import flow as flow_mod
from pxproto.node import mice
from pxproto.node.channels import ChannelPlane
from pxproto.node.flow import Flow, MiceQueue

_flowc = pytest.importorskip("pxproto.node._flowc", reason="pxproto.node._flowc is not built")

UPS = [(1, b"\x02\x00\x00\x00\x00\x01", 3), (1, b"\x02\x00\x00\x00\x00\x07", 4)]


def snapshot(f: Flow, completions: dict[Any, list[int]], queue: MiceQueue) -> dict[str, Any]:
    return {
        "inputs": {k: (list(v.upstreams), bool(v.done), v.open_outputs) for k, v in f.inputs.items()},
        "input_items": f.input_items(),
        "in_runs": {k: (r.base, r.n, r.lo, list(r.upstreams)) for k, r in f.in_runs.items()},
        "in_spans": list(f.in_spans),
        "retained": {k: (v.parent, bytes(v.data), v.channel) for k, v in f.retained.items()},
        "runs": [run_state(r) for r in f.retained.runs.values()],
        "spans": list(f.retained.spans),
        "held": (len(f.retained), f.retained.seq, f.queued),
        "to_mice": [h if isinstance(h, int) else ("run", h.base, h.lo, h.n) for h in f.to_mice],
        "pending": f.pending(),
        "queue": [(r.base, r.n, r.lo) for r in f.queue],
        "marks": dict(f.completed.marks),
        "above": list(f.completed.above),
        "duplicates": f.duplicates,
        "completions": {k: list(v) for k, v in completions.items() if v},
        "mice_queue": list(queue),
    }


def run_state(r: Any) -> tuple[Any, ...]:
    gone = bytes(r.gone) if r.gone is not None else None
    return (r.base, r.n, bytes(r.buf[r.start : r.end]), r.parent, r.seq, r.channel, r.lo, r.left, gone)


class Side:
    """One flow and what the plane keeps beside it."""

    def __init__(self) -> None:
        self.flow = Flow()
        self.completions: dict[Any, list[int]] = {}
        self.handed_at: dict[int, float] = {}
        self.queue = MiceQueue()


def step_arrive(c: Side, p: Side, msg: bytes, up: tuple[int, bytes, int]) -> None:
    done = _flowc.arrive(msg, c.flow, up, c.queue)
    if done:
        c.completions.setdefault(up, []).extend(done)
    done = p.flow.arrive_batch(mice.unpack_items_py(msg), up, p.queue)
    if done:
        p.completions.setdefault(up, []).extend(done)


def step_records(c: Side, p: Side, msg: bytes, now: float) -> None:
    got_c = _flowc.mice_records(msg, c.flow, c.completions, c.handed_at, now)
    got_p = ChannelPlane._mice_records_py(p, mice.records_py(msg), now)  # type: ignore[arg-type]
    assert got_c[:3] == got_p[:3] and got_c[4:] == got_p[4:]  # all but the latency sum (a float)
    assert got_c[3] == pytest.approx(got_p[3])


def step_completions(c: Side, p: Side, lineages: list[int]) -> None:
    payload = b"".join(lin.to_bytes(8, "big") for lin in lineages)
    assert _flowc.completions_in(payload, c.flow, c.completions) == len(lineages)
    for parent, ups in p.flow.downstream_completed_batch(lineages):
        for up in ups:
            p.completions.setdefault(up, []).append(parent)


@pytest.mark.parametrize("walk", range(12))
def test_flowc_matches_pure(walk: int, rng: random.Random) -> None:
    c, p = Side(), Side()
    c.flow.pack_room = p.flow.pack_room = rng.choice((0, 60, 300))  # (a stage's outputs never join a run)
    stage_hi = 2 << 48
    next_src = 1
    handed: list[int] = []
    outputs: list[int] = []
    now = 1.0
    for step in range(300):
        now += 0.001
        what = rng.random()
        if what < 0.3:  # items from upstream: new ones, and copies of earlier ones
            n = rng.randint(1, 40)
            lins = []
            for _ in range(n):
                if handed and rng.random() < 0.2:
                    lins.append(rng.choice(handed))
                else:
                    lins.append(stage_hi | next_src)
                    next_src += rng.choice((1, 1, 1, 2))
            items = [(lin, rng.randbytes(rng.randint(0, 30))) for lin in lins]
            msg = mice.pack_items_py(items) if len(items) > 1 or rng.random() < 0.5 else mice.pack_item(*items[0])
            step_arrive(c, p, msg, rng.choice(UPS))
            handed.extend(lins)
            while rng.random() < 0.7 and c.queue:  # the plane hands the queue to the MICE, some of it
                max_n, limit = rng.randint(1, 30), rng.choice((1, 60, 300, 5000))
                pairs = deque(c.queue)
                want = mice.take_records_py(mice.ITEM, pairs, max_n, limit)
                assert c.queue.take(max_n, limit) == p.queue.take(max_n, limit) == want
                assert list(c.queue) == list(pairs) and len(c.queue) == len(pairs)
        elif what < 0.65 and p.flow.to_mice:  # the MICE's records: outputs, then DONE, for the oldest inputs
            recs = []
            pending = p.flow.pending()
            for lin in pending[: rng.randint(1, len(pending))]:
                for k in range(rng.choice((0, 1, 1, 2))):
                    out = mice.derive_lineage(lin, k)
                    recs.append((mice.OUT, out, rng.randbytes(rng.randint(0, 20))))
                    outputs.append(out)
                if rng.random() < 0.9:
                    recs.append((mice.DONE, lin, b""))
            if rng.random() < 0.1:
                recs.append((mice.DONE, rng.choice(handed), b""))  # out of order, or unknown
            if rng.random() < 0.05:
                recs.append((mice.EOF, 0, b""))
            if recs and recs[0][0] == mice.DONE and rng.random() < 0.5:
                c.handed_at[recs[0][1]] = p.handed_at[recs[0][1]] = now - 0.5
            msg = b"".join(mice.REC.pack(k, lin, len(d)) + d for k, lin, d in recs)
            step_records(c, p, msg, now)
        elif what < 0.85 and outputs:  # completions from downstream, some unknown or repeated
            picks = rng.sample(outputs, min(len(outputs), rng.randint(1, 30)))
            picks.append(rng.getrandbits(64) or 1)
            step_completions(c, p, picks)
        elif p.flow.queue:  # an output batch for a channel
            ch = rng.choice((1, 2))
            room = rng.randint(20, 400)
            got_c = _flowc.take_batch(c.flow, ch, room)
            got_p = p.flow.take(ch, room)
            assert got_c == got_p, f"walk {walk} step {step}"
        assert snapshot(c.flow, c.completions, c.queue) == snapshot(p.flow, p.completions, p.queue), (
            f"walk {walk} step {step}"
        )
        check_input_runs(c.flow)


def check_input_runs(f: Flow) -> None:
    """The runs of inputs: each in ``to_mice`` once and indexed, not empty, no lineage pending twice or completed."""
    runs = [h for h in f.to_mice if not isinstance(h, int)]
    assert sorted(f.in_runs) == f.in_spans == sorted(r.base for r in runs)
    assert all(f.in_runs[r.base] is r and 0 <= r.lo < r.n for r in runs)
    pending = f.pending()
    assert len(set(pending)) == len(pending) and not any(lin in f.completed for lin in pending)
    assert set(pending) | {k for k, v in f.inputs.items() if v.done} == set(f.input_items())


def test_input_runs_partial_done_copies_outputs() -> None:
    """The items of one message kept as one run of inputs: DONE for part of it, copies arriving during it (from
    another upstream: it waits and completes to both; from the same: nothing more), an item with an output, a DONE
    out of order, a copy of a completed one; compiled and pure the same all along, and each completed once."""
    hi = 2 << 48
    u0, u1 = UPS
    c, p = Side(), Side()

    def same() -> None:
        assert snapshot(c.flow, c.completions, c.queue) == snapshot(p.flow, p.completions, p.queue)
        check_input_runs(c.flow)

    def records(*recs: tuple[int, int, bytes]) -> None:
        step_records(c, p, b"".join(mice.REC.pack(k, lin, len(d)) + d for k, lin, d in recs), 1.0)
        same()

    step_arrive(c, p, mice.pack_items_py([(hi | i, bytes([i])) for i in range(1, 11)]), u0)
    same()
    runs = [(r.base, r.lo, r.n) for r in c.flow.to_mice if not isinstance(r, int)]
    assert not c.flow.inputs and len(c.flow.to_mice) == 1 and runs == [(hi | 1, 0, 10)]  # one run
    step_arrive(c, p, mice.pack_items_py([(hi | 4, b"x"), (hi | 5, b"y")]), u1)  # copies: they wait
    step_arrive(c, p, mice.pack_item(hi | 6, b"z"), u0)  # a copy from the same upstream
    same()
    assert c.flow.pending() == [hi | i for i in range(1, 11)] and c.flow.duplicates == 3
    assert c.flow.input_items()[hi | 4][0] == [u0, u1] and c.flow.input_items()[hi | 6][0] == [u0]
    records((mice.DONE, hi | 1, b""), (mice.DONE, hi | 2, b""))  # part of the run
    out = mice.derive_lineage(hi | 3, 0)
    records((mice.OUT, out, b"o"), (mice.DONE, hi | 3, b""), (mice.DONE, hi | 4, b""))  # 3 waits for its output
    assert c.completions == {u0: [hi | 1, hi | 2, hi | 4], u1: [hi | 4]}
    records((mice.DONE, hi | 8, b""))  # out of order
    step_arrive(c, p, mice.pack_items_py([(hi | 2, b""), (hi | 8, b""), (hi | 11, b"")]), u1)  # completed: at once
    same()
    assert c.completions[u1] == [hi | 4, hi | 2, hi | 8]
    step_completions(c, p, [out])
    same()
    records(*[(mice.DONE, hi | i, b"") for i in (5, 6, 7, 9, 10, 11)])
    assert not c.flow.inputs and not c.flow.to_mice and not c.flow.in_runs and not c.flow.in_spans
    assert c.flow.completed.marks == {2: 11} and not c.flow.completed.above
    done_u0 = [lin & 0xFFFF for lin in c.completions[u0]]
    assert done_u0 == [1, 2, 4, 8, 3, 5, 6, 7, 9, 10]  # each once
    assert [lin & 0xFFFF for lin in c.completions[u1]] == [4, 2, 8, 5, 11]


def test_a_retransmitted_message_stays_in_its_run() -> None:
    """A message that arrives again from the same upstream (a retransmission) while its items wait in a run of
    inputs leaves the run whole: no input of its own per copy, to_mice still one entry (each copy used to spill
    out, a scan of to_mice and two entries more per item: seconds for a few thousand small items).  A copy from
    another upstream still takes an input of its own (it completes to both).  Compiled and pure the same."""
    hi = 3 << 48
    u0, u1 = UPS
    c, p = Side(), Side()
    msg = mice.pack_items_py([(hi | i, b"q") for i in range(1, 3001)])
    step_arrive(c, p, msg, u0)
    step_arrive(c, p, msg, u0)  # the same message again
    step_arrive(c, p, mice.pack_items_py([(hi | i, b"q") for i in range(1500, 1503)]), u0)  # part of it again
    for side in (c, p):
        assert len(side.flow.to_mice) == 1 and not side.flow.inputs and side.flow.duplicates == 3003
    assert snapshot(c.flow, c.completions, c.queue) == snapshot(p.flow, p.completions, p.queue)
    step_arrive(c, p, mice.pack_items_py([(hi | 1500, b"q")]), u1)  # from another upstream: its own input
    assert snapshot(c.flow, c.completions, c.queue) == snapshot(p.flow, p.completions, p.queue)
    assert c.flow.input_items()[hi | 1500][0] == [u0, u1] and len(c.flow.to_mice) == 3
    check_input_runs(c.flow)


def test_input_runs_never_overlap() -> None:
    """A lineage forgotten off the head of a run arrives again with others below the run: they become inputs of
    their own, not a run over the first one's lineages, so a later copy is still found (handed once)."""
    hi = 2 << 48
    u0, u1 = UPS
    c, p = Side(), Side()
    step_arrive(c, p, mice.pack_items_py([(hi | i, b"") for i in range(10, 14)]), u0)
    c.flow.forget(hi | 10)
    p.flow.forget(hi | 10)
    step_arrive(c, p, mice.pack_items_py([(hi | i, b"") for i in range(8, 13)]), u1)
    step_arrive(c, p, mice.pack_items_py([(hi | 10, b""), (hi | 9, b"")]), u0)  # copies: they wait
    assert snapshot(c.flow, c.completions, c.queue) == snapshot(p.flow, p.completions, p.queue)
    check_input_runs(c.flow)
    assert [lin & 0xFF for lin in c.flow.pending()] == [11, 12, 13, 8, 9, 10]
    assert c.flow.input_items()[hi | 10][0] == [u1, u0] and c.flow.input_items()[hi | 12][0] == [u0, u1]
    assert len(c.queue) == 4 + 3  # 10 handed again after it was forgotten, 8 and 9: once each


def test_single_empty_item_is_taken() -> None:
    """A one-item message whose item has no bytes (8 bytes: its lineage) is handed over like any other (the
    compiled loop once skipped it: never handed, never completed), and a copy of it after it completed is
    completed at once."""
    c, p = Side(), Side()
    lin = 2 << 48 | 1
    step_arrive(c, p, mice.pack_item(lin, b""), UPS[0])
    assert c.flow.pending() == p.flow.pending() == [lin] and list(c.queue) == list(p.queue) == [(lin, b"")]
    step_records(c, p, mice.REC.pack(mice.DONE, lin, 0), 1.0)
    step_arrive(c, p, mice.pack_item(lin, b""), UPS[1])
    assert snapshot(c.flow, c.completions, c.queue) == snapshot(p.flow, p.completions, p.queue)
    assert c.completions == {UPS[0]: [lin], UPS[1]: [lin]} and c.flow.duplicates == 1


def test_input_runs_forget_and_reset() -> None:
    """Without a MICE a 'new' lineage in a run is forgotten (a later copy is taken again); a new flow holds none."""
    f = Flow()
    f.hand(1 << 48 | 1, 4, [UPS[0]], 0)
    f.forget(1 << 48 | 3)
    assert f.pending() == [1 << 48 | 1, 1 << 48 | 2, 1 << 48 | 4] and not f.inputs
    assert f.arrive(1 << 48 | 3, UPS[0]) == "new" and f.arrive(1 << 48 | 2, UPS[1]) == "wait"
    assert f.input_items()[1 << 48 | 2] == ([UPS[0], UPS[1]], False, 0)
    check_input_runs(f)
    g = Flow()
    assert not g.in_runs and not g.pending()


def test_source_outputs_and_source_made() -> None:
    """A source's OUT records (no inputs): kept, queued, and the highest index made reported."""
    f, comp = Flow(), dict[Any, list[int]]()
    msg, n = mice.pack_run(mice.OUT, 1 << 48 | 5, [b"a", b"bb", b"ccc"], 0, 1 << 20, mice.MAX_ITEM)
    assert n == 3
    outs, dones, made, _, _, others, out_bytes = _flowc.mice_records(msg, f, comp, {}, 0.0)
    assert (outs, dones, made, others, out_bytes) == (3, 0, 7, [], 6)
    assert [(k, o.parent, o.data) for k, o in f.retained.items()] == [
        (1 << 48 | 5, None, b"a"),
        (1 << 48 | 6, None, b"bb"),
        (1 << 48 | 7, None, b"ccc"),
    ]
    assert [(r.base, r.n) for r in f.queue] == [(1 << 48 | 5, 3)] and f.queued == len(f.retained) == 3  # one run


@pytest.mark.parametrize(
    ("msg", "error"),
    [
        (b"\x02" + bytes(8), "record header at byte 0 truncated"),
        (mice.REC.pack(mice.OUT, 1, 9) + b"abc", "record at byte 0 says 9 bytes, 3 left"),
    ],
)
def test_bad_record_batch_takes_nothing(msg: bytes, error: str) -> None:
    f = Flow()
    good = mice.REC.pack(mice.OUT, 5, 1) + b"x"
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        _flowc.mice_records(good + msg if "byte 0" not in error else msg, f, {}, {}, 0.0)
    with pytest.raises(ValueError):
        _flowc.mice_records(good + msg, f, {}, {}, 0.0)
    assert not f.retained and not f.queue


@pytest.mark.parametrize(
    "msg",
    [
        b"\x00" * 3,
        bytes(8) + (7).to_bytes(8, "big") + (5).to_bytes(4, "big") + b"abc",
        bytes(8) + (7).to_bytes(8, "big"),
        bytes(8) + bytes(8) + (0).to_bytes(4, "big"),
    ],
)
def test_bad_item_message_same_error_as_pure(msg: bytes) -> None:
    f = Flow()
    with pytest.raises(ValueError) as pure:
        mice.unpack_items_py(msg)
    with pytest.raises(ValueError) as comp:
        _flowc.arrive(msg, f, UPS[0], MiceQueue())
    assert str(comp.value) == str(pure.value)
    assert not f.inputs and not f.to_mice


class _Machine:
    """What ChannelPlane.feed_mice and mice_records use of their DimeMachine."""

    def __init__(self) -> None:
        from collections import defaultdict
        from types import SimpleNamespace

        self.mice = SimpleNamespace(pending_tx=deque(), name="m", fault=None, eof=False, baseline=0)
        self.counters: dict[Any, int] = defaultdict(int)


def test_items_wait_for_a_fuller_hand_over_while_the_mice_is_busy() -> None:
    """With nothing in flight the MICE gets what waits at once; while it is busy, a hand-over waits for
    HANDOVER_ITEMS items (or HANDOVER_BYTES) or for its DONEs; every item is handed over once, in order."""
    from pxproto.node import channels

    plane = ChannelPlane(_Machine())  # type: ignore[arg-type]
    tx = plane.m.mice.pending_tx  # type: ignore[union-attr]
    lin = iter(range(1, 10_000))

    def arrive(n: int, size: int = 1) -> list[int]:
        pairs = [(next(lin), bytes(size)) for _ in range(n)]
        plane.mice_queue.add(n, pairs[0][0], mice.pack_records(mice.ITEM, pairs))
        plane.feed_mice(0.0)
        return [p[0] for p in pairs]

    def handed() -> list[int]:
        got = [r[1] for m in tx for r in mice.records(m)]
        tx.clear()
        return got

    first = arrive(10)
    assert handed() == first  # idle MICE: at once
    waiting = arrive(10) + arrive(channels.HANDOVER_ITEMS - 11)
    assert handed() == []  # busy, fewer than HANDOVER_ITEMS waiting
    waiting += arrive(1)
    assert handed() == waiting  # HANDOVER_ITEMS reached
    big = arrive(2, channels.HANDOVER_BYTES // 2)
    assert handed() == big  # HANDOVER_BYTES reached
    late = arrive(3)
    assert handed() == []
    plane.mice_records(mice.pack_dones(mice.DONE, first + waiting + big), 0.0)  # the MICE is done with all
    assert plane.mice_inflight == 0 and handed() == []
    plane.feed_mice(0.0)
    assert handed() == late


class Model:
    """What a source's DIME keeps, item by item (the rules of ``flow.py`` without runs): an output is kept from
    when the MICE makes it (a lineage kept already is not made twice) until downstream completes it."""

    def __init__(self) -> None:
        self.kept: dict[int, bytes] = {}
        self.sent_on: dict[int, int | None] = {}

    def check(self, f: Flow) -> None:
        got = dict(f.retained.items())
        assert {k: bytes(o.data) for k, o in got.items()} == self.kept
        assert {k: o.channel for k, o in got.items()} == self.sent_on
        runs = list(f.retained.runs.values())
        assert len(f.retained) == sum(r.left for r in runs) == len(self.kept)
        assert f.queued == sum(r.left for r in runs if r.channel is None)
        assert sorted(r.base for r in f.queue if r.left) == sorted(r.base for r in runs if r.channel is None)


@pytest.mark.parametrize("walk", range(10))
def test_source_runs_match_pure_and_the_item_model(walk: int, rng: random.Random) -> None:
    """A source's outputs kept as runs: batches of consecutive lineages (some re-made: a re-run source; some with
    gaps, some of one item, from two stages), taken for two channels in frames that split runs, completed in order,
    out of order, twice and unknown, and queued again by a re-wire of one channel or of all, partly completed.  The
    compiled and pure flows stay the same, and both hold what the per-item model holds."""
    c, p, model = Side(), Side(), Model()
    nxt = {1 << 48: 1, 2 << 48: 1}
    gone_out: list[tuple[bytes, bytes]] = []  # (message, a copy of it): a message is never written after it goes
    for step in range(250):
        if step % 50 == 0:  # outputs join the open run up to a frame's room (0: never), as the plane sets it
            c.flow.pack_room = p.flow.pack_room = rng.choice((0, 40, 120, 600, 5000))
        what = rng.random()
        if what < 0.3:  # the MICE's outputs
            hi = rng.choice(list(nxt))
            recs = []
            for _ in range(rng.choice((1, rng.randint(2, 40)))):
                if rng.random() < 0.05:
                    nxt[hi] = max(1, nxt[hi] - rng.randint(1, 30))  # a re-run: lineages made already
                elif rng.random() < 0.05:
                    nxt[hi] += rng.randint(1, 5)  # a gap
                lin = hi | nxt[hi]
                nxt[hi] += 1
                data = rng.randbytes(rng.randint(0, 24))
                recs.append((mice.OUT, lin, data))
                if lin not in model.kept and all(r[1] != lin for r in recs[:-1]):
                    made = c.flow.retained.find(lin)
                    if made is None:  # (a lineage inside a live run, completed or not, is not made again)
                        model.kept[lin] = data
                        model.sent_on[lin] = None
            msg = b"".join(mice.REC.pack(k, lin, len(d)) + d for k, lin, d in recs)
            step_records(c, p, msg, 1.0)
        elif what < 0.55 and p.flow.queued:  # a frame for a channel
            ch, room = rng.choice((1, 2)), rng.choice((30, 100, 400, 5000))
            got_c = _flowc.take_batch(c.flow, ch, room)
            assert got_c == p.flow.take(ch, room)
            gone_out.append((got_c[0], bytes(bytearray(got_c[0]))))
            items = mice.unpack_items_py(got_c[0])
            assert len(items) == got_c[1] >= 1
            assert sum(mice.ITEM_REC.size + len(d) for _, d in items) <= room or len(items) == 1
            for lin, data in items:
                assert model.kept[lin] == data and model.sent_on[lin] is None  # each queued item goes once
                model.sent_on[lin] = ch
        elif what < 0.85 and model.kept:  # completions: mostly the oldest sent, in order, some out of order
            sent = sorted(lin for lin, ch in model.sent_on.items() if ch is not None)
            picks = sent[: rng.randint(1, 60)] if sent and rng.random() < 0.6 else []
            picks += rng.sample(sorted(model.kept), min(len(model.kept), rng.randint(0, 8)))
            picks += [*rng.sample(picks, min(len(picks), 2)), rng.getrandbits(64) or 1]  # twice, unknown
            step_completions(c, p, picks)
            for lin in picks:
                model.kept.pop(lin, None)
                model.sent_on.pop(lin, None)
        elif what < 0.95:  # a re-wire: what went on the channel (or on any) is queued again
            wire = rng.choice((1, 2, None))
            n = c.flow.requeue(wire)
            on = [lin for lin, v in model.sent_on.items() if v is not None and v == (wire or v)]
            assert n == p.flow.requeue(wire) == len(on)
            for lin in on:
                model.sent_on[lin] = None
        else:
            assert c.flow.source_resume() == p.flow.source_resume()
            low = {lin >> 48: lin & flow_mod.LOW_MASK for lin in sorted(model.kept, reverse=True)}
            assert p.flow.source_resume() == (min(low.values()) - 1 if low else p.flow.source_made)
        model.check(c.flow)
        model.check(p.flow)
        assert all(msg == copy for msg, copy in gone_out), f"walk {walk} step {step}: a message sent was changed"
        assert snapshot(c.flow, c.completions, c.queue) == snapshot(p.flow, p.completions, p.queue), (
            f"walk {walk} step {step}"
        )
        check_input_runs(c.flow)


@pytest.mark.parametrize("compiled", [True, False])
def test_a_run_completes_in_part_out_of_order_and_is_sent_again_in_part(compiled: bool) -> None:
    """One run of 6 outputs split over two frames: completing its items 1, 0 (in order up to 2), then 4, leaves 3, 5
    and the second frame's rest; a re-wire of channel 7 sends again only what went on 7 and is not completed."""
    f, comp = Flow(), dict[Any, list[int]]()
    base = 3 << 48 | 1
    msg, _ = mice.pack_run(mice.OUT, base, [bytes([i]) * 4 for i in range(6)], 0, 1 << 20, mice.MAX_ITEM)
    plane = Side()
    plane.flow = f
    if compiled:
        _flowc.mice_records(msg, f, comp, {}, 0.0)
    else:
        ChannelPlane._mice_records_py(plane, mice.records_py(msg), 0.0)  # type: ignore[arg-type]
    take = (lambda ch, room: _flowc.take_batch(f, ch, room)) if compiled else f.take
    assert len(f.retained.runs) == 1 and len(f.retained) == f.queued == 6
    first, k = take(7, 3 * 16)
    assert k == 3 and [lin - base for lin, _ in mice.unpack_items_py(first)] == [0, 1, 2]
    assert take(8, 1000)[1] == 3 and not f.queue and f.queued == 0
    assert sorted(r.base - base for r in f.retained.runs.values()) == [0, 3]  # split where the frame ended

    def complete(*idx: int) -> None:
        payload = b"".join((base + i).to_bytes(8, "big") for i in idx)
        if compiled:
            _flowc.completions_in(payload, f, comp)
        else:
            f.downstream_completed_batch(base + i for i in idx)

    complete(1, 1, 0)  # out of order, and twice
    assert sorted(lin - base for lin, _ in f.retained.items()) == [2, 3, 4, 5]
    complete(4)
    assert sorted(lin - base for lin, _ in f.retained.items()) == [2, 3, 5] and len(f.retained) == 3
    assert f.source_resume() == 2  # the lowest not completed: index 2 of the run (lineage low part 3) - 1
    assert f.requeue(7) == 1 and f.queued == 1
    again, k = take(9, 1000)
    assert k == 1 and mice.unpack_items_py(again) == [(base + 2, b"\x02" * 4)]
    assert f.requeue(8) == 2
    again, k = take(9, 1000)
    assert [lin - base for lin, _ in mice.unpack_items_py(again)] == [3, 5]  # 4 is completed: not sent again
    complete(2, 3, 5)
    assert not f.retained and not f.retained.runs and not f.retained.spans and f.queued == 0
    assert comp == {}  # a source's outputs: nothing to complete upstream


@pytest.mark.parametrize("size", [16, 1400, 65536])
def test_source_frames_are_the_runs_kept(size: int) -> None:
    """A source's outputs, kept from MICE batches under a frame's room, join one run up to the room: each frame
    taken is a run's own buffer (no copy), the same bytes the pure twin packs, and a buffer sent is never written
    again as later outputs are kept."""
    room = 63 * 1024
    c, p = Side(), Side()
    c.flow.pack_room = p.flow.pack_room = room
    base, lin, sent = 1 << 48, 1, []
    for _ in range(12):
        k = max(1, min(mice.BATCH_BYTES, room) // (size + mice.REC.size))  # (a batch's worth, under the room)
        msg = b"".join(mice.REC.pack(mice.OUT, base | (lin + i), size) + bytes([i & 0xFF]) * size for i in range(k))
        lin += k
        step_records(c, p, msg, 1.0)
        if lin % 3 == 0:  # now and then a frame goes while outputs are still coming
            runs = list(c.flow.queue)
            got = _flowc.take_batch(c.flow, 1, room)
            assert got == p.flow.take(1, room)
            assert any(got[0] is r.buf for r in runs)  # the run itself, not a copy
            sent.append((got[0], bytes(bytearray(got[0]))))
    while c.flow.queued:
        runs = list(c.flow.queue)
        got = _flowc.take_batch(c.flow, 1, room)
        assert got == p.flow.take(1, room)
        assert got[0] is runs[0].buf and got[1] == runs[0].n
        sent.append((got[0], bytes(bytearray(got[0]))))
    assert all(msg == copy for msg, copy in sent)
    assert sum(len(mice.unpack_items_py(m)) for m, _ in sent) == lin - 1
    assert all(len(m) - 8 <= room or len(mice.unpack_items_py(m)) == 1 for m, _ in sent)
    assert snapshot(c.flow, c.completions, c.queue) == snapshot(p.flow, p.completions, p.queue)


@pytest.mark.parametrize("size", [20_000, 65536])
def test_large_runs_go_out_as_a_gather_of_the_runs(size: int) -> None:
    """A message of several large kept runs goes to a compiled ``iov`` sender as a Gather of the runs (no copy of
    them): its frames are the bytes the joined message gives (``gather=False``), and the flows stay the same."""
    from pxproto.dime._channel import ChannelSender, Gather, TxFrame
    from tests.test_channel_iov import A, B

    sides, outs = (Side(), Side()), []
    for side, gather in zip(sides, (True, False), strict=True):
        tx = ChannelSender(A, B, 5, mtu=65535, initial_credit=64)
        tx.iov = True
        room = tx.frag_size - 8 + 7 * tx.frag_size  # (a large message's room, as ChannelPlane.pump sets it)
        side.flow.pack_room = tx.frag_size - 8
        base, lin = 1 << 48, 1
        for batch in range(6):  # MICE batches of one or two items: a run each
            k = 1 + batch % 2
            msg = b"".join(
                mice.REC.pack(mice.OUT, base | (lin + i), size) + bytes([(lin + i) & 0xFF]) * size for i in range(k)
            )
            lin += k
            _flowc.mice_records(msg, side.flow, side.completions, side.handed_at, 1.0)
        out, _, items, _, payload = _flowc.send_batches(side.flow, tx, room, 1.0, 8, gather)
        assert items == lin - 1 and payload == items * size
        outs.append(out.frames)
    gathered, joined = outs
    assert [bytes(f) for f in gathered] == [bytes(f) for f in joined]
    assert any(type(f) is TxFrame and type(f.payload) is Gather for f in gathered)
    assert not any(type(f) is TxFrame and type(f.payload) is Gather for f in joined)
    assert snapshot(sides[0].flow, {}, sides[0].queue) == snapshot(sides[1].flow, {}, sides[1].queue)
