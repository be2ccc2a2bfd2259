# cython: language_level=3
"""The compiled item flow, reachable at C level: the node's wire receive loop (``pxproto/node/_fastrx.pyx``) hands
a delivered item message to :func:`arrive_at` where it lies in its receive buffer, no bytes made of it."""

from libc.stdint cimport uint8_t


cdef list arrive_at(const uint8_t* p, Py_ssize_t n, object message, object flow, object up, object queue)
