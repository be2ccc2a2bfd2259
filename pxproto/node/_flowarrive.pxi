# The arriving side of ``_flowc.pyx`` (included there): an item message from upstream into the flow and the
# MICE's queue (:func:`arrive`, the twin of ``Flow.arrive_batch``), large items kept as views of the message.


def arrive(bytes message, flow, object up, object queue):
    """An item message (one item, or a batch) from upstream ``up`` into ``flow``: a new lineage is handed over
    (its ITEM record added to ``queue``, a :class:`pxproto.node.flow.MiceQueue`: one chunk per message; new items
    of consecutive lineages kept as one :class:`InRun`), a copy of one in progress waits for it, a copy of a
    completed one is returned to be completed at once.  Returns that list; ValueError names the first malformed
    item (nothing is taken then).  The new inputs of one message share one upstreams list (replaced, never changed
    in place).  The twin of ``Flow.arrive_batch``."""
    return arrive_at(<const uint8_t*>PyBytes_AS_STRING(message), PyBytes_GET_SIZE(message), message, flow, up,
                     queue)


cdef list arrive_at(const uint8_t* p, Py_ssize_t n, object message, object flow, object up, object queue):
    """:func:`arrive` of the ``n`` bytes at ``p``: those of ``message`` (a bytes), or, ``message`` None, of a buffer
    the caller keeps only during the call (the node's receive buffer): a bytes of them is made only when large items
    are kept as views of it (small ones are copied into their records in any case)."""
    cdef uint64_t first = 0
    cdef bint batch
    batch = check_items(p, n)  # checked whole first
    cdef object completed = flow.completed
    cdef list done = []
    cdef Py_ssize_t dups = 0, k = 0, used = 0
    # the ITEM records of the new items, written straight into the bytes object the queue keeps (one copy of each
    # item): each batch item (ITEM bytes of header) gains a kind byte; a single item message (MARK bytes of
    # lineage) gains a kind byte and a length
    cdef Py_ssize_t cap = n - MARK + REC, pos = MARK, items = 1
    if batch:
        cap = n - MARK
        items = 0
        while pos < n:  # (check_items passed: the headers are whole)
            pos += ITEM + rd32(p + pos + 8)
            cap += REC - ITEM
            items += 1
    # Large items (PARTS_MIN bytes on average) are not copied: the queue keeps each one's record header and a view of
    # its bytes in ``message``, and the ring gathers them (one copy fewer of every byte of them).
    cdef list parts = [] if n >= PARTS_MIN * items else None
    if parts is not None and message is None:  # the views need an object of their own
        message = PyBytes_FromStringAndSize(<const char*>p, n)
        p = <const uint8_t*>PyBytes_AS_STRING(message)
    cdef bytes recs = PyBytes_FromStringAndSize(NULL, cap if parts is None else REC * items)
    try:
        _arrive_loop(p, n, batch, flow, completed.marks, completed.above, up, done, &dups,
                     <uint8_t*>PyBytes_AS_STRING(recs), &used, &k, &first, parts)
    finally:
        if dups:
            flow.duplicates += dups
    if k and parts is not None:
        _parts_of(parts, recs, memoryview(message))
        queue.add(k, PyLong_FromUnsignedLongLong(first), parts, used)
    elif k:
        queue.add(k, PyLong_FromUnsignedLongLong(first), recs if used == cap else recs[:used])  # (a copy: duplicates)
    return done


def split_from(bytes records, Py_ssize_t off, Py_ssize_t max_k, Py_ssize_t room):
    """Walk the (well-formed) records of ``records[off:]``, no copy of it made (``MiceQueue.take`` splitting a chunk
    it keeps whole), while fewer than ``max_k`` are taken and fewer than ``room`` bytes (at least one is taken);
    return (how many, their bytes, the lineage of the next record or 0).  The twin of
    :func:`pxproto.node.handover.split_from_py`; ValueError for an ``off`` outside ``records``."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(records)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(records), pos = off, k = 0
    if not 0 <= off <= n:
        raise ValueError(f"split_from: offset {off} outside the {n} bytes of records")
    while pos + REC <= n and k < max_k and pos - off < room:
        pos += REC + rd32(p + pos + 9)
        k += 1
    if pos > n:
        raise ValueError(f"split_from: a record at byte {pos} runs past the {n} bytes of records")
    return k, pos - off, rd64(p + pos + 1) if pos + REC <= n else 0


cdef void _parts_of(list parts, bytes recs, object view) except *:
    """Turn the (header offset, item start, item length) triples ``_arrive_loop`` left in ``parts`` into the parts
    themselves: each item's header (a bytes of REC from ``recs``) and a view of its bytes in the message."""
    cdef Py_ssize_t i, h, start, length
    cdef const char* r = PyBytes_AS_STRING(recs)
    for i in range(0, PyList_GET_SIZE(parts), 2):
        h = parts[i]
        start, length = parts[i + 1]
        parts[i] = PyBytes_FromStringAndSize(r + h, REC)
        parts[i + 1] = view[start:start + length]


