# cython: language_level=3, boundscheck=False, wraparound=False
"""The heartbeat sender: a real-time C thread that puts a prepared frame on the wire at its time.

Measured on this machine (2 vCPUs, Linux 6.18): a normal-priority process
sleeping to a 100 ms schedule on a core where another process spins wakes
4-20 ms late even when the spinner is nice 19 or SCHED_IDLE; a SCHED_FIFO
sleeper wakes within 0.1 ms.  A whole DIME at real-time priority would starve
its MICE (and the machine) whenever the data path is busy, so only this
thread is: it sleeps until the deadline (``pthread_cond_timedwait`` on
CLOCK_MONOTONIC, the clock of ``time.monotonic``), sends the bytes it was
given with one ``send`` (``sendto`` on an unconnected socket) and goes back
to sleep; it never takes the GIL.  The DIME's loop builds and signs each
heartbeat one period ahead and arms it here.  Its SCHED_FIFO priority (30 by default) is above pxswitch's real-time
forwarding loop (10): a switch busy on the same core must not hold a
heartbeat back, and one frame per period costs the switch nothing.
:mod:`pxproto.node.beat` has the pure-Python twin.
"""

from libc.string cimport memcpy
from libc.stdlib cimport calloc, free
from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_MONOTONIC

cdef extern from "<sched.h>" nogil:
    cdef struct sched_param:
        int sched_priority
    int SCHED_FIFO

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    ctypedef struct pthread_condattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* m, void* attr)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_condattr_init(pthread_condattr_t* a)
    int pthread_condattr_setclock(pthread_condattr_t* a, int clk)
    int pthread_cond_init(pthread_cond_t* c, pthread_condattr_t* a)
    int pthread_cond_signal(pthread_cond_t* c)
    int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m)
    int pthread_cond_timedwait(pthread_cond_t* c, pthread_mutex_t* m, const timespec* t)
    int pthread_create(pthread_t* t, void* attr, void* (*fn)(void*) noexcept nogil, void* arg)
    int pthread_join(pthread_t t, void** ret)
    int pthread_setschedparam(pthread_t t, int policy, const sched_param* p)

cdef extern from "<sys/socket.h>" nogil:
    ssize_t sendto(int fd, const void* buf, size_t n, int flags, const void* addr, unsigned int addrlen)
    int MSG_DONTWAIT

DEF BUF = 4096


cdef struct State:
    pthread_mutex_t mu
    pthread_cond_t cv
    int fd
    unsigned char addr[28]
    unsigned int addrlen
    int stop
    int armed
    double at
    size_t n
    unsigned char buf[BUF]
    int sent
    unsigned long gen
    double sent_at
    long errors


cdef double now_s() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef void* run(void* arg) noexcept nogil:
    cdef State* st = <State*>arg
    cdef timespec until
    cdef unsigned char out[BUF]
    cdef size_t n
    cdef double at
    cdef unsigned long gen
    pthread_mutex_lock(&st.mu)
    while not st.stop:
        if not st.armed:
            pthread_cond_wait(&st.cv, &st.mu)
            continue
        at = st.at
        if now_s() < at:
            until.tv_sec = <time_t>at
            until.tv_nsec = <long>((at - <double>until.tv_sec) * 1e9)
            pthread_cond_timedwait(&st.cv, &st.mu, &until)
            continue  # woken early (re-armed, taken back, stopped) or on time: look again
        n = st.n
        gen = st.gen
        memcpy(out, st.buf, n)
        st.armed = 0
        pthread_mutex_unlock(&st.mu)
        if sendto(st.fd, out, n, MSG_DONTWAIT, <void*>st.addr if st.addrlen else NULL, st.addrlen) < 0:
            pthread_mutex_lock(&st.mu)
            st.errors += 1
            continue  # not sent: take() reports it, the loop sends it itself
        at = now_s()
        pthread_mutex_lock(&st.mu)
        if st.gen == gen:  # still the frame the loop armed (not replaced or taken back meanwhile)
            st.sent = 1
            st.sent_at = at
    pthread_mutex_unlock(&st.mu)
    return NULL


cdef class Beater:
    """Sends one armed frame at its deadline from a real-time thread (when the OS allows one)."""

    cdef State* st
    cdef pthread_t th
    cdef bint running
    cdef public bint realtime
    """Whether the thread got SCHED_FIFO (root); else it runs at normal priority."""

    def __cinit__(self, int fd, int priority=30, bytes dest=b""):
        """``dest``: the raw struct sockaddr to send to on an unconnected socket (empty: the connected peer)."""
        cdef pthread_condattr_t ca
        cdef sched_param sp
        if len(dest) > 28:
            raise ValueError(f"a heartbeat destination is a sockaddr of at most 28 bytes, not {len(dest)}")
        self.st = <State*>calloc(1, sizeof(State))
        if self.st == NULL:
            raise MemoryError("heartbeat sender state")
        self.st.fd = fd
        memcpy(self.st.addr, <const unsigned char*>dest, len(dest))
        self.st.addrlen = len(dest)
        pthread_mutex_init(&self.st.mu, NULL)
        pthread_condattr_init(&ca)
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)
        pthread_cond_init(&self.st.cv, &ca)
        if pthread_create(&self.th, NULL, run, <void*>self.st) != 0:
            raise OSError("cannot start the heartbeat sender thread")
        self.running = True
        sp.sched_priority = priority
        self.realtime = pthread_setschedparam(self.th, SCHED_FIFO, &sp) == 0

    def arm(self, bytes frame, double at):
        """Send ``frame`` at monotonic time ``at`` (replaces a frame armed and not yet sent)."""
        cdef Py_ssize_t n = len(frame)
        if n > BUF:
            raise ValueError(f"a heartbeat frame of {n} bytes does not fit the sender's {BUF}-byte buffer")
        pthread_mutex_lock(&self.st.mu)
        memcpy(self.st.buf, <const unsigned char*>frame, n)
        self.st.n = n
        self.st.at = at
        self.st.armed = 1
        self.st.sent = 0
        self.st.gen += 1
        pthread_cond_signal(&self.st.cv)
        pthread_mutex_unlock(&self.st.mu)

    def take(self):
        """(sent, when): whether the armed frame went out and at what monotonic time; disarms it if not."""
        pthread_mutex_lock(&self.st.mu)
        sent, at = bool(self.st.sent), self.st.sent_at
        self.st.armed = 0
        self.st.sent = 0
        self.st.gen += 1
        pthread_cond_signal(&self.st.cv)
        pthread_mutex_unlock(&self.st.mu)
        return sent, at

    @property
    def errors(self):
        return self.st.errors

    def close(self):
        if not self.running:
            return
        pthread_mutex_lock(&self.st.mu)
        self.st.stop = 1
        pthread_cond_signal(&self.st.cv)
        pthread_mutex_unlock(&self.st.mu)
        with nogil:
            pthread_join(self.th, NULL)
        self.running = False

    def __dealloc__(self):
        if self.st != NULL:
            if self.running:
                self.close()
            free(self.st)
            self.st = NULL


BUILD_HASH = PXPROTO_BUILD_HASH.decode()
"""Source hash of this build (pxproto/fastpath/buildhash.py); pxproto.fastpath.select checks it."""
