# cython: language_level=3
"""The compiled forwarding table, reachable at C level by the AF_PACKET loop."""

from libc.stdint cimport int32_t, uint64_t


ctypedef struct FdbEntry:
    uint64_t key
    double seen
    int32_t port
    int32_t state          # 0 empty, 1 used, 2 deleted


cdef class Fdb:
    cdef FdbEntry* tab
    cdef Py_ssize_t size      # slots, a power of two
    cdef Py_ssize_t count     # used slots
    cdef Py_ssize_t deleted   # deleted slots
    cdef Py_ssize_t cap
    cdef double full_sweep_at
    cdef readonly double aging
    cdef readonly long long refused
    cdef readonly long long moves
    cdef readonly unsigned long long generation   # bumped by every change of where a key goes
    cdef int32_t port_count[256]   # entries per port id (ids below MAX_PORT_ID)
    cdef int32_t port_limit[256]   # 0: no limit
    cdef long long port_refused[256]

    cdef int c_learn(self, uint64_t key, int port, double now) noexcept nogil
    cdef int c_lookup(self, uint64_t key, double now) noexcept nogil
    cdef Py_ssize_t c_expire(self, double now) noexcept nogil
    cdef Py_ssize_t _find(self, uint64_t key) noexcept nogil
    cdef void _insert(self, uint64_t key, int port, double now) noexcept nogil
    cdef void _delete(self, Py_ssize_t i) noexcept nogil
    cdef bint _at_limit(self, int port) noexcept nogil
    cdef void _recount(self, int old, int new) noexcept nogil
    cdef void _rebuild(self) noexcept nogil
