# cython: language_level=3
"""Compiled capture indexer: where each frame of a pcap/pcapng buffer is.

Same rules, rows, error fields, offsets and messages as
:class:`pxproto.fastpath.capindex.Indexer` (its pure twin): captured and
original (wire) length of each frame, and incremental: :meth:`Indexer.feed`
takes the bytes that follow the last call's consumed prefix, so a pipe
(``pxdump -r -``) is indexed as it arrives.  Used through
:func:`pxproto.fastpath.index_capture` and ``pxproto.fastpath.Indexer``.
"""

from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH

import numpy as np

cdef extern from *:
    """
    #define PXI_TRUNC 1
    #define PXI_ERROR 2
    """
    int PXI_TRUNC
    int PXI_ERROR

from pxproto.capture import pcapng as _pcapng

# the format constants are read off the reference reader
cdef uint32_t SHB = _pcapng.SHB
cdef uint32_t IDB = _pcapng.IDB
cdef uint32_t EPB = _pcapng.EPB
cdef uint32_t SPB = _pcapng.SPB
cdef uint32_t BOM = _pcapng.BYTE_ORDER_MAGIC
cdef int64_t MAX_BLOCK = _pcapng.MAX_BLOCK
cdef dict PCAP_MAGICS = _pcapng.PCAP_MAGICS


cdef inline uint32_t _u32(const unsigned char* p, bint big) noexcept nogil:
    if big:
        return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]


cdef inline uint16_t _u16(const unsigned char* p, bint big) noexcept nogil:
    if big:
        return <uint16_t>((p[0] << 8) | p[1])
    return <uint16_t>((p[1] << 8) | p[0])


