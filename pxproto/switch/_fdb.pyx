# cython: language_level=3
"""The compiled twin of :class:`pxproto.switch.fdb.PyFdb`: same interface, same answers.

Open addressing with linear probing over a power-of-two table at least twice
the capacity; deleted slots are reclaimed by an in-place rebuild when they
pile up.  All of it runs without the GIL, so the AF_PACKET loop learns and
looks up at C level.
"""

from libc.stdint cimport int32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH

cdef double FULL_SWEEP_PERIOD = 1.0
DEF MAXP = 256
MAX_PORT_ID = MAXP
"""Port ids the per-port learning limit covers (a port id at or above it has no limit)."""


cdef inline Py_ssize_t _slot(uint64_t key, Py_ssize_t mask) noexcept nogil:
    return <Py_ssize_t>((key * <uint64_t>0x9E3779B97F4A7C15) >> 20) & mask


cdef class Fdb:
    def __cinit__(self, Py_ssize_t capacity=8192, double aging=300.0):
        if capacity < 1:
            raise ValueError(f"fdb capacity {capacity}: must be at least 1")
        if aging <= 0:
            raise ValueError(f"fdb aging {aging}: must be positive")
        cdef Py_ssize_t size = 16
        while size < 2 * capacity:
            size *= 2
        self.tab = <FdbEntry*>calloc(size, sizeof(FdbEntry))
        if self.tab == NULL:
            raise MemoryError()
        self.size = size
        self.cap = capacity
        self.aging = aging
        self.full_sweep_at = -1e300

    def __dealloc__(self):
        free(self.tab)

    @property
    def capacity(self):
        return self.cap

    def __len__(self):
        return self.count

    cdef Py_ssize_t _find(self, uint64_t key) noexcept nogil:
        cdef Py_ssize_t mask = self.size - 1
        cdef Py_ssize_t i = _slot(key, mask)
        while self.tab[i].state != 0:
            if self.tab[i].state == 1 and self.tab[i].key == key:
                return i
            i = (i + 1) & mask
        return -1

    cdef bint _at_limit(self, int port) noexcept nogil:
        if 0 <= port < MAXP and self.port_limit[port] and self.port_count[port] >= self.port_limit[port]:
            self.port_refused[port] += 1
            return True
        return False

    cdef void _recount(self, int old, int new) noexcept nogil:
        if 0 <= old < MAXP:
            self.port_count[old] -= 1
        if 0 <= new < MAXP:
            self.port_count[new] += 1

    cdef void _insert(self, uint64_t key, int port, double now) noexcept nogil:
        cdef Py_ssize_t mask = self.size - 1
        cdef Py_ssize_t i = _slot(key, mask)
        while self.tab[i].state == 1:
            i = (i + 1) & mask
        if self.tab[i].state == 2:
            self.deleted -= 1
        self.tab[i].key = key
        self.tab[i].port = port
        self.tab[i].seen = now
        self.tab[i].state = 1
        self.count += 1

    cdef void _delete(self, Py_ssize_t i) noexcept nogil:
        self.generation += 1
        self._recount(self.tab[i].port, -1)
        self.tab[i].state = 2
        self.count -= 1
        self.deleted += 1

    cdef void _rebuild(self) noexcept nogil:
        """Drop deleted slots: re-insert the live entries (the table stays the same size)."""
        cdef Py_ssize_t n = self.size, i
        cdef FdbEntry* old = <FdbEntry*>calloc(n, sizeof(FdbEntry))
        if old == NULL:
            return
        memcpy(old, self.tab, n * sizeof(FdbEntry))
        for i in range(n):
            self.tab[i].state = 0
        self.count = 0
        self.deleted = 0
        for i in range(n):
            if old[i].state == 1:
                self._insert(old[i].key, old[i].port, old[i].seen)
        free(old)

    cdef int c_learn(self, uint64_t key, int port, double now) noexcept nogil:
        cdef Py_ssize_t i = self._find(key)
        cdef bint fresh
        if i >= 0:
            fresh = now - self.tab[i].seen <= self.aging
            if self.tab[i].port != port and self._at_limit(port):
                return -2  # the new port has learned all it may: the entry stays where it was
            self.tab[i].seen = now
            if self.tab[i].port != port:
                self._recount(self.tab[i].port, port)
            if not fresh:
                self.generation += self.tab[i].port != port
                self.tab[i].port = port
                return 1
            if self.tab[i].port != port:
                self.tab[i].port = port
                self.moves += 1
                self.generation += 1
                return 2
            return 0
        if self._at_limit(port):
            return -2
        if self.count >= self.cap:
            if now < self.full_sweep_at:
                self.refused += 1
                return -1
            self.full_sweep_at = now + FULL_SWEEP_PERIOD
            if self.c_expire(now) == 0:
                self.refused += 1
                return -1
        if self.count + self.deleted + 1 > (self.size * 3) // 4:
            self._rebuild()
        self._insert(key, port, now)
        self._recount(-1, port)
        self.generation += 1
        return 1

    cdef int c_lookup(self, uint64_t key, double now) noexcept nogil:
        cdef Py_ssize_t i = self._find(key)
        if i < 0 or now - self.tab[i].seen > self.aging:
            return -1
        return self.tab[i].port

    cdef Py_ssize_t c_expire(self, double now) noexcept nogil:
        cdef Py_ssize_t i, n = 0
        for i in range(self.size):
            if self.tab[i].state == 1 and now - self.tab[i].seen > self.aging:
                self._delete(i)
                n += 1
        return n

    def set_limit(self, int port, int limit):
        """At most ``limit`` entries learned on ``port`` (0: no limit); a new key past it is refused and counted."""
        if not 0 <= port < MAXP:
            raise ValueError(f"port id {port}: the learning limit covers ids below {MAXP}")
        if limit < 0:
            raise ValueError(f"learning limit {limit}: 0 (none) or more")
        self.port_limit[port] = limit

    def port_entries(self, int port):
        """Entries learned on ``port`` now."""
        return self.port_count[port] if 0 <= port < MAXP else 0

    def limit_refused(self, int port):
        """Keys refused on ``port`` by its learning limit."""
        return self.port_refused[port] if 0 <= port < MAXP else 0

    def reset_port(self, int port):
        """Forget ``port``'s limit and refusal count (its id is being reused)."""
        if 0 <= port < MAXP:
            self.port_limit[port] = 0
            self.port_refused[port] = 0

    def learn(self, uint64_t key, int port, double now):
        return self.c_learn(key, port, now)

    def lookup(self, uint64_t key, double now):
        return self.c_lookup(key, now)

    def expire(self, double now):
        return self.c_expire(now)

    def flush_port(self, int port):
        cdef Py_ssize_t i, n = 0
        for i in range(self.size):
            if self.tab[i].state == 1 and self.tab[i].port == port:
                self._delete(i)
                n += 1
        return n

    def entries(self, double now):
        cdef Py_ssize_t i
        return [
            (self.tab[i].key, self.tab[i].port, now - self.tab[i].seen)
            for i in range(self.size)
            if self.tab[i].state == 1 and now - self.tab[i].seen <= self.aging
        ]


BUILD_HASH = PXPROTO_BUILD_HASH.decode()
"""Source hash of this build (pxproto/fastpath/buildhash.py); pxproto.fastpath.select checks it."""
