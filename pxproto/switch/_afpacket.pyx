# cython: language_level=3
"""The AF_PACKET hot loop: recvmmsg a batch, decide each frame at C level, sendmmsg per output port.

:class:`FastLoop` forwards between AF_PACKET ports without touching Python
objects for the common frame: it reads the header (the same checks as
:func:`pxproto.switch.peek.peek` at ``header`` depth), learns into the
switch's compiled :class:`~pxproto.switch._fdb.Fdb` and sends control frames
before data.  Anything it does not fully handle (a malformed or
non-Parallax frame under a drop policy, an output that is not an AF_PACKET
port or has a backlog, a mirror) goes back to Python as bytes for
:meth:`Switch.receive`; a control frame the wire refused goes back for the
core's control queue.  Counters live here and are merged into the switch's.
"""

from libc.errno cimport EAGAIN, ENOBUFS, EINTR, errno
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

from pxproto.switch._fdb cimport Fdb

cdef extern from "<sys/socket.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len
    struct msghdr:
        void* msg_name
        unsigned int msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct timespec:
        pass
    int recvmmsg(int fd, mmsghdr* v, unsigned int n, int flags, timespec* t)
    int sendmmsg(int fd, mmsghdr* v, unsigned int n, int flags)
    int MSG_DONTWAIT
    int MSG_TRUNC

DEF BATCH = 64
DEF SLOT = 16384
DEF MAXPORTS = 64
DEF NCLASS = 5
DEF SLOW = -2
DEF FLOOD = -1
DEF DROP = -3

cdef int DIME_ALL = 0xFFFF


cdef class _Ring:
    """BATCH receive slots with their headers."""
    cdef unsigned char* buf
    cdef iovec iov[BATCH]
    cdef mmsghdr hdr[BATCH]

    def __cinit__(self):
        self.buf = <unsigned char*>calloc(BATCH, SLOT)
        if self.buf == NULL:
            raise MemoryError()
        cdef int i
        memset(self.hdr, 0, sizeof(self.hdr))
        for i in range(BATCH):
            self.iov[i].iov_base = self.buf + i * SLOT
            self.iov[i].iov_len = SLOT
            self.hdr[i].msg_hdr.msg_iov = &self.iov[i]
            self.hdr[i].msg_hdr.msg_iovlen = 1

    def __dealloc__(self):
        free(self.buf)

    cdef int recv(self, int fd) noexcept nogil:
        cdef int i
        for i in range(BATCH):
            self.hdr[i].msg_hdr.msg_flags = 0
        return recvmmsg(fd, self.hdr, BATCH, MSG_DONTWAIT, NULL)


cdef _Ring _shared = _Ring()


def recv_batch(int fd, int max_n=BATCH):
    """Up to ``max_n`` (at most 64) frames from a non-blocking packet socket, with one recvmmsg."""
    cdef int n, i
    with nogil:
        n = _shared.recv(fd)
    if n < 0:
        if errno == EAGAIN or errno == EINTR:
            return []
        raise OSError(errno, "recvmmsg")
    return [(<char*>_shared.buf)[i * SLOT : i * SLOT + _shared.hdr[i].msg_len] for i in range(n)
            if not _shared.hdr[i].msg_hdr.msg_flags & MSG_TRUNC]


def send_batch(int fd, list frames):
    """Send frames with sendmmsg; return how many the socket took (a frame it refused with ENOBUFS is dropped)."""
    cdef int n = min(len(frames), BATCH), i, r
    if n == 0:
        return 0
    cdef iovec iov[BATCH]
    cdef mmsghdr hdr[BATCH]
    memset(hdr, 0, sizeof(hdr))
    cdef bytes f
    for i in range(n):
        f = frames[i]
        iov[i].iov_base = <char*>f
        iov[i].iov_len = len(f)
        hdr[i].msg_hdr.msg_iov = &iov[i]
        hdr[i].msg_hdr.msg_iovlen = 1
    with nogil:
        r = sendmmsg(fd, hdr, n, MSG_DONTWAIT)
    if r < 0:
        if errno == EAGAIN or errno == EINTR:
            return 0
        if errno == ENOBUFS:
            return 1
        raise OSError(errno, "sendmmsg")
    return r


