# The no-copy DATA frame of ``_channel.pyx`` (included there): TxFrame, and send_frames, the sendmmsg that sends it.


@cython.final
@cython.no_gc
cdef class TxFrame:
    """A DATA frame held as two pieces: ``head`` (the Ethernet header to the DATA fields) and ``size`` bytes of
    ``payload`` from ``offset`` (a slice of the message, not copied).  ``len(f)`` and ``f[:k]`` within the head
    answer as for the frame's bytes; ``bytes(f)`` is the whole frame (a copy: the relay and the one-frame path)."""

    cdef readonly bytes head
    cdef readonly bytes payload
    cdef readonly Py_ssize_t offset, size

    def __len__(self):
        return PyBytes_GET_SIZE(self.head) + self.size

    def __bytes__(self):
        cdef Py_ssize_t h = PyBytes_GET_SIZE(self.head)
        raw = PyBytes_FromStringAndSize(NULL, h + self.size)
        memcpy(PyBytes_AS_STRING(raw), PyBytes_AS_STRING(self.head), h)
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
    """Send up to 64 frames (bytes, or :class:`TxFrame` as two iovecs) with one sendmmsg; return how many the
    socket took: 0 when it would block, 1 when it refused the first with ENOBUFS (that frame is dropped, as on a
    wire), as ``pxproto.switch._packetring.send_batch`` answers.  ``dest``: the raw struct sockaddr to send to on
    an unconnected socket (None: the connected peer).  Any other error is an OSError."""
    cdef int n = <int>min(len(frames), IOV_BATCH), i, j = 0, r
    if n == 0:
        return 0
    cdef iovec iov[2 * IOV_BATCH]
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
            iov[j + 1].iov_base = PyBytes_AS_STRING(t.payload) + t.offset
            iov[j + 1].iov_len = t.size
            hdr[i].msg_hdr.msg_iovlen = 2
            j += 2
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
