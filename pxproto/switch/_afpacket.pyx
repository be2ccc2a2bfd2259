# cython: language_level=3
"""The AF_PACKET hot loop: take a batch (recvmmsg, or a PACKET_MMAP ring), decide each frame at C level, sendmmsg.

:class:`FastLoop` forwards between AF_PACKET ports without touching Python
objects for the common frame.  It classifies with the fast path's C contract
(:mod:`pxproto.fastpath.wirec`): ``px_class_of`` for the EtherType map, and
``px_view`` (every rule of the reference codec) when the policy asks for
``full`` validation; at ``header`` depth it checks the header rules of
:func:`pxproto.switch.peek.peek`.  It learns into the switch's compiled
:class:`~pxproto.switch._fdb.Fdb`, sends control frames before data, counts
malformed frames by the field :class:`~pxproto.errors.ProtocolError` would
name, and writes mirrored frames as pcapng blocks into a bounded buffer the
daemon writes out in one piece.  What it does not fully handle (a malformed
or non-Parallax frame the policy passes or that failed a ``header`` check,
an output that is not an AF_PACKET port or has a backlog) goes back to
Python as bytes for :meth:`Switch.receive`; a control frame the wire refused
goes back for the core's control queue.  A connected UDP port (one datagram, one frame) is
driven like an AF_PACKET port without a ring.  :meth:`FastLoop.route` decides, at the same C level,
the frames of the ports Python reads (stream, TAP, unconnected UDP) and hands them to the core's
queues.

Batches come and go through :mod:`pxproto.switch._packetring` (recvmmsg, rings,
sendmmsg); its Python names are re-exported here: a port needs one module.
"""

from libc.errno cimport EAGAIN, ECONNREFUSED, EINTR, ENOBUFS, errno
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH
from pxproto.fastpath.wirec cimport px_error_field
from pxproto.fastpath.wiregen cimport *
from pxproto.switch._classify cimport V_FULL, V_HEADER, V_NONE, classify
from pxproto.switch._cutil cimport epb, is_control, mac48, u16, wall_ns
from pxproto.switch._fdb cimport Fdb
from pxproto.fastpath.tpacket cimport (
    CLOCK_MONOTONIC, MSG_DONTWAIT, POLLIN, clock_gettime, iovec, mmsghdr, poll, pollfd, sendmmsg,
    timespec,
)
cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)
    enum: PR_SET_TIMERSLACK

cdef extern from "<time.h>" nogil:
    int nanosleep(const timespec* req, timespec* rem)

from pxproto.switch._packetring cimport BATCH, VNET, Batch, PacketRing as Ring, TxRing as Tx, _Slots

from pxproto.switch._packetring import PacketRing, TxRing, recv_batch, send_batch  # the ports' I/O, one module

DEF MAXPORTS = 64
DEF NCLASS = 5
DEF SLOW = -2
DEF FLOOD = -1
DEF DROP = -3
DEF MALFORMED = -4
DEF MIRROR_COMMENT = 32
DEF MAXWATCH = 64
DEF RING_LOOKS = 8  # polling: ring looks without a system call between two polls
DEF HOT_STREAK = 3  # busy_adaptive: this many looks in a row finding work soon after the last start the polling
VALIDATION = {"none": V_NONE, "header": V_HEADER, "full": V_FULL}
"""FastLoop.validation for each SwitchPolicy.validation."""


