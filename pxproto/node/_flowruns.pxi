# The retained-output runs of ``_flowc.pyx`` (included there): the Run record and what indexes it
# (Retained.index/find/drop of ``pxproto/node/retained.py``) and makes it from a MICE's OUT records.

@cython.no_gc
@cython.final
cdef class Run:
    """Outputs kept until downstream completes them (the twin of ``pxproto.node.retained._PyRun``, which says what the
    fields mean): ``n`` consecutive lineages from ``base`` as item records in ``buf[start:end]``.  Its fields are
    ints, None, bytes and a bytearray: it is in no reference cycle, and the cyclic GC does not track it."""

    cdef public uint64_t base
    cdef public Py_ssize_t n, start, end, seq, lo, left
    cdef public object buf, parent, channel, gone

    def __init__(self, uint64_t base, Py_ssize_t n, bytes buf, Py_ssize_t start, Py_ssize_t end, parent,
                 Py_ssize_t seq, channel=None, Py_ssize_t lo=0, Py_ssize_t left=0, gone=None):
        self.base, self.n, self.buf, self.start, self.end = base, n, buf, start, end
        self.parent, self.seq, self.channel, self.lo, self.left, self.gone = parent, seq, channel, lo, left, gone

    def __repr__(self):
        return (f"Run(base={self.base}, n={self.n}, start={self.start}, end={self.end}, parent={self.parent!r}, "
                f"seq={self.seq}, channel={self.channel!r}, lo={self.lo}, left={self.left}, gone={self.gone!r})")


cdef Py_ssize_t _bisect(list a, uint64_t x, bint right) except -1:
    """bisect.bisect_right (``right``) or bisect_left of ``x`` in the sorted list of ints ``a``."""
    cdef Py_ssize_t lo = 0, hi = PyList_GET_SIZE(a), mid
    cdef uint64_t v
    while lo < hi:
        mid = (lo + hi) >> 1
        v = PyLong_AsUnsignedLongLong(<object>PyList_GET_ITEM(a, mid))
        if (x < v) if right else (v >= x):
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef inline int _index(dict runs, list spans, Run r) except -1:
    """Retained.index: ``r`` into ``runs``, and into ``spans`` if it has several items or is above all there."""
    PyDict_SetItem(runs, PyLong_FromUnsignedLongLong(r.base), r)
    cdef Py_ssize_t k = PyList_GET_SIZE(spans)
    if k == 0 or PyLong_AsUnsignedLongLong(<object>PyList_GET_ITEM(spans, k - 1)) < r.base:
        spans.append(PyLong_FromUnsignedLongLong(r.base))  # runs are mostly made in lineage order
    elif r.n > 1:
        spans.insert(_bisect(spans, r.base, True), PyLong_FromUnsignedLongLong(r.base))
    return 0


cdef Run _find(dict runs, list spans, uint64_t lineage, object key):
    """Retained.find: the run whose lineages include ``lineage`` (its int ``key``), or None."""
    cdef PyObject* found = PyDict_GetItem(runs, key)
    if found != NULL:
        return <Run>found
    cdef Py_ssize_t i = _bisect(spans, lineage, True)
    cdef Run r
    if i:
        r = <Run>PyDict_GetItem(runs, <object>PyList_GET_ITEM(spans, i - 1))
        if lineage - r.base < <uint64_t>r.n:
            return r
    return None


cdef int _drop(dict runs, list spans, Run r) except -1:
    """Retained.drop: forget a run all completed."""
    return _unindex(runs, spans, r.base)


cdef extern from "Python.h":
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject* o)
    int _PyBytes_Resize(PyObject** b, Py_ssize_t n) except -1


cdef object _whole(Run r):
    """Run ``r`` taken whole (its buffer MARK zero bytes then its records from MARK on) as its batch message: its
    buffer itself, cut to the records when nothing else holds it; None when it cannot be (a copy is made then)."""
    cdef PyObject* tmp = <PyObject*>r.buf
    if r.end == PyBytes_GET_SIZE(r.buf):
        return r.buf
    if _refcnt(tmp) != 1:
        return None
    Py_XINCREF(tmp)  # ours while the run lets go of it, so that it is the one reference _PyBytes_Resize needs
    r.buf = None
    _PyBytes_Resize(&tmp, r.end)  # (shrinks in place; on a failure the records are gone and MemoryError raised)
    r.buf = <object>tmp
    Py_XDECREF(tmp)
    return r.buf


cdef inline void _put_records(uint8_t* o, const uint8_t* p, Py_ssize_t pos, Py_ssize_t k) noexcept:
    """Write ``k`` OUT records from ``p + pos`` at ``o`` as item records (each without its kind byte)."""
    cdef Py_ssize_t j, need
    for j in range(k):
        need = ITEM + rd32(p + pos + 9)
        memcpy(o, p + pos + 1, need)
        o += need
        pos += 1 + need