cdef class Indexer:
    """Incremental pcap/pcapng indexer; offsets in the arrays are file offsets."""

    cdef int fmt  # 0 not started, 1 pcap, 2 pcapng
    cdef bint big
    cdef int64_t ns_per_unit
    cdef uint32_t snaplen
    cdef uint32_t linktype
    cdef int64_t base  # file offset of the next byte fed
    cdef uint16_t* if_link
    cdef uint64_t* if_tick
    cdef Py_ssize_t n_if, cap_if
    # output (grown as needed)
    cdef object a_off, a_len, a_wire, a_ts, a_lt
    cdef int64_t* p_off
    cdef int64_t* p_len
    cdef int64_t* p_wire
    cdef int64_t* p_ts
    cdef uint16_t* p_lt
    cdef Py_ssize_t count, cap
    cdef public object error
    """(field, offset, reason) of the damage that stopped indexing, or None."""

    def __cinit__(self):
        self.if_link = NULL
        self.if_tick = NULL

    def __dealloc__(self):
        free(self.if_link)
        free(self.if_tick)

    def __init__(self):
        self.error = None

    cdef void _alloc(self, Py_ssize_t cap):
        self.cap = cap
        self.count = 0
        self.a_off = np.empty(cap, np.int64)
        self.a_len = np.empty(cap, np.int64)
        self.a_wire = np.empty(cap, np.int64)
        self.a_ts = np.empty(cap, np.int64)
        self.a_lt = np.empty(cap, np.uint16)
        self._pointers()

    cdef void _pointers(self):
        cdef int64_t[::1] o = self.a_off
        cdef int64_t[::1] l = self.a_len
        cdef int64_t[::1] w = self.a_wire
        cdef int64_t[::1] t = self.a_ts
        cdef uint16_t[::1] k = self.a_lt
        self.p_off = &o[0]
        self.p_len = &l[0]
        self.p_wire = &w[0]
        self.p_ts = &t[0]
        self.p_lt = &k[0]

    cdef int _grow(self) except -1:
        self.cap *= 2
        self.a_off = np.resize(self.a_off, self.cap)
        self.a_len = np.resize(self.a_len, self.cap)
        self.a_wire = np.resize(self.a_wire, self.cap)
        self.a_ts = np.resize(self.a_ts, self.cap)
        self.a_lt = np.resize(self.a_lt, self.cap)
        self._pointers()
        return 0

    cdef inline int _add(self, int64_t off, int64_t length, int64_t wire, int64_t ts, uint16_t lt) except -1:
        if self.count == self.cap:
            self._grow()
        cdef Py_ssize_t i = self.count
        self.p_off[i] = off
        self.p_len[i] = length
        self.p_wire[i] = wire
        self.p_ts[i] = ts
        self.p_lt[i] = lt
        self.count = i + 1
        return 0

    cdef int _fail(self, str field, int64_t offset, str reason) except -1:
        self.error = (field, offset, reason)
        return PXI_ERROR

    def feed(self, data, bint final):
        """Index the complete records at the start of ``data`` (the bytes after what was consumed so far).

        Returns (offsets, lengths, wirelens, ts_ns, linktypes, consumed).  When ``final`` is false a
        record cut by the end of ``data`` is left for the next call; when true (or on corruption)
        ``self.error`` is set to (field, offset, reason) and indexing stops for good."""
        cdef const unsigned char[::1] mv = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        cdef Py_ssize_t n = mv.shape[0]
        cdef const unsigned char* p = &mv[0] if n else NULL
        cdef Py_ssize_t pos = 0
        cdef int r = 0
        self._alloc(max(16, n // 64 + 16))
        if self.error is None:
            if self.fmt == 0:
                r = self._start(p, n, &pos, final)
            if r == 0 and self.fmt == 1:
                r = self._pcap(p, n, &pos, final)
            elif r == 0 and self.fmt == 2:
                r = self._pcapng(p, n, &pos, final)
        self.base += pos
        k = self.count
        return self.a_off[:k], self.a_len[:k], self.a_wire[:k], self.a_ts[:k], self.a_lt[:k], pos

    cdef int _start(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos, bint final) except -1:
        if n < 4:
            return self._cut("file", 0, f"truncated: {n} bytes, not a pcap or pcapng file", final)
        cdef bytes head = (<const char*>p)[:4]
        if head in PCAP_MAGICS:
            if n < 24:
                return self._truncated(n, 4, 20, "pcap.header", final)
            endian, self.ns_per_unit = PCAP_MAGICS[head]
            self.big = endian == ">"
            self.snaplen = _u32(p + 16, self.big)
            self.linktype = _u32(p + 20, self.big)
            self.fmt = 1
            pos[0] = 24
            return 0
        if _u32(p, False) == SHB:
            self.fmt = 2
            return 0
        return self._fail("file", 0, f"magic {head.hex()} is neither pcap nor pcapng")

    cdef int _pcap(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos_, bint final) except -1:
        cdef Py_ssize_t pos = pos_[0]
        cdef int64_t base = self.base
        cdef uint32_t sec, frac, incl, orig
        cdef uint32_t limit = self.snaplen if self.snaplen > 262144 else 262144
        cdef bint big = self.big
        cdef int r = 0
        while pos < n:
            if pos + 16 > n:
                r = self._cut("pcap.record", pos, f"truncated record header: {n - pos} of 16 bytes", final)
                break
            sec = _u32(p + pos, big)
            frac = _u32(p + pos + 4, big)
            incl = _u32(p + pos + 8, big)
            orig = _u32(p + pos + 12, big)
            if incl > limit or incl > MAX_BLOCK:
                r = self._fail("pcap.record", base + pos, f"record length {incl} exceeds the snap length {self.snaplen}")
                break
            if pos + 16 + incl > n:
                r = self._truncated(n, pos + 16, incl, "pcap.record", final)
                break
            self._add(base + pos + 16, incl, orig, <int64_t>(<uint64_t>sec * 1000000000 + <uint64_t>frac * self.ns_per_unit),
                      <uint16_t>(self.linktype & 0xFFFF))
            pos += 16 + incl
        pos_[0] = pos
        return r

    cdef int _interface(self, uint16_t link, uint64_t tick) except -1:
        if self.n_if == self.cap_if:
            self.cap_if = self.cap_if * 2 + 8
            self.if_link = <uint16_t*>realloc(self.if_link, self.cap_if * sizeof(uint16_t))
            self.if_tick = <uint64_t*>realloc(self.if_tick, self.cap_if * sizeof(uint64_t))
            if self.if_link == NULL or self.if_tick == NULL:
                raise MemoryError()
        self.if_link[self.n_if] = link
        self.if_tick[self.n_if] = tick
        self.n_if += 1
        return 0

    cdef int _truncated(self, Py_ssize_t n, Py_ssize_t at, int64_t want, str field, bint final) except -1:
        """A _need() failure of the pure indexer: wait for more bytes, or the error."""
        cdef int64_t have = max(0, min(want, n - at))
        return self._cut(field, at, f"truncated: {have} of {want} bytes", final)

    cdef int _cut(self, str field, Py_ssize_t at, str reason, bint final) except -1:
        """Bytes missing at ``at`` of this feed: wait for more, or (final) the error."""
        if not final:
            return PXI_TRUNC
        return self._fail(field, self.base + at, reason)

    cdef int _pcapng(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos_, bint final) except -1:
        cdef Py_ssize_t off = pos_[0]
        cdef int64_t base = self.base
        cdef uint32_t btype, blen, iface, hi, lo, cap, orig, bom
        cdef int64_t body, body_len, prefix, tick, opos, oend
        cdef uint16_t code, olen, link
        cdef int resol
        cdef int r = 0
        while off < n:
            if off + 4 > n:
                r = self._cut("pcapng.block", off, "truncated block type", final)
                break
            if off + 8 > n:
                r = self._truncated(n, off + 4, 4, "pcapng.block", final)
                break
            prefix = 0
            if _u32(p + off, False) == SHB:
                if off + 12 > n:
                    r = self._truncated(n, off + 8, 4, "pcapng.shb", final)
                    break
                bom = _u32(p + off + 8, False)
                if bom == BOM:
                    self.big = False
                elif _u32(p + off + 8, True) == BOM:
                    self.big = True
                else:
                    r = self._fail("pcapng.shb", base + off + 8, f"byte-order magic {(<const char*>p)[off + 8:off + 12].hex()}")
                    break
                self.n_if = 0
                prefix = 4
            blen = _u32(p + off + 4, self.big)
            btype = _u32(p + off, self.big)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                r = self._fail("pcapng.block", base + off + 4, f"block length {blen} is invalid")
                break
            if blen < 12 + prefix:  # read_packets fails reading the rest of such a section header
                r = self._fail("pcapng.block", base + off + 12, f"block length {blen} leaves no section header body")
                break
            if off + blen > n:
                # which _need() of the pure indexer fails first
                if off + 8 + prefix + (blen - 12 - prefix) > n:
                    r = self._truncated(n, off + 8 + prefix, blen - 12 - prefix, "pcapng.block", final)
                else:
                    r = self._truncated(n, off + blen - 4, 4, "pcapng.block", final)
                break
            if _u32(p + off + blen - 4, self.big) != blen:
                r = self._fail("pcapng.block", base + off + blen - 4, "trailing block length differs from the leading one")
                break
            body = off + 8
            body_len = blen - 12
            if btype == IDB:
                if body_len < 8:
                    r = self._fail("pcapng.idb", base + off + 8, "interface block shorter than 8 bytes")
                    break
                link = _u16(p + body, self.big)
                resol = 6
                opos = body + 8
                oend = body + body_len
                while opos + 4 <= oend:
                    code = _u16(p + opos, self.big)
                    olen = _u16(p + opos + 2, self.big)
                    if code == 0:
                        break
                    if code == 9:
                        if olen > 0 and opos + 4 < oend:
                            resol = p[opos + 4]
                        break
                    opos += 4 + (olen + 3) // 4 * 4
                tick = 1
                if not resol & 0x80 and resol <= 9:
                    for _ in range(9 - (resol & 0x7F)):
                        tick *= 10
                self._interface(link, tick)
            elif btype == EPB:
                if body_len < 20:
                    r = self._fail("pcapng.epb", base + off + 8, "packet block shorter than 20 bytes")
                    break
                iface = _u32(p + body, self.big)
                hi = _u32(p + body + 4, self.big)
                lo = _u32(p + body + 8, self.big)
                cap = _u32(p + body + 12, self.big)
                orig = _u32(p + body + 16, self.big)
                if iface >= self.n_if:
                    r = self._fail("pcapng.epb", base + off + 8, f"interface {iface} was never described")
                    break
                if 20 + <int64_t>cap > body_len:
                    r = self._fail("pcapng.epb", base + off + 20, f"captured length {cap} runs past the block")
                    break
                self._add(base + body + 20, cap, orig,
                          <int64_t>(((<uint64_t>hi << 32) | lo) * self.if_tick[iface]), self.if_link[iface])
            elif btype == SPB:
                if self.n_if == 0:
                    r = self._fail("pcapng.spb", base + off + 8, "simple packet block before any interface")
                    break
                if body_len < 4:
                    r = self._fail("pcapng.spb", base + off + 8, "simple packet block shorter than 4 bytes")
                    break
                orig = _u32(p + body, self.big)
                self._add(base + body + 4, min(<int64_t>orig, body_len - 4), orig, 0, self.if_link[0])
            off += blen
        pos_[0] = off
        return r


BUILD_HASH = PXPROTO_BUILD_HASH.decode()
"""Source hash of this build (pxproto/fastpath/buildhash.py); pxproto.fastpath.select checks it."""
