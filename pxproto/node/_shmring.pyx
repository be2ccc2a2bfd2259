# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A single-producer/single-consumer message ring in shared memory (one direction of the DIME <-> MICE hand-over).

Layout of the mapping (``HEADER`` bytes, then ``cap`` bytes of messages):

- ``cap`` u64 at 0; ``head`` u64 at 64 (bytes published by the writer, ever); ``tail`` u64 at 128 (bytes released
  by the reader, ever); ``rsleep`` u32 at 192 (the reader waits for a wake); ``wsleep`` u32 at 256 (the writer waits
  for room).  Each index on its own cache line.
- a message at position ``pos = index % cap`` (8-aligned): ``length u32 | flags u32 | bytes``, padded to 8; flags 1
  is a wrap marker (the rest of the ring up to ``cap`` is skipped).  A message is always contiguous.  A writer given a
  ``soft`` size wraps a message of up to half of it once it would end past ``soft`` (the rest of the ring serves only
  larger ones): the bytes the two sides touch over and over stay in cache.

Ordering (``__atomic`` builtins): the writer copies the message in, then publishes ``head`` with a release store; the
reader acquire-loads ``head``, reads, then releases the space with a release store of ``tail``.  Nothing half-written
is ever below ``head``, so a writer killed mid-message leaves nothing visible.

Wake-ups (no lost wake-up): a side about to block stores its flag (``rsleep`` / ``wsleep``) = 1, issues a full
fence, then checks the ring again; the other side, after its release store of ``head`` / ``tail``, issues a full
fence and exchanges the flag with 0: it sends a wake (one byte on the socketpair) only when it read 1.  Either the
sleeper sees the new index or the other side sees the flag (both fences are seq_cst).  The reader looks at
``wsleep`` only once the ring holds at most half the soft size (hysteresis, as a socket's writer is woken only once
its buffer is half free); a writer that saw too little room sleeps until then, and at the latest until the ring is
empty, when any message fits.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH

BUILD_HASH = PXPROTO_BUILD_HASH.decode()

cdef extern from *:
    """
    #include <stdint.h>
    static inline uint64_t pxr_load_acq(uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void pxr_store_rel(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void pxr_flag_set(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline uint32_t pxr_flag_take(uint32_t* p) { return __atomic_exchange_n(p, 0, __ATOMIC_SEQ_CST); }
    static inline void pxr_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    uint64_t pxr_load_acq(uint64_t* p) nogil
    void pxr_store_rel(uint64_t* p, uint64_t v) nogil
    void pxr_flag_set(uint32_t* p, uint32_t v) nogil
    uint32_t pxr_flag_take(uint32_t* p) nogil
    void pxr_fence() nogil

DEF O_CAP = 0
DEF O_HEAD = 64
DEF O_TAIL = 128
DEF O_RSLEEP = 192
DEF O_WSLEEP = 256
DEF HDR = 320
DEF MSG_HDR = 8
DEF WRAP = 1
DEF MAX_PARTS = 256

HEADER = HDR
"""Bytes of the ring's header at the start of its mapping."""
FULL, PUT, PUT_WAKE = 0, 1, 2
""":meth:`Ring.put` results: no room (nothing written), published, published and the reader must be woken."""


cdef inline Py_ssize_t _pad(Py_ssize_t n) noexcept nogil:
    return (n + 7) & ~(<Py_ssize_t>7)


