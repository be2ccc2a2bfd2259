# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The per-item loops of a DIME's item flow, compiled: what :class:`pxproto.node.channels.ChannelPlane` does
for every item, over the same :class:`pxproto.node.flow.Flow` state (its dicts and deques).

Each function is the compiled twin of a Python loop that stays in ``channels.py``/``flow.py`` (used
under ``PXPROTO_PURE=1`` or when this module is not built); ``tests/test_flowc.py`` drives both on
the same inputs and compares the flows they leave.  Records and item batches are parsed straight
from the message here: no intermediate (kind, lineage, bytes) tuple per item.

- :func:`mice_records`: a MICE's record batch (OUT, DONE...) into the flow;
- :func:`take_batch`: the waiting outputs that fit one fragment, packed as one item-batch message;
- :func:`arrive`: an item message from upstream into the flow (new items queued for the MICE);
- :func:`completions_in`: a completion message from downstream into the flow.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem, PyDict_DelItem, PyDict_Contains
from cpython.long cimport PyLong_FromUnsignedLongLong
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "Python.h":
    PyObject* PyDict_SetDefault(object d, object key, object default) except NULL  # borrowed

cdef extern from *:
    """
    /* d.pop(k, None) in one lookup: _PyDict_Pop up to CPython 3.12, PyDict_Pop from 3.13 */
    static PyObject* px_dict_pop(PyObject* d, PyObject* k) {
    #if PY_VERSION_HEX >= 0x030D0000
        PyObject* r;
        if (PyDict_Pop(d, k, &r) < 0) return NULL;
        if (r == NULL) { Py_INCREF(Py_None); return Py_None; }
        return r;
    #else
        return _PyDict_Pop(d, k, Py_None);
    #endif
    }
    """
    object px_dict_pop(object d, object k)
from libc.string cimport memcpy

from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH
from pxproto.node._itemfmt cimport ITEM, MARK, REC, check_items, check_records, rd32, rd64, wr32, wr64

BUILD_HASH = PXPROTO_BUILD_HASH.decode()

DEF K_ITEM = 1
DEF K_OUT = 2
DEF K_DONE = 3
DEF LOW_BITS = 48
cdef uint64_t LOW_MASK = (<uint64_t>1 << LOW_BITS) - 1


@cython.no_gc
cdef class Output:
    """An output kept until downstream completes it: its parent input's lineage (None: a source's), its bytes,
    and the output channel it went on (None: not sent, or queued again).  Its fields are ints, None and bytes: it
    can be in no reference cycle, so the cyclic GC does not track it (a DIME keeps many)."""

    cdef public object parent
    cdef public object data
    cdef public object channel

    def __init__(self, parent, data, channel=None):
        self.parent = parent
        self.data = data
        self.channel = channel

    def __repr__(self):
        return f"Output(parent={self.parent!r}, data={self.data!r}, channel={self.channel!r})"

    def __eq__(self, other):
        if not isinstance(other, Output):
            return NotImplemented
        o = <Output>other
        return (self.parent, self.data, self.channel) == (o.parent, o.data, o.channel)


