# cython: language_level=3
"""The compiled receiving end, reachable at C level: the node's wire receive loop (``pxproto/node/_fastrx.pyx``)
hands it a DATA fragment straight from its receive buffer (:meth:`ChannelReceiver.take_view`), no bytes made."""

from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint32_t

from pxproto.dime._channel cimport _Ends
from pxproto.fastpath.wirec cimport PxView


cdef struct InMsg:
    uint32_t msg_id
    int64_t msg_len
    int64_t count        # 0: the slot is free
    int64_t nfrags       # fragments held
    int64_t size         # bytes held
    int oversize         # announced over max_message_bytes: nothing kept, dropped when complete
    int fin
    uint32_t* offs       # per fragment: its offset, its length, whether it is held
    uint32_t* lens
    uint8_t* have
    int64_t cap          # bytes of ``whole`` (it grows up to msg_len)
    PyObject* whole      # a multi-fragment message's bytes object, filled in place and delivered as it is: of
                         # msg_len at once when the first fragment held is at least half of it, else grown
    PyObject* single     # a one-fragment message: the fragment's own bytes
    const char* lent     # or (bare, in order: delivered at once) its bytes in the caller's buffer, not copied
    uint32_t off1, len1
    uint8_t have1


cdef class ChannelReceiver(_Ends):
    cdef readonly int channel
    cdef readonly int window
    cdef readonly int64_t max_buffer_bytes, max_message_bytes
    cdef readonly int ack_every
    cdef readonly double ack_delay
    cdef public bint paused
    cdef readonly int64_t buffered
    cdef int max_window
    cdef uint32_t next_msg
    cdef int64_t next_frag
    cdef InMsg* slots
    cdef int64_t scap
    cdef int64_t nunacked
    cdef int64_t c_fragments, c_duplicates, c_over_credit, c_inconsistent, c_overflow, c_dropped, c_messages
    cdef int64_t c_acks, c_probes, c_not_data, c_malformed
    cdef public bint bare  # deliver (msg_id, payload, fin) tuples, not MessageReceived events (set by the caller)
    cdef const char* lent_ptr  # bare: the payload of the tuple delivered with payload None (see _complete)
    cdef Py_ssize_t lent_len
    cdef readonly int64_t lent  # messages so delivered, not copied (for tests and profiles)

    cdef void _grow_slots(self, int64_t window) except *
    cdef void _inline(self, InMsg* m) noexcept
    cdef InMsg* _get(self, uint32_t msg_id) noexcept
    cdef object _ack(self)
    cdef void take_view(self, const char* p, PxView* v, double now, object out) except *
    cdef int64_t _ahead(self, uint32_t msg_id, int64_t d, int64_t index) noexcept
    cdef void _on_fragment(self, int64_t msg_id, int64_t index, int64_t count, int64_t msg_len, int64_t off,
                           int fin, object payload, const char* data, Py_ssize_t n, double now, object out) except *
    cdef void _store(self, InMsg* m, int64_t off, object payload, const char* data, Py_ssize_t n, bint lend) except *
    cdef bint _make_room(self, uint32_t msg_id, int64_t size, object out) except -1
    cdef int64_t _deliver(self, list events) except -1
    cdef object _complete(self, InMsg* m)
