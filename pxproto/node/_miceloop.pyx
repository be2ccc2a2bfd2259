# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The MICE's per-item loops, compiled: a source's emit loop and an item stage's call loop.

Their pure twins are ``_emit_source_py`` and ``_run_items_py`` in :mod:`pxproto.node.mice`, which picks these when
this module is built; the tests run both on the same stages (flush timing, lineages, ``first``, errors, lists, EOF).
The loops walk the items and write the records of the common case (a source's bytes items, an item stage's DONE
records); anything else (a flush, a list, a large or bad item, a call that yields) goes back to the callbacks the
twin uses, so the records and errors are the twin's (the messages may split elsewhere within BATCH_BYTES).
The clock is CLOCK_MONOTONIC read in C (what ``time.monotonic`` reads), in nanoseconds: no float per item.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.string cimport memcpy
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH
from pxproto.node._itemfmt cimport REC, check_records, rd32, rd64, wr32, wr64

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_MONOTONIC

cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject** obj, Py_ssize_t size) except -1
    Py_ssize_t Py_REFCNT(object o)
    Py_ssize_t Py_SIZE(PyObject* o)
    void Py_DECREF(PyObject* o)

BUILD_HASH = PXPROTO_BUILD_HASH.decode()


cdef inline int64_t _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def monotonic_ns():
    """The clock the loops read (CLOCK_MONOTONIC, nanoseconds): ``time.monotonic_ns`` on Linux."""
    return _now()


cdef class _Packer:
    """Records packed as a source makes its items: one bytes object of a batch's room, written in place, handed over
    (shrunk to what it holds) when the next record does not fit, or at the end of a run."""
    cdef PyObject* msg  # the message being written (a new reference), or NULL
    cdef uint8_t* w
    cdef Py_ssize_t pos, cap

    def __dealloc__(self):
        Py_XDECREF(self.msg)

    cdef int open(self, Py_ssize_t cap) except -1:
        cdef bytes msg = PyBytes_FromStringAndSize(NULL, cap)
        Py_INCREF(msg)
        self.msg = <PyObject*>msg
        self.w = <uint8_t*>PyBytes_AS_STRING(msg)
        self.pos, self.cap = 0, cap
        return 0

    cdef object take(self):
        """The message written so far (None when empty)."""
        cdef object msg
        if self.msg == NULL or self.pos == 0:
            return None
        if self.pos < self.cap:
            _PyBytes_Resize(&self.msg, self.pos)
        msg = <object>self.msg
        Py_XDECREF(self.msg)  # (``msg`` holds it now)
        self.msg = NULL
        return msg


def emit_source(produced, Py_ssize_t counter, Py_ssize_t first, int64_t slow_ns, int kind, uint64_t base,
                       out, Py_ssize_t batch_bytes, Py_ssize_t gather_bytes, add_packed, flush, other, put_run=None,
                       Py_ssize_t run_max=256):
    """A source's outputs (``produced``, an iterable), packed as they come: an exact ``bytes`` item shorter than ``gather_bytes`` at or past
    ``first`` is written at once as a ``kind`` record of lineage ``base | (counter + 1)`` into a message of at most
    the batch's room (``batch_bytes`` less ``out.size``, or a whole batch when not even the record fits there),
    handed to ``add_packed(message)`` when the next record does not fit, when an item took more than ``slow_ns`` to
    make (then ``flush()``), before anything else and at the end; anything else (a list, a large or a bad item)
    goes to ``other(item, counter, t_first)``, which returns the next counter.  With ``put_run``, exact ``bytes``
    items of ``gather_bytes`` or more are gathered in a list, ``run_max`` at most, handed over as
    ``put_run(items, counter)`` (``counter``: past the last) before anything else goes, when an item was slow (then
    ``flush()``) and at the end: one call for many, as the pure loop packs them (one ``other`` call each cost
    twice the CPU per 64 KiB item).  Returns the next source counter."""
    cdef _Packer pk = _Packer()
    cdef int64_t t0 = _now(), t1
    cdef Py_ssize_t length, room
    cdef uint8_t* w
    cdef list big = []
    for item in produced:
        if put_run is not None and type(item) is bytes and counter >= first and PyBytes_GET_SIZE(item) >= gather_bytes:
            msg = pk.take()
            if msg is not None:
                add_packed(msg)
            big.append(item)
            counter += 1
            t1 = _now()
            if t1 - t0 > slow_ns or PyList_GET_SIZE(big) >= run_max:
                put_run(big, counter)
                big = []
                if t1 - t0 > slow_ns:
                    flush()  # a slow source: what it made so far goes now
                t1 = _now()
            t0 = t1
            continue
        if PyList_GET_SIZE(big):
            put_run(big, counter)
            big = []
        if type(item) is bytes and counter >= first and PyBytes_GET_SIZE(item) < gather_bytes:
            length = PyBytes_GET_SIZE(item)
            if pk.msg != NULL and pk.pos + REC + length > pk.cap:
                add_packed(pk.take())
            if pk.msg == NULL:
                room = batch_bytes - <Py_ssize_t>out.size
                pk.open(room if room >= REC + length else batch_bytes)
            w = pk.w + pk.pos
            w[0] = <uint8_t>kind
            counter += 1
            wr64(w + 1, base | <uint64_t>counter)
            wr32(w + 9, <uint32_t>length)
            memcpy(w + REC, PyBytes_AS_STRING(item), length)
            pk.pos += REC + length
            t1 = _now()
            if t1 - t0 > slow_ns:
                add_packed(pk.take())
                flush()  # a slow source: what it made so far goes now
                t1 = _now()  # packing and sending are not the next item's making
            t0 = t1
            continue
        msg = pk.take()
        if msg is not None:
            add_packed(msg)
        counter = other(item, counter, t0 / 1e9)
        t0 = _now()
    if PyList_GET_SIZE(big):
        put_run(big, counter)
    msg = pk.take()
    if msg is not None:
        add_packed(msg)
    return counter