@cython.no_gc
cdef class Input:
    """An input handed to the MICE: the upstreams to complete it to, whether the MICE said DONE, and how many
    of its outputs downstream has not completed yet.  Untracked by the cyclic GC, like :class:`Output` (its
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
    reused for the next message will do) into ``flow`` (OUT: kept and queued; DONE: the input finished, its
    upstreams' completions queued in ``completions``).  Returns (outs, dones, made, latency sum, latency samples,
    other records as (kind, lineage, bytes), bytes of the outputs kept); ValueError names the first malformed
    record (nothing is taken then)."""
    cdef const uint8_t[::1] view = msg
    cdef Py_ssize_t n = view.shape[0], pos = 0, length
    if n == 0:
        return 0, 0, 0, 0.0, 0, [], 0
    cdef const uint8_t* p = &view[0]
    check_records(p, n)  # the whole batch is checked before any of it is taken
    cdef dict inputs = flow.inputs, retained = flow.retained
    cdef object to_mice = flow.to_mice, queue = flow.queue
    cdef object completed = flow.completed
    cdef dict marks = completed.marks, above = completed.above
    cdef object complete = completed.add, done_slow = flow.done
    cdef object qappend = queue.append, popleft = to_mice.popleft
    cdef Py_ssize_t outs = 0, dones = 0, lat_n = 0, out_bytes = 0
    cdef uint64_t made = 0, lineage
    cdef double lat_sum = 0.0
    cdef list others = []
    cdef uint8_t kind
    cdef object key, parent = None, t0
    cdef Output o
    cdef Input inp, par_inp = None  # the input the OUT records belong to (to_mice[0]), None until looked up
    cdef PyObject* found
    cdef list ups
    cdef Mark mark
    cdef _Waiting w = _Waiting.__new__(_Waiting)
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
                key = PyLong_FromUnsignedLongLong(lineage)
                o = Output.__new__(Output)
                o.parent = None
                o.data = PyBytes_FromStringAndSize(<const char*>p + pos, length)
                o.channel = None
                if PyDict_SetDefault(retained, key, o) != <PyObject*>o:
                    pos += length  # the same lineage again (a re-run source): keep one copy
                    continue
                if par_inp is not None:
                    par_inp.open_outputs += 1
                    o.parent = parent
                elif to_mice:
                    parent = to_mice[0]
                    par_inp = <Input?>inputs[parent]
                    par_inp.open_outputs += 1
                    o.parent = parent
                else:
                    parent = None
                    if lineage & LOW_MASK > made:
                        made = lineage & LOW_MASK
                qappend(key)
                out_bytes += length
            elif kind == K_DONE:
                dones += 1
                par_inp = None  # to_mice[0] may change
                key = PyLong_FromUnsignedLongLong(lineage)
                if handed_at:
                    t0 = handed_at.pop(key, None)
                    if t0 is not None:
                        lat_sum += now - <double>t0
                        lat_n += 1
                found = NULL
                if to_mice and to_mice[0] == key:
                    found = PyDict_GetItem(inputs, key)
                if found == NULL:
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
    finally:
        _mark_flush(&mark, marks)
    return outs, dones, made, lat_sum, lat_n, others, out_bytes


def take_batch(object q, dict retained, object ch, Py_ssize_t room):
    """Pop off ``q`` the waiting outputs (by lineage) that fit ``room`` bytes of item records (at least one), mark
    them sent on ``ch`` and pack them as one batch message (``0 u64 | (lineage u64 | length u32 | bytes)...``).
    Returns (message, how many); (b"", 0) when nothing is waiting (lineages no longer kept are dropped)."""
    cdef list outs = [], keys = []
    cdef Py_ssize_t size = 0, need, i, k, total
    cdef object popleft = q.popleft
    cdef object key
    cdef PyObject* found
    cdef Output o
    while q:
        key = q[0]
        found = PyDict_GetItem(retained, key)
        if found == NULL:
            popleft()
            continue
        o = <Output?>(<object>found)
        need = ITEM + PyBytes_GET_SIZE(o.data)
        if outs and size + need > room:
            break
        popleft()
        o.channel = ch
        outs.append(o)
        keys.append(key)
        size += need
    k = len(outs)
    if k == 0:
        return b"", 0
    total = MARK + size
    cdef bytes msg = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t* w = <uint8_t*>PyBytes_AS_STRING(msg)
    cdef Py_ssize_t pos = MARK, dl
    cdef bytes data
    for i in range(MARK):
        w[i] = 0
    for i in range(k):
        data = (<Output>outs[i]).data
        dl = PyBytes_GET_SIZE(data)
        wr64(w + pos, <uint64_t>keys[i])
        wr32(w + pos + 8, <uint32_t>dl)
        memcpy(w + pos + ITEM, PyBytes_AS_STRING(data), dl)
        pos += ITEM + dl
    return msg, k


