# The no-copy DATA frame of ``_channel.pyx`` (included there): TxFrame, the message pieces it may point into
# (Gather), and send_frames, the sendmmsg that sends it.

DEF GATHER_IOV = 8  # the most pieces of a Gather one TxFrame's payload may span (one iovec each)


cdef class Gather:
    """A message held as pieces of bytes objects, in order, not joined: a source DIME's large batch message built
    from its kept runs (``pxproto/node/_flowc.pyx``), which a sender with ``iov`` set sends as TxFrames pointing
    into the pieces.  ``len(g)`` is the message's length and ``bytes(g)`` the message (a copy).  ``Gather(parts)``
    holds each bytes of ``parts`` whole, in order."""

    def __cinit__(self):
        self.bufs = []

    def __init__(self, parts=()):
        for part in parts:
            if type(part) is not bytes:
                raise TypeError(f"Gather: a part is a {type(part).__name__}, not bytes")
            self.add(part, 0, PyBytes_GET_SIZE(part))

    def __dealloc__(self):
        free(self.ptrs)
        free(self.ends)

    cdef int add(self, bytes buf, Py_ssize_t start, Py_ssize_t size) except -1:
        """Append ``size`` bytes of ``buf`` from ``start`` (held, not copied; nothing for an empty piece)."""
        if start < 0 or size < 0 or start + size > PyBytes_GET_SIZE(buf):
            raise ValueError(f"Gather: bytes {start}..{start + size} are not within the {PyBytes_GET_SIZE(buf)} "
                             f"of the piece")
        if size == 0:
            return 0
        cdef Py_ssize_t cap
        cdef const char** ptrs
        cdef Py_ssize_t* ends
        if self.count == self.cap:
            cap = 2 * self.cap if self.cap else 8
            ptrs = <const char**>realloc(self.ptrs, cap * sizeof(char*))
            if ptrs == NULL:
                raise MemoryError()
            self.ptrs = ptrs
            ends = <Py_ssize_t*>realloc(self.ends, cap * sizeof(Py_ssize_t))
            if ends == NULL:
                raise MemoryError()
            self.ends, self.cap = ends, cap
        self.bufs.append(buf)
        self.ptrs[self.count] = PyBytes_AS_STRING(buf) + start
        self.n += size
        self.ends[self.count] = self.n
        self.count += 1
        return 0

    def __len__(self):
        return self.n

    def __bytes__(self):
        raw = PyBytes_FromStringAndSize(NULL, self.n)
        self.copy_out(PyBytes_AS_STRING(raw), 0, self.n)
        return raw

    def __repr__(self):
        return f"Gather({self.n} bytes in {self.count} pieces)"

    cdef Py_ssize_t _at(self, Py_ssize_t off) noexcept:
        """The piece holding byte ``off`` (0 <= off < n)."""
        cdef Py_ssize_t lo = 0, hi = self.count - 1, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.ends[mid] > off:
                hi = mid
            else:
                lo = mid + 1
        return lo

    cdef int pieces(self, Py_ssize_t off, Py_ssize_t size) noexcept:
        """How many pieces bytes ``off`` .. ``off + size`` span."""
        if size <= 0:
            return 0
        return <int>(self._at(off + size - 1) - self._at(off) + 1)

    cdef int fill(self, iovec* iov, Py_ssize_t off, Py_ssize_t size, int most) noexcept:
        """Point iovecs at bytes ``off`` .. ``off + size``, one per piece; how many, or -1 when over ``most``."""
        cdef Py_ssize_t i = self._at(off) if size > 0 else 0, start, take
        cdef int k = 0
        while size > 0:
            if k == most:
                return -1
            start = self.ends[i - 1] if i else 0
            take = min(self.ends[i] - off, size)
            iov[k].iov_base = <void*>(self.ptrs[i] + (off - start))
            iov[k].iov_len = <size_t>take
            off += take
            size -= take
            k += 1
            i += 1
        return k

    cdef void copy_out(self, char* dst, Py_ssize_t off, Py_ssize_t size) noexcept:
        """Copy bytes ``off`` .. ``off + size`` to ``dst``."""
        cdef Py_ssize_t i = self._at(off) if size > 0 else 0, start, take
        while size > 0:
            start = self.ends[i - 1] if i else 0
            take = min(self.ends[i] - off, size)
            memcpy(dst, self.ptrs[i] + (off - start), take)
            dst += take
            off += take
            size -= take
            i += 1

    cdef bytes piece_bytes(self, Py_ssize_t off, Py_ssize_t size):
        raw = PyBytes_FromStringAndSize(NULL, size)
        self.copy_out(PyBytes_AS_STRING(raw), off, size)
        return raw