def run_items(fn, list lineages, list items, ctx, out, emit_one, Py_ssize_t dones_max):
    """One call ``fn(item, ctx)`` per item, ``ctx.lineage`` set to its lineage; a call that returns None or an empty
    tuple or list adds the lineage to ``out.dones`` (its DONE), any other result goes to ``emit_one(produced,
    lineage)`` (its outputs, then its DONE).  ``out.dones`` is packed at the end when it holds ``dones_max``."""
    cdef Py_ssize_t n = PyList_GET_SIZE(lineages), i
    cdef list dones = out.dones
    if PyList_GET_SIZE(items) != n:
        raise ValueError(f"zip() argument 2 is {'shorter' if PyList_GET_SIZE(items) < n else 'longer'} than argument 1")
    for i in range(n):
        lineage = lineages[i]
        ctx.lineage = lineage
        produced = fn(items[i], ctx)
        if produced is None or ((type(produced) is tuple or type(produced) is list) and not produced):
            dones.append(lineage)  # Batcher.done, inlined (a message holds at most MICE_INFLIGHT items)
        else:
            emit_one(produced, lineage)
            dones = out.dones  # packing the DONEs before the outputs started a new list
    if PyList_GET_SIZE(out.dones) >= dones_max:
        out._pack_dones()


cdef struct Taken:
    uint64_t lineage
    PyObject* data  # a new reference (NULL once handed to the stage)


cdef class _Items:
    """The ITEM records of one message, copied out (one bytes each), with their lineages: no Python list per
    message, no int per item until its call."""
    cdef Taken* items
    cdef uint64_t* dones
    cdef Py_ssize_t n
    cdef bint stop

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.items != NULL:
            for i in range(self.n):
                Py_XDECREF(self.items[i].data)
            PyMem_Free(self.items)
        PyMem_Free(self.dones)

    cdef int take(self, message, int kind, int stop) except -1:
        cdef const uint8_t[::1] view = message
        cdef Py_ssize_t n = view.shape[0], pos = 0, length, count = 0
        cdef const uint8_t* p
        cdef object data
        if n == 0:
            return 0
        p = &view[0]
        check_records(p, n)
        while pos < n and p[pos] != stop:  # how many: the arrays are that long
            count += p[pos] == kind
            pos += REC + rd32(p + pos + 9)
        self.items = <Taken*>PyMem_Malloc(count * sizeof(Taken) + 1)
        self.dones = <uint64_t*>PyMem_Malloc(count * sizeof(uint64_t) + 1)
        if self.items == NULL or self.dones == NULL:
            raise MemoryError()
        pos = count = 0
        while pos < n:
            length = rd32(p + pos + 9)
            if p[pos] == stop:
                self.stop = True
                break
            if p[pos] == kind:
                data = _item(p + pos + REC, length)
                self.items[count].lineage = rd64(p + pos + 1)
                self.items[count].data = <PyObject*>data
                Py_INCREF(data)
                count += 1
                self.n = count
            pos += REC + length
        return 0


