# The retained-output runs of ``_flowc.pyx`` (included there): the Run record and what indexes it
# (Retained.index/find/drop of ``pxproto/node/flow.py``) and makes it from a MICE's OUT records.

@cython.no_gc
@cython.final
cdef class Run:
    """Outputs kept until downstream completes them (the twin of ``pxproto.node.flow._PyRun``, which says what the
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


cdef Run _keep_group(const uint8_t* p, Py_ssize_t g_pos, Py_ssize_t g_end, Py_ssize_t g_k, uint64_t base, object parent,
                     Py_ssize_t seq, dict runs, list spans, object qappend):
    """Flow.keep of ``g_k`` OUT records at ``p[g_pos:g_end]``: one run, its item records copied into one bytes."""
    cdef Py_ssize_t size = (g_end - g_pos) - g_k, pos = g_pos, w = 0, j, length
    cdef bytes buf = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(buf)
    for j in range(g_k):
        length = rd32(p + pos + 9)
        memcpy(o + w, p + pos + 1, ITEM + length)
        w += ITEM + length
        pos += REC + length
    cdef Run r = Run.__new__(Run)
    r.base, r.n, r.buf, r.start, r.end, r.parent, r.seq = base, g_k, buf, 0, size, parent, seq
    r.channel, r.lo, r.left, r.gone = None, 0, g_k, None
    _index(runs, spans, r)
    qappend(r)
    return r


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
