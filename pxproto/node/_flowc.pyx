# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The per-item loops of a DIME's item flow, compiled: what :class:`pxproto.node.channels.ChannelPlane` does
for every item, over the same :class:`pxproto.node.flow.Flow` state (its dicts and deques).

Each function is the compiled twin of a Python loop that stays in ``channels.py``/``flow.py`` (used
under ``PXPROTO_PURE=1`` or when this module is not built); ``tests/test_flowc.py`` drives both on
the same inputs and compares the flows they leave.  Records and item batches are parsed straight
from the message here: no intermediate (kind, lineage, bytes) tuple per item.

- :func:`mice_records`: a MICE's record batch (OUT, DONE...) into the flow (consecutive outputs kept as one
  :class:`Run`: one object and one copy of their records, not one object and bytes per item);
- :func:`take_batch`: the waiting outputs that fit one fragment, packed as one item-batch message (a run that fits
  whole is one copy);
- :func:`arrive`: an item message from upstream into the flow (new items queued for the MICE);
- :func:`completions_in`: a completion message from downstream into the flow.
"""

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem, PyDict_DelItem, PyDict_Contains, PyDict_Size
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsUnsignedLongLong
from cpython.long cimport PyLong_FromUnsignedLongLong
from cpython.ref cimport PyObject, Py_XDECREF, Py_XINCREF
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from libc.string cimport memcpy, memset

from pxproto.dime._channel cimport Gather
from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH
from pxproto.node._itemfmt cimport ITEM, MARK, REC, check_items, check_records, rd32, rd64, wr32, wr64

from pxproto.dime._channel import ChannelSender as _CSender
from pxproto.node.items import BATCH_MARK

BUILD_HASH = PXPROTO_BUILD_HASH.decode()

DEF K_ITEM = 1
DEF K_OUT = 2
DEF K_DONE = 3
DEF LOW_BITS = 48
DEF PARTS_MIN = 4096  # bytes an item message holds per item, on average, above which arrive keeps views, no copies
DEF GATHER_MIN = 16384  # bytes per kept run taken, on average, from which a sent message is a Gather of the runs
cdef uint64_t LOW_MASK = (<uint64_t>1 << LOW_BITS) - 1


@cython.no_gc
cdef class Input:
    """An input handed to the MICE: the upstreams to complete it to, whether the MICE said DONE, and how many
    of its outputs downstream has not completed yet.  Untracked by the cyclic GC, like :class:`Run` (its
    upstreams are tuples of ints and bytes)."""

    cdef public list upstreams
    cdef public bint done
    cdef public Py_ssize_t open_outputs

    def __init__(self, list upstreams, bint done=False, Py_ssize_t open_outputs=0):
        self.upstreams = upstreams
        self.done = done
        self.open_outputs = open_outputs

    def __repr__(self):
        return f"Input(upstreams={self.upstreams!r}, done={self.done!r}, open_outputs={self.open_outputs!r})"


include "_flowruns.pxi"
include "_flowsend.pxi"


@cython.final
cdef class _Waiting:
    """The last one-upstream list completed to and its waiting list in ``completions`` (held, so neither can be
    freed and its address reused by another list during the call)."""
    cdef object ups
    cdef list lst


cdef inline void _complete_to(dict completions, list ups, object lineage, _Waiting w) except *:
    """Queue ``lineage``'s completion to each of ``ups``.  ``w`` remembers the waiting list of the last one-upstream
    list: the inputs of one item message share one upstreams list (see :func:`arrive`), so a run of them costs a
    list append each (``completions`` only grows during a call, so the list stays in it)."""
    cdef PyObject* waiting = NULL
    if w.ups is ups:
        w.lst.append(lineage)
        return
    for up in ups:
        waiting = PyDict_GetItem(completions, up)
        if waiting == NULL:
            completions[up] = [lineage]
            waiting = PyDict_GetItem(completions, up)
        else:
            (<list>waiting).append(lineage)
    if len(ups) == 1:
        w.ups = ups
        w.lst = <list>waiting


DEF NO_HI = 1 << 16  # no lineage has this high part: the cache below holds nothing


cdef struct Mark:
    uint64_t hi  # the high part whose watermark is cached (NO_HI: none)
    uint64_t lo  # its watermark
    bint dirty  # moved up since it was read from ``marks``


cdef inline void _mark_flush(Mark* m, dict marks) except *:
    """Write the cached watermark back to ``marks`` (before anything reads ``marks`` or ``Completed.add`` runs)."""
    if m.dirty:
        marks[PyLong_FromUnsignedLongLong(m.hi)] = PyLong_FromUnsignedLongLong(m.lo)
        m.dirty = False
    m.hi = NO_HI


cdef inline void _mark_complete(Mark* m, dict marks, dict above, object complete, uint64_t lineage, object key) except *:
    """Completed.add: when the watermark just moves up (the common case) in ``m`` alone, with no Python object;
    otherwise ``complete`` (the cache written back first)."""
    cdef uint64_t hi = lineage >> LOW_BITS
    cdef PyObject* found
    if not above:
        if m.hi != hi:
            _mark_flush(m, marks)
            found = PyDict_GetItem(marks, PyLong_FromUnsignedLongLong(hi))
            m.hi = hi
            m.lo = <uint64_t>(<object>found) if found != NULL else 0
        if (lineage & LOW_MASK) == m.lo + 1:
            m.lo += 1
            m.dirty = True
            return
    _mark_flush(m, marks)
    complete(key)


def mice_records(msg, flow, dict completions, dict handed_at, double now):
    """A MICE's record batch (bytes, or any contiguous buffer: what is kept is copied out, so a receive buffer
    reused for the next message will do) into ``flow`` (OUT: kept and queued, consecutive ones of one parent as one
    run; DONE: the input finished, its upstreams' completions queued in ``completions``).  Returns (outs, dones,
    made, latency sum, latency samples, other records as (kind, lineage, bytes), bytes of the outputs kept);
    ValueError names the first malformed record (nothing is taken then)."""
    cdef const uint8_t[::1] view = msg
    cdef Py_ssize_t n = view.shape[0], pos = 0, length
    if n == 0:
        return 0, 0, 0, 0.0, 0, [], 0
    cdef const uint8_t* p = &view[0]
    check_records(p, n)  # the whole batch is checked before any of it is taken
    cdef dict inputs = flow.inputs
    cdef object retained = flow.retained
    cdef dict runs = retained.runs
    cdef list spans = retained.spans
    cdef object to_mice = flow.to_mice, queue = flow.queue
    cdef object completed = flow.completed
    cdef dict marks = completed.marks, above = completed.above
    cdef object complete = completed.add, done_slow = flow.done
    cdef object popleft = to_mice.popleft
    cdef Py_ssize_t room = flow.pack_room
    cdef Py_ssize_t outs = 0, dones = 0, lat_n = 0, out_bytes = 0, kept = 0, seq = retained.seq
    cdef uint64_t made = 0, lineage
    cdef double lat_sum = 0.0
    cdef list others = []
    cdef uint8_t kind
    cdef object key, parent = None, t0
    cdef Input inp, par_inp = None  # the input the OUT records belong to (to_mice[0]), None until looked up
    cdef InRun ir
    cdef bint run_hit = False
    cdef dict in_runs = flow.in_runs
    cdef list in_spans = flow.in_spans
    cdef PyObject* found
    cdef list ups
    cdef Mark mark
    cdef _Waiting w = _Waiting.__new__(_Waiting)
    # the run being gathered: OUT records p[g_pos:g_end], g_k of them, lineages from g_base; g_next: the lowest base
    # in ``spans`` above it (none: not g_has_next)
    cdef Py_ssize_t g_pos = 0, g_end = 0, g_k = 0, i
    cdef uint64_t g_base = 0, g_next = 0
    cdef bint g_has_next = False
    cdef object g_parent = None
    mark.hi = NO_HI
    mark.dirty = False
    pos = 0
    try:
        while pos < n:
            kind = p[pos]
            lineage = rd64(p + pos + 1)
            length = rd32(p + pos + 9)
            pos += REC
            if kind == K_OUT:
                outs += 1
                if par_inp is None and to_mice:  # the input they belong to (of its own: it has outputs)
                    parent = to_mice[0]
                    if type(parent) is InRun:
                        parent = _spill_head(flow, to_mice, inputs, <InRun>parent)
                    par_inp = <Input?>inputs[parent]
                # (to_mice changes only at a DONE, which ends the run: its parent is the same all along)
                if not (g_k and lineage == g_base + <uint64_t>g_k and (not g_has_next or lineage < g_next) and (
                        PyDict_Size(runs) == PyList_GET_SIZE(spans)
                        or not PyDict_Contains(runs, PyLong_FromUnsignedLongLong(lineage)))):
                    if g_k:
                        seq = _keep_group(flow, p, g_pos, g_end, g_k, g_base, g_parent, seq, runs, spans, queue,
                                          room)
                        kept += g_k
                        g_k = 0
                    key = PyLong_FromUnsignedLongLong(lineage)
                    if _find(runs, spans, lineage, key) is not None:
                        pos += length  # the same lineage again (a re-run source): keep one copy
                        continue
                    g_parent = parent if par_inp is not None else None
                    g_pos, g_base = pos - REC, lineage
                    i = _bisect(spans, lineage, True)
                    g_has_next = i < PyList_GET_SIZE(spans)
                    if g_has_next:
                        g_next = PyLong_AsUnsignedLongLong(<object>PyList_GET_ITEM(spans, i))
                g_k += 1
                g_end = pos + length
                if par_inp is not None:
                    par_inp.open_outputs += 1
                elif lineage & LOW_MASK > made:
                    made = lineage & LOW_MASK
                out_bytes += length
                pos += length
                continue
            if g_k:
                seq = _keep_group(flow, p, g_pos, g_end, g_k, g_base, g_parent, seq, runs, spans, queue, room)
                kept += g_k
                g_k = 0
            if kind == K_DONE:
                dones += 1
                par_inp = None  # to_mice[0] may change
                found = NULL
                if to_mice:  # DONE for the oldest input (the common case): its int is reused, no new one made
                    key = to_mice[0]
                    if type(key) is InRun:
                        ir = <InRun>key
                        run_hit = ir.base + <uint64_t>ir.lo == lineage  # the next of a run: done and complete
                        if run_hit:
                            ir.lo += 1
                            if ir.lo == ir.n:
                                popleft()
                                _unindex(in_runs, in_spans, ir.base)
                    elif <uint64_t>key == lineage:
                        found = PyDict_GetItem(inputs, key)
                if found == NULL:
                    key = PyLong_FromUnsignedLongLong(lineage)
                if handed_at:
                    t0 = handed_at.pop(key, None)
                    if t0 is not None:
                        lat_sum += now - <double>t0
                        lat_n += 1
                if run_hit:
                    run_hit = False
                    _mark_complete(&mark, marks, above, complete, lineage, key)
                    ups = ir.upstreams
                elif found == NULL:
                    _mark_flush(&mark, marks)
                    ups = done_slow(key)
                else:
                    inp = <Input?>(<object>found)
                    popleft()
                    inp.done = True
                    if inp.open_outputs:
                        pos += length
                        continue
                    PyDict_DelItem(inputs, key)
                    _mark_complete(&mark, marks, above, complete, lineage, key)
                    ups = inp.upstreams
                if ups:
                    _complete_to(completions, ups, key, w)
            else:
                others.append((kind, lineage, PyBytes_FromStringAndSize(<const char*>p + pos, length)))
            pos += length
        if g_k:
            seq = _keep_group(flow, p, g_pos, g_end, g_k, g_base, g_parent, seq, runs, spans, queue, room)
            kept += g_k
    finally:
        _mark_flush(&mark, marks)
        if kept:
            retained.seq = seq
            retained.n += kept
            flow.queued += kept
    return outs, dones, made, lat_sum, lat_n, others, out_bytes


cdef tuple _take(flow, object ch, Py_ssize_t room, bint gather=False):
    """Flow.take, compiled: pop off ``flow.queue`` the waiting outputs that fit ``room`` bytes of item records (at
    least one), mark them sent on ``ch`` and pack them as one batch message (``0 u64 | (lineage u64 | length u32 |
    bytes)...``; a run that does not fit whole is split, its rest staying first in the queue).  Returns (message,
    how many); (b"", 0) when nothing is waiting.  With ``gather``, a message of several runs of GATHER_MIN bytes
    or more each on average, none with an item completed out of order, is a :class:`pxproto.dime._channel.Gather`
    of the runs' records (no copy: the sender points its frames into them), else one bytes."""
    cdef object q = flow.queue, retained = flow.retained
    cdef dict runs = retained.runs
    cdef list spans = retained.spans
    cdef object popleft = q.popleft
    cdef list taken = []
    cdef Py_ssize_t size = 0, k = 0, t, i, pos, need, w, sent = 0
    cdef const uint8_t* p
    cdef const uint8_t* gp
    cdef Run r, rest
    try:
        while q:
            r = <Run?>q[0]
            if r.left == 0:
                popleft()  # all completed while it waited
                continue
            p = <const uint8_t*>PyBytes_AS_STRING(r.buf)
            gp = NULL
            if r.gone is not None:
                gp = <const uint8_t*>PyByteArray_AS_STRING(r.gone)
            if gp == NULL and size + (r.end - r.start) <= room:  # all of it fits: no walk
                size += r.end - r.start
                k += r.left
                sent += r.left
                popleft()
                r.channel = ch
                taken.append(r)
                continue
            i, pos, t = r.lo, r.start, 0
            while i < r.n:
                need = ITEM + rd32(p + pos + 8)
                if gp == NULL or not gp[i]:  # (one completed out of order is skipped)
                    if k and size + need > room:
                        break
                    size += need
                    k += 1
                    t += 1
                pos += need
                i += 1
            if i == r.n:
                popleft()
                r.channel = ch
                sent += t
                taken.append(r)
                continue
            if t:  # split: what went is this run, the rest a new one first in the queue
                rest = Run.__new__(Run)
                rest.base, rest.n, rest.buf, rest.start, rest.end = r.base + <uint64_t>i, r.n - i, r.buf, pos, r.end
                rest.parent, rest.seq, rest.channel, rest.lo, rest.left = r.parent, r.seq, None, 0, r.left - t
                rest.gone = r.gone[i:] if gp != NULL else None
                r.n, r.end, r.left, r.channel = i, pos, t, ch
                sent += t
                q[0] = rest
                _index(runs, spans, rest)
                taken.append(r)
            break
    finally:
        if sent:
            flow.queued -= sent
    if flow.open_run is not None and (<Run?>flow.open_run).channel is not None:
        flow.open_run = None  # taken: nothing joins it any more
    if k == 0:
        return b"", 0
    cdef object whole
    if len(taken) == 1:  # one run, all of it: it is the message (its buffer opens with the mark)
        r = <Run>taken[0]
        if r.gone is None and r.start == MARK:
            whole = _whole(r)
            if whole is not None:
                return whole, k
    cdef Gather g
    if gather and size >= GATHER_MIN * len(taken):
        for r in taken:
            if r.gone is not None:
                break
        else:
            g = Gather.__new__(Gather)
            g.add(BATCH_MARK, 0, MARK)  # (the message's mark: its first piece)
            for r in taken:
                g.add(r.buf, r.start, r.end - r.start)
            return g, k
    cdef bytes msg = PyBytes_FromStringAndSize(NULL, MARK + size)
    cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(msg)
    memset(o, 0, MARK)
    w = MARK
    for r in taken:
        p = <const uint8_t*>PyBytes_AS_STRING(r.buf)
        if r.gone is None:
            memcpy(o + w, p + r.start, r.end - r.start)
            w += r.end - r.start
            continue
        gp = <const uint8_t*>PyByteArray_AS_STRING(r.gone)
        pos = r.start
        for i in range(r.lo, r.n):
            need = ITEM + rd32(p + pos + 8)
            if not gp[i]:
                memcpy(o + w, p + pos, need)
                w += need
            pos += need
    if w != MARK + size:
        raise AssertionError(f"take_batch packed {w} bytes of {MARK + size}")
    return msg, k