cdef uint64_t _hand(object to_mice, dict inputs, dict in_runs, list in_spans, uint64_t base, Py_ssize_t k,
                    list ups, uint64_t end) except? 0:
    """Flow.hand: ``k`` new inputs of consecutive lineages from ``base``, a run (one alone: an input of its own);
    returns ``end`` raised past them."""
    cdef object key = PyLong_FromUnsignedLongLong(base)
    cdef Input inp
    cdef InRun r
    cdef Py_ssize_t m
    if k == 1:
        inp = Input.__new__(Input)
        inp.upstreams, inp.done, inp.open_outputs = ups, False, 0
        PyDict_SetItem(inputs, key, inp)
        to_mice.append(key)
        return end
    r = InRun.__new__(InRun)
    r.base, r.n, r.lo, r.upstreams = base, k, 0, ups
    to_mice.append(r)
    PyDict_SetItem(in_runs, key, r)
    m = PyList_GET_SIZE(in_spans)
    if m == 0 or <uint64_t>(<object>PyList_GET_ITEM(in_spans, m - 1)) < base:
        in_spans.append(key)
    else:
        in_spans.insert(_bisect(in_spans, base, True), key)
    return end if end > base + <uint64_t>k else base + <uint64_t>k


cdef int _arrive_loop(const uint8_t* p, Py_ssize_t n, bint batch, object flow, dict marks, dict above,
                      object up, list done, Py_ssize_t* dups, uint8_t* recs, Py_ssize_t* used, Py_ssize_t* k,
                      uint64_t* first, list parts) except -1:
    # parts (not None): only each new item's header goes into recs, and parts gets (its offset in recs, (start,
    # length) of its bytes in the message), made into the parts by _parts_of; used counts the bytes of whole records
    cdef Py_ssize_t pos, length, start, w = 0, g_k = 0, h = 0
    cdef uint64_t lineage, mark = 0, hi, cur_hi = NO_HI, g_base = 0, end = 0
    cdef list ups = [up]
    cdef object key, to_mice = flow.to_mice
    cdef dict inputs = flow.inputs, in_runs = flow.in_runs
    cdef list in_spans = flow.in_spans
    cdef PyObject* found
    cdef Input inp
    cdef InRun last
    if PyList_GET_SIZE(in_spans):
        last = <InRun>PyDict_GetItem(in_runs, <object>PyList_GET_ITEM(in_spans, PyList_GET_SIZE(in_spans) - 1))
        end = last.base + <uint64_t>last.n
    cdef bint single = not batch  # (a single item's message may hold no bytes past its lineage: pos == n at once)
    pos = MARK
    while pos < n or single:
        single = False
        if batch:
            lineage = rd64(p + pos)
            length = rd32(p + pos + 8)
            start = pos + ITEM
        else:
            lineage = rd64(p)
            start = MARK
            length = n - MARK
        pos = start + length
        hi = lineage >> LOW_BITS
        if hi != cur_hi:  # nothing completes during the call: a watermark read once holds for it
            found = PyDict_GetItem(marks, PyLong_FromUnsignedLongLong(hi))
            mark = <uint64_t>(<object>found) if found != NULL else 0
            cur_hi = hi
        if (lineage & LOW_MASK) <= mark or (above and PyDict_Contains(above, PyLong_FromUnsignedLongLong(lineage))):
            dups[0] += 1
            done.append(PyLong_FromUnsignedLongLong(lineage))
            continue
        if g_k and lineage - g_base < <uint64_t>g_k:  # a copy in this message (the same upstream)
            dups[0] += 1
            continue
        found = NULL
        if PyDict_Size(inputs) or lineage < end:
            key = PyLong_FromUnsignedLongLong(lineage)
            found = PyDict_GetItem(inputs, key)
            if found == NULL and lineage < end:
                if flow.in_copy(key, up):  # a copy from the same upstream stays in its run (Flow.in_copy)
                    dups[0] += 1
                    continue
                if flow.spill(key):
                    found = PyDict_GetItem(inputs, key)
        if found != NULL:
            dups[0] += 1
            inp = <Input?>(<object>found)
            if up not in inp.upstreams:
                inp.upstreams = inp.upstreams + [up]
            continue
        if g_k and lineage == g_base + <uint64_t>g_k:
            g_k += 1
        else:
            if g_k:
                end = _hand(to_mice, inputs, in_runs, in_spans, g_base, g_k, ups, end)
                g_k = 0
            if lineage < end:  # below a run: an input of its own (a run starts above every other one)
                _hand(to_mice, inputs, in_runs, in_spans, lineage, 1, ups, end)
            else:
                g_base, g_k = lineage, 1
        if k[0] == 0:
            first[0] = lineage
        k[0] += 1
        if parts is not None:
            recs[h] = K_ITEM
            wr64(recs + h + 1, lineage)
            wr32(recs + h + 9, <uint32_t>length)
            parts.append(h)
            parts.append((start, length))
            h += REC
            w += REC + length
            continue
        recs[w] = K_ITEM
        wr64(recs + w + 1, lineage)
        wr32(recs + w + 9, <uint32_t>length)
        memcpy(recs + w + REC, p + start, length)
        w += REC + length
    if g_k:
        _hand(to_mice, inputs, in_runs, in_spans, g_base, g_k, ups, end)
    used[0] = w
    return 0
