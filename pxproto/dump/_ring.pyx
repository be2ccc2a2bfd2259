# cython: language_level=3
"""pxdump's live capture: a TPACKET_V3 PACKET_MMAP receive ring drained in batches, and pcapng
records for a batch in one call.

:meth:`CaptureRing.take` copies every frame of every block the kernel has handed over (up to a
batch) into one contiguous buffer and gives each block back at once; it waits in ``poll`` only
when no block is ready, so a queue never waits for a timeout.  The batch has the shape the file
reader's :class:`pxproto.dump.source.Frames` has, so the compiled views decode it unchanged.
"""

from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH
from pxproto.fastpath.tpacket cimport (
    MAP_FAILED, MAP_SHARED, PACKET_OUTGOING, PACKET_RX_RING, PACKET_STATISTICS, PACKET_VERSION, POLLERR, POLLIN,
    PROT_READ, PROT_WRITE, SO_ATTACH_FILTER, SOL_PACKET, SOL_SOCKET, TP_STATUS_KERNEL, TP_STATUS_USER, TPACKET_ALIGN,
    TPACKET_V3, getsockopt, mmap, munmap, poll, pollfd, setsockopt, sockaddr_ll, tpacket3_hdr, tpacket_block_desc,
    tpacket_req3, tpacket_stats_v3,
)

import numpy as np


cdef extern from "<linux/filter.h>" nogil:
    struct sock_filter:
        unsigned short code
        unsigned char jt
        unsigned char jf
        unsigned int k
    struct sock_fprog:
        unsigned short len
        sock_filter* filter


def attach_filter(int fd, list program):
    """Attach a classic BPF program, a list of (code, jt, jf, k) as libpcap compiles it."""
    cdef sock_fprog prog
    cdef sock_filter[4096] ins
    cdef Py_ssize_t i, n = len(program)
    if not 0 < n <= 4096:
        raise ValueError(f"BPF program of {n} instructions")
    for i in range(n):
        code, jt, jf, k = program[i]
        ins[i].code = code
        ins[i].jt = jt
        ins[i].jf = jf
        ins[i].k = k
    prog.len = <unsigned short>n
    prog.filter = ins
    if setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0:
        raise OSError(errno, "SO_ATTACH_FILTER")