cdef inline unsigned int _u16(const unsigned char* p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline uint64_t _mac(const unsigned char* p) noexcept nogil:
    return ((<uint64_t>p[0] << 40) | (<uint64_t>p[1] << 32) | (<uint64_t>p[2] << 24) |
            (<uint64_t>p[3] << 16) | (<uint64_t>p[4] << 8) | <uint64_t>p[5])


cdef class FastLoop:
    """Forwarding between AF_PACKET ports at C level, sharing the switch's table."""

    cdef Fdb fdb
    cdef _Ring ring
    cdef int fd[MAXPORTS]
    cdef int ctrl_fd[MAXPORTS]
    cdef bint up[MAXPORTS]
    cdef bint backlog[MAXPORTS]
    cdef bint others_up        # a non-AF_PACKET port is up: floods go through Python
    cdef unsigned int et[NCLASS]
    cdef public int validation  # 0 none, 1 header
    cdef public bint non_parallax_drop
    cdef public bint force_slow
    # per-port, per-class counters of frames the loop handled itself
    cdef long long rx[MAXPORTS]
    cdef long long rx_bytes[MAXPORTS]
    cdef long long tx[MAXPORTS]
    cdef long long tx_bytes[MAXPORTS]
    cdef long long tx_drop[MAXPORTS]
    cdef long long rx_class[MAXPORTS][NCLASS]
    cdef long long tx_class[MAXPORTS][NCLASS]
    cdef long long learned, moved, flooded, unknown, filtered
    # per-batch output lists: (slot index) per port, control and data
    cdef short outc[MAXPORTS][BATCH]
    cdef short outd[MAXPORTS][BATCH]
    cdef int nc[MAXPORTS]
    cdef int nd[MAXPORTS]
    cdef unsigned char cls_of[BATCH]

    def __cinit__(self, Fdb fdb, ethertypes):
        self.fdb = fdb
        self.ring = _Ring()
        cdef int i
        for i in range(MAXPORTS):
            self.fd[i] = -1
            self.ctrl_fd[i] = -1
        self.set_ethertypes(ethertypes)
        self.validation = 1

    def set_ethertypes(self, ethertypes):
        """(signaling, data, discovery, heartbeat) EtherTypes."""
        self.et[0] = 0
        for i, v in enumerate(ethertypes):
            self.et[i + 1] = v

    def set_port(self, int pid, int fd, int ctrl_fd=-1):
        if not 0 <= pid < MAXPORTS:
            raise ValueError(f"port id {pid}: the fast loop takes ids below {MAXPORTS}")
        self.fd[pid] = fd
        self.ctrl_fd[pid] = ctrl_fd
        self.up[pid] = True

    def clear_port(self, int pid):
        if 0 <= pid < MAXPORTS:
            self.fd[pid] = -1
            self.ctrl_fd[pid] = -1
            self.up[pid] = False

    def set_state(self, int pid, bint up, bint backlog):
        if 0 <= pid < MAXPORTS:
            self.up[pid] = up
            self.backlog[pid] = backlog

    def set_others_up(self, bint v):
        self.others_up = v

    def counters(self, int pid):
        """(rx, rx_bytes, tx, tx_bytes, tx_drop, rx_class list, tx_class list) of the frames the loop handled."""
        return (self.rx[pid], self.rx_bytes[pid], self.tx[pid], self.tx_bytes[pid], self.tx_drop[pid],
                [self.rx_class[pid][i] for i in range(NCLASS)], [self.tx_class[pid][i] for i in range(NCLASS)])

    def switch_counters(self):
        return {"learned": self.learned, "moved": self.moved, "flooded": self.flooded,
                "unknown_unicast": self.unknown, "filtered_same_port": self.filtered}

    cdef int _classify(self, const unsigned char* b, Py_ssize_t n, int* ci, int* dime_scope,
                       unsigned int* src_dime, unsigned int* dst_dime) noexcept nogil:
        """0 when the loop may forward the frame itself; -1 sends it to Python."""
        cdef unsigned int et, flags, end
        cdef int c
        cdef Py_ssize_t k
        if n < 14:
            return -1
        et = _u16(b + 12)
        ci[0] = 0
        for c in range(1, NCLASS):
            if self.et[c] == et:
                ci[0] = c
        if ci[0] == 0:
            return -1 if self.non_parallax_drop else 0
        if n < 34:
            return -1
        flags = b[15]
        dime_scope[0] = flags & 1
        src_dime[0] = _u16(b + 18)
        dst_dime[0] = _u16(b + 22)
        if self.validation == 0:
            return 0
        if b[14] != 1 or flags & ~3:
            return -1
        end = 34 + _u16(b + 16) + (26 if flags & 2 else 0)
        if end > n:
            return -1
        if end < n:
            if n != 60:
                return -1
            for k in range(end, n):
                if b[k]:
                    return -1
        c = ci[0]
        if c == 2 and not dime_scope[0]:
            return -1
        if (c == 3 or c == 4) and dime_scope[0]:
            return -1
        if dime_scope[0] == (dst_dime[0] == DIME_ALL):
            return -1
        if c == 4 and src_dime[0] == DIME_ALL:
            return -1
        return 0

    cdef int _decide(self, int pid, const unsigned char* b, Py_ssize_t n, double now, int* ci) noexcept nogil:
        cdef int dime_scope = 0, r, out = -1
        cdef unsigned int src_dime = DIME_ALL, dst_dime = DIME_ALL
        cdef uint64_t src, dst
        if self._classify(b, n, ci, &dime_scope, &src_dime, &dst_dime) < 0:
            return SLOW
        if not b[6] & 1:
            src = _mac(b + 6)
            r = self.fdb.c_learn(src | (<uint64_t>DIME_ALL << 48), pid, now)
            if r == 1:
                self.learned += 1
            elif r == 2:
                self.moved += 1
            if ci[0] and src_dime != DIME_ALL:
                r = self.fdb.c_learn(src | (<uint64_t>src_dime << 48), pid, now)
                if r == 1:
                    self.learned += 1
                elif r == 2:
                    self.moved += 1
        if b[0] & 1:
            return FLOOD
        dst = _mac(b)
        if dime_scope:
            out = self.fdb.c_lookup(dst | (<uint64_t>dst_dime << 48), now)
        if out < 0:
            out = self.fdb.c_lookup(dst | (<uint64_t>DIME_ALL << 48), now)
        if out < 0:
            self.unknown += 1
            return FLOOD
        if out == pid:
            self.filtered += 1
            return DROP
        return out

    cdef void _queue(self, int out, int slot, int ci) noexcept nogil:
        if ci == 1 or ci == 3 or ci == 4:
            self.outc[out][self.nc[out]] = slot
            self.nc[out] += 1
        else:
            self.outd[out][self.nd[out]] = slot
            self.nd[out] += 1

    def pump(self, int pid, double now):
        """Read one batch from ``pid`` (its control socket first) and forward it.

        Returns (frames read, frames for Switch.receive, [(port, frame, class)] control frames for the core's queue,
        [port ids whose socket failed]).
        """
        cdef list slow = [], retry = [], failed = []
        cdef int fd, n, i, out, ci, p, got = 0
        cdef Py_ssize_t ln
        cdef unsigned char* b
        for fd in (self.ctrl_fd[pid], self.fd[pid]):
            if fd < 0:
                continue
            with nogil:
                n = self.ring.recv(fd)
            if n < 0:
                if errno == EAGAIN or errno == EINTR:
                    continue
                raise OSError(errno, "recvmmsg")
            got += n
            for p in range(MAXPORTS):
                self.nc[p] = 0
                self.nd[p] = 0
            for i in range(n):
                b = self.ring.buf + i * SLOT
                if self.ring.hdr[i].msg_hdr.msg_flags & MSG_TRUNC:
                    slow.append(b[:SLOT])  # too long for a slot: Python counts it (the copy is truncated)
                    continue
                ln = self.ring.hdr[i].msg_len
                ci = 0
                if self.force_slow:
                    out = SLOW
                else:
                    out = self._decide(pid, b, ln, now, &ci)
                if out == FLOOD and self.others_up:
                    out = SLOW
                if out >= 0 and (out >= MAXPORTS or self.fd[out] < 0 or not self.up[out] or self.backlog[out]):
                    out = SLOW
                if out == SLOW:
                    slow.append(b[:ln])
                    continue
                self.rx[pid] += 1
                self.rx_bytes[pid] += ln
                self.rx_class[pid][ci] += 1
                self.cls_of[i] = ci
                if out == FLOOD:
                    self.flooded += 1
                    for p in range(MAXPORTS):
                        if p != pid and self.fd[p] >= 0 and self.up[p]:
                            if self.backlog[p] and (ci == 1 or ci == 3 or ci == 4):
                                retry.append((p, b[:ln], ci))
                            else:
                                self._queue(p, i, ci)
                elif out >= 0:
                    self._queue(out, i, ci)
            for p in range(MAXPORTS):
                if self.nc[p] or self.nd[p]:
                    if self._send(p, retry) < 0:
                        failed.append(p)
        return got, slow, retry, failed

    cdef int _send(self, int p, list retry) except -2:
        cdef iovec iov[2 * BATCH]
        cdef mmsghdr hdr[2 * BATCH]
        cdef short slots[2 * BATCH]
        cdef int k = 0, i, off = 0, r, err = 0, ci, ln
        for i in range(self.nc[p]):
            slots[k] = self.outc[p][i]
            k += 1
        for i in range(self.nd[p]):
            slots[k] = self.outd[p][i]
            k += 1
        memset(hdr, 0, k * sizeof(mmsghdr))
        for i in range(k):
            iov[i].iov_base = self.ring.buf + slots[i] * SLOT
            iov[i].iov_len = self.ring.hdr[slots[i]].msg_len
            hdr[i].msg_hdr.msg_iov = &iov[i]
            hdr[i].msg_hdr.msg_iovlen = 1
        while off < k:
            with nogil:
                r = sendmmsg(self.fd[p], hdr + off, k - off, MSG_DONTWAIT)
            if r > 0:
                for i in range(off, off + r):
                    ci = self.cls_of[slots[i]]
                    self.tx[p] += 1
                    self.tx_bytes[p] += iov[i].iov_len
                    self.tx_class[p][ci] += 1
                off += r
                continue
            err = errno
            if err == EINTR:
                continue
            ci = self.cls_of[slots[off]]
            if err == ENOBUFS and not (ci == 1 or ci == 3 or ci == 4):
                self.tx_drop[p] += 1  # the wire refused this data frame: drop it, go on
                off += 1
                continue
            # the socket is full (or refused a control frame): control frames wait in the core, data is dropped
            for i in range(off, k):
                ci = self.cls_of[slots[i]]
                if ci == 1 or ci == 3 or ci == 4:
                    ln = iov[i].iov_len
                    retry.append((p, (<unsigned char*>iov[i].iov_base)[:ln], ci))
                else:
                    self.tx_drop[p] += 1
            if err != EAGAIN and err != ENOBUFS:
                return -1
            break
        return 0
