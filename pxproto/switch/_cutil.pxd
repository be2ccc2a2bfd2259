# cython: language_level=3
"""Small inline C helpers of the AF_PACKET loop (_afpacket.pyx): the control classes, big-endian reads of
frame fields, and the pcapng Enhanced Packet Block its mirror writes."""

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset

from pxproto.fastpath.tpacket cimport CLOCK_REALTIME, clock_gettime, timespec
from pxproto.fastpath.wiregen cimport PX_CLASS_DISCOVERY, PX_CLASS_HEARTBEAT, PX_CLASS_SIGNALING


cdef inline bint is_control(int ci) noexcept nogil:
    """A signaling, discovery or heartbeat frame (px_class_of)."""
    return ci == PX_CLASS_SIGNALING or ci == PX_CLASS_DISCOVERY or ci == PX_CLASS_HEARTBEAT


cdef inline unsigned int u16(const unsigned char* p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline uint64_t mac48(const unsigned char* p) noexcept nogil:
    return ((<uint64_t>p[0] << 40) | (<uint64_t>p[1] << 32) | (<uint64_t>p[2] << 24) |
            (<uint64_t>p[3] << 16) | (<uint64_t>p[4] << 8) | <uint64_t>p[5])


cdef inline uint64_t wall_ns() noexcept nogil:
    """CLOCK_REALTIME in nanoseconds (the mirror's timestamps)."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <uint64_t>ts.tv_sec * 1000000000 + <uint64_t>ts.tv_nsec


cdef inline void le32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


cdef inline Py_ssize_t epb(unsigned char* p, Py_ssize_t room, const unsigned char* b, Py_ssize_t n, uint64_t ts,
                           const char* comment, int cl) noexcept nogil:
    """Write one Enhanced Packet Block (interface 0, ns ``ts``, frame ``b``, an opt_comment when ``cl``) at
    ``p``: its length, or -1 when it needs more than ``room`` bytes."""
    cdef Py_ssize_t padded = (n + 3) & ~3
    cdef Py_ssize_t opts = (4 + ((cl + 3) & ~3) + 4) if cl else 0
    cdef Py_ssize_t total = 32 + padded + opts
    if total > room:
        return -1
    memset(p, 0, total)
    le32(p, 6)                       # Enhanced Packet Block
    le32(p + 4, <uint32_t>total)
    le32(p + 8, 0)                   # interface 0
    le32(p + 12, <uint32_t>(ts >> 32))
    le32(p + 16, <uint32_t>ts)
    le32(p + 20, <uint32_t>n)
    le32(p + 24, <uint32_t>n)
    memcpy(p + 28, b, n)
    if cl:
        p[28 + padded] = 1           # opt_comment
        p[30 + padded] = cl & 0xFF
        memcpy(p + 32 + padded, comment, cl)
        # opt_endofopt: the 4 zero bytes memset left
    le32(p + total - 4, <uint32_t>total)
    return total
