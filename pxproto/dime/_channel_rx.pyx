# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The receiving end of the data channel, compiled: the API, frames, events and timers of the pure twin.

:class:`ChannelReceiver` is :class:`pxproto.dime.channel_rx.ChannelReceiver`, state for state (see
``pxproto/dime/_channel.pyx`` for the sender, the selection and the differential test).  It keeps the
messages being reassembled in a ring of slots, one per message the credit window allows; a message's
fragments are copied into one buffer for the whole message as they come (a single-fragment message keeps the
fragment's own bytes), with its fragments' offsets and lengths in C arrays: no Python object per fragment.
``receive_wire`` reads a DATA frame with ``px_view`` and ``*_wire`` acks are built with ``px_put_data``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE, _PyBytes_Resize
from cpython.ref cimport PyObject, Py_XDECREF, Py_INCREF
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from pxproto.dime._channel cimport _Ends, sdiff
from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH
from pxproto.fastpath.wirec cimport PxView

from collections import Counter

from pxproto.dime.channel import (
    MAX_CREDIT,
    MAX_FRAGMENTS,
    MessageDropped,
    MessageReceived,
    ReassemblyOverflow,
    WireOutput,
    wire_frame,
    wire_output,
)
from pxproto.dime.channel_rx import check_limits
from pxproto.dime.endpoint import Output
from pxproto.wire.codes import DataFlag
from pxproto.wire.frame import Data

BUILD_HASH = PXPROTO_BUILD_HASH.decode()

cdef int64_t ID_SPACE = 0x100000000  # message ids wrap at 2**32
cdef int _FIN_BIT = int(DataFlag.FIN)
cdef int _ACK_BIT = int(DataFlag.ACK)


cdef void _slot_clear(InMsg* m) noexcept:
    if m.count > 1:
        free(m.offs)
    Py_XDECREF(m.single)
    Py_XDECREF(m.whole)
    memset(m, 0, sizeof(InMsg))


cdef class ChannelReceiver(_Ends):
    """The receiving end of a data channel (compiled; see :class:`pxproto.dime.channel_rx.ChannelReceiver`)."""

    def __init__(self, local, peer, int channel, *, window=64, max_buffer_bytes=8 << 20, max_message_bytes=None,
                 ack_every=1, ack_delay=0.002, first_msg_id=0):
        _Ends.__init__(self, local, peer)
        max_message_bytes = check_limits(window, ack_every, max_buffer_bytes, max_message_bytes)
        self.channel = channel
        self.window = window
        self.max_buffer_bytes = max_buffer_bytes
        self.max_message_bytes = max_message_bytes
        self.ack_every = ack_every
        self.ack_delay = ack_delay
        self.max_window = window
        self.next_msg = <uint32_t>(first_msg_id % 0x100000000)
        self._grow_slots(window)

    def __dealloc__(self):
        cdef int64_t i
        if self.slots != NULL:
            for i in range(self.scap):
                if self.slots[i].count:
                    _slot_clear(&self.slots[i])
            free(self.slots)

    cdef void _grow_slots(self, int64_t window) except *:
        # one slot per message the window allows (ids next_msg .. next_msg + window - 1), a power of two
        cdef int64_t cap = 1, i
        cdef InMsg* new
        while cap < window:
            cap *= 2
        if cap <= self.scap:
            return
        new = <InMsg*>calloc(cap, sizeof(InMsg))
        if new == NULL:
            raise MemoryError()
        for i in range(self.scap):
            if self.slots[i].count:
                memcpy(&new[self.slots[i].msg_id & (cap - 1)], &self.slots[i], sizeof(InMsg))
                if self.slots[i].count == 1:  # its arrays point into the slot itself
                    self._inline(&new[self.slots[i].msg_id & (cap - 1)])
        free(self.slots)
        self.slots, self.scap = new, cap

    cdef void _inline(self, InMsg* m) noexcept:
        m.offs, m.lens, m.have = &m.off1, &m.len1, &m.have1

    cdef InMsg* _get(self, uint32_t msg_id) noexcept:
        cdef InMsg* m = &self.slots[msg_id & (self.scap - 1)]
        return m if m.count and m.msg_id == msg_id else NULL

    @property
    def counters(self):
        """Fragments taken, duplicates, drops by reason, messages delivered, acks sent (a snapshot)."""
        c = Counter()
        for k, v in (("fragments", self.c_fragments), ("duplicates", self.c_duplicates),
                     ("over_credit", self.c_over_credit), ("inconsistent", self.c_inconsistent),
                     ("overflow_dropped", self.c_overflow), ("messages_dropped", self.c_dropped),
                     ("messages", self.c_messages), ("acks_sent", self.c_acks), ("probes", self.c_probes),
                     ("not_data", self.c_not_data), ("malformed", self.c_malformed)):
            if v:
                c[k] = v
        return c

    @property
    def credit(self):
        return 0 if self.paused else self.window

    def ack_frame(self):
        """The acknowledgement of everything received so far, with the current credit."""
        self.wire = False
        return self._ack()

    cdef object _ack(self):
        self.c_acks += 1
        self.nunacked = 0
        self.has_deadline = False
        return self.data(self.channel, self.next_msg, b"", NULL, 0, 0, 0, 0, 0, <uint32_t>self.next_frag,
                         0 if self.paused else self.window, _ACK_BIT)

    def pause(self):
        """Stop granting credit (the application is not keeping up)."""
        self.paused = True

    def resume(self, now):
        """Grant credit again, and tell the sender."""
        self.wire = False
        self.paused = False
        return Output(frames=[self.ack_frame()], timer=self.get_timer())

    def set_window(self, window, now):
        """Change the credit window at run time (Param.CREDIT_WINDOW), and tell the sender."""
        if not 0 <= window <= MAX_CREDIT:
            raise ValueError(f"window {window} is not in 0..{MAX_CREDIT}")
        self.wire = False
        self.window = window
        if window > self.max_window:
            self._grow_slots(window)
            self.max_window = window
        return Output(frames=[self.ack_frame()], timer=self.get_timer())

    def receive(self, frame, double now):
        """Take a fragment (or a window probe) from the sender."""
        self.wire = False
        out = Output()
        body = frame.body
        if type(body) is not Data or body.channel != self.channel:
            self.c_not_data += 1
        elif body.frag_count == 0:
            self.c_probes += 1
            out.frames.append(self._ack())
        else:
            payload = body.payload
            if type(payload) is not bytes:
                payload = bytes(payload)
            self._on_fragment(body.msg_id, body.frag_index, body.frag_count, body.msg_len, body.frag_offset,
                              body.flags & _FIN_BIT, payload, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
                              now, out)
        out.timer = self.deadline if self.has_deadline else None
        return out

    def receive_wire(self, raw, double now):
        """:meth:`receive` of an encoded frame (read in C; ProtocolError when it does not decode)."""
        cdef PxView v
        if type(raw) is not bytes:
            raw = bytes(raw)
        if not self.view(raw, &v):
            return wire_output(self.receive(wire_frame(raw), now))  # the codec's error, or not DATA
        out = WireOutput()
        self.take_view(PyBytes_AS_STRING(raw), &v, now, out)
        out.timer = self.deadline if self.has_deadline else None
        return out

    cdef void take_view(self, const char* p, PxView* v, double now, object out) except *:
        """:meth:`receive_wire` of a DATA frame at ``p`` that ``px_view`` read into ``v`` (its bytes are read before
        this returns: a receive buffer reused for the next frame will do); acks and events go into ``out``.  With
        ``bare`` set, a one-fragment message delivered by this very frame is not copied: its event is
        ``(msg_id, None, fin)`` and ``lent_ptr``/``lent_len`` point at its payload in ``p``'s buffer (read it before
        that buffer is reused; at most one such event per call)."""
        self.wire = True
        if v.channel != <unsigned int>self.channel:
            self.c_not_data += 1
        elif v.frag_count == 0:
            self.c_probes += 1
            out.frames.append(self._ack())
        else:
            self._on_fragment(v.msg_id, v.frag_index, v.frag_count, v.msg_len, v.frag_offset, v.data_flags & _FIN_BIT,
                              None, p + v.payload, v.payload_len, now, out)

    cdef int64_t _ahead(self, uint32_t msg_id, int64_t d, int64_t index) noexcept:
        """A lower bound on how many fragments separate this one from the next one needed."""
        if d == 0:
            return index - self.next_frag
        cdef InMsg* m = self._get(self.next_msg)
        cdef int64_t gap = (m.count if m != NULL else 1) - self.next_frag, k
        for k in range(1, d):
            m = self._get(self.next_msg + <uint32_t>k)
            gap += m.count if m != NULL else 1
        return gap + index

    cdef void _on_fragment(self, int64_t msg_id, int64_t index, int64_t count, int64_t msg_len, int64_t off,
                           int fin, object payload, const char* data, Py_ssize_t n, double now, object out) except *:
        # payload: the fragment's bytes as an object when the caller has one (else None: data, n)
        cdef list frames = out.frames
        self.c_fragments += 1
        if (index >= count or off + n > msg_len or not 0 <= msg_id < ID_SPACE or count > MAX_FRAGMENTS
                or msg_len >= ID_SPACE):
            self.c_malformed += 1  # nothing the codec lets through: a Data built by hand
            return
        cdef uint32_t mid = <uint32_t>msg_id
        cdef int64_t d = sdiff(mid, self.next_msg)
        if d < 0 or (d == 0 and index < self.next_frag):
            self.c_duplicates += 1
            frames.append(self._ack())
            return
        if d >= self.max_window or self._ahead(mid, d, index) >= self.max_window:
            self.c_over_credit += 1
            return
        cdef InMsg* m = self._get(mid)
        if m == NULL:
            m = &self.slots[mid & (self.scap - 1)]
            m.msg_id, m.msg_len, m.count = mid, msg_len, count
            if count == 1:
                self._inline(m)
            else:
                m.offs = <uint32_t*>calloc(count, 9)
                if m.offs == NULL:
                    m.count = 0
                    raise MemoryError()
                m.lens = m.offs + count
                m.have = <uint8_t*>(m.lens + count)
            m.oversize = msg_len > self.max_message_bytes
        elif m.msg_len != msg_len or m.count != count:
            self.c_inconsistent += 1
            return
        if m.have[index]:
            self.c_duplicates += 1
            frames.append(self._ack())
            return
        cdef Py_ssize_t keep = 0 if m.oversize else n
        if keep and not self._make_room(mid, keep, out):
            return
        m = self._get(mid)  # (the slot array does not move; this is the same slot)
        m.have[index] = 1
        m.offs[index] = <uint32_t>off
        m.lens[index] = <uint32_t>keep
        m.nfrags += 1
        cdef bint in_order = d == 0 and index == self.next_frag
        if keep:  # (bare, a one-fragment message in order is delivered below, before the caller's buffer is reused)
            self._store(m, off, payload, data, keep, self.bare and in_order and payload is None)
        m.size += keep
        m.fin = m.fin or fin
        self.buffered += keep
        cdef int64_t delivered = self._deliver(out.events) if in_order else 0
        self.nunacked += 1
        if not in_order or delivered or self.nunacked >= self.ack_every:
            frames.append(self._ack())
        elif not self.has_deadline:
            self.deadline = now + self.ack_delay
            self.has_deadline = True

    cdef void _store(self, InMsg* m, int64_t off, object payload, const char* data, Py_ssize_t n, bint lend) except *:
        # lend: the bytes at ``data`` stay valid until the message is delivered (a one-fragment one is not copied)
        cdef int64_t cap
        if m.count == 1:
            if lend:
                m.lent = data
                return
            if payload is None:
                payload = PyBytes_FromStringAndSize(data, n)
            Py_INCREF(payload)
            m.single = <PyObject*>payload
            return
        if m.whole == NULL:
            # A bytes object for the message from its first fragment held: of msg_len at once when that fragment is
            # at least half of it, else grown as fragments come (doubling, at most twice what is held): it is
            # delivered as it is once complete (no copy on delivery).
            if m.msg_len <= max(2 * (off + n), <int64_t>65536):
                cap = m.msg_len
            else:
                cap = max(off + n, min(m.msg_len, <int64_t>65536))
            whole = PyBytes_FromStringAndSize(NULL, cap)
            Py_INCREF(whole)
            m.whole = <PyObject*>whole
            m.cap = cap
        elif off + n > m.cap:
            cap = max(off + n, min(m.msg_len, max(2 * m.cap, <int64_t>65536)))
            try:
                _PyBytes_Resize(&m.whole, cap)  # (only the slot holds it: resized in place or moved by realloc)
            except MemoryError:
                m.cap = 0
                m.oversize = 1  # what it held is gone: dropped, with a reason, once complete
                raise
            m.cap = cap
        memcpy(PyBytes_AS_STRING(<object>m.whole) + off, data, n)

    cdef bint _make_room(self, uint32_t msg_id, int64_t size, object out) except -1:
        if self.buffered + size <= self.max_buffer_bytes:
            return True
        cdef int64_t dropped = 1, k
        cdef InMsg* v
        if msg_id == self.next_msg:
            # The next message always fits: evict what lies furthest ahead.
            dropped = 0
            for k in range(self.scap - 1, 0, -1):
                if self.buffered + size <= self.max_buffer_bytes:
                    break
                v = self._get(self.next_msg + <uint32_t>k)
                if v != NULL:
                    self.buffered -= v.size
                    dropped += v.nfrags
                    _slot_clear(v)
        self.c_overflow += dropped
        out.events.append(ReassemblyOverflow(self.channel, dropped, self.buffered, self.max_buffer_bytes))
        return self.buffered + size <= self.max_buffer_bytes

    cdef int64_t _deliver(self, list events) except -1:
        cdef int64_t delivered = 0
        cdef InMsg* m = self._get(self.next_msg)
        while m != NULL:
            while self.next_frag < m.count and m.have[self.next_frag]:
                self.next_frag += 1
            if self.next_frag < m.count:
                break
            self.buffered -= m.size
            events.append(self._complete(m))
            _slot_clear(m)
            delivered += 1
            self.next_msg += 1
            self.next_frag = 0
            m = self._get(self.next_msg)
        return delivered

    cdef object _complete(self, InMsg* m):
        cdef str reason = None
        cdef int64_t expected = 0, i
        if m.oversize:
            reason = f"{m.msg_len} bytes exceed the {self.max_message_bytes}-byte reassembly limit"
        else:
            for i in range(m.count):
                if m.offs[i] != expected:
                    reason = f"fragments do not join up at byte {expected} (one starts at {m.offs[i]})"
                    break
                expected += m.lens[i]
            else:
                if expected != m.msg_len:
                    reason = f"fragments hold {expected} bytes, msg_len says {m.msg_len}"
        if reason is not None:
            self.c_dropped += 1
            return MessageDropped(self.channel, m.msg_id, m.msg_len, reason)
        self.c_messages += 1
        if m.count == 1 and m.lent != NULL:  # bare (see take_view): the caller reads the payload where it lies
            self.lent_ptr, self.lent_len = m.lent, m.msg_len
            self.lent += 1
            return (m.msg_id, None, bool(m.fin))
        if m.count == 1:
            payload = <object>m.single if m.single != NULL else b""
        elif m.whole != NULL:
            payload = <object>m.whole  # _slot_clear drops the slot's reference, the event keeps its own
        else:
            payload = b""  # (fragments that hold no bytes)
        if self.bare:  # (a tuple costs less than the dataclass: the node's wire loop makes the event only if needed)
            return (m.msg_id, payload, bool(m.fin))
        return MessageReceived(self.channel, m.msg_id, payload, bool(m.fin))

    cdef object _timer(self, double now, object out):
        # Send a delayed acknowledgement that is due.
        if self.has_deadline and now >= self.deadline:
            out.frames.append(self._ack())
        out.timer = self.deadline if self.has_deadline else None
        return out