cdef Py_ssize_t _merge(Run t, const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t j, Py_ssize_t room,
                       list spans) except -1:
    """Append the ``j`` OUT records at ``p[pos:end]`` to the open run ``t`` (in its buffer's spare room when
    nothing else holds the buffer, else in a new one of MARK + ``room`` bytes)."""
    cdef Py_ssize_t size = (end - pos) - j, used = t.end - t.start, i
    cdef bytes nb
    if _refcnt(<PyObject*>t.buf) != 1 or t.end + size > PyBytes_GET_SIZE(t.buf):
        nb = PyBytes_FromStringAndSize(NULL, MARK + (room if used + size <= room else used + size))
        memset(PyBytes_AS_STRING(nb), 0, MARK)
        memcpy(PyBytes_AS_STRING(nb) + MARK, PyBytes_AS_STRING(t.buf) + t.start, used)
        t.buf, t.start, t.end = nb, MARK, MARK + used
    _put_records(<uint8_t*>PyBytes_AS_STRING(t.buf) + t.end, p, pos, j)
    t.end += size
    if t.n == 1:  # several items now: in ``spans`` (a run of one is there only if it was made above all)
        i = _bisect(spans, t.base, False)
        if i == PyList_GET_SIZE(spans) or PyLong_AsUnsignedLongLong(<object>PyList_GET_ITEM(spans, i)) != t.base:
            spans.insert(i, PyLong_FromUnsignedLongLong(t.base))
    t.n += j
    t.left += j
    return 0


cdef Py_ssize_t _keep_group(object flow, const uint8_t* p, Py_ssize_t g_pos, Py_ssize_t g_end, Py_ssize_t g_k,
                            uint64_t base, object parent, Py_ssize_t seq, dict runs, list spans, object q,
                            Py_ssize_t room) except -1:
    """Flow.keep of ``g_k`` OUT records at ``p[g_pos:g_end]``; returns ``seq`` past the runs made.  A source's
    outputs that follow the open run (``flow.open_run``: last in the queue, unsent, nothing of it completed) join it
    while it holds at most ``room`` bytes of item records (``flow.pack_room``, a frame's: then the frame is the run,
    sent as it is); the rest is one new run, in a buffer of MARK + ``room`` bytes (open) when it fits one.  A run's
    buffer opens with MARK zero bytes, a batch message's mark: a run taken whole is its message, no copy."""
    cdef Py_ssize_t pos = g_pos, j = 0, used, need, size
    cdef object t = flow.open_run
    cdef Run r
    if room > 0 and parent is None and t is not None and len(q) and q[len(q) - 1] is t:  # (no wraparound)
        r = <Run>t
        if (r.channel is None and r.gone is None and r.lo == 0 and r.parent is None and r.left == r.n
                and r.base + <uint64_t>r.n == base):
            used = r.end - r.start
            while j < g_k:
                need = ITEM + rd32(p + pos + 9)
                if used + need > room:
                    break
                used += need
                pos += 1 + need
                j += 1
            if j:
                _merge(r, p, g_pos, pos, j, room, spans)
    if j == g_k:
        return seq
    size = (g_end - pos) - (g_k - j)
    cdef bint opened = room > 0 and parent is None and size <= room
    cdef bytes buf = PyBytes_FromStringAndSize(NULL, MARK + (room if opened else size))
    cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(buf)
    memset(o, 0, MARK)
    _put_records(o + MARK, p, pos, g_k - j)
    r = Run.__new__(Run)
    r.base, r.n, r.buf, r.start, r.end = base + <uint64_t>j, g_k - j, buf, MARK, MARK + size
    r.parent, r.seq = parent, seq
    r.channel, r.lo, r.left, r.gone = None, 0, g_k - j, None
    _index(runs, spans, r)
    q.append(r)
    flow.open_run = r if opened else None
    return seq + 1


@cython.no_gc
@cython.final
cdef class InRun:
    """Inputs handed to the MICE as one run (the twin of ``pxproto.node.flow._PyInRun``, which says what the
    fields mean): lineages ``base + lo`` to ``base + n - 1``, none DONE yet, none with outputs."""

    cdef public uint64_t base
    cdef public Py_ssize_t n, lo
    cdef public list upstreams

    def __init__(self, uint64_t base, Py_ssize_t n, list upstreams, Py_ssize_t lo=0):
        self.base, self.n, self.upstreams, self.lo = base, n, upstreams, lo

    def __repr__(self):
        return f"InRun(base={self.base}, n={self.n}, upstreams={self.upstreams!r}, lo={self.lo})"


cdef int _unindex(dict runs, list spans, uint64_t base) except -1:
    """Forget the run of base ``base`` in ``runs`` and ``spans``."""
    PyDict_DelItem(runs, PyLong_FromUnsignedLongLong(base))
    cdef Py_ssize_t i = _bisect(spans, base, False)
    if i < PyList_GET_SIZE(spans) and PyLong_AsUnsignedLongLong(<object>PyList_GET_ITEM(spans, i)) == base:
        del spans[i]
    return 0


cdef object _spill_head(object flow, object to_mice, dict inputs, InRun h):
    """Flow.spill of the first lineage of ``h`` (``to_mice[0]``): it becomes an input of its own, first in
    ``to_mice``; returns its lineage (an int)."""
    cdef object key = PyLong_FromUnsignedLongLong(h.base + <uint64_t>h.lo)
    cdef Input inp = Input.__new__(Input)
    inp.upstreams, inp.done, inp.open_outputs = h.upstreams, False, 0
    PyDict_SetItem(inputs, key, inp)
    h.lo += 1
    if h.lo == h.n:
        to_mice[0] = key
        _unindex(flow.in_runs, flow.in_spans, h.base)
    else:
        to_mice.appendleft(key)
    return key