cdef class FastLoop:
    """Forwarding between AF_PACKET ports (and connected UDP ports) at C level, sharing the switch's table."""

    cdef Fdb fdb
    cdef _Slots slots
    cdef Batch batch
    cdef int fd[MAXPORTS]
    cdef int ctrl_fd[MAXPORTS]
    cdef void* ring[MAXPORTS]         # borrowed PacketRing pointers; ``rings`` holds the references
    cdef dict rings
    cdef void* txr[MAXPORTS]          # borrowed TxRing pointers; ``rings`` holds the references too
    cdef unsigned char dst[MAXPORTS][28]  # sendmmsg's destination (a steered UDP port's unconnected sockets)
    cdef unsigned int dstlen[MAXPORTS]
    cdef bint follow[MAXPORTS]        # dst follows the sender of the last datagram read (a UDP port's learned remote)
    cdef long long refollowed[MAXPORTS]  # times that sender changed
    cdef unsigned long long refollows    # of every port: a change run() returns for (return_on_learn)
    cdef bint up[MAXPORTS]
    cdef bint backlog[MAXPORTS]
    cdef bint others_up        # a non-AF_PACKET port is up: floods go through Python
    cdef public int validation  # a value of VALIDATION
    cdef public bint non_parallax_drop
    cdef public bint malformed_drop
    cdef public bint force_slow
    cdef public bint return_on_learn  # run() returns after a batch that changed where a key goes (a copy follows)
    cdef public double busy_poll      # seconds run() keeps looking after a frame before it sleeps in poll
    cdef public double busy_adaptive  # seconds of silence after which a loop that is spinning sleeps (0: never spins)
    cdef double last_frames           # when a look last found frames (busy_adaptive: kept across run() calls)
    cdef int streak                   # looks in a row that found work within busy_adaptive of the last
    cdef double busy_until            # keep looking without sleeping until then (kept across run() calls)
    cdef public double busy_nap       # seconds a busy-polling look that found nothing naps (0: looks again at once)
    cdef public long long spins       # looks that found nothing and did not sleep (busy polling)
    cdef public long long waits       # polls that could sleep (a timeout; they sleep if nothing is ready)
    # per-port, per-class counters of frames the loop handled itself
    cdef long long rx[MAXPORTS]
    cdef long long rx_bytes[MAXPORTS]
    cdef long long tx[MAXPORTS]
    cdef long long tx_bytes[MAXPORTS]
    cdef long long tx_drop[MAXPORTS]
    cdef long long rx_malformed[MAXPORTS]
    cdef long long rx_class[MAXPORTS][NCLASS]
    cdef long long tx_class[MAXPORTS][NCLASS]
    cdef long long malformed[PX_ERR_COUNT]
    cdef long long learned, moved, flooded, unknown, filtered
    # offloads and MTU: PACKET_VNET_HDR per port, the longest frame each port takes, refusals
    cdef bint vnet[MAXPORTS]
    cdef bint all_vnet               # every fast port carries the virtio_net_hdr: offloaded floods stay in C
    cdef Py_ssize_t maxlen[MAXPORTS]
    cdef long long rx_big[MAXPORTS]
    cdef long long tx_big[MAXPORTS]
    cdef long long offload_err[MAXPORTS]
    cdef unsigned char zero_vh[VNET]
    cdef unsigned char gso_of[BATCH]
    cdef object complete
    # per-batch output lists: (slot index) per port, control and data
    cdef short outc[MAXPORTS][BATCH]
    cdef short outd[MAXPORTS][BATCH]
    cdef int nc[MAXPORTS]
    cdef int nd[MAXPORTS]
    cdef unsigned char cls_of[BATCH]
    # the mirror: pcapng Enhanced Packet Blocks (interface 0, ns timestamps) waiting to be written
    cdef unsigned char* mbuf
    cdef Py_ssize_t mlen, mcap
    cdef long long mirror_dropped
    cdef char mcomment[MAXPORTS][MIRROR_COMMENT]
    cdef int mcomment_len[MAXPORTS]

    def __cinit__(self, Fdb fdb):
        self.fdb = fdb
        self.slots = _Slots()
        self.rings = {}
        cdef int i
        for i in range(MAXPORTS):
            self.fd[i] = -1
            self.ctrl_fd[i] = -1
            self.ring[i] = NULL
            self.txr[i] = NULL
        self.validation = V_HEADER
        self.malformed_drop = True
        self.mbuf = NULL
        memset(self.zero_vh, 0, VNET)
        for i in range(MAXPORTS):
            self.maxlen[i] = 65535
        self.all_vnet = True
        from pxproto.switch.offload import complete
        self.complete = complete

    def __dealloc__(self):
        free(self.mbuf)

    def set_port(self, int pid, int fd, int ctrl_fd=-1, Ring ring=None, str name="", Tx tx=None):
        """Port ``pid``: its data and control sockets, its receive ring, its transmit ring (else sendmmsg)."""
        if not 0 <= pid < MAXPORTS:
            raise ValueError(f"port id {pid}: the fast loop takes ids below {MAXPORTS}")
        self.fd[pid] = fd
        self.ctrl_fd[pid] = ctrl_fd
        self.rings[pid] = (ring, tx)
        self.ring[pid] = <void*>ring if ring is not None else NULL
        self.txr[pid] = <void*>tx if tx is not None else NULL
        self.up[pid] = True
        self.dstlen[pid] = 0
        self.follow[pid] = False
        self.set_name(pid, name)

    def set_dest(self, int pid, bytes sockaddr, bint follow=False):
        """Send ``pid``'s frames to this raw sockaddr (its sockets are not connected); empty: connected.
        ``follow``: the sender of the last datagram read from ``pid`` becomes its destination (QEMU dgram's
        "replies go to the last sender", a UDP port without a fixed remote); :meth:`dest` says where it is now."""
        if not 0 <= pid < MAXPORTS or len(sockaddr) > 28:
            raise ValueError(f"port id {pid}, sockaddr of {len(sockaddr)} bytes: out of range")
        memcpy(self.dst[pid], <const unsigned char*>sockaddr, len(sockaddr))
        self.dstlen[pid] = len(sockaddr)
        self.follow[pid] = follow

    def dest(self, int pid):
        """The raw sockaddr ``pid``'s frames go to (b"": its connected peer), and how many times a followed
        destination moved to a new sender."""
        if not 0 <= pid < MAXPORTS:
            raise ValueError(f"port id {pid}: out of range")
        return (<char*>self.dst[pid])[:self.dstlen[pid]], self.refollowed[pid]

    def set_name(self, int pid, str name):
        """The port's name, for the mirror's comments (route() mirrors what Python reads)."""
        comment = f"in {name}".encode()[:MIRROR_COMMENT]
        memcpy(self.mcomment[pid], <char*>comment, len(comment))
        self.mcomment_len[pid] = len(comment)

    def clear_port(self, int pid):
        if 0 <= pid < MAXPORTS:
            self.fd[pid] = -1
            self.ctrl_fd[pid] = -1
            self.ring[pid] = NULL
            self.txr[pid] = NULL
            self.rings.pop(pid, None)
            self.up[pid] = False
            self.vnet[pid] = False
            self.maxlen[pid] = 65535
            self.rx_big[pid] = self.tx_big[pid] = self.offload_err[pid] = 0
            self.dstlen[pid] = 0
            self.follow[pid] = False
            self.refollowed[pid] = 0
            self._vnet_sum()

    def set_limits(self, int pid, Py_ssize_t maxlen, bint vnet):
        """The longest frame ``pid`` takes in and out (a GSO segment, cut by the kernel, excepted), and whether
        its data socket carries a virtio_net_hdr (PACKET_VNET_HDR) before each frame."""
        if 0 <= pid < MAXPORTS:
            self.maxlen[pid] = maxlen
            self.vnet[pid] = vnet
            self._vnet_sum()

    cdef void _vnet_sum(self):
        cdef int p
        self.all_vnet = True
        for p in range(MAXPORTS):
            if self.fd[p] >= 0 and not self.vnet[p]:
                self.all_vnet = False

    def set_state(self, int pid, bint up, bint backlog):
        if 0 <= pid < MAXPORTS:
            self.up[pid] = up
            self.backlog[pid] = backlog

    def set_others_up(self, bint v):
        self.others_up = v

    def set_mirror(self, Py_ssize_t capacity):
        """Mirror every frame the loop takes into a buffer of ``capacity`` bytes (0: stop mirroring)."""
        free(self.mbuf)
        self.mbuf = NULL
        self.mlen = 0
        self.mcap = 0
        if capacity > 0:
            self.mbuf = <unsigned char*>malloc(capacity)
            if self.mbuf == NULL:
                raise MemoryError()
            self.mcap = capacity

    def take_mirror(self):
        """The pcapng blocks mirrored since the last call, as one bytes object."""
        out = (<char*>self.mbuf)[:self.mlen] if self.mlen else b""
        self.mlen = 0
        return out

    def counters(self, int pid):
        """(rx, rx_bytes, tx, tx_bytes, tx_drop, rx_malformed, rx_class list, tx_class list, rx_oversize,
        tx_oversize) of the loop's frames."""
        return (self.rx[pid], self.rx_bytes[pid], self.tx[pid], self.tx_bytes[pid], self.tx_drop[pid],
                self.rx_malformed[pid],
                [self.rx_class[pid][i] for i in range(NCLASS)], [self.tx_class[pid][i] for i in range(NCLASS)],
                self.rx_big[pid], self.tx_big[pid])

    def offload_errors(self, int pid):
        """Offloaded frames from ``pid`` that could not be completed in software (dropped)."""
        return self.offload_err[pid]

    def switch_counters(self):
        return {"learned": self.learned, "moved": self.moved, "flooded": self.flooded,
                "unknown_unicast": self.unknown, "filtered_same_port": self.filtered,
                "mirror_dropped": self.mirror_dropped, "busy_spins": self.spins, "poll_waits": self.waits}

    def malformed_by_field(self):
        """Malformed frames the loop dropped, by the field ProtocolError names."""
        out = {}
        cdef int i
        for i in range(PX_ERR_COUNT):
            if self.malformed[i]:
                name = px_error_field(i).decode()
                out[name] = out.get(name, 0) + self.malformed[i]
        return out

    cdef void _mirror(self, int pid, const unsigned char* b, Py_ssize_t n, uint64_t ts) noexcept nogil:
        cdef Py_ssize_t w = epb(self.mbuf + self.mlen, self.mcap - self.mlen, b, n, ts, self.mcomment[pid],
                                self.mcomment_len[pid])
        if w < 0:
            self.mirror_dropped += 1
        else:
            self.mlen += w

    cdef void _follow(self, int pid, int i) noexcept nogil:
        """The sender of datagram ``i`` of the batch just read is ``pid``'s destination from now on."""
        cdef unsigned int ln = self.slots.hdr[i].msg_hdr.msg_namelen
        if ln == 0 or ln > sizeof(self.dst[pid]):
            return
        if ln != self.dstlen[pid] or memcmp(self.dst[pid], self.slots.names[i], ln) != 0:
            memcpy(self.dst[pid], self.slots.names[i], ln)
            self.dstlen[pid] = ln
            self.refollowed[pid] += 1
            self.refollows += 1

    cdef void _queue(self, int out, int slot, int ci) noexcept nogil:
        if not self.gso_of[slot] and self.batch.len[slot] > self.maxlen[out]:
            self.tx_big[out] += 1  # longer than the output's MTU allows
            return
        if is_control(ci):
            self.outc[out][self.nc[out]] = slot
            self.nc[out] += 1
        else:
            self.outd[out][self.nd[out]] = slot
            self.nd[out] += 1

    def pump(self, int pid, double now):
        """Read one batch from ``pid`` (its control socket first) and forward it: (frames read, frames for
        Switch.receive, [(port, frame, class)] control frames for the core's queue, [port ids that failed])."""
        cdef list slow = [], retry = [], failed = []
        return self._pump(pid, now, slow, retry, failed), slow, retry, failed

    cdef int _pump(self, int pid, double now, list slow, list retry, list failed, bint ctrl=True,
                   bint data=True) except -1:
        """:meth:`pump` into the caller's lists (run() keeps them while they stay empty): frames read.  run() says
        which sockets poll found readable: one it did not is skipped (no empty recvmmsg per wake-up), except a
        receive ring, whose read is no system call."""
        cdef int fd, n, i, out, ci, p, err, got = 0, which
        cdef Py_ssize_t ln
        cdef unsigned char* b
        cdef unsigned char* vh
        cdef bint off
        cdef Batch* bt = &self.batch
        cdef Ring ring
        cdef uint64_t ts_ns = 0
        for which in range(2):
            fd = self.ctrl_fd[pid] if which == 0 else self.fd[pid]
            if fd < 0:
                continue
            ring = <Ring>self.ring[pid] if which == 1 and self.ring[pid] != NULL else None
            if ring is None and not (ctrl if which == 0 else data):
                continue
            if ring is not None:
                with nogil:
                    n = ring.take(bt)
            else:
                with nogil:
                    n = self.slots.recv(fd, bt, VNET if which == 1 and self.vnet[pid] else 0, self.follow[pid])
                if n < 0:
                    if errno == EAGAIN or errno == EINTR or errno == ECONNREFUSED:
                        continue  # (a UDP port: an ICMP error for an earlier send, reported once)
                    raise OSError(errno, "recvmmsg")
                if n > 0 and self.follow[pid]:
                    self._follow(pid, n - 1)
            if n == 0:
                continue
            got += n
            ts_ns = wall_ns() if self.mbuf != NULL else 0
            for p in range(MAXPORTS):
                self.nc[p] = 0
                self.nd[p] = 0
            for i in range(n):
                b = bt.ptr[i]
                ln = bt.len[i]
                if bt.trunc[i]:
                    slow.append(b[:ln])  # too long for a slot: Python counts it (the copy is truncated)
                    continue
                vh = bt.vh[i]
                # checksum or segmentation left to the output (a TCP sender's offloads, a guest's virtio-net)
                off = vh != NULL and ((vh[0] & 1) or vh[1])
                self.gso_of[i] = vh != NULL and vh[1] != 0
                if not self.gso_of[i] and ln > self.maxlen[pid]:
                    self.rx[pid] += 1
                    self.rx_bytes[pid] += ln
                    self.rx_big[pid] += 1  # longer than the port's MTU allows
                    continue
                ci = 0
                err = 0
                if self.force_slow:
                    out = SLOW
                else:
                    out = decide(self, pid, b, ln, now, &ci, &err)
                if off and (out >= 0 and out < MAXPORTS and not self.vnet[out] or out == FLOOD and not self.all_vnet):
                    out = SLOW  # a port without the header: the checksum and the cutting are done in Python
                if out == MALFORMED:
                    self.rx[pid] += 1
                    self.rx_bytes[pid] += ln
                    self.rx_malformed[pid] += 1
                    if 0 <= err < PX_ERR_COUNT:
                        self.malformed[err] += 1
                    continue
                if out == FLOOD and self.others_up:
                    out = SLOW
                if out >= 0 and (out >= MAXPORTS or self.fd[out] < 0 or not self.up[out] or self.backlog[out]):
                    out = SLOW
                if out == SLOW:
                    if off:
                        try:
                            slow.extend(self.complete((<char*>vh)[:VNET], b[:ln]))
                        except (ValueError, IndexError):
                            self.offload_err[pid] += 1
                    else:
                        slow.append(b[:ln])
                    continue
                self.rx[pid] += 1
                self.rx_bytes[pid] += ln
                self.rx_class[pid][ci] += 1
                self.cls_of[i] = ci
                if self.mbuf != NULL:
                    self._mirror(pid, b, ln, ts_ns)
                if out == FLOOD:
                    self.flooded += 1
                    for p in range(MAXPORTS):
                        if p != pid and self.fd[p] >= 0 and self.up[p]:
                            if self.backlog[p] and is_control(ci):
                                retry.append((p, b[:ln], ci))
                            else:
                                self._queue(p, i, ci)
                elif out >= 0:
                    self._queue(out, i, ci)
            for p in range(MAXPORTS):
                if self.nc[p] or self.nd[p]:
                    if send_out(self, p, retry) < 0:
                        failed.append(p)
            if ring is not None:
                ring.c_release()
        return got

    def route(self, int pid, list frames, double now):
        """Decide frames a port Python reads (stream, TAP, unconnected UDP) at C level: learn, count, mirror.
        Returns (frames for Switch.receive, [(out port or -1 for a flood, frame, class)] for the core's queues)."""
        cdef list slow = [], routed = []
        cdef bytes f
        cdef int out, ci, err
        cdef Py_ssize_t ln
        cdef const unsigned char* b
        cdef uint64_t ts_ns = wall_ns() if self.mbuf != NULL else 0
        for f in frames:
            b = <const unsigned char*><char*>f
            ln = len(f)
            ci = err = 0
            out = SLOW if self.force_slow or ln > self.maxlen[pid] else decide(self, pid, b, ln, now, &ci, &err)
            if out == SLOW:
                slow.append(f)  # (an oversize frame too: the core counts it)
                continue
            self.rx[pid] += 1
            self.rx_bytes[pid] += ln
            if out == MALFORMED:
                self.rx_malformed[pid] += 1
                if 0 <= err < PX_ERR_COUNT:
                    self.malformed[err] += 1
                continue
            self.rx_class[pid][ci] += 1
            if self.mbuf != NULL:
                self._mirror(pid, b, ln, ts_ns)
            if out == FLOOD:
                self.flooded += 1
            if out != DROP:
                routed.append((out, f, ci))
        return slow, routed

    def run(self, list watch, double timeout):
        """Poll the fast ports (and ``watch``, more descriptors) and forward, without returning to Python
        while nothing needs it: returns when a ``watch`` descriptor is readable, ``timeout`` seconds have
        passed, a signal arrived, the mirror buffer is half full, a batch left work for Python, or (with
        ``return_on_learn``) the table or a followed UDP peer changed; then [(port, slow, retry, failed)] of the
        batches that did (see :meth:`pump`).  ``now`` is CLOCK_MONOTONIC, which is ``time.monotonic()``.
        """
        cdef pollfd fds[2 * MAXPORTS + MAXWATCH]
        cdef int owner[2 * MAXPORTS + MAXWATCH]
        cdef bint is_ctrl[2 * MAXPORTS]
        cdef bint ctrl, data
        cdef int n = 0, nw, i, p, r, ms, ring_looks = 0
        cdef timespec ts, nap
        cdef double now, deadline, woke
        cdef bint spinning, hot
        cdef unsigned long long generation, follows
        cdef list out = []
        cdef list slow = [], retry = [], failed = []
        if len(watch) > MAXWATCH:
            raise ValueError(f"{len(watch)} descriptors to watch: at most {MAXWATCH}")
        for p in range(MAXPORTS):
            if self.fd[p] >= 0 and self.up[p]:
                for fd in (self.ctrl_fd[p], self.fd[p]):
                    if fd >= 0:
                        fds[n].fd = fd
                        fds[n].events = POLLIN
                        owner[n] = p
                        is_ctrl[n] = fd == self.ctrl_fd[p]
                        n += 1
        nw = n
        for fd in watch:
            fds[n].fd = fd
            fds[n].events = POLLIN
            owner[n] = -1
            n += 1
        nap.tv_sec = 0
        nap.tv_nsec = <long>(min(self.busy_nap, 0.1) * 1e9)
        if self.busy_nap > 0:
            prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)  # (this thread's) naps of a few µs, not the default 50 µs more
        clock_gettime(CLOCK_MONOTONIC, &ts)
        deadline = ts.tv_sec + ts.tv_nsec * 1e-9 + timeout
        now = 0.0
        generation = self.fdb.generation
        follows = self.refollows
        while True:
            if now == 0.0:  # (else the end of the last work, a moment ago: one clock read fewer per look)
                clock_gettime(CLOCK_MONOTONIC, &ts)
                now = ts.tv_sec + ts.tv_nsec * 1e-9
            if now >= deadline:
                return out
            # busy polling: until busy_until, look again without sleeping (no wake-up for the sender's CPU to
            # send, no scheduler delay for the next frame); a poll of timeout 0 joins no wait queue
            spinning = now < self.busy_until
            ms = 0 if spinning else <int>((deadline - now) * 1000) + 1
            if not spinning:
                self.waits += 1
            r = 0
            if spinning and ring_looks < RING_LOOKS:
                # polling with rings that hold frames: read them without a system call (a poll visits every
                # socket); every RING_LOOKS-th look is a poll all the same (control sockets, watched descriptors)
                for i in range(n):
                    fds[i].revents = 0
                    if i < nw and not is_ctrl[i] and self.ring[owner[i]] != NULL and (<Ring>self.ring[owner[i]]).ready():
                        fds[i].revents = POLLIN
                        r += 1
            if r:
                ring_looks += 1
            else:
                ring_looks = 0
                with nogil:
                    r = poll(fds, n, ms)
            if r < 0:
                if errno == EINTR:
                    return out  # let Python run its signal handlers
                raise OSError(errno, "poll")
            now = 0.0
            if r == 0:
                if spinning:
                    self.spins += 1
                    if self.busy_nap > 0:  # a short timer sleep: on no wait queue still, and not a CPU hog
                        with nogil:
                            nanosleep(&nap, NULL)
                continue
            # adaptive: work found within busy_adaptive of the end of the last, HOT_STREAK times in a row, keeps
            # the loop looking; a frame after a longer silence (a heartbeat, or two close together) does not, so
            # a quiet switch sleeps between frames
            clock_gettime(CLOCK_MONOTONIC, &ts)  # (after a sleep in poll, the silence ends now, not before it)
            woke = ts.tv_sec + ts.tv_nsec * 1e-9  # also every port's ``now`` for this look
            if self.busy_adaptive > 0 and woke - self.last_frames <= self.busy_adaptive:
                self.streak += 1
            else:
                self.streak = 0
            hot = self.streak >= HOT_STREAK
            for i in range(nw, n):
                if fds[i].revents:
                    return out
            i = 0
            while i < nw:  # each port once, reading those of its two sockets that are readable
                p = owner[i]
                ctrl = data = False
                while i < nw and owner[i] == p:
                    if fds[i].revents:
                        if is_ctrl[i]:
                            ctrl = True
                        else:
                            data = True
                    i += 1
                if ctrl or data:
                    try:
                        self._pump(p, woke, slow, retry, failed, ctrl, data)
                    except OSError:
                        out.append((p, slow, retry, failed + [p]))  # its own socket failed: the port is gone
                        return out
                    if slow or retry or failed:
                        out.append((p, slow, retry, failed))
                        slow, retry, failed = [], [], []  # (no lists made while every batch stays in C)
            clock_gettime(CLOCK_MONOTONIC, &ts)
            self.last_frames = now = ts.tv_sec + ts.tv_nsec * 1e-9  # silence counts from the end of this work
            if hot:
                self.busy_until = self.last_frames + self.busy_adaptive
            if self.busy_poll > 0:
                self.busy_until = max(self.busy_until, self.last_frames + self.busy_poll)
            if out or self.mlen > self.mcap // 2:
                return out  # (or the mirror buffer wants writing out)
            if self.return_on_learn and (self.fdb.generation != generation or self.refollows != follows):
                return out  # the kernel's copy of the table (or of a UDP port's peer) wants the change


include "_fltx.pxi"
include "_fldecide.pxi"


BUILD_HASH = PXPROTO_BUILD_HASH.decode()
"""Source hash of this build (pxproto/fastpath/buildhash.py); pxproto.fastpath.select checks it."""
