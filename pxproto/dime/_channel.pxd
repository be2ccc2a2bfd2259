# cython: language_level=3
"""What the two compiled channel modules share: a channel end's addresses and frame building, and id arithmetic.

``pxproto/dime/_channel.pyx`` (the sender) defines :class:`_Ends`; ``pxproto/dime/_channel_rx.pyx`` (the
receiver) cimports it from here.  :class:`Gather` (a message held as pieces, defined in ``_txframe.pxi``) is
cimported by ``pxproto/node/_flowc.pyx``, which builds a source's large messages from its kept runs.
"""

from libc.stdint cimport int64_t, uint32_t

from pxproto.fastpath.tpacket cimport iovec
from pxproto.fastpath.wirec cimport PxAddr, PxView


cdef inline int64_t sdiff(uint32_t a, uint32_t b) noexcept nogil:
    """a - b for message ids (RFC 1982), as pxproto.dime.channel.serial_diff."""
    cdef uint32_t d = a - b
    return <int64_t>d - (<int64_t>1 << 32) if d >= 0x80000000u else <int64_t>d


cdef class _Ends:
    cdef readonly object local, peer
    cdef object src_mac, dst_mac
    cdef int src_dime, src_thread, dst_dime, dst_thread
    cdef PxAddr addr
    cdef bint wire  # the call under way gives encoded frames (a *_wire method)
    cdef double deadline  # when handle_timer is due (if has_deadline)
    cdef bint has_deadline

    cdef bint view(self, bytes raw, PxView* v) except -1
    cdef object frame(self, object body)
    cdef object data(self, int channel, uint32_t msg_id, object payload, const char* p, Py_ssize_t n,
                     uint32_t msg_len, uint32_t off, int index, int count, uint32_t ack, int credit, int flags)
    cdef object _timer(self, double now, object out)


cdef class Gather:
    cdef list bufs  # the bytes objects its pieces lie in (held, so the pointers stay valid)
    cdef const char** ptrs  # where each piece starts
    cdef Py_ssize_t* ends  # where each piece ends in the message (cumulative)
    cdef Py_ssize_t count, cap
    cdef readonly Py_ssize_t n

    cdef int add(self, bytes buf, Py_ssize_t start, Py_ssize_t size) except -1
    cdef Py_ssize_t _at(self, Py_ssize_t off) noexcept
    cdef int pieces(self, Py_ssize_t off, Py_ssize_t size) noexcept
    cdef int fill(self, iovec* iov, Py_ssize_t off, Py_ssize_t size, int most) noexcept
    cdef void copy_out(self, char* dst, Py_ssize_t off, Py_ssize_t size) noexcept
    cdef bytes piece_bytes(self, Py_ssize_t off, Py_ssize_t size)
