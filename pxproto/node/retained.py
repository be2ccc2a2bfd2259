"""The outputs a DIME keeps until downstream completes them, as runs (the pure :class:`_PyRun`, twin of
``_flowc.Run``), and their index (:class:`Retained`); part of :mod:`pxproto.node.flow`."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class _PyOutput:
    """One retained output as :meth:`Retained.get` shows it (the store keeps runs, not these)."""

    parent: int | None
    data: bytes
    channel: int | None = None


@dataclass(slots=True, eq=False)
class _PyRun:
    """Outputs kept until downstream completes them: ``n`` items of consecutive lineages from ``base``, made for
    one parent input (None: a source's), as data-channel item records (``lineage u64 | length u32 | bytes``) in
    ``buf[start:end]`` (``buf`` is shared by the pieces of a run split when sent in two frames).  Items before
    ``lo`` are completed, and those marked in ``gone`` (indexes from ``base``; None: none out of order); ``start``
    is the offset of item ``lo``; ``left`` counts the items not completed.  ``channel`` is the output channel the
    run went on: None while it waits in ``Flow.queue`` (or once it is all completed)."""

    base: int
    n: int
    buf: bytes
    start: int
    end: int
    parent: int | None
    seq: int
    channel: int | None = None
    lo: int = 0
    left: int = 0
    gone: bytearray | None = None


ITEM_HEAD = 12
"""A data-channel item record's header: lineage u64 | length u32."""
NO_RUN_ABOVE = 1 << 64


def _length(buf: bytes, pos: int) -> int:
    return int.from_bytes(buf[pos + 8 : pos + ITEM_HEAD], "big")


class Retained:
    """The outputs kept until downstream completes them, as runs (:class:`_PyRun`), by base lineage in ``runs``;
    the bases of the runs made of several items (and of runs of one made in lineage order), sorted, in ``spans``
    (a lineage inside a run is found by bisection; a run of one by its base).  Runs never overlap.  ``len`` counts
    the items not completed; ``seq`` numbers the runs in the order they were made (a re-wire queues them again in
    that order)."""

    __slots__ = ("n", "runs", "seq", "spans")

    def __init__(self) -> None:
        self.runs: dict[int, _PyRun] = {}
        self.spans: list[int] = []
        self.n = 0
        self.seq = 0

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def find(self, lineage: int) -> _PyRun | None:
        """The run whose lineages include ``lineage`` (completed or not), or None."""
        r = self.runs.get(lineage)
        if r is not None:
            return r
        i = bisect_right(self.spans, lineage)
        if i:
            r = self.runs[self.spans[i - 1]]
            if lineage < r.base + r.n:
                return r
        return None

    def next_base(self, lineage: int) -> int:
        """The lowest base in ``spans`` above ``lineage`` (NO_RUN_ABOVE: none)."""
        i = bisect_right(self.spans, lineage)
        return self.spans[i] if i < len(self.spans) else NO_RUN_ABOVE

    def index(self, run: _PyRun) -> None:
        """Put a new run in ``runs``, and in ``spans`` if it has several items or is above every run there (a run
        of one out of order, such as a derived lineage, is found by its base alone: no insertion mid-list)."""
        self.runs[run.base] = run
        spans = self.spans
        if run.n > 1:
            insort(spans, run.base)
        elif not spans or run.base > spans[-1]:
            spans.append(run.base)

    def add(self, run: _PyRun) -> None:
        self.index(run)
        self.n += run.left

    def drop(self, run: _PyRun) -> None:
        """Forget a run (all of it completed)."""
        del self.runs[run.base]
        i = bisect_left(self.spans, run.base)
        if i < len(self.spans) and self.spans[i] == run.base:
            del self.spans[i]

    def __contains__(self, lineage: int) -> bool:
        return self.get(lineage) is not None

    def get(self, lineage: int) -> _PyOutput | None:
        """The output ``lineage`` if it is kept and not completed, or None."""
        r = self.find(lineage)
        if r is None:
            return None
        for lin, out in _run_items(r):
            if lin == lineage:
                return out
        return None

    def __getitem__(self, lineage: int) -> _PyOutput:
        out = self.get(lineage)
        if out is None:
            raise KeyError(lineage)
        return out

    def items(self) -> Iterator[tuple[int, _PyOutput]]:
        """(lineage, output) of every item kept and not completed, run by run."""
        for r in self.runs.values():
            yield from _run_items(r)


def _run_items(r: _PyRun) -> Iterator[tuple[int, _PyOutput]]:
    pos, buf, gone = r.start, r.buf, r.gone
    for i in range(r.lo, r.n):
        length = _length(buf, pos)
        if gone is None or not gone[i]:
            yield r.base + i, _PyOutput(r.parent, bytes(buf[pos + ITEM_HEAD : pos + ITEM_HEAD + length]), r.channel)
        pos += ITEM_HEAD + length