def arrive(bytes message, flow, object up, object queue):
    """An item message (one item, or a batch) from upstream ``up`` into ``flow``: a new lineage is handed over
    (its ITEM record added to ``queue``, a :class:`pxproto.node.flow.MiceQueue`: one chunk per message), a copy of
    one in progress waits for it, a copy of a completed one is returned to be completed at once.  Returns that list;
    ValueError names the first malformed item (nothing is taken then).  The new inputs of one message share one
    upstreams list (replaced, never changed in place)."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(message)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(message)
    cdef uint64_t first = 0
    cdef bint batch
    batch = check_items(p, n)  # checked whole first
    cdef object completed = flow.completed
    cdef list done = []
    cdef Py_ssize_t dups = 0, k = 0, used = 0
    # the ITEM records of the new items, written straight into the bytes object the queue keeps (one copy of each
    # item): each batch item (ITEM bytes of header) gains a kind byte; a single item message (MARK bytes of
    # lineage) gains a kind byte and a length
    cdef Py_ssize_t cap = n - MARK + REC, pos = MARK
    if batch:
        cap = n - MARK
        while pos < n:  # (check_items passed: the headers are whole)
            pos += ITEM + rd32(p + pos + 8)
            cap += REC - ITEM
    cdef bytes recs = PyBytes_FromStringAndSize(NULL, cap)
    _arrive_loop(p, n, batch, completed.marks, completed.above, flow.inputs, flow.to_mice.append, up, done, &dups,
                 <uint8_t*>PyBytes_AS_STRING(recs), &used, &k, &first)
    if k:
        queue.add(k, PyLong_FromUnsignedLongLong(first), recs if used == cap else recs[:used])  # (a copy: duplicates)
    if dups:
        flow.duplicates += dups
    return done


cdef int _arrive_loop(const uint8_t* p, Py_ssize_t n, bint batch, dict marks, dict above, dict inputs, object tappend,
                      object up, list done, Py_ssize_t* dups, uint8_t* recs, Py_ssize_t* used, Py_ssize_t* k,
                      uint64_t* first) except -1:
    cdef Py_ssize_t pos, length, start, w = 0
    cdef uint64_t lineage, mark = 0, hi, cur_hi = NO_HI
    cdef list ups = None
    cdef object key
    cdef PyObject* found
    cdef Input inp
    pos = MARK
    while pos < n:
        if batch:
            lineage = rd64(p + pos)
            length = rd32(p + pos + 8)
            start = pos + ITEM
        else:
            lineage = rd64(p)
            start = MARK
            length = n - MARK
        pos = start + length
        key = PyLong_FromUnsignedLongLong(lineage)
        hi = lineage >> LOW_BITS
        if hi != cur_hi:  # nothing completes during the call: a watermark read once holds for it
            found = PyDict_GetItem(marks, PyLong_FromUnsignedLongLong(hi))
            mark = <uint64_t>(<object>found) if found != NULL else 0
            cur_hi = hi
        if (lineage & LOW_MASK) <= mark or (above and PyDict_Contains(above, key)):
            dups[0] += 1
            done.append(key)
            continue
        if ups is None:
            ups = [up]
        inp = Input.__new__(Input)
        inp.upstreams = ups
        inp.done = False
        inp.open_outputs = 0
        found = PyDict_SetDefault(inputs, key, inp)  # one lookup: taken, or the copy's first already there
        if found != <PyObject*>inp:
            dups[0] += 1
            inp = <Input?>(<object>found)
            if up not in inp.upstreams:
                inp.upstreams = inp.upstreams + [up]
            continue
        tappend(key)
        if k[0] == 0:
            first[0] = lineage
        k[0] += 1
        recs[w] = K_ITEM
        wr64(recs + w + 1, lineage)
        wr32(recs + w + 9, <uint32_t>length)
        memcpy(recs + w + REC, p + start, length)
        w += REC + length
    used[0] = w
    return 0


def completions_in(bytes payload, flow, dict completions):
    """A completion message (u64 lineages of our outputs) from downstream into ``flow``: each parent input now
    complete is queued in ``completions`` to its upstreams.  Returns how many lineages the message held."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload) // 8, i
    cdef dict retained = flow.retained, inputs = flow.inputs
    cdef object completed = flow.completed
    cdef dict marks = completed.marks, above = completed.above
    cdef object complete = completed.add
    cdef object key, parent, popped
    cdef PyObject* found
    cdef Output o
    cdef Input inp
    cdef Mark mark
    cdef _Waiting w = _Waiting.__new__(_Waiting)
    mark.hi = NO_HI
    mark.dirty = False
    try:
        for i in range(n):
            key = PyLong_FromUnsignedLongLong(rd64(p + 8 * i))
            popped = px_dict_pop(retained, key)  # one lookup
            if popped is None:
                continue
            o = <Output?>popped
            parent = o.parent
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
    return n