@cython.final
@cython.no_gc
cdef class TxFrame:
    """A DATA frame held as two pieces: ``head`` (the Ethernet header to the DATA fields) and ``size`` bytes of
    ``payload`` from ``offset`` (a slice of the message, not copied; the message a bytes or a :class:`Gather`).
    ``len(f)`` and ``f[:k]`` within the head answer as for the frame's bytes; ``bytes(f)`` is the whole frame (a
    copy: the relay and the one-frame path)."""

    cdef readonly bytes head
    cdef readonly object payload
    cdef readonly Py_ssize_t offset, size

    def __len__(self):
        return PyBytes_GET_SIZE(self.head) + self.size

    def __bytes__(self):
        cdef Py_ssize_t h = PyBytes_GET_SIZE(self.head)
        raw = PyBytes_FromStringAndSize(NULL, h + self.size)
        memcpy(PyBytes_AS_STRING(raw), PyBytes_AS_STRING(self.head), h)
        if type(self.payload) is Gather:
            (<Gather>self.payload).copy_out(PyBytes_AS_STRING(raw) + h, self.offset, self.size)
        else:
            memcpy(PyBytes_AS_STRING(raw) + h, PyBytes_AS_STRING(self.payload) + self.offset, self.size)
        return raw

    def __getitem__(self, key):
        if (type(key) is slice and key.step is None and (key.start is None or 0 <= key.start)
                and key.stop is not None and 0 <= key.stop <= PyBytes_GET_SIZE(self.head)):
            return self.head[key]  # (the driver reads the destination MAC: no copy of the frame)
        return bytes(self)[key]

    def __repr__(self):
        return f"TxFrame({len(self)} bytes: {PyBytes_GET_SIZE(self.head)} of header, {self.size} of payload)"


def send_frames(int fd, list frames, bytes dest=None):
    """Send up to 64 frames (bytes, or :class:`TxFrame` as its header's iovec and one per piece of its payload)
    with one sendmmsg; return how many the
    socket took: 0 when it would block, 1 when it refused the first with ENOBUFS (that frame is dropped, as on a
    wire), as ``pxproto.switch._packetring.send_batch`` answers.  ``dest``: the raw struct sockaddr to send to on
    an unconnected socket (None: the connected peer).  Any other error is an OSError."""
    cdef int n = <int>min(len(frames), IOV_BATCH), i, j = 0, r, k
    if n == 0:
        return 0
    cdef iovec iov[(1 + GATHER_IOV) * IOV_BATCH]
    cdef mmsghdr hdr[IOV_BATCH]
    memset(hdr, 0, n * sizeof(mmsghdr))
    cdef object f
    cdef TxFrame t
    cdef void* name = NULL
    cdef unsigned int namelen = 0
    if dest is not None:
        name, namelen = PyBytes_AS_STRING(dest), <unsigned int>PyBytes_GET_SIZE(dest)
    for i in range(n):
        f = frames[i]
        hdr[i].msg_hdr.msg_iov = &iov[j]
        if type(f) is TxFrame:
            t = <TxFrame>f
            iov[j].iov_base = PyBytes_AS_STRING(t.head)
            iov[j].iov_len = PyBytes_GET_SIZE(t.head)
            if type(t.payload) is Gather:
                k = (<Gather>t.payload).fill(&iov[j + 1], t.offset, t.size, GATHER_IOV)
                if k < 0:  # (ChannelSender makes none such: it copies a fragment over more pieces)
                    raise ValueError(f"send_frames: frame {i} spans more than {GATHER_IOV} pieces of its message")
            else:
                iov[j + 1].iov_base = PyBytes_AS_STRING(t.payload) + t.offset
                iov[j + 1].iov_len = t.size
                k = 1
            hdr[i].msg_hdr.msg_iovlen = 1 + k
            j += 1 + k
        elif type(f) is bytes:
            iov[j].iov_base = PyBytes_AS_STRING(f)
            iov[j].iov_len = PyBytes_GET_SIZE(f)
            hdr[i].msg_hdr.msg_iovlen = 1
            j += 1
        else:
            raise TypeError(f"send_frames: frame {i} is a {type(f).__name__}, not bytes or TxFrame")
        hdr[i].msg_hdr.msg_name, hdr[i].msg_hdr.msg_namelen = name, namelen
    with nogil:
        r = sendmmsg(fd, hdr, n, MSG_DONTWAIT)
    if r >= 0:
        return r
    if errno == ENOBUFS:  # the first frame is dropped, as on a wire
        return 1
    if errno != EAGAIN and errno != EINTR:
        raise OSError(errno, "sendmmsg")
    return 0