include "_flowarrive.pxi"


def completions_in(bytes payload, flow, dict completions):
    """A completion message (u64 lineages of our outputs) from downstream into ``flow``: each parent input now
    complete is queued in ``completions`` to its upstreams.  Returns how many lineages the message held.  The run
    of the previous lineage is tried first (completions come mostly in order)."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload) // 8, i, idx, lo, pos
    cdef dict inputs = flow.inputs
    cdef object retained = flow.retained
    cdef dict runs = retained.runs
    cdef list spans = retained.spans
    cdef object completed = flow.completed
    cdef dict marks = completed.marks, above = completed.above
    cdef object complete = completed.add
    cdef object parent
    cdef PyObject* found
    cdef Run r, cur = None
    cdef uint8_t* gp
    cdef const uint8_t* b
    cdef uint64_t lin
    cdef Py_ssize_t gone_n = 0, unqueued = 0
    cdef Input inp
    cdef Mark mark
    cdef _Waiting w = _Waiting.__new__(_Waiting)
    mark.hi = NO_HI
    mark.dirty = False
    try:
        for i in range(n):
            lin = rd64(p + 8 * i)
            if cur is not None and lin - cur.base < <uint64_t>cur.n:
                r = cur
            else:
                r = _find(runs, spans, lin, PyLong_FromUnsignedLongLong(lin))
                if r is None:
                    continue
                cur = r
            idx = <Py_ssize_t>(lin - r.base)
            gp = NULL if r.gone is None else <uint8_t*>PyByteArray_AS_STRING(r.gone)
            if idx < r.lo or (gp != NULL and gp[idx]):
                continue  # completed already
            r.left -= 1
            gone_n += 1
            if r.channel is None:
                unqueued += 1
            if idx == r.lo:  # in order: the run's head moves past it (and past those completed before it)
                b = <const uint8_t*>PyBytes_AS_STRING(r.buf)
                pos, lo = r.start, idx
                while True:
                    pos += ITEM + rd32(b + pos + 8)
                    lo += 1
                    if lo >= r.n or gp == NULL or not gp[lo]:
                        break
                r.lo, r.start = lo, pos
            else:
                if gp == NULL:
                    r.gone = PyByteArray_FromStringAndSize(NULL, r.n)
                    gp = <uint8_t*>PyByteArray_AS_STRING(r.gone)
                    memset(gp, 0, r.n)
                gp[idx] = 1
            if not r.left:
                _drop(runs, spans, r)
                cur = None
            parent = r.parent
            if parent is None:
                continue  # a source's output: nothing upstream
            found = PyDict_GetItem(inputs, parent)
            if found == NULL:
                continue
            inp = <Input?>(<object>found)
            inp.open_outputs -= 1
            if not inp.done or inp.open_outputs:
                continue
            PyDict_DelItem(inputs, parent)
            _mark_complete(&mark, marks, above, complete, <uint64_t>parent, parent)
            if inp.upstreams:
                _complete_to(completions, inp.upstreams, parent, w)
    finally:
        _mark_flush(&mark, marks)
        if gone_n:
            retained.n -= gone_n
        if unqueued:
            flow.queued -= unqueued
    return n


def pack_lineages(list lineages, Py_ssize_t start, Py_ssize_t count):
    """``struct.pack(f"!{count}Q", *lineages[start:start + count])`` with no tuple, format or slice made: the
    payload of a COMPLETION message.  ValueError when the range is outside the list, OverflowError for a lineage
    outside 0..2**64-1."""
    cdef Py_ssize_t i
    cdef PyObject* item
    if start < 0 or count < 0 or start + count > PyList_GET_SIZE(lineages):
        raise ValueError(f"pack_lineages: {count} lineages from {start} are not in a list of {len(lineages)}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 8 * count)
    cdef uint8_t* w = <uint8_t*>PyBytes_AS_STRING(out)
    for i in range(count):
        item = PyList_GET_ITEM(lineages, start + i)
        wr64(w + 8 * i, <uint64_t>(<object>item))  # (Cython reads the digits: PyLong_AsUnsignedLongLong goes through
        # _PyLong_AsByteArray for an int of several digits, every lineage, at several times the cost)
    return out