cdef extern from *:
    """
    /* A bytes object caches its hash (deprecated field, still read by bytes_hash in 3.11-3.13). */
    static inline void pxm_forget_hash(PyObject* o) {
    _Py_COMP_DIAG_PUSH
    _Py_COMP_DIAG_IGNORE_DEPR_DECLS
        ((PyBytesObject*)o)->ob_shash = -1;
    _Py_COMP_DIAG_POP
    }
    """
    void pxm_forget_hash(PyObject* o) noexcept

cdef enum:
    POOL_ITEMS = 512  # bytes objects kept for reuse, at most
    POOL_ITEM_BYTES = 2048  # and none longer (the pool holds at most 1 MiB)

cdef PyObject* _pool[POOL_ITEMS]
cdef Py_ssize_t _pooled = 0


cdef object _item(const uint8_t* src, Py_ssize_t length):
    """A bytes object of ``length`` bytes copied from ``src``: the last one recycled if it has that length (an item
    stage's input it let go of), else a new one."""
    global _pooled
    cdef PyObject* o
    cdef object got
    if _pooled:
        _pooled -= 1
        o = _pool[_pooled]
        if Py_SIZE(o) == length:
            memcpy(PyBytes_AS_STRING(<object>o), src, length)
            pxm_forget_hash(o)  # (its hash, if one was taken, was the old bytes')
            got = <object>o
            Py_DECREF(o)  # (the pool's reference: ``got`` holds it now)
            return got
        Py_DECREF(o)  # another length: the pool follows the stream's
    return PyBytes_FromStringAndSize(<const char*>src, length)


cdef inline void _recycle(object data) noexcept:
    """Keep ``data`` for :func:`_item` when nothing but the caller's reference holds it (the stage kept no reference,
    no output is it): no one can see it change."""
    global _pooled
    if Py_REFCNT(data) == 1 and _pooled < POOL_ITEMS and PyBytes_GET_SIZE(data) <= POOL_ITEM_BYTES:
        Py_INCREF(data)
        _pool[_pooled] = <PyObject*>data
        _pooled += 1


def pooled():
    """How many bytes objects wait for reuse (tests)."""
    return _pooled


cdef bytes _dones(int kind, const uint64_t* lineages, Py_ssize_t k):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, k * REC)
    cdef uint8_t* w = <uint8_t*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    for i in range(k):
        w[0] = <uint8_t>kind
        wr64(w + 1, lineages[i])
        wr32(w + 9, 0)
        w += REC
    return out


def run_message(message, release, fn, ctx, emit_one, add_packed, int kind, int stop, int done, Py_ssize_t dones_max):
    """:func:`run_items` on the ``kind`` records of ``message`` (a buffer) before any ``stop`` record, without the
    lists: the items are copied out (into bytes objects the stage let go of, when they have the length), then
    ``release()`` (the message's buffer may be reused from then on), then one
    call per item; the DONE records of the items whose call yields nothing are packed here, ``done`` records at most
    ``dones_max`` at a time, and handed to ``add_packed(records)`` before any ``emit_one`` and at the end.  ValueError
    on a malformed batch (``release()`` called all the same).  Returns (items, whether a ``stop`` record came)."""
    cdef _Items got = _Items()
    cdef Py_ssize_t i, nd = 0
    cdef object data, lineage, produced
    try:
        got.take(message, kind, stop)
    finally:
        release()
    for i in range(got.n):
        data = <object>got.items[i].data
        Py_XDECREF(got.items[i].data)  # (``data`` holds it now)
        got.items[i].data = NULL
        lineage = got.items[i].lineage
        ctx.lineage = lineage
        produced = fn(data, ctx)
        if produced is None or ((type(produced) is tuple or type(produced) is list) and not produced):
            got.dones[nd] = got.items[i].lineage
            nd += 1
            if nd >= dones_max:
                add_packed(_dones(done, got.dones, nd))
                nd = 0
        else:
            if nd:
                add_packed(_dones(done, got.dones, nd))
                nd = 0
            emit_one(produced, lineage)
        produced = None
        _recycle(data)
    if nd:
        add_packed(_dones(done, got.dones, nd))
    return got.n, got.stop