cdef class Ring:
    """One direction over a writable shared buffer (an ``mmap`` of a memfd): :meth:`put` on the writer's side,
    :meth:`peek` / :meth:`release` on the reader's.  One writer process and one reader process at a time."""

    cdef Py_buffer buf
    cdef bint held
    cdef uint8_t* base
    cdef uint8_t* data
    cdef uint64_t cap
    cdef uint64_t soft
    """Messages of up to half this size wrap once past it: the ring's working set stays this small (in cache) unless
    larger messages come."""
    cdef uint64_t rpos
    """The reader's next index (past the message :meth:`peek` gave, once released)."""
    cdef uint64_t rnext
    cdef readonly object mem
    """The shared buffer (its views are what :meth:`peek` hands out)."""
    cdef object view

    def __cinit__(self, mem, bint init=False, Py_ssize_t soft=0):
        PyObject_GetBuffer(mem, &self.buf, PyBUF_SIMPLE | PyBUF_WRITABLE)
        self.held = True
        if self.buf.len < HDR + 64:
            raise ValueError(f"shared ring of {self.buf.len} bytes: the header alone takes {HDR}")
        self.base = <uint8_t*>self.buf.buf
        self.data = self.base + HDR
        if init:  # (every page touched now: charged to the creator, not faulted in later by the other side)
            memset(self.base, 0, self.buf.len)
            (<uint64_t*>(self.base + O_CAP))[0] = (<uint64_t>(self.buf.len - HDR)) & ~(<uint64_t>7)
        self.cap = (<uint64_t*>(self.base + O_CAP))[0]
        if self.cap == 0 or self.cap % 8 or self.cap > <uint64_t>(self.buf.len - HDR):
            raise ValueError(f"shared ring: header says {self.cap} bytes of {self.buf.len - HDR}")
        self.soft = self.cap if soft <= 0 or <uint64_t>soft > self.cap else (<uint64_t>soft) & ~(<uint64_t>7)
        self.rpos = self.rnext = (<uint64_t*>(self.base + O_TAIL))[0]
        self.mem = mem
        self.view = memoryview(mem).toreadonly()  # what peek hands out is read only: a reader never writes the ring

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.buf)

    def close(self):
        """Let go of the buffer (views handed out by :meth:`peek` keep it alive on their own)."""
        if self.held:
            self.view = None
            self.held = False
            PyBuffer_Release(&self.buf)
            self.base = self.data = NULL

    cdef int _live(self) except -1:
        if not self.held:
            raise ValueError("shared ring is closed")
        return 0

    cdef int64_t _skip(self, uint64_t head, uint64_t need) noexcept:
        """Bytes to skip (a wrap) before a message taking ``need`` bytes from ``head``, or -1 when there is no room."""
        cdef uint64_t tail = pxr_load_acq(<uint64_t*>(self.base + O_TAIL))
        cdef uint64_t pos = head % self.cap
        cdef uint64_t limit = self.soft if need <= self.soft // 2 else self.cap
        cdef uint64_t skip = 0 if pos + need <= limit else self.cap - pos
        if skip + need > self.cap - (head - tail):
            return -1
        return <int64_t>skip

    @property
    def capacity(self):
        return self.cap

    @property
    def largest(self):
        """The longest message that always fits (half the ring, less a header: a wrap may waste the rest)."""
        return <Py_ssize_t>(self.cap // 2) - MSG_HDR - 8

    def used(self):
        """Bytes published and not released (message headers and padding included)."""
        self._live()
        return pxr_load_acq(<uint64_t*>(self.base + O_HEAD)) - pxr_load_acq(<uint64_t*>(self.base + O_TAIL))

    # ------------------------------------------------------------------ writer

    def put(self, parts):
        """Copy one message (a bytes-like object, or a list/tuple of them gathered in order) into the ring and publish
        it whole; FULL (nothing written) when there is no room now, else PUT, or PUT_WAKE when the reader had asked
        to be woken.  ValueError for an empty message or one longer than :attr:`largest`."""
        cdef Py_buffer views[MAX_PARTS]
        cdef Py_ssize_t k = 0, i, total = 0, off
        cdef uint64_t head, pos, need
        cdef int64_t skip
        cdef int res = PUT
        self._live()
        single = not isinstance(parts, (list, tuple))
        cdef Py_ssize_t count = 1 if single else len(parts)
        if count > MAX_PARTS:
            parts = [b"".join(parts)]
            count, single = 1, False
        try:
            for i in range(count):
                PyObject_GetBuffer(parts if single else parts[i], &views[i], PyBUF_SIMPLE)
                k += 1
                total += views[i].len
            if total <= 0:
                raise ValueError("shared ring: an empty message")
            if total > <Py_ssize_t>(self.cap // 2) - MSG_HDR - 8:
                raise ValueError(f"shared ring: a message of {total} bytes, at most {self.cap // 2 - MSG_HDR - 8} fit")
            head = (<uint64_t*>(self.base + O_HEAD))[0]  # (only this side writes it)
            need = MSG_HDR + <uint64_t>_pad(total)
            skip = self._skip(head, need)
            if skip < 0:
                return FULL
            pos = head % self.cap
            if skip:
                (<uint32_t*>(self.data + pos))[0] = 0
                (<uint32_t*>(self.data + pos))[1] = WRAP
                pos = 0
            (<uint32_t*>(self.data + pos))[0] = <uint32_t>total
            (<uint32_t*>(self.data + pos))[1] = 0
            off = <Py_ssize_t>pos + MSG_HDR
            with nogil:
                for i in range(k):
                    memcpy(self.data + off, views[i].buf, views[i].len)
                    off += views[i].len
            pxr_store_rel(<uint64_t*>(self.base + O_HEAD), head + <uint64_t>skip + need)
            pxr_fence()
            if pxr_flag_take(<uint32_t*>(self.base + O_RSLEEP)):
                res = PUT_WAKE
            return res
        finally:
            for i in range(k):
                PyBuffer_Release(&views[i])

    def writer_sleep(self, Py_ssize_t size):
        """About to wait for room for a message of ``size`` bytes: set the flag, then look again; True when it fits
        now (the flag is cleared again and the caller retries :meth:`put`)."""
        self._live()
        pxr_flag_set(<uint32_t*>(self.base + O_WSLEEP), 1)
        pxr_fence()
        if self._skip((<uint64_t*>(self.base + O_HEAD))[0], MSG_HDR + <uint64_t>_pad(size)) >= 0:
            pxr_flag_take(<uint32_t*>(self.base + O_WSLEEP))
            return True
        return False

    def writer_awake(self):
        """The writer stopped waiting for room."""
        self._live()
        pxr_flag_take(<uint32_t*>(self.base + O_WSLEEP))

    # ------------------------------------------------------------------ reader

    cdef Py_ssize_t _next(self) except -2:
        """The data offset of the next message, its length in ``rnext`` bookkeeping; -1 when none is published."""
        cdef uint64_t head = pxr_load_acq(<uint64_t*>(self.base + O_HEAD))
        cdef uint64_t pos
        cdef uint32_t length
        if self.rpos == head:
            return -1
        pos = self.rpos % self.cap
        if (<uint32_t*>(self.data + pos))[1] == WRAP:
            self.rpos += self.cap - pos
            pos = 0
            if self.rpos == head:
                raise ValueError(f"shared ring: a wrap marker with no message after it at {self.rpos}")
        length = (<uint32_t*>(self.data + pos))[0]
        if length == 0 or MSG_HDR + <uint64_t>_pad(length) > head - self.rpos or pos + MSG_HDR + length > self.cap:
            raise ValueError(f"shared ring: a message of {length} bytes at {self.rpos} (published up to {head})")
        self.rnext = self.rpos + MSG_HDR + <uint64_t>_pad(length)
        return <Py_ssize_t>pos

    def peek(self):
        """A view of the next published message (None when there is none), good until :meth:`release`."""
        self._live()
        cdef Py_ssize_t pos = self._next()
        if pos < 0:
            return None
        cdef Py_ssize_t start = HDR + pos + MSG_HDR
        return self.view[start : start + (<uint32_t*>(self.data + pos))[0]]

    def release(self):
        """Give the space of the message :meth:`peek` gave back to the writer; True when the writer had asked to be
        woken and the ring is down to half its soft size (the caller sends the wake).  Waking a writer at once made
        it write one message and wait again, two context switches per message; the last release of a drained ring
        always wakes it, so a writer waiting for a large message's room is woken too."""
        self._live()
        if self.rnext == self.rpos:
            return False
        self.rpos = self.rnext
        pxr_store_rel(<uint64_t*>(self.base + O_TAIL), self.rpos)
        pxr_fence()
        if pxr_load_acq(<uint64_t*>(self.base + O_HEAD)) - self.rpos > self.soft // 2:
            return False
        return pxr_flag_take(<uint32_t*>(self.base + O_WSLEEP)) != 0

    def reader_sleep(self):
        """About to wait for a message: set the flag, then look again; True when one is there now (the flag is
        cleared again)."""
        self._live()
        pxr_flag_set(<uint32_t*>(self.base + O_RSLEEP), 1)
        pxr_fence()
        if pxr_load_acq(<uint64_t*>(self.base + O_HEAD)) != self.rpos:
            pxr_flag_take(<uint32_t*>(self.base + O_RSLEEP))
            return True
        return False

    def reader_awake(self):
        """The reader stopped waiting."""
        self._live()
        pxr_flag_take(<uint32_t*>(self.base + O_RSLEEP))

    def pending(self):
        """Whether a message is published and not yet released (the reader's view)."""
        self._live()
        return pxr_load_acq(<uint64_t*>(self.base + O_HEAD)) != self.rpos
