# cython: language_level=3
"""Compiled one-line output: lines formatted straight from the frame bytes into a C
buffer, written in big blocks.  The pure twin is :func:`pxproto.dump.oneline.render`
(numpy); both must print the same bytes (tests/test_pxdump.py runs the golden files
through each)."""

from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from pxproto.fastpath.wirec cimport PxView, px_view
from pxproto.fastpath.wiregen cimport *
from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH

cdef extern from *:
    """
    #define PXL_BLOCK (1 << 20)
    #define PXL_ROOM 2048
    """
    Py_ssize_t PXL_BLOCK
    Py_ssize_t PXL_ROOM

# rows of the name table (see oneline.name_tables)
cdef enum:
    T_CMD = 0
    T_OP = 1
    T_STATUS = 2
    T_DISC_OP = 3
    T_HB_STATE = 4
    T_CLASS = 5

cdef enum:
    TM_DAY = 0
    TM_NONE = 1
    TM_EPOCH = 2

TIME_OF_DAY = TM_DAY
TIME_NONE = TM_NONE
TIME_EPOCH = TM_EPOCH

cdef const char* HEXD = b"0123456789abcdef"


cdef inline int64_t _floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef struct Out:
    unsigned char* p
    Py_ssize_t n


cdef inline void _lit(Out* o, const char* s, Py_ssize_t k) noexcept nogil:
    memcpy(o.p + o.n, s, k)
    o.n += k


cdef inline void _dec(Out* o, uint64_t v) noexcept nogil:
    cdef char tmp[24]
    cdef int k = 0
    while True:
        tmp[k] = <char>(48 + v % 10)
        k += 1
        v //= 10
        if v == 0:
            break
    while k:
        k -= 1
        o.p[o.n] = tmp[k]
        o.n += 1


cdef inline void _fixed(Out* o, uint64_t v, int width) noexcept nogil:
    cdef int j
    for j in range(width - 1, -1, -1):
        o.p[o.n + j] = <unsigned char>(48 + v % 10)
        v //= 10
    o.n += width


cdef inline void _hex(Out* o, uint64_t v, int width) noexcept nogil:
    cdef int j
    for j in range(width - 1, -1, -1):
        o.p[o.n + j] = HEXD[v & 15]
        v >>= 4
    o.n += width


cdef inline void _mac(Out* o, const unsigned char* m) noexcept nogil:
    cdef int k
    for k in range(6):
        if k:
            o.p[o.n] = 58
            o.n += 1
        o.p[o.n] = HEXD[m[k] >> 4]
        o.p[o.n + 1] = HEXD[m[k] & 15]
        o.n += 2


cdef inline void _name(Out* o, const uint8_t[:, :, ::1] names, const uint8_t[:, ::1] lens, int table,
                       unsigned int code) noexcept nogil:
    if code > 255:
        code = 255
    cdef Py_ssize_t k = lens[table, code]
    memcpy(o.p + o.n, &names[table, code, 0], k)
    o.n += k


cdef inline void _endpoint(Out* o, unsigned int dime, unsigned int thread) noexcept nogil:
    if dime == PX_DIME_ALL:
        o.p[o.n] = 42
        o.n += 1
    else:
        _dec(o, dime)
    o.p[o.n] = 46
    o.n += 1
    _dec(o, thread)


