# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The item codecs of the data plane, compiled: MICE record batches and data-channel item batches.

Formats and errors are those of the pure twins in :mod:`pxproto.node.mice` (``records``,
``unpack_items``, ``pack_items``, ``pack_records``, ``pack_run``, ``take_records``), which
:mod:`pxproto.node.items` picks when this module is not built; ``tests/test_items_codec.py``
runs both on the same inputs, malformed ones included, and compares the results and errors.
Each call walks a whole batch in C: one bytes object out per batch, one tuple per item in.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from libc.errno cimport EINTR, EMSGSIZE, errno
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from pxproto.fastpath.tpacket cimport MSG_TRUNC, iovec, msghdr

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recvmsg(int fd, msghdr* msg, int flags)
    int MSG_PEEK

from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH
from pxproto.node._itemfmt cimport ITEM, MARK, REC, check_items, check_records, rd32, rd64, wr32, wr64

BUILD_HASH = PXPROTO_BUILD_HASH.decode()



def records(bytes message):
    """The (kind, lineage, bytes) records of one socketpair message; ValueError on a malformed batch."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(message)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(message), pos = 0, length
    cdef list out = []
    check_records(p, n)
    while pos < n:
        length = rd32(p + pos + 9)
        out.append((p[pos], rd64(p + pos + 1), PyBytes_FromStringAndSize(<const char*>p + pos + REC, length)))
        pos += REC + length
    return out


def unpack_items(bytes message):
    """The (lineage, item) pairs of a data-channel message, single or batch; ValueError names the bad byte."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(message)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(message), pos = MARK, length
    if not check_items(p, n):
        return [(rd64(p), message[MARK:])]
    cdef list out = []
    while pos < n:
        length = rd32(p + pos + 8)
        out.append((rd64(p + pos), PyBytes_FromStringAndSize(<const char*>p + pos + ITEM, length)))
        pos += ITEM + length
    return out


cdef bytes _pack(list pairs, int kind, Py_ssize_t head):
    """``pairs`` of (lineage, bytes-like) packed after ``head`` zero bytes; ``kind`` >= 0 adds a kind byte."""
    cdef Py_ssize_t total = head, i, k = len(pairs), rec = ITEM if kind < 0 else REC
    cdef Py_buffer view
    cdef object pair
    for i in range(k):
        total += rec + len((<tuple>pairs[i])[1])
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t* w = <uint8_t*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t pos = head
    for i in range(head):
        w[i] = 0
    for i in range(k):
        pair = pairs[i]
        PyObject_GetBuffer((<tuple>pair)[1], &view, PyBUF_SIMPLE)
        try:
            if kind >= 0:
                w[pos] = <uint8_t>kind
                pos += 1
            wr64(w + pos, <uint64_t>(<tuple>pair)[0])
            wr32(w + pos + 8, <uint32_t>view.len)
            memcpy(w + pos + 12, view.buf, view.len)
            pos += 12 + view.len
        finally:
            PyBuffer_Release(&view)
    return out


def pack_items(items):
    """A batch message: the zero mark, then ``lineage u64 | length u32 | bytes`` per item."""
    return _pack([(lin, data) for lin, data in items], -1, MARK)


def pack_records(int kind, pairs):
    """``kind u8 | lineage u64 | length u32 | bytes`` for each (lineage, bytes) pair, in one message."""
    return _pack([(lin, data) for lin, data in pairs], kind, 0)


def take_records(int kind, queue, Py_ssize_t max_n, Py_ssize_t limit):
    """Pop up to ``max_n`` (lineage, bytes) pairs off the left of ``queue`` (a deque), at least one and no more
    than fit ``limit`` bytes of records; return (message, how many, first lineage or 0)."""
    cdef list taken = []
    cdef Py_ssize_t size = 0, n = 0
    cdef object pair
    popleft = queue.popleft
    while n < max_n and size < limit and queue:
        pair = popleft()
        taken.append(pair)
        size += REC + len((<tuple>pair)[1])
        n += 1
    if not taken:
        return b"", 0, 0
    return _pack(taken, kind, 0), n, (<tuple>taken[0])[0]


def pack_run(int kind, uint64_t first, items, Py_ssize_t start, Py_ssize_t limit, Py_ssize_t max_item):
    """Records for ``items[start:]`` with lineages ``first``, ``first + 1``...: as many as fit ``limit`` bytes
    (at least one); return (message, how many).  TypeError or ValueError (no message text to rely on) when an
    item is not bytes-like or longer than ``max_item``: the caller reports it through its slow path.  Two passes
    over the items (count and check, then write): nothing is made per item."""
    cdef Py_ssize_t n = len(items), i = start, size = 0, length, k, pos = 0
    cdef object one
    while i < n:
        one = items[i]
        if isinstance(one, bytes):
            length = PyBytes_GET_SIZE(one)
        elif isinstance(one, (bytearray, memoryview)):
            length = len(one) if isinstance(one, bytearray) else (<memoryview>one).nbytes
        else:
            raise TypeError("not bytes")
        if length > max_item:
            raise ValueError("too long")
        if i > start and size + REC + length > limit:
            break
        size += REC + length
        i += 1
    k = i - start
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t* w = <uint8_t*>PyBytes_AS_STRING(out)
    for i in range(k):
        one = items[start + i]
        w[pos] = <uint8_t>kind
        wr64(w + pos + 1, first + <uint64_t>i)
        if isinstance(one, bytes):
            length = PyBytes_GET_SIZE(one)
            memcpy(w + pos + REC, PyBytes_AS_STRING(one), length)
        else:  # a bytearray or memoryview (any layout): its bytes, as counted above
            one = bytes(one)
            length = PyBytes_GET_SIZE(one)
            if pos + REC + length > size:
                raise ValueError("item changed size")
            memcpy(w + pos + REC, PyBytes_AS_STRING(one), length)
        wr32(w + pos + 9, <uint32_t>length)
        pos += REC + length
    return out, k


