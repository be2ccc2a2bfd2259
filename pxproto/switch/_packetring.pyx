# cython: language_level=3
"""The switch's batched packet I/O: recvmmsg/sendmmsg batches and PACKET_MMAP receive rings.

:class:`PacketRing` is a PACKET_MMAP receive ring (TPACKET_V2: one slot per
frame, or TPACKET_V3: frames packed in blocks the kernel hands over when full
or after a timeout) on one socket.  :func:`recv_batch` and :func:`send_batch`
move a batch of frames with one system call, for the ports Python drives.  The
AF_PACKET loop (:mod:`pxproto.switch._afpacket`) reads the same batches at C
level through ``_packetring.pxd``.
"""

from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from libc.stdint cimport uint32_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH
from pxproto.fastpath.tpacket cimport (
    MAP_FAILED, MAP_SHARED, MSG_DONTWAIT, MSG_TRUNC, PACKET_COPY_THRESH, PACKET_QDISC_BYPASS, PACKET_RX_RING,
    PACKET_TX_RING, PACKET_VERSION, PACKET_VNET_HDR, PROT_READ, PROT_WRITE, SOL_PACKET, TP_STATUS_AVAILABLE,
    TP_STATUS_COPY, TP_STATUS_KERNEL, TP_STATUS_SEND_REQUEST, TP_STATUS_USER, TPACKET_ALIGN, TPACKET_V2, TPACKET_V3,
    iovec, mmap, mmsghdr, munmap, recv, recvmmsg, send, sendmmsg, setsockopt, tpacket2_hdr, tpacket3_hdr,
    tpacket_block_desc, tpacket_req, tpacket_req3,
)

cdef extern from *:
    """
    static inline uint32_t px_load_acquire(uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void px_store_release(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    """
    uint32_t px_load_acquire(uint32_t* p) nogil
    void px_store_release(uint32_t* p, uint32_t v) nogil

DEF PACKET_LOSS = 14  # a frame the kernel refuses is skipped (dropped), not left to stall the ring


cdef unsigned char* _map(int fd, size_t length, str which) except NULL:
    """The ring set up on ``fd``, mapped."""
    cdef void* m = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    if m == MAP_FAILED:
        raise OSError(errno, f"mmap of the {which} ring")
    return <unsigned char*>m


cdef class _Slots:
    """BATCH receive slots for recvmmsg."""

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

    cdef int recv(self, int fd, Batch* b, int hdr=0, bint names=False) noexcept nogil:
        """Fill ``b`` with one recvmmsg (each frame after ``hdr`` bytes of virtio_net_hdr); the count, or -1.
        ``names``: each datagram's sender goes to ``names[i]`` (its length in ``hdr[i].msg_hdr.msg_namelen``)."""
        cdef int i, n
        for i in range(BATCH):
            self.hdr[i].msg_hdr.msg_flags = 0
            self.hdr[i].msg_hdr.msg_name = self.names[i] if names else NULL
            self.hdr[i].msg_hdr.msg_namelen = sizeof(self.names[i]) if names else 0
        n = recvmmsg(fd, self.hdr, BATCH, MSG_DONTWAIT, NULL)
        b.n = n if n > 0 else 0
        for i in range(b.n):
            b.vh[i] = self.buf + i * SLOT if hdr else NULL
            b.ptr[i] = self.buf + i * SLOT + hdr
            b.trunc[i] = (self.hdr[i].msg_hdr.msg_flags & MSG_TRUNC) != 0 or self.hdr[i].msg_len < <unsigned>hdr
            b.len[i] = SLOT - hdr if b.trunc[i] else self.hdr[i].msg_len - hdr
        return n


cdef _Slots _shared = _Slots()


def recv_batch(int fd, int max_n=BATCH):
    """Up to 64 frames from a non-blocking packet (or UDP) socket, with one recvmmsg (frames too long for a slot
    are left out); on a PACKET_VNET_HDR socket each starts with its virtio_net_hdr."""
    cdef Batch b
    cdef int n, i
    with nogil:
        n = _shared.recv(fd, &b)
    if n < 0:
        if errno == EAGAIN or errno == EINTR:
            return []
        raise OSError(errno, "recvmmsg")
    return [(<char*>b.ptr[i])[:b.len[i]] for i in range(b.n) if not b.trunc[i]]


def send_batch(int fd, list frames, bytes dest=None):
    """Send frames with sendmmsg; return how many the socket took (a frame it refused with ENOBUFS is dropped).
    ``dest``: the raw struct sockaddr to send to on an unconnected socket (None: the connected peer)."""
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
        if dest is not None:
            hdr[i].msg_hdr.msg_name = <char*>dest
            hdr[i].msg_hdr.msg_namelen = len(dest)
    with nogil:
        r = sendmmsg(fd, hdr, n, MSG_DONTWAIT)
    if r < 0:
        if errno == EAGAIN or errno == EINTR:
            return 0
        if errno == ENOBUFS:
            return 1
        raise OSError(errno, "sendmmsg")
    return r