cdef inline void _ms(Out* o, int64_t ns) noexcept nogil:
    cdef uint64_t us = <uint64_t>(ns if ns > 0 else 0) // 1000
    _dec(o, us // 1000)
    o.p[o.n] = 46
    o.n += 1
    _fixed(o, us % 1000, 3)
    _lit(o, b"ms", 2)


cdef inline void _time(Out* o, int64_t ts, int mode, int64_t utc) noexcept nogil:
    cdef int64_t us = _floordiv(ts, 1000) % 1000000
    cdef int64_t sec = _floordiv(ts, 1000000000)
    cdef int64_t sod
    if us < 0:
        us += 1000000
    if mode == TM_EPOCH:
        _dec(o, <uint64_t>sec)
    else:
        sod = (sec + utc) % 86400
        if sod < 0:
            sod += 86400
        _fixed(o, sod // 3600, 2)
        o.p[o.n] = 58
        o.n += 1
        _fixed(o, sod // 60 % 60, 2)
        o.p[o.n] = 58
        o.n += 1
        _fixed(o, sod % 60, 2)
    o.p[o.n] = 46
    o.n += 1
    _fixed(o, <uint64_t>us, 6)
    o.p[o.n] = 32
    o.n += 1


def write_lines(
    write,
    const uint8_t[::1] buf,
    const int64_t[::1] offs,
    const int64_t[::1] lens,
    const int64_t[::1] wire,
    const int64_t[::1] ts,
    const int64_t[::1] rtt,
    const int64_t[::1] gap,
    Py_ssize_t start,
    int tmode,
    bint ether,
    int64_t utc,
    bint hide_other,
    const uint8_t[:, :, ::1] names,
    const uint8_t[:, ::1] name_lens,
) -> int:
    """Write the line of every row from ``start`` on, in blocks, through ``write``; stop at the
    first malformed row and return its index (the caller prints it), or the row count.
    ``rtt``/``gap`` are per-row annotations (-1: none) or empty arrays."""
    cdef Py_ssize_t count = offs.shape[0]
    cdef Py_ssize_t total = buf.shape[0]
    cdef bint has_rtt = rtt.shape[0] == count
    cdef bint has_gap = gap.shape[0] == count
    cdef Py_ssize_t i = start, ln
    cdef const unsigned char* base = &buf[0] if total else NULL
    cdef const unsigned char* f
    cdef PxView v
    cdef int r
    cdef bint stop = False
    cdef uint64_t payload
    cdef Out o
    cdef bint outside = False
    if wire.shape[0] != count or ts.shape[0] != count or lens.shape[0] != count:
        raise ValueError("columns of different lengths")
    o.p = <unsigned char*>malloc(PXL_BLOCK + PXL_ROOM)
    o.n = 0
    if o.p == NULL:
        raise MemoryError()
    try:
        while i < count and not stop:
            with nogil:
                while i < count and o.n < PXL_BLOCK:
                    ln = lens[i]
                    if offs[i] < 0 or ln < 0 or offs[i] + ln > total:
                        outside = stop = True
                        break
                    f = base + offs[i]
                    r = px_view(f, ln, &v)
                    if ln < PX_ETH_LEN or (v.cls != 0 and r != 0):
                        stop = True
                        break
                    if v.cls == 0 and hide_other:
                        i += 1
                        continue
                    if tmode != TM_NONE:
                        _time(&o, ts[i], tmode, utc)
                    if v.cls == 0:
                        _lit(&o, b"ether ", 6)
                        _mac(&o, f + PX_ETH_SRC)
                        _lit(&o, b" > ", 3)
                        _mac(&o, f + PX_ETH_DST)
                        _lit(&o, b" type 0x", 8)
                        _hex(&o, v.ethertype, 4)
                    else:
                        if ether:
                            _mac(&o, f + PX_ETH_SRC)
                            _lit(&o, b" > ", 3)
                            _mac(&o, f + PX_ETH_DST)
                            _lit(&o, b" ethertype 0x", 13)
                            _hex(&o, v.ethertype, 4)
                            _lit(&o, b", ", 2)
                        _name(&o, names, name_lens, T_CLASS, v.cls)
                        _lit(&o, b" ", 1)
                        _endpoint(&o, v.src_dime, v.src_thread)
                        _lit(&o, b" > ", 3)
                        _endpoint(&o, v.dst_dime, v.dst_thread)
                        _lit(&o, b" ", 1)
                        if v.encrypted:
                            _lit(&o, b"encrypted", 9)
                        elif v.cls == PX_CLASS_SIGNALING:
                            _name(&o, names, name_lens, T_CMD, v.cmd)
                            _lit(&o, b" ", 1)
                            _name(&o, names, name_lens, T_OP, v.op)
                            if v.op == PX_OP_RESPONSE:
                                _lit(&o, b" ", 1)
                                _name(&o, names, name_lens, T_STATUS, v.status)
                            _lit(&o, b" id ", 4)
                            _dec(&o, v.req_id)
                            _lit(&o, b" tlvs ", 6)
                            _dec(&o, v.tlv_count)
                            if has_rtt and rtt[i] >= 0:
                                _lit(&o, b" rtt ", 5)
                                _ms(&o, rtt[i])
                        elif v.cls == PX_CLASS_DATA:
                            _lit(&o, b"ch ", 3)
                            _dec(&o, v.channel)
                            if v.frag_count > 0:
                                _lit(&o, b" msg ", 5)
                                _dec(&o, v.msg_id)
                                _lit(&o, b" frag ", 6)
                                _dec(&o, v.frag_index + 1)
                                _lit(&o, b"/", 1)
                                _dec(&o, v.frag_count)
                                _lit(&o, b" off ", 5)
                                _dec(&o, v.frag_offset)
                                _lit(&o, b" bytes ", 7)
                                payload = v.length - PX_DATA_LEN if v.length > PX_DATA_LEN else 0
                                _dec(&o, payload)
                            if v.data_flags & PX_DFLAG_ACK:
                                _lit(&o, b" ACK ", 5)
                                _dec(&o, v.ack)
                                _lit(&o, b" credit ", 8)
                                _dec(&o, v.credit)
                            if v.data_flags & PX_DFLAG_FIN:
                                _lit(&o, b" FIN", 4)
                        elif v.cls == PX_CLASS_DISCOVERY:
                            _name(&o, names, name_lens, T_DISC_OP, v.disc_op)
                            _lit(&o, b" probe ", 7)
                            _dec(&o, v.probe_id)
                            _lit(&o, b" dimes ", 7)
                            _dec(&o, v.disc_count)
                        else:
                            _lit(&o, b"epoch ", 6)
                            _dec(&o, v.hb_epoch)
                            _lit(&o, b" ", 1)
                            _name(&o, names, name_lens, T_HB_STATE, v.hb_state)
                            _lit(&o, b" cpu ", 5)
                            _dec(&o, v.hb_cpu_permille // 10)
                            _lit(&o, b".", 1)
                            _dec(&o, v.hb_cpu_permille % 10)
                            _lit(&o, b"% mem ", 6)
                            _dec(&o, v.hb_mem_used)
                            _lit(&o, b"/", 1)
                            _dec(&o, v.hb_mem_limit)
                            if has_gap and gap[i] >= 0:
                                _lit(&o, b" GAP ", 5)
                                _ms(&o, gap[i])
                        if v.flags & PX_HFLAG_AUTH:
                            _lit(&o, b" auth", 5)
                        _lit(&o, b" seq ", 5)
                        _dec(&o, v.seq)
                    _lit(&o, b" len ", 5)
                    _dec(&o, <uint64_t>wire[i])
                    _lit(&o, b"\n", 1)
                    i += 1
            if o.n:
                write((<char*>o.p)[: o.n])
                o.n = 0
        if outside:
            raise ValueError(f"row {i}: bytes {offs[i]}..{offs[i] + lens[i]} lie outside the {total}-byte buffer")
    finally:
        free(o.p)
    return i


BUILD_HASH = PXPROTO_BUILD_HASH.decode()
"""Source hash of this build (pxproto/fastpath/buildhash.py); pxproto.fastpath.select checks it."""