cdef class CaptureRing:
    """A TPACKET_V3 receive ring of ``block_nr`` blocks of ``block_size`` bytes on AF_PACKET socket
    ``fd`` (set up before bind); a block is handed over when full or ``timeout_ms`` after its first frame."""

    cdef readonly int fd
    cdef unsigned char* map
    cdef size_t map_len
    cdef unsigned int block_size, block_nr, cur
    cdef readonly unsigned long long packets, drops
    cdef readonly bint skip_outgoing

    def __cinit__(self, int fd, size_t size, unsigned int block_size=1 << 18, unsigned int timeout_ms=5,
                  bint skip_outgoing=False):
        """``skip_outgoing``: leave out the copy of each frame a loopback device sends (it is also
        received), as libpcap does."""
        cdef tpacket_req3 r3
        cdef int v = TPACKET_V3
        self.fd = fd
        self.map = NULL
        self.skip_outgoing = skip_outgoing
        self.block_size = block_size
        self.block_nr = <unsigned int>max(4, size // block_size)
        if setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) < 0:
            raise OSError(errno, "PACKET_VERSION")
        memset(&r3, 0, sizeof(r3))
        r3.tp_block_size = block_size
        r3.tp_block_nr = self.block_nr
        r3.tp_frame_size = 2048
        r3.tp_frame_nr = self.block_nr * (block_size // 2048)
        r3.tp_retire_blk_tov = timeout_ms
        if setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &r3, sizeof(r3)) < 0:
            raise OSError(errno, "PACKET_RX_RING")
        self.map_len = <size_t>block_size * self.block_nr
        cdef void* m = mmap(NULL, self.map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if m == MAP_FAILED:
            raise OSError(errno, "mmap of the packet ring")
        self.map = <unsigned char*>m

    def __dealloc__(self):
        if self.map != NULL:
            munmap(self.map, self.map_len)

    @property
    def size(self):
        """Bytes the ring holds."""
        return self.map_len

    cdef inline bint ready(self) noexcept nogil:
        cdef tpacket_block_desc* bd = <tpacket_block_desc*>(self.map + <size_t>self.cur * self.block_size)
        return (bd.h1.block_status & TP_STATUS_USER) != 0

    def wait(self, int timeout_ms):
        """Wait up to ``timeout_ms`` for a block (returns at once when one is ready, or on a signal)."""
        cdef pollfd p
        cdef int r
        if self.ready():
            return True
        p.fd = self.fd
        p.events = POLLIN | POLLERR
        p.revents = 0
        with nogil:
            r = poll(&p, 1, timeout_ms)
        if r < 0 and errno != EINTR:
            raise OSError(errno, "poll")
        return self.ready()

    def take(self, size_t max_bytes=1 << 22):
        """Every frame of the blocks ready now, up to about ``max_bytes`` of frames, copied out and the
        blocks given back: (buf, offset, caplen, wirelen, ts_ns) as numpy arrays; empty when none is ready."""
        cdef tpacket_block_desc* bd
        cdef tpacket3_hdr* h
        cdef unsigned char* p
        cdef unsigned int k, npk
        cdef size_t used = 0, n = 0, cap_frames = max_bytes // 64 + 1
        cdef size_t ll_at = TPACKET_ALIGN(sizeof(tpacket3_hdr))
        cdef bint skip = self.skip_outgoing
        buf_a = np.empty(max_bytes + self.block_size, np.uint8)
        off_a = np.empty(cap_frames + self.block_size // 32, np.int64)  # a frame takes >= 48 bytes of a block
        len_a = np.empty_like(off_a)
        wire_a = np.empty_like(off_a)
        ts_a = np.empty_like(off_a)
        cdef uint8_t[::1] buf = buf_a
        cdef int64_t[::1] off = off_a, ln = len_a, wire = wire_a, ts = ts_a
        with nogil:
            while used < max_bytes and n < cap_frames and self.ready():
                bd = <tpacket_block_desc*>(self.map + <size_t>self.cur * self.block_size)
                npk = bd.h1.num_pkts
                p = <unsigned char*>bd + bd.h1.offset_to_first_pkt
                for k in range(npk):
                    h = <tpacket3_hdr*>p
                    if skip and (<sockaddr_ll*>(p + ll_at)).sll_pkttype == PACKET_OUTGOING:
                        p += h.tp_next_offset
                        continue
                    memcpy(&buf[used], p + h.tp_mac, h.tp_snaplen)
                    off[n] = used
                    ln[n] = h.tp_snaplen
                    wire[n] = h.tp_len
                    ts[n] = <int64_t>h.tp_sec * 1000000000 + h.tp_nsec
                    used += h.tp_snaplen
                    n += 1
                    p += h.tp_next_offset
                bd.h1.block_status = TP_STATUS_KERNEL
                self.cur = (self.cur + 1) % self.block_nr
        return buf_a[:used], off_a[:n], len_a[:n], wire_a[:n], ts_a[:n]

    def stats(self):
        """(frames received by the filter, frames dropped by the kernel) since the ring was made
        (the kernel resets its counters on each read, so they are summed here)."""
        cdef tpacket_stats_v3 st
        cdef unsigned int sl = sizeof(st)
        memset(&st, 0, sizeof(st))
        if getsockopt(self.fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0:
            self.packets += st.tp_packets
            self.drops += st.tp_drops
        return self.packets, self.drops


cdef inline void _le32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


def epb_records(const uint8_t[::1] buf, const int64_t[::1] offs, const int64_t[::1] lens,
                const int64_t[::1] wire, const int64_t[::1] ts):
    """pcapng Enhanced Packet Blocks (interface 0, ns time stamps) for every row, as one bytes object:
    the bytes :meth:`pxproto.capture.pcapng.PcapngWriter.write` gives row by row."""
    cdef Py_ssize_t count = offs.shape[0], total = buf.shape[0], i
    cdef size_t size = 0, pos = 0, cap, blen
    if lens.shape[0] != count or wire.shape[0] != count or ts.shape[0] != count:
        raise ValueError("columns of different lengths")
    for i in range(count):
        if offs[i] < 0 or lens[i] < 0 or offs[i] + lens[i] > total:
            raise ValueError(f"row {i}: bytes {offs[i]}..{offs[i] + lens[i]} lie outside the {total}-byte buffer")
        size += 32 + ((<size_t>lens[i] + 3) & ~(<size_t>3))
    out = bytearray(size)
    cdef unsigned char* o = out
    with nogil:
        for i in range(count):
            cap = <size_t>lens[i]
            blen = 32 + ((cap + 3) & ~(<size_t>3))
            _le32(o + pos, 6)
            _le32(o + pos + 4, <uint32_t>blen)
            _le32(o + pos + 8, 0)
            _le32(o + pos + 12, <uint32_t>(<uint64_t>ts[i] >> 32))
            _le32(o + pos + 16, <uint32_t>(<uint64_t>ts[i] & <uint64_t>0xFFFFFFFF))
            _le32(o + pos + 20, <uint32_t>cap)
            _le32(o + pos + 24, <uint32_t>(wire[i] if wire[i] else cap))
            memcpy(o + pos + 28, &buf[offs[i]], cap)
            memset(o + pos + 28 + cap, 0, blen - 32 - cap)
            _le32(o + pos + blen - 4, <uint32_t>blen)
            pos += blen
    return out


BUILD_HASH = PXPROTO_BUILD_HASH.decode()
"""Source hash of this build (pxproto/fastpath/buildhash.py); pxproto.fastpath.select checks it."""