cdef class PacketRing:
    """A PACKET_MMAP receive ring on an AF_PACKET socket: set it up before bind.

    ``version`` 2 (TPACKET_V2, one fixed slot per frame: the kernel hands each
    frame over at once) or 3 (TPACKET_V3, frames packed in blocks: a block is
    handed over when full or after ``timeout_ms``, so a frame may wait that
    long).  Frames are read in place; :meth:`c_release` gives what was read
    back to the kernel.  V2 with PACKET_COPY_THRESH: a frame longer than a slot
    (a 64 KiB GSO segment) leaves a cut copy marked TP_STATUS_COPY in the ring
    and the whole frame in the socket's queue, which :meth:`take` reads.
    """

    def __cinit__(self, int fd, int version=2, unsigned int size=1 << 20, unsigned int timeout_ms=1,
                  unsigned int frame_size=2048, bint vnet=False):
        cdef tpacket_req r2
        cdef tpacket_req3 r3
        cdef int v, one = 1
        self.fd = fd
        self.vnet = vnet
        if vnet and setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) < 0:
            raise OSError(errno, "PACKET_VNET_HDR")
        self.map = NULL
        self.big = NULL
        if frame_size < 2048 or frame_size & (frame_size - 1) or frame_size > (1 << 17):
            raise ValueError(f"ring frame size {frame_size}: a power of two from 2048 to 131072")
        if version == 2:
            if setsockopt(fd, SOL_PACKET, PACKET_COPY_THRESH, &one, sizeof(one)) < 0:
                raise OSError(errno, "PACKET_COPY_THRESH")
            self.big = <unsigned char*>malloc(SLOT)
            if self.big == NULL:
                raise MemoryError()
            v = TPACKET_V2
        elif version == 3:
            v = TPACKET_V3
        else:
            raise ValueError(f"ring version {version}: 2 or 3")
        # V3: small blocks, so a block at a modest rate fills (and reaches the loop) soon after its first frame
        self.frame_size = frame_size
        self.block_size = max(4096, frame_size)
        self.version = version
        self.block_nr = max(2, size // self.block_size)
        self.frame_nr = self.block_nr * (self.block_size // self.frame_size)
        if setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) < 0:
            raise OSError(errno, "PACKET_VERSION")
        if version == 2:
            r2.tp_block_size = self.block_size
            r2.tp_block_nr = self.block_nr
            r2.tp_frame_size = self.frame_size
            r2.tp_frame_nr = self.frame_nr
            if setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &r2, sizeof(r2)) < 0:
                raise OSError(errno, "PACKET_RX_RING")
        else:
            memset(&r3, 0, sizeof(r3))
            r3.tp_block_size = self.block_size
            r3.tp_block_nr = self.block_nr
            r3.tp_frame_size = self.frame_size
            r3.tp_frame_nr = self.frame_nr
            r3.tp_retire_blk_tov = timeout_ms
            if setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &r3, sizeof(r3)) < 0:
                raise OSError(errno, "PACKET_RX_RING")
        self.map_len = <size_t>self.block_size * self.block_nr
        self.map = _map(fd, self.map_len, "receive")

    def __dealloc__(self):
        if self.map != NULL:
            munmap(self.map, self.map_len)
        free(self.big)

    @property
    def copied(self):
        """V2: frames longer than a slot, read whole from the socket's queue."""
        return self.ncopied

    @property
    def slots(self):
        """Frames (V2) or blocks (V3) the ring holds."""
        return self.frame_nr if self.version == 2 else self.block_nr

    cdef unsigned char* v2_slot(self, unsigned int i) noexcept nogil:
        """The address of V2 slot ``i`` (slots fill each block, none straddles two)."""
        cdef unsigned int fpb = self.block_size // self.frame_size
        return self.map + (i // fpb) * self.block_size + (i % fpb) * self.frame_size

    cdef int take(self, Batch* b) noexcept nogil:
        """Up to BATCH frames the kernel has handed over; they stay valid until :meth:`c_release`."""
        cdef tpacket2_hdr* h2
        cdef tpacket3_hdr* h3
        cdef tpacket_block_desc* bd
        cdef unsigned char* slot
        cdef long r
        cdef unsigned int status, h = VNET if self.vnet else 0
        b.n = 0
        if self.version == 2:
            while b.n < BATCH:
                slot = self.v2_slot(self.cur)
                h2 = <tpacket2_hdr*>slot
                status = px_load_acquire(&h2.tp_status)
                if not (status & TP_STATUS_USER):
                    break
                if status & TP_STATUS_COPY:
                    if b.n:
                        break  # the whole frame has the one big buffer: it starts the next batch
                    r = recv(self.fd, self.big, SLOT, MSG_DONTWAIT | MSG_TRUNC)
                    if r >= h:
                        self.ncopied += 1
                        b.ptr[0] = self.big + h
                        b.vh[0] = self.big if self.vnet else NULL
                        b.len[0] = min(r, SLOT) - h
                        b.trunc[0] = r > SLOT
                        self.pending[self.npending] = self.cur
                        self.npending += 1
                        b.n = 1
                        self.cur = (self.cur + 1) % self.frame_nr
                        break
                b.ptr[b.n] = slot + h2.tp_mac
                b.vh[b.n] = slot + h2.tp_mac - VNET if self.vnet else NULL
                b.len[b.n] = h2.tp_snaplen
                b.trunc[b.n] = h2.tp_snaplen < h2.tp_len
                self.pending[self.npending] = self.cur
                self.npending += 1
                b.n += 1
                self.cur = (self.cur + 1) % self.frame_nr
            return b.n
        bd = <tpacket_block_desc*>(self.map + self.cur * self.block_size)
        if self.v3_next == NULL:
            if not (bd.h1.block_status & TP_STATUS_USER):
                return 0
            self.v3_left = bd.h1.num_pkts
            self.v3_next = <unsigned char*>bd + bd.h1.offset_to_first_pkt
        while b.n < BATCH and self.v3_left:
            h3 = <tpacket3_hdr*>self.v3_next
            b.ptr[b.n] = self.v3_next + h3.tp_mac
            b.vh[b.n] = self.v3_next + h3.tp_mac - VNET if self.vnet else NULL
            b.len[b.n] = h3.tp_snaplen
            b.trunc[b.n] = h3.tp_snaplen < h3.tp_len
            b.n += 1
            self.v3_left -= 1
            self.v3_next += h3.tp_next_offset
        self.v3_done = self.v3_left == 0
        return b.n

    cdef bint ready(self) noexcept nogil:
        """Whether :meth:`take` would find a frame (a look at the ring's memory, no system call)."""
        if self.version == 2:
            return (px_load_acquire(&(<tpacket2_hdr*>self.v2_slot(self.cur)).tp_status) & TP_STATUS_USER) != 0
        if self.v3_next != NULL:
            return self.v3_left != 0
        return (px_load_acquire(&(<tpacket_block_desc*>(self.map + self.cur * self.block_size)).h1.block_status)
                & TP_STATUS_USER) != 0

    def has_frames(self):
        """Python's view of :meth:`ready`."""
        return self.ready()

    cdef void c_release(self) noexcept nogil:
        """Hand back what :meth:`take` gave (a V3 block once it is read to its end)."""
        cdef unsigned int i, s
        cdef tpacket_block_desc* bd
        if self.version == 2:
            for i in range(self.npending):
                s = self.pending[i]
                px_store_release(&(<tpacket2_hdr*>self.v2_slot(s)).tp_status, TP_STATUS_KERNEL)
            self.npending = 0
            return
        if self.v3_done and self.v3_next != NULL:
            bd = <tpacket_block_desc*>(self.map + self.cur * self.block_size)
            bd.h1.block_status = TP_STATUS_KERNEL
            self.cur = (self.cur + 1) % self.block_nr
            self.v3_next = NULL
            self.v3_done = False

    def recv_batch(self, int max_n=BATCH):
        """Up to 64 frames as bytes (copied out, so the ring slots go back to the kernel at once); with ``vnet``
        each starts with its virtio_net_hdr."""
        cdef Batch b
        cdef int i, h = VNET if self.vnet else 0
        self.take(&b)
        out = [(<char*>b.ptr[i] - h)[:b.len[i] + h] for i in range(b.n) if not b.trunc[i]]
        self.c_release()
        return out


cdef class TxRing:
    """A PACKET_MMAP transmit ring (TPACKET_V2) on its own AF_PACKET socket ``fd`` (protocol 0, so it receives
    nothing; bind it to the interface after this): frames are copied into the shared slots and one ``send``
    hands every marked slot to the driver, past the qdisc (PACKET_QDISC_BYPASS).  Saves sendmmsg's per-frame
    message and iovec copies.  A slot comes back once the driver is done with its frame.

    Every slot starts with a virtio_net_hdr (PACKET_VNET_HDR): a frame's own (its offloads carried to the
    output) or a plain one, whose ``hdr_len`` asks the kernel to copy the whole frame into the socket buffer,
    as sendmmsg does, rather than point into the ring (a veth would copy such a frame again).  :attr:`cap` is
    the longest frame a slot takes, at most ``mtu`` + 18: longer ones (GSO segments) go out with sendmmsg.
    """

    def __cinit__(self, int fd, unsigned int mtu, unsigned int size=1 << 20, unsigned int frame_size=2048):
        cdef tpacket_req r2
        cdef int v = TPACKET_V2, one = 1
        self.fd = fd
        self.map = NULL
        if frame_size < 2048 or frame_size & (frame_size - 1) or frame_size > (1 << 17):
            raise ValueError(f"tx ring frame size {frame_size}: a power of two from 2048 to 131072")
        self.frame_size = frame_size
        self.data_off = TPACKET_ALIGN(sizeof(tpacket2_hdr))
        self.cap = min(frame_size - self.data_off - VNET, mtu + 18)
        for opt, name in ((PACKET_VERSION, "PACKET_VERSION"), (PACKET_LOSS, "PACKET_LOSS"),
                          (PACKET_QDISC_BYPASS, "PACKET_QDISC_BYPASS"), (PACKET_VNET_HDR, "PACKET_VNET_HDR")):
            if setsockopt(fd, SOL_PACKET, opt, &v if opt == PACKET_VERSION else &one, sizeof(int)) < 0:
                raise OSError(errno, name)
        r2.tp_block_size = frame_size * max(1, 65536 // frame_size)
        r2.tp_frame_size = frame_size
        r2.tp_block_nr = max(1, size // r2.tp_block_size)
        self.frame_nr = r2.tp_frame_nr = r2.tp_block_nr * (r2.tp_block_size // frame_size)
        if setsockopt(fd, SOL_PACKET, PACKET_TX_RING, &r2, sizeof(r2)) < 0:
            raise OSError(errno, "PACKET_TX_RING")
        self.map_len = <size_t>r2.tp_block_size * r2.tp_block_nr
        self.map = _map(fd, self.map_len, "transmit")
        self.slots = self.frame_nr

    cdef int put(self, const unsigned char* vh, const unsigned char* b, Py_ssize_t n) noexcept nogil:
        """Copy one frame (after ``vh``, its virtio_net_hdr, or a zero one when NULL) into the next slot and
        mark it for sending: 1; 0 when that slot is still in flight (the ring is full) or the frame too long."""
        cdef unsigned char* slot = self.map + <size_t>self.cur * self.frame_size
        cdef tpacket2_hdr* h = <tpacket2_hdr*>slot
        cdef unsigned char* d = slot + self.data_off
        if n > self.cap or px_load_acquire(&h.tp_status) != TP_STATUS_AVAILABLE:
            return 0
        if vh != NULL:
            memcpy(d, vh, VNET)
        else:
            memset(d, 0, VNET)
        if d[1] == 0:  # no segmentation: hdr_len (little-endian), the bytes copied into the socket buffer
            d[2] = n & 0xFF
            d[3] = (n >> 8) & 0xFF
        memcpy(d + VNET, b, n)
        h.tp_len = <unsigned int>(n + VNET)
        px_store_release(&h.tp_status, TP_STATUS_SEND_REQUEST)
        self.cur = (self.cur + 1) % self.frame_nr
        self.queued += 1
        return 1

    cdef int flush(self, bint force=False) noexcept nogil:
        """Send every marked slot (with ``force``, also when none was marked since the last call: the kernel
        keeps a frame the driver refused, and the ones after it, for the next send): 0, or -1 with errno
        (EAGAIN/ENOBUFS: the driver refused one)."""
        if self.queued == 0 and not force:
            return 0
        self.queued = 0
        return -1 if send(self.fd, NULL, 0, MSG_DONTWAIT) < 0 else 0

    def send_batch(self, list frames):
        """Queue and send plain frames (bytes): how many the ring took (it stops at a full ring or a frame
        longer than :attr:`cap`)."""
        cdef Py_ssize_t i, n = 0
        cdef bytes f
        for f in frames:
            if not self.put(NULL, <const unsigned char*><char*>f, len(f)):
                break
            n += 1
        if self.flush() < 0 and errno != EAGAIN and errno != ENOBUFS and errno != EINTR:
            raise OSError(errno, "send on the transmit ring")
        return n

    def __dealloc__(self):
        if self.map != NULL:
            munmap(self.map, self.map_len)


BUILD_HASH = PXPROTO_BUILD_HASH.decode()
"""Source hash of this build (pxproto/fastpath/buildhash.py); pxproto.fastpath.select checks it."""
