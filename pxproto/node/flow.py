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
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from pxproto.fastpath import select
from pxproto.node import mice
from pxproto.node.handover import COMPLETED_MAX, LOW_BITS, LOW_MASK, Completed, MiceQueue
from pxproto.node.retained import ITEM_HEAD, Retained, _length, _PyOutput, _PyRun

__all__ = ["COMPLETED_MAX", "LOW_BITS", "LOW_MASK", "Completed", "Flow", "MiceQueue", "Upstream"]

Upstream = tuple[int, bytes, int]
"""(input channel, upstream MAC, upstream DIME)."""


@dataclass(slots=True)
class _PyInput:
    upstreams: list[Upstream]
    done: bool = False
    open_outputs: int = 0


@dataclass(slots=True, eq=False)
class _PyInRun:
    """Inputs handed to the MICE as one run (the items of one item message with consecutive lineages): lineages
    ``base + lo`` to ``base + n - 1``, in hand-over order, none DONE yet and none with outputs, all completed to
    ``upstreams``.  An item that needs state of its own (outputs, a copy from another upstream, a DONE out of
    order) leaves the run first and becomes an input of its own (:meth:`Flow.spill`)."""

    base: int
    n: int
    upstreams: list[Upstream]
    lo: int = 0


loops = select.compiled("pxproto.node._flowc")
"""The compiled per-item loops of ``channels.py`` (``pxproto.node._flowc``, its Input and Run records too), or
None: the Python loops there and in :class:`Flow` run."""
_Input: type[_PyInput] = loops.Input if loops is not None else _PyInput
Run: type[_PyRun] = loops.Run if loops is not None else _PyRun
InRun: type[_PyInRun] = loops.InRun if loops is not None else _PyInRun
Output = _PyOutput