def item_lists(message, int kind, int stop):
    """The ``kind`` records of one socketpair message (bytes, or any contiguous buffer: each item is copied out, so a
    receive buffer reused for the next message will do) as two lists, (lineages, bytes), up to the first ``stop``
    record; returns (lineages, items, whether a ``stop`` record came).  Other records are skipped; ValueError on a
    malformed batch."""
    cdef const uint8_t[::1] view = message
    cdef list lineages = [], items = []
    if view.shape[0] == 0:
        return lineages, items, False
    return lineages, items, _lists(&view[0], view.shape[0], kind, stop, lineages, items)


def item_views(view, int kind, int stop):
    """:func:`item_lists` with no copy: each item is a view of ``view`` (a memoryview of a hand-over ring's message),
    valid as long as that message is (the MICE's ``@batch(views=True)``)."""
    cdef const uint8_t[::1] buf = view
    cdef list lineages = [], items = []
    cdef Py_ssize_t n = buf.shape[0], pos = 0, length, start
    cdef const uint8_t* p
    if n == 0:
        return lineages, items, False
    p = &buf[0]
    check_records(p, n)
    while pos < n:
        length = rd32(p + pos + 9)
        if p[pos] == stop:
            return lineages, items, True
        if p[pos] == kind:
            lineages.append(rd64(p + pos + 1))
            start = pos + REC
            items.append(view[start:start + length])
        pos += REC + length
    return lineages, items, False


def release_views(list views):
    """Release each of ``views`` (item views handed to a stage); one a stage took a buffer of stays (BufferError)."""
    for one in views:
        try:
            one.release()
        except BufferError:
            pass


cdef bint _lists(const uint8_t* p, Py_ssize_t n, int kind, int stop, list lineages, list items) except -1:
    """:func:`item_lists` over ``n`` bytes at ``p``: appends to the lists, returns whether a ``stop`` record came."""
    cdef Py_ssize_t pos = 0, length
    check_records(p, n)
    while pos < n:
        length = rd32(p + pos + 9)
        if p[pos] == stop:
            return True
        if p[pos] == kind:
            lineages.append(rd64(p + pos + 1))
            items.append(PyBytes_FromStringAndSize(<const char*>p + pos + REC, length))
        pos += REC + length
    return False


cdef Py_ssize_t _recv(int fd, iovec* iov, int count, int flags) except -2:
    """recvmsg into ``count`` buffers, again after a signal (whose handler may raise); OSError on an error."""
    cdef msghdr msg
    cdef Py_ssize_t n
    memset(&msg, 0, sizeof(msg))
    msg.msg_iov = iov
    msg.msg_iovlen = count
    while True:
        with nogil:
            n = recvmsg(fd, &msg, flags)
        if n >= 0:
            if msg.msg_flags & MSG_TRUNC and not flags & MSG_PEEK:
                raise OSError(EMSGSIZE, f"a MICE message of more than {n} bytes")
            return n
        if errno != EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()


def recv_items(sock, bytearray buf, int kind, int stop, Py_ssize_t least, bint peek):
    """Receive the next message of ``sock`` (blocking) and return :func:`item_lists` of it, then its size (0: end of
    file) and whether it opened with a ``kind`` record of ``least`` bytes or more.  With ``peek`` (the last one did),
    the first record's header is read ahead, and such a record's bytes are received straight into the bytes object
    handed over (no copy), the rest of the message into ``buf``; otherwise the whole message goes into ``buf`` and
    each item is copied out.  ValueError on a malformed batch (in the peeked form, byte offsets of the records after
    the first count from the second)."""
    cdef int fd = sock.fileno()
    cdef uint8_t head[REC]
    cdef iovec iov[3]
    cdef Py_ssize_t n, length = 0, cap = len(buf)
    cdef uint8_t* p = <uint8_t*>PyByteArray_AS_STRING(buf)
    cdef list lineages = [], items = []
    cdef bytes item
    if peek:
        iov[0].iov_base, iov[0].iov_len = head, REC
        n = _recv(fd, iov, 1, MSG_PEEK)
        if n == REC and head[0] == kind:
            length = rd32(head + 9)
        if length >= least and length > 0:
            item = PyBytes_FromStringAndSize(NULL, length)
            iov[1].iov_base, iov[1].iov_len = PyBytes_AS_STRING(item), length
            iov[2].iov_base, iov[2].iov_len = p, cap
            n = _recv(fd, iov, 3, 0)
            if n < REC + length:
                raise ValueError(f"record at byte 0 says {length} bytes, {max(0, n - REC)} left")
            lineages.append(rd64(head + 1))
            items.append(item)
            return lineages, items, _lists(p, n - REC - length, kind, stop, lineages, items), n, True
    iov[0].iov_base, iov[0].iov_len = p, cap
    n = _recv(fd, iov, 1, 0)
    if n == 0:
        return lineages, items, False, 0, False
    return lineages, items, _lists(p, n, kind, stop, lineages, items), n, n >= REC and p[0] == kind and rd32(p + 9) >= least


def pack_dones(int kind, lineages):
    """``kind u8 | lineage u64 | 0 u32`` for each lineage (records with no bytes), in one message."""
    cdef Py_ssize_t k = len(lineages), i
    cdef bytes out = PyBytes_FromStringAndSize(NULL, k * REC)
    cdef uint8_t* w = <uint8_t*>PyBytes_AS_STRING(out)
    for i in range(k):
        w[0] = <uint8_t>kind
        wr64(w + 1, <uint64_t>lineages[i])
        wr32(w + 9, 0)
        w += REC
    return out
