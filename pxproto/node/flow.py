"""The item flow of one DIME: lineage bookkeeping between its input channels, its MICE and its outputs.

Sans I/O: the DIME tells it what arrived, what the MICE produced and what
downstream completed; it answers with what to hand the MICE, what to send on
which output, and which upstream gets which completion.  The rules are those
of :mod:`pxproto.node.mice` (lineage, exactly-once hand-over, completion travelling
back from the sink):

- an input lineage is handed to the MICE once; a later copy waits for the
  first copy's completion and is completed with it;
- an input completes when the MICE said DONE for it and every output it
  produced has been completed by downstream;
- an output is kept (``retained``) until downstream completes it; when its
  output channel is re-wired or unwired it is queued again.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pxproto.fastpath import select
from pxproto.node import mice

Upstream = tuple[int, bytes, int]
"""(input channel, upstream MAC, upstream DIME)."""

LOW_BITS = 48
LOW_MASK = (1 << LOW_BITS) - 1
COMPLETED_MAX = 1 << 20
"""Completed lineages kept above their watermarks, at most (the oldest are forgotten past this)."""


class Completed:
    """The lineages completed here, in bounded memory: a watermark per high 16 bits, and a set above it.

    A lineage is (high 16 bits, low 48 bits).  Source lineages are ``stage << 48 | i + 1``
    and arrive nearly in order, so for each high part a *watermark* says "every low part up
    to here is complete", and only lineages completed out of order are kept one by one, in
    ``above``; a lineage that closes the gap above a watermark moves it up and frees them.
    A stage passing each input on as its first output keeps source lineages, so the marks do
    the work along the whole workflow.  Derived lineages (hashes, :func:`pxproto.node.mice.derive_lineage`)
    never join a watermark: they stay in ``above``, which holds at most ``cap`` lineages, the
    oldest forgotten first (``forgotten`` counts them; a copy of a forgotten lineage would be
    handed to the MICE again, so ``cap`` bounds how far back a replay is recognised).
    """

    __slots__ = ("above", "cap", "forgotten", "marks")

    def __init__(self, cap: int = COMPLETED_MAX) -> None:
        self.marks: dict[int, int] = {}
        self.above: dict[int, None] = {}
        self.cap = cap
        self.forgotten = 0

    def __contains__(self, lineage: int) -> bool:
        return (lineage & LOW_MASK) <= self.marks.get(lineage >> LOW_BITS, 0) or lineage in self.above

    def __len__(self) -> int:
        """Entries held (marks plus lineages above them): the memory, not the count of lineages completed."""
        return len(self.marks) + len(self.above)

    def add(self, lineage: int) -> None:
        hi, lo = lineage >> LOW_BITS, lineage & LOW_MASK
        mark = self.marks.get(hi, 0)
        if lo <= mark:
            return
        if lo != mark + 1:
            self.above[lineage] = None
            if len(self.above) > self.cap:
                del self.above[next(iter(self.above))]
                self.forgotten += 1
            return
        mark = lo
        base = hi << LOW_BITS
        above = self.above
        while above and base | (mark + 1) in above:
            mark += 1
            del above[base | mark]
        self.marks[hi] = mark


@dataclass(slots=True)
class _PyInput:
    upstreams: list[Upstream]
    done: bool = False
    open_outputs: int = 0


@dataclass(slots=True)
class _PyOutput:
    parent: int | None
    data: bytes
    channel: int | None = None


class MiceQueue:
    """Items waiting for the MICE, kept as the ITEM records that hand them over: a chunk per item message
    (how many, first lineage, records), so an arriving batch costs one bytes object and :meth:`take` joins
    whole chunks.  ``len`` counts items; iterating gives (lineage, bytes) pairs, whatever the chunking."""

    __slots__ = ("chunks", "n", "size")

    def __init__(self) -> None:
        self.chunks: deque[tuple[int, int, bytes]] = deque()
        self.n = 0
        self.size = 0
        """Bytes of the records waiting."""

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for _, _, recs in self.chunks:
            for _, lineage, data in mice.records(recs):
                yield lineage, data

    def clear(self) -> None:
        self.chunks.clear()
        self.n = self.size = 0

    def add(self, n: int, first: int, records: bytes) -> None:
        """``n`` items as ITEM records (the first's lineage ``first``)."""
        if n:
            self.chunks.append((n, first, records))
            self.n += n
            self.size += len(records)

    def append(self, pair: tuple[int, bytes]) -> None:
        self.add(1, pair[0], mice.pack_records(mice.ITEM, [pair]))

    def take(self, max_n: int, limit: int) -> tuple[bytes, int, int]:
        """Pop up to ``max_n`` items (at least one), no more than fit ``limit`` bytes of records (the last may
        cross it), as one message of ITEM records; return (message, how many, first lineage or 0), as
        :func:`pxproto.node.mice.take_records` does for a deque of pairs."""
        chunks = self.chunks
        parts: list[bytes] = []
        n = size = first = 0
        while chunks and n < max_n and size < limit:
            cn, cfirst, recs = chunks[0]
            if not parts:
                first = cfirst
            if n + cn <= max_n and size + len(recs) <= limit:
                k, used = cn, len(recs)
            else:
                k, used, nxt = mice.split_at(recs, max_n - n, limit - size)
            if k == cn:
                chunks.popleft()
                parts.append(recs)
            else:
                chunks[0] = (cn - k, nxt, recs[used:])
                parts.append(recs[:used])
            n += k
            size += used
        self.n -= n
        self.size -= size
        if not parts:
            return b"", 0, 0
        return (parts[0] if len(parts) == 1 else b"".join(parts)), n, first


loops = select.compiled("pxproto.node._flowc")
"""The compiled per-item loops of ``channels.py`` (``pxproto.node._flowc``, its Input and Output records too), or
None: the Python loops there and in :class:`Flow` run."""
_Input: type[_PyInput] = loops.Input if loops is not None else _PyInput
Output: type[_PyOutput] = loops.Output if loops is not None else _PyOutput


@dataclass
class Flow:
    """Lineage bookkeeping of one MICE; reset when the MICE stops.

    An input's ``upstreams`` list may be shared with other inputs (those of one item message): it is replaced,
    never changed in place."""

    inputs: dict[int, _PyInput] = field(default_factory=dict)
    """Inputs handed to the MICE and not yet completed, by lineage."""
    completed: Completed = field(default_factory=Completed)
    """Lineages completed here (their copies are completed at once), behind watermarks."""
    to_mice: deque[int] = field(default_factory=deque)
    """Lineages handed to the MICE whose DONE has not come back, in order."""
    retained: dict[int, _PyOutput] = field(default_factory=dict)
    """Outputs not yet completed by downstream, by lineage."""
    queue: deque[int] = field(default_factory=deque)
    """Outputs waiting for an output channel with credit."""
    duplicates: int = 0
    replayed: int = 0
    source_made: int = 0
    """A source: the highest item count it produced (its last item's index + 1)."""

    def arrive(self, lineage: int, up: Upstream) -> str:
        """An item arrived: 'new' (hand it to the MICE), 'wait' (a copy in progress), 'done' (complete it now)."""
        if lineage in self.completed:
            self.duplicates += 1
            return "done"
        inp = self.inputs.get(lineage)
        if inp is not None:
            self.duplicates += 1
            if up not in inp.upstreams:
                inp.upstreams = [*inp.upstreams, up]  # replaced, never changed in place: inputs share lists
            return "wait"
        self.inputs[lineage] = _Input([up])
        self.to_mice.append(lineage)
        return "new"

    def arrive_batch(self, items: list[tuple[int, bytes]], up: Upstream, queue: MiceQueue) -> list[int]:
        """:meth:`arrive` for the items of one message, inlined (the sink's per-item hot path): the new ones
        are added to ``queue`` (for the MICE) as one chunk; returns the lineages to complete at once (copies of
        done ones).  The new inputs share one upstreams list (lists are replaced, never changed in place)."""
        completed, inputs, to_mice = self.completed, self.inputs, self.to_mice
        marks, above = completed.marks, completed.above
        done: list[int] = []
        new: list[tuple[int, bytes]] = []
        ups: list[Upstream] | None = None
        for pair in items:
            lineage = pair[0]
            if (lineage & LOW_MASK) <= marks.get(lineage >> LOW_BITS, 0) or lineage in above:
                self.duplicates += 1
                done.append(lineage)
                continue
            inp = inputs.get(lineage)
            if inp is not None:
                self.duplicates += 1
                if up not in inp.upstreams:
                    inp.upstreams = [*inp.upstreams, up]
                continue
            if ups is None:
                ups = [up]
            inputs[lineage] = _Input(ups)
            to_mice.append(lineage)
            new.append(pair)
        if new:
            queue.add(len(new), new[0][0], mice.pack_records(mice.ITEM, new))
        return done

    def forget(self, lineage: int) -> None:
        """Undo the hand-over of a 'new' lineage that could not be handed over (no MICE)."""
        if self.inputs.pop(lineage, None) is not None:
            if self.to_mice and self.to_mice[-1] == lineage:
                self.to_mice.pop()
            else:
                with contextlib.suppress(ValueError):
                    self.to_mice.remove(lineage)

    def produced(self, lineage: int, data: bytes) -> None:
        """The MICE yielded an item (for the oldest input not yet DONE, or as a source)."""
        parent = self.to_mice[0] if self.to_mice else None
        if lineage in self.retained:  # the same lineage again (a re-run source): keep one copy
            return
        if parent is not None:
            self.inputs[parent].open_outputs += 1
        else:
            self.source_made = max(self.source_made, lineage & LOW_MASK)
        self.retained[lineage] = Output(parent, data)
        self.queue.append(lineage)

    def done(self, lineage: int) -> list[Upstream]:
        """The MICE finished an input; return the upstreams to complete it to (if it is complete now)."""
        if self.to_mice and self.to_mice[0] == lineage:
            self.to_mice.popleft()
        else:
            try:
                self.to_mice.remove(lineage)
            except ValueError:
                return []
        inp = self.inputs.get(lineage)
        if inp is None:
            return []
        inp.done = True
        return self._maybe_complete(lineage, inp)

    def _maybe_complete(self, lineage: int, inp: _PyInput) -> list[Upstream]:
        if not inp.done or inp.open_outputs:
            return []
        del self.inputs[lineage]
        self.completed.add(lineage)
        return inp.upstreams

    def downstream_completed(self, lineage: int) -> tuple[int | None, list[Upstream]]:
        """Downstream completed one of our outputs; return (its parent, upstreams to complete the parent to)."""
        out = self.retained.pop(lineage, None)
        if out is None:
            return None, []
        if out.parent is None:
            return None, []
        inp = self.inputs.get(out.parent)
        if inp is None:
            return out.parent, []
        inp.open_outputs -= 1
        return out.parent, self._maybe_complete(out.parent, inp)

    def downstream_completed_batch(self, lineages: Iterable[int]) -> list[tuple[int, list[Upstream]]]:
        """:meth:`downstream_completed` for a completion message: (parent, upstreams) of each parent now complete."""
        retained, inputs = self.retained, self.inputs
        out = []
        for lineage in lineages:
            o = retained.pop(lineage, None)
            if o is None or o.parent is None:
                continue  # unknown, or a source's output: nothing upstream
            inp = inputs.get(o.parent)
            if inp is None:
                continue
            inp.open_outputs -= 1
            ups = self._maybe_complete(o.parent, inp)
            if ups:
                out.append((o.parent, ups))
        return out

    def source_resume(self, first: int = 0) -> int:
        """A source: the index of its first item not completed downstream (``first`` before it made any)."""
        low = [lin & LOW_MASK for lin, o in self.retained.items() if o.parent is None]
        if low:
            return min(low) - 1
        return max(first, self.source_made)

    def sent(self, lineage: int, channel: int) -> None:
        out = self.retained.get(lineage)
        if out is not None:
            out.channel = channel

    def requeue(self, channel: int | None = None) -> int:
        """Queue again every retained output sent on ``channel`` (None: on any); return how many."""
        again = [
            lin
            for lin, o in self.retained.items()
            if o.channel is not None and (channel is None or o.channel == channel)
        ]
        for lin in again:
            self.retained[lin].channel = None
        queued = set(self.queue)
        self.queue.extendleft(reversed([lin for lin in again if lin not in queued]))
        self.replayed += len(again)
        return len(again)
