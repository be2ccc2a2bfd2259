"""The record formats of the item codecs (``_items``, ``_flowc``): sizes, and inline big-endian reads and writes
(no bounds checks: the callers check)."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef enum:
    REC = 13  # MICE record: kind u8 | lineage u64 | length u32
    ITEM = 12  # data-channel batch item: lineage u64 | length u32
    MARK = 8  # the zero word that opens a batch message


cdef inline uint64_t rd64(const uint8_t* p) noexcept nogil:
    return ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40) | (<uint64_t>p[3] << 32)
            | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16) | (<uint64_t>p[6] << 8) | <uint64_t>p[7])


cdef inline uint32_t rd32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]


cdef inline void wr64(uint8_t* p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <uint8_t>(v >> (56 - 8 * i))


cdef inline void wr32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef inline int check_run(const uint8_t* p, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t head) except -1:
    """Whole records from ``pos`` to ``n``, each ``head`` bytes (REC: MICE records, ITEM: batch items, whose lineage
    may not be 0) then its bytes; ValueError names the first bad one as the pure twins in ``mice.py`` do."""
    cdef Py_ssize_t length
    cdef bint rec = head == REC
    while pos < n:
        if pos + head > n:
            if rec:
                raise ValueError(f"record header at byte {pos} truncated")
            raise ValueError(f"batch item header at byte {pos} truncated ({n - pos} bytes left)")
        length = rd32(p + pos + head - 4)
        if pos + head + length > n:
            raise ValueError(f"{'record' if rec else 'batch item'} at byte {pos} says {length} bytes, {n - pos - head} left")
        if not rec and rd64(p + pos) == 0:
            raise ValueError(f"batch item at byte {pos} has lineage 0")
        pos += head + length
    return 0


cdef inline int check_records(const uint8_t* p, Py_ssize_t n) except -1:
    """A MICE record batch of ``n`` bytes holds whole records; ValueError names the first bad one."""
    return check_run(p, n, 0, REC)


cdef inline bint check_items(const uint8_t* p, Py_ssize_t n) except -1:
    """An item message of ``n`` bytes is one item (False) or a batch of whole items (True); ValueError names the
    first bad byte."""
    if n < MARK:
        raise ValueError(f"item message of {n} bytes, a lineage needs {MARK}")
    if rd64(p) != 0:
        return False
    check_run(p, n, MARK, ITEM)
    return True