@dataclass
class Flow:
    """Lineage bookkeeping of one MICE; reset when the MICE stops.

    An input's ``upstreams`` list may be shared with other inputs (those of one item message): it is replaced,
    never changed in place."""

    inputs: dict[int, _PyInput] = field(default_factory=dict)
    """Inputs handed to the MICE and not yet completed, by lineage."""
    completed: Completed = field(default_factory=Completed)
    """Lineages completed here (their copies are completed at once), behind watermarks."""
    to_mice: deque[int | _PyInRun] = field(default_factory=deque)
    """Lineages handed to the MICE whose DONE has not come back, in order: an input of its own (in ``inputs``),
    or a run of them (:class:`_PyInRun`, in ``in_runs``)."""
    in_runs: dict[int, _PyInRun] = field(default_factory=dict)
    """The runs of inputs in ``to_mice``, by base lineage."""
    in_spans: list[int] = field(default_factory=list)
    """Their bases, sorted (a lineage inside a run is found by bisection)."""
    retained: Retained = field(default_factory=Retained)
    """Outputs not yet completed by downstream, as runs."""
    queue: deque[_PyRun] = field(default_factory=deque)
    """Runs of outputs waiting for an output channel with credit (a run is here exactly while its ``channel`` is None
    and it has items not completed; one all completed while it waits is dropped when its turn comes)."""
    queued: int = 0
    """Items of the runs in ``queue`` not completed."""
    duplicates: int = 0
    replayed: int = 0
    requeued_bytes: int = 0
    """Item bytes the last :meth:`requeue` queued again."""
    source_made: int = 0
    """A source: the highest item count it produced (its last item's index + 1)."""
    pack_room: int = 0
    """Bytes of item records a data frame takes (set by the plane as it sends; 0: none yet): a source's outputs
    join the open run up to it, so that a frame is mostly one run, sent as it is kept (see :meth:`keep`)."""
    open_run: _PyRun | None = None
    """The run a source's next outputs may join: the last one made, while it waits unsent and under ``pack_room``."""

    def arrive(self, lineage: int, up: Upstream) -> str:
        """An item arrived: 'new' (hand it to the MICE), 'wait' (a copy in progress), 'done' (complete it now)."""
        if lineage in self.completed:
            self.duplicates += 1
            return "done"
        inp = self.inputs.get(lineage)
        if inp is None and self.in_copy(lineage, up):
            self.duplicates += 1
            return "wait"
        if inp is None and self.spill(lineage):
            inp = self.inputs[lineage]
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
        are added to ``queue`` (for the MICE) as one chunk, and kept as runs of inputs (consecutive lineages; one
        alone is an input of its own); returns the lineages to complete at once (copies of done ones).  The new
        inputs share one upstreams list (lists are replaced, never changed in place).  The pure twin of
        ``_flowc.arrive``."""
        completed, inputs = self.completed, self.inputs
        marks, above = completed.marks, completed.above
        done: list[int] = []
        new: list[tuple[int, bytes]] = []
        ups: list[Upstream] = [up]
        end = self.in_end()
        g_base = g_k = 0  # the run being gathered: g_k lineages from g_base
        for pair in items:
            lineage = pair[0]
            if (lineage & LOW_MASK) <= marks.get(lineage >> LOW_BITS, 0) or lineage in above:
                self.duplicates += 1
                done.append(lineage)
                continue
            if g_k and g_base <= lineage < g_base + g_k:  # a copy in this message (the same upstream)
                self.duplicates += 1
                continue
            inp = inputs.get(lineage) if inputs else None
            if inp is None and lineage < end:
                if self.in_copy(lineage, up):
                    self.duplicates += 1
                    continue
                if self.spill(lineage):
                    inp = inputs[lineage]
            if inp is not None:
                self.duplicates += 1
                if up not in inp.upstreams:
                    inp.upstreams = [*inp.upstreams, up]
                continue
            if g_k and lineage == g_base + g_k:
                g_k += 1
            else:
                if g_k:
                    end = self.hand(g_base, g_k, ups, end)
                    g_k = 0
                if lineage < end:  # below a run: an input of its own (a run starts above every other one)
                    self.hand(lineage, 1, ups, end)
                else:
                    g_base, g_k = lineage, 1
            new.append(pair)
        if g_k:
            self.hand(g_base, g_k, ups, end)
        if new:
            queue.add(len(new), new[0][0], mice.pack_records(mice.ITEM, new))
        return done

    def in_end(self) -> int:
        """A lineage above every one in a run of inputs (0: no runs)."""
        if not self.in_spans:
            return 0
        r = self.in_runs[self.in_spans[-1]]
        return r.base + r.n

    def hand(self, base: int, n: int, ups: list[Upstream], end: int) -> int:
        """``n`` new inputs of consecutive lineages from ``base`` handed to the MICE: a run (one alone: an input of
        its own); returns ``end`` raised past them.  A run is made only above every other one (``base >= end``), so
        no run's lineages, those before its ``lo`` included, overlap another's."""
        if n == 1:
            self.inputs[base] = _Input(ups)
            self.to_mice.append(base)
            return end
        r = InRun(base, n, ups)
        self.to_mice.append(r)
        self.in_runs[base] = r
        if not self.in_spans or base > self.in_spans[-1]:
            self.in_spans.append(base)
        else:
            insort(self.in_spans, base)
        return max(end, base + n)

    def in_find(self, lineage: int) -> _PyInRun | None:
        """The run of inputs holding ``lineage`` (not DONE yet), or None."""
        i = bisect_right(self.in_spans, lineage)
        if i:
            r = self.in_runs[self.in_spans[i - 1]]
            if r.base + r.lo <= lineage < r.base + r.n:
                return r
        return None

    def _in_drop(self, r: _PyInRun) -> None:
        del self.in_runs[r.base]
        del self.in_spans[bisect_left(self.in_spans, r.base)]

    def in_copy(self, lineage: int, up: Upstream) -> bool:
        """Whether ``lineage`` waits in a run of inputs that ``up`` sent: a copy from the same upstream (a
        retransmission) needs no state of its own, so it stays in its run.  Spilling each such copy scanned
        ``to_mice`` and left two entries more in it, per item: a retransmitted message of 2,000 small items queued
        behind a busy MICE kept a sink DIME busy for seconds (bench/channel.py, dime-batch at 16 B)."""
        r = self.in_find(lineage)
        return r is not None and up in r.upstreams

    def spill(self, lineage: int) -> bool:
        """Take ``lineage`` out of its run of inputs as an input of its own, in its place in ``to_mice`` (the run
        keeps the items before it, a new run those after it); False if it is in no run."""
        r = self.in_find(lineage)
        if r is None:
            return False
        i = lineage - r.base
        self.inputs[lineage] = _Input(r.upstreams)
        tm = self.to_mice
        j = 0 if tm[0] is r else tm.index(r)
        if i == r.lo:  # the head (an item about to have outputs, mostly): the run goes on after it
            r.lo += 1
            if r.lo == r.n:
                tm[j] = lineage
                self._in_drop(r)
            else:
                tm.insert(j, lineage)
            return True
        tm.insert(j + 1, lineage)
        if i + 1 < r.n:
            rest = InRun(lineage + 1, r.n - i - 1, r.upstreams)
            tm.insert(j + 2, rest)
            self.in_runs[rest.base] = rest
            insort(self.in_spans, rest.base)
        r.n = i
        return True

    def head(self) -> int | None:
        """The oldest input not DONE (None: none), an input of its own (it is about to have outputs)."""
        tm = self.to_mice
        if not tm:
            return None
        h = tm[0]
        if isinstance(h, int):
            return h
        lineage = h.base + h.lo
        self.spill(lineage)
        return lineage

    def pending(self) -> list[int]:
        """The lineages handed to the MICE whose DONE has not come back, in order."""
        out: list[int] = []
        for h in self.to_mice:
            if isinstance(h, int):
                out.append(h)
            else:
                out.extend(range(h.base + h.lo, h.base + h.n))
        return out

    def input_items(self) -> dict[int, tuple[list[Upstream], bool, int]]:
        """Every input not completed: (upstreams, done, open outputs) by lineage, those in runs too."""
        got = {k: (list(v.upstreams), bool(v.done), v.open_outputs) for k, v in self.inputs.items()}
        for r in self.in_runs.values():
            for lin in range(r.base + r.lo, r.base + r.n):
                got[lin] = (list(r.upstreams), False, 0)
        return got

    def forget(self, lineage: int) -> None:
        """Undo the hand-over of a 'new' lineage that could not be handed over (no MICE)."""
        if lineage not in self.inputs:
            self.spill(lineage)
        if self.inputs.pop(lineage, None) is not None:
            if self.to_mice and self.to_mice[-1] == lineage:
                self.to_mice.pop()
            else:
                with contextlib.suppress(ValueError):
                    self.to_mice.remove(lineage)

    def produced(self, lineage: int, data: bytes) -> None:
        """The MICE yielded an item (for the oldest input not yet DONE, or as a source).  A lineage inside a run
        still kept is not kept again, even if that item of the run is completed (downstream has it)."""
        parent = self.head()
        if self.retained.find(lineage) is not None:  # the same lineage again (a re-run source): keep one copy
            return
        if parent is not None:
            self.inputs[parent].open_outputs += 1
        else:
            self.source_made = max(self.source_made, lineage & LOW_MASK)
        self.keep(lineage, 1, lineage.to_bytes(8, "big") + len(data).to_bytes(4, "big") + data, parent)

    def keep(self, base: int, n: int, buf: bytes, parent: int | None) -> None:
        """Keep and queue ``n`` outputs of ``parent`` from lineage ``base`` on, as item records in ``buf``: a
        source's join the open run (last in the queue, unsent, nothing of it completed, lineages just below
        ``base``) while it holds at most ``pack_room`` bytes of records; the rest is a new run (the open one if it
        is within ``pack_room``).  The twin of ``_flowc._keep_group``, which keeps the buffers ready to send."""
        room, t, q = self.pack_room, self.open_run, self.queue
        j = cut = 0
        if (
            room > 0
            and parent is None
            and t is not None
            and q
            and q[-1] is t
            and t.channel is None
            and t.gone is None
            and t.lo == 0
            and t.parent is None
            and t.left == t.n
            and t.base + t.n == base
        ):
            used = t.end - t.start
            while j < n:
                need = ITEM_HEAD + _length(buf, cut)
                if used + need > room:
                    break
                used += need
                cut += need
                j += 1
            if j:
                t.buf = bytes(t.buf[t.start : t.end]) + buf[:cut]
                t.start, t.end = 0, len(t.buf)
                spans = self.retained.spans
                i = bisect_left(spans, t.base)
                if t.n == 1 and (i == len(spans) or spans[i] != t.base):
                    spans.insert(i, t.base)
                t.n += j
                t.left += j
                self.retained.n += j
                self.queued += j
        if j == n:
            return
        rest = buf[cut:] if cut else buf
        r = Run(base + j, n - j, rest, 0, len(rest), parent, self.retained.seq)
        r.left = n - j
        self.retained.seq += 1
        self.retained.add(r)
        q.append(r)
        self.queued += n - j
        self.open_run = r if room > 0 and parent is None and len(rest) <= room else None

    def done(self, lineage: int) -> list[Upstream]:
        """The MICE finished an input; return the upstreams to complete it to (if it is complete now)."""
        tm = self.to_mice
        if tm:
            h = tm[0]
            if not isinstance(h, int) and lineage == h.base + h.lo:  # the next of a run: done and complete
                h.lo += 1
                if h.lo == h.n:
                    tm.popleft()
                    self._in_drop(h)
                self.completed.add(lineage)
                return h.upstreams
        if lineage not in self.inputs:
            self.spill(lineage)
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

    def _complete_item(self, r: _PyRun, lineage: int) -> bool:
        """Downstream completed ``lineage`` of run ``r``: False if it was completed already."""
        i = lineage - r.base
        gone = r.gone
        if i < r.lo or (gone is not None and gone[i]):
            return False
        r.left -= 1
        self.retained.n -= 1
        if r.channel is None:
            self.queued -= 1
        if i == r.lo:  # in order: the run's head moves past it (and past those completed before it)
            pos, lo = r.start, i
            while True:
                pos += ITEM_HEAD + _length(r.buf, pos)
                lo += 1
                if lo >= r.n or gone is None or not gone[lo]:
                    break
            r.lo, r.start = lo, pos
        else:
            if gone is None:
                r.gone = gone = bytearray(r.n)
            gone[i] = 1
        if not r.left:
            self.retained.drop(r)
        return True

    def downstream_completed(self, lineage: int) -> tuple[int | None, list[Upstream]]:
        """Downstream completed one of our outputs; return (its parent, upstreams to complete the parent to)."""
        r = self.retained.find(lineage)
        if r is None or not self._complete_item(r, lineage) or r.parent is None:
            return None, []
        inp = self.inputs.get(r.parent)
        if inp is None:
            return r.parent, []
        inp.open_outputs -= 1
        return r.parent, self._maybe_complete(r.parent, inp)

    def downstream_completed_batch(self, lineages: Iterable[int]) -> list[tuple[int, list[Upstream]]]:
        """:meth:`downstream_completed` for a completion message: (parent, upstreams) of each parent now complete."""
        retained, inputs = self.retained, self.inputs
        out = []
        for lineage in lineages:
            r = retained.find(lineage)
            if r is None or not self._complete_item(r, lineage) or r.parent is None:
                continue  # unknown, completed already, or a source's output: nothing upstream
            inp = inputs.get(r.parent)
            if inp is None:
                continue
            inp.open_outputs -= 1
            ups = self._maybe_complete(r.parent, inp)
            if ups:
                out.append((r.parent, ups))
        return out

    def source_resume(self, first: int = 0) -> int:
        """A source: the index of its first item not completed downstream (``first`` before it made any)."""
        low = [(r.base + r.lo) & LOW_MASK for r in self.retained.runs.values() if r.parent is None]
        if low:
            return min(low) - 1
        return max(first, self.source_made)

    def take(self, channel: int, room: int) -> tuple[bytes, int]:
        """Pop off the queue the waiting outputs that fit ``room`` bytes of item records (at least one), mark them
        sent on ``channel`` and pack them as one batch message (``0 u64 | (lineage u64 | length u32 | bytes)...``);
        a run that does not fit whole is split, its rest staying first in the queue.  Returns (message, how many);
        (b"", 0) when nothing waits.  The pure twin of ``_flowc.take_batch``."""
        q, parts = self.queue, []
        size = k = 0
        while q:
            r = q[0]
            if not r.left:
                q.popleft()  # all completed while it waited
                continue
            buf, gone = r.buf, r.gone
            pos = seg = r.start
            i, t = r.lo, 0
            while i < r.n:
                need = ITEM_HEAD + _length(buf, pos)
                if gone is not None and gone[i]:
                    parts.append(buf[seg:pos])
                    seg = pos + need
                elif k and size + need > room:
                    break
                else:
                    size += need
                    k += 1
                    t += 1
                pos += need
                i += 1
            parts.append(buf[seg:pos])
            if i == r.n:
                q.popleft()
                r.channel = channel
                self.queued -= t
                continue
            if t:  # split: what went is this run, the rest a new one first in the queue
                rest = Run(r.base + i, r.n - i, buf, pos, r.end, r.parent, r.seq)
                rest.left = r.left - t
                rest.gone = gone[i:] if gone is not None else None
                r.n, r.end, r.left = i, pos, t
                r.channel = channel
                self.queued -= t
                q[0] = rest
                self.retained.index(rest)
            break
        if self.open_run is not None and self.open_run.channel is not None:
            self.open_run = None  # taken: nothing joins it any more
        if not k:
            return b"", 0
        return bytes(8) + b"".join(parts), k

    def requeue(self, channel: int | None = None) -> int:
        """Queue again every retained output sent on ``channel`` (None: on any); return how many."""
        again = [
            r
            for r in self.retained.runs.values()
            if r.channel is not None and (channel is None or r.channel == channel)
        ]
        again.sort(key=lambda r: (r.seq, r.base))
        n = nbytes = 0
        for r in again:
            r.channel = None
            n += r.left
            k = r.n - r.lo
            if k > 0:  # (item bytes: its records less their headers, in proportion of those not completed)
                nbytes += (r.end - r.start - ITEM_HEAD * k) * r.left // k
        self.queue.extendleft(reversed(again))
        self.queued += n
        self.replayed += n
        self.requeued_bytes = nbytes
        return n
