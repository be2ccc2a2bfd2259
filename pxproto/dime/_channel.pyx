# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The data channel's two machines, compiled: the same API, frames, events and timers as the pure twins.

:class:`ChannelSender` is :class:`pxproto.dime.channel.ChannelSender` and :class:`ChannelReceiver` is
:class:`pxproto.dime.channel_rx.ChannelReceiver`, state for state; :mod:`pxproto.dime.fastchannel`
picks these when built (``PXPROTO_PURE=1``: the twins), and ``tests/test_channel_diff.py`` runs both
side by side over lossy, reordering, duplicating links and hostile fragments and compares every
frame, event, timer and counter.

What differs is only how the state is held:

- the sender keeps its messages in one C array (id, stream position, fragment count) beside a list
  of their payloads, and the send time of each fragment in flight in a ring indexed by position
  (no dict, set or Counter per fragment);
- the receiver keeps the messages being reassembled in a ring of slots, one per message the credit
  window allows; a message's fragments are copied into one buffer for the whole message (a
  single-fragment message keeps the fragment's own bytes), with its fragments' offsets and
  lengths in C arrays: no Python object per fragment;
- counters are C integers (``counters`` returns a fresh :class:`collections.Counter` of them, as
  the twin's reads) and the RTO estimator runs in C (``rto`` returns an :class:`RtoEstimator` with
  the current figures; change the estimator's settings through the constructor).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_XDECREF, Py_INCREF
from libc.math cimport fabs, ldexp
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memmove, memset

from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH
from pxproto.fastpath.wirec cimport PxAddr, PxDataFixed, PxView, px_put_data, px_view
from pxproto.fastpath.wiregen cimport PX_BODY_OFFSET, PX_CLASS_DATA, PX_DATA_LEN, PX_MIN_ETHERNET_FRAME

from collections import Counter

from pxproto.dime.channel import (
    MAX_CREDIT,
    MAX_FRAGMENTS,
    MTU_ETHERNET,
    ChannelBroken,
    MessageAcked,
    MessageDropped,
    MessageReceived,
    ReassemblyOverflow,
    RtoEstimator,
    WireOutput,
    _check_peer,
    fragment_size,
    wire_frame,
    wire_output,
)
from pxproto.dime.endpoint import Output
from pxproto.wire.codes import DataFlag, Scope
from pxproto.wire.frame import Data, Frame

BUILD_HASH = PXPROTO_BUILD_HASH.decode()

DEF DUPACKS = 3
DEF ID_HALF = 0x80000000
cdef int64_t ID_SPACE = 0x100000000  # message ids wrap at 2**32

cdef object _FIN = DataFlag.FIN
cdef object _NOFLAG = DataFlag(0)
cdef object _SCOPE_DIME = Scope.DIME
cdef int _ACK_BIT = int(DataFlag.ACK)
cdef int _FIN_BIT = int(DataFlag.FIN)


cdef inline int64_t sdiff(uint32_t a, uint32_t b) noexcept:
    """a - b for message ids (RFC 1982), as pxproto.dime.channel.serial_diff."""
    cdef uint32_t d = a - b
    return <int64_t>d - ID_SPACE if d >= ID_HALF else <int64_t>d


cdef class _Ends:
    """The two addresses of a channel end and the frame header fields they give."""

    cdef readonly object local, peer
    cdef object src_mac, dst_mac
    cdef int src_dime, src_thread, dst_dime, dst_thread
    cdef PxAddr addr
    cdef bint wire  # the call under way gives encoded frames (a *_wire method)

    def __init__(self, local, peer):
        _check_peer(peer)
        self.local = local
        self.peer = peer
        self.src_mac, self.src_dime, self.src_thread = local.mac, local.dime, local.thread
        self.dst_mac, self.dst_dime, self.dst_thread = peer.mac, peer.dime, peer.thread
        if type(self.src_mac) is bytes and type(self.dst_mac) is bytes and len(self.src_mac) == len(self.dst_mac) == 6:
            memcpy(self.addr.src_mac, PyBytes_AS_STRING(self.src_mac), 6)
            memcpy(self.addr.dst_mac, PyBytes_AS_STRING(self.dst_mac), 6)
        self.addr.scope = 1
        self.addr.src_dime, self.addr.src_thread = self.src_dime, self.src_thread
        self.addr.dst_dime, self.addr.dst_thread = self.dst_dime, self.dst_thread
        self.addr.seq = 0

    cdef inline object frame(self, object body):
        # frame_to(local, peer, body): the peer is never DIME_ALL (_check_peer), so the scope is DIME
        return Frame(body, _SCOPE_DIME, self.src_dime, self.src_thread, self.dst_dime, self.dst_thread, 0,
                     self.dst_mac, self.src_mac)

    cdef object data(self, int channel, uint32_t msg_id, object payload, const char* p, Py_ssize_t n,
                     uint32_t msg_len, uint32_t off, int index, int count, uint32_t ack, int credit, int flags):
        """One DATA frame: encoded in C for a *_wire call (payload may be None), else a Frame."""
        cdef PxDataFixed d
        cdef Py_ssize_t size, got
        cdef unsigned char small[PX_MIN_ETHERNET_FRAME]
        if self.wire:
            d.channel, d.flags, d.msg_id, d.msg_len, d.frag_offset = channel, flags, msg_id, msg_len, off
            d.frag_index, d.frag_count, d.ack, d.credit = index, count, ack, credit
            # as the codec encodes a Frame (padding 0): no zero bytes after the body, even under 60 bytes
            size = <Py_ssize_t>PX_BODY_OFFSET + PX_DATA_LEN + n
            if size < PX_MIN_ETHERNET_FRAME:
                got = px_put_data(small, PX_MIN_ETHERNET_FRAME, &self.addr, &d, <const unsigned char*>p, n, NULL)
                if got == PX_MIN_ETHERNET_FRAME:
                    return PyBytes_FromStringAndSize(<const char*>small, size)
            else:
                raw = PyBytes_FromStringAndSize(NULL, size)
                got = px_put_data(<unsigned char*>PyBytes_AS_STRING(raw), size, &self.addr, &d,
                                  <const unsigned char*>p, n, NULL)
                if got == size:
                    return raw
        if payload is None:
            payload = PyBytes_FromStringAndSize(p, n)
        f = self.frame(Data(channel, msg_id, payload, msg_len, off, index, count, ack, credit, DataFlag(flags)))
        return wire_output(Output(frames=[f])).frames[0] if self.wire else f  # (the codec's error, if any)


# ---------------------------------------------------------------------- sender


cdef struct OutMsg:
    uint32_t msg_id
    int64_t start
    int64_t count
    int fin


cdef class ChannelSender(_Ends):
    """The sending end of a data channel (compiled; see :class:`pxproto.dime.channel.ChannelSender`)."""

    cdef readonly int channel
    cdef readonly Py_ssize_t frag_size
    cdef public int max_retries
    cdef public bint broken
    cdef object _rto
    cdef double rto_initial, rto_min, rto_max, srtt, rttvar
    cdef bint has_srtt
    cdef OutMsg* msgs
    cdef list payloads
    cdef Py_ssize_t head, nmsgs, mcap
    cdef uint32_t next_id
    cdef int64_t end, una, nxt, limit, recover
    cdef double* sent_at
    cdef uint8_t* retrans
    cdef int64_t fcap
    cdef int dupacks
    cdef int64_t timeouts
    cdef double deadline
    cdef bint has_deadline
    cdef int64_t c_sent, c_retransmitted, c_not_ack, c_after_break, c_stale, c_bad, c_acks, c_fast, c_timeouts
    cdef int64_t c_probes

    def __init__(self, local, peer, int channel, *, mtu=MTU_ETHERNET, auth=False, initial_credit=64, rto=None,
                 max_retries=10, first_msg_id=0):
        _Ends.__init__(self, local, peer)
        self.channel = channel
        self.frag_size = fragment_size(mtu, auth)
        self._rto = rto or RtoEstimator()
        self.rto_initial, self.rto_min, self.rto_max = self._rto.initial, self._rto.minimum, self._rto.maximum
        self.has_srtt = self._rto.srtt is not None
        self.srtt = self._rto.srtt if self.has_srtt else 0.0
        self.rttvar = self._rto.rttvar
        self.max_retries = max_retries
        self.payloads = []
        self.mcap = 16
        self.msgs = <OutMsg*>malloc(self.mcap * sizeof(OutMsg))
        self.fcap = 64
        self.sent_at = <double*>malloc(self.fcap * sizeof(double))
        self.retrans = <uint8_t*>calloc(self.fcap, 1)
        if self.msgs == NULL or self.sent_at == NULL or self.retrans == NULL:
            raise MemoryError()
        self.next_id = <uint32_t>(first_msg_id % 0x100000000)
        self.limit = initial_credit
        self.recover = -1

    def __dealloc__(self):
        free(self.msgs)
        free(self.sent_at)
        free(self.retrans)

    # -- queries
    @property
    def rto(self):
        """The estimator with the current figures (a copy: its settings were taken at construction)."""
        self._rto.srtt = self.srtt if self.has_srtt else None
        self._rto.rttvar = self.rttvar
        return self._rto

    @property
    def counters(self):
        """Fragments sent and retransmitted, acks taken and ignored by reason, probes (a snapshot)."""
        c = Counter()
        for k, v in (("sent", self.c_sent), ("retransmitted", self.c_retransmitted), ("not_ack", self.c_not_ack),
                     ("ack_after_break", self.c_after_break), ("stale_ack", self.c_stale), ("bad_ack", self.c_bad),
                     ("acks", self.c_acks), ("fast_retransmits", self.c_fast), ("timeouts", self.c_timeouts),
                     ("probes", self.c_probes)):
            if v:
                c[k] = v
        return c

    @property
    def next_msg_id(self):
        """The id the next message sent will get."""
        return self.next_id

    @property
    def in_flight(self):
        """Fragments sent and not yet acknowledged."""
        return self.nxt - self.una

    @property
    def credit_left(self):
        """New fragments the receiver's credit still allows."""
        return max(0, self.limit - self.nxt)

    def unacked(self):
        """(msg_id, payload) of every message the receiver has not wholly acknowledged, oldest first."""
        cdef Py_ssize_t i
        return [(self.msgs[i].msg_id, self.payloads[i]) for i in range(self.head, self.head + self.nmsgs)]

    def position(self, msg_id, int frag_index):
        """The stream position of a fragment still held, or None."""
        cdef Py_ssize_t i = self._index_of(<uint32_t>(msg_id % 0x100000000)) if 0 <= msg_id < 0x100000000 else -1
        return None if i < 0 else self.msgs[i].start + frag_index

    cdef inline Py_ssize_t _index_of(self, uint32_t msg_id):
        # message ids are consecutive in the queue: the one asked for is at a known distance from the first
        if self.nmsgs == 0:
            return -1
        cdef uint32_t k = msg_id - self.msgs[self.head].msg_id
        return self.head + k if k < <uint32_t>self.nmsgs else -1

    # -- application side
    def send(self, payload, double now, *, fin=False):
        """Queue a message; return its id and whatever fragments the credit lets go now."""
        self.wire = False
        return self._send(payload, now, fin, Output())

    def send_wire(self, payload, double now, *, fin=False):
        """:meth:`send`, its frames encoded (in C)."""
        self.wire = True
        return self._send(payload, now, fin, WireOutput())

    cdef tuple _send(self, payload, double now, fin, out):
        if self.broken:
            raise RuntimeError(f"channel {self.channel} is broken")
        if type(payload) is not bytes:
            payload = bytes(payload)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
        cdef int64_t count = 1 if n == 0 else (n + self.frag_size - 1) // self.frag_size
        if count > MAX_FRAGMENTS or n >= ID_SPACE:
            raise ValueError(f"a {n}-byte message needs {count} fragments, at most {MAX_FRAGMENTS}")
        cdef uint32_t msg_id = self.next_id
        self.next_id = msg_id + 1
        self._append(msg_id, count, bool(fin), payload)
        cdef list frames = out.frames
        self._pump(now, frames)
        out.timer = self.deadline if self.has_deadline else None
        return msg_id, out

    def close(self, double now):
        """Send an empty message marked FIN: the receiver sees the end of the stream."""
        return self.send(b"", now, fin=True)

    cdef void _append(self, uint32_t msg_id, int64_t count, bint fin, object payload) except *:
        cdef Py_ssize_t total = self.head + self.nmsgs
        cdef OutMsg* grown
        if total == self.mcap:
            if self.head * 2 >= self.mcap:  # compact: acknowledged messages leave the front
                memmove(self.msgs, self.msgs + self.head, self.nmsgs * sizeof(OutMsg))
                del self.payloads[:self.head]
                self.head = 0
            else:
                grown = <OutMsg*>realloc(self.msgs, 2 * self.mcap * sizeof(OutMsg))
                if grown == NULL:
                    raise MemoryError()
                self.msgs = grown
                self.mcap *= 2
            total = self.head + self.nmsgs
        self.msgs[total].msg_id = msg_id
        self.msgs[total].start = self.end
        self.msgs[total].count = count
        self.msgs[total].fin = fin
        self.payloads.append(payload)
        self.nmsgs += 1
        self.end += count

    # -- wire side
    cdef object _frame(self, int64_t pos):
        cdef Py_ssize_t lo = self.head, hi = self.head + self.nmsgs, mid
        while hi - lo > 1:  # the last message starting at or before pos
            mid = (lo + hi) >> 1
            if self.msgs[mid].start <= pos:
                lo = mid
            else:
                hi = mid
        cdef OutMsg* m = &self.msgs[lo]
        cdef object payload = self.payloads[lo]
        cdef int64_t i = pos - m.start
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
        cdef Py_ssize_t off = i * self.frag_size
        cdef Py_ssize_t size = min(self.frag_size, n - off)
        cdef int flags = _FIN_BIT if m.fin and i == m.count - 1 else 0
        if self.wire:
            return self.data(self.channel, m.msg_id, None, PyBytes_AS_STRING(payload) + off, size, n, off, i,
                             m.count, 0, 0, flags)
        piece = payload if size == n else PyBytes_FromStringAndSize(PyBytes_AS_STRING(payload) + off, size)
        return self.frame(Data(self.channel, m.msg_id, piece, n, off, i, m.count, 0, 0, _FIN if flags else _NOFLAG))

    cdef void _track(self, int64_t pos) except *:
        # room in the in-flight ring for positions una..pos
        cdef int64_t need = pos - self.una + 1, cap = self.fcap, p
        cdef double* at
        cdef uint8_t* re
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        at = <double*>malloc(cap * sizeof(double))
        re = <uint8_t*>calloc(cap, 1)
        if at == NULL or re == NULL:
            free(at)
            free(re)
            raise MemoryError()
        for p in range(self.una, self.nxt):
            at[p & (cap - 1)] = self.sent_at[p & (self.fcap - 1)]
            re[p & (cap - 1)] = self.retrans[p & (self.fcap - 1)]
        free(self.sent_at)
        free(self.retrans)
        self.sent_at, self.retrans, self.fcap = at, re, cap

    cdef void _transmit(self, int64_t pos, double now, list frames) except *:
        frames.append(self._frame(pos))
        self._track(pos)
        cdef int64_t k = pos & (self.fcap - 1)
        if pos < self.nxt:  # sent before (positions una..nxt have a send time)
            self.retrans[k] = 1
            self.c_retransmitted += 1
        else:
            self.retrans[k] = 0
        self.sent_at[k] = now
        self.c_sent += 1

    cdef void _pump(self, double now, list frames) except *:
        while self.nxt < self.end and self.nxt < self.limit:
            self._transmit(self.nxt, now, frames)
            self.nxt += 1
        self._arm(now)

    cdef double _rto_of(self, int64_t backoff) noexcept:
        cdef double base = self.srtt + 4 * self.rttvar if self.has_srtt else self.rto_initial
        if base < self.rto_min:
            base = self.rto_min
        base = ldexp(base, <int>backoff)
        return self.rto_max if self.rto_max < base else base

    cdef void _arm(self, double now) noexcept:
        if self.broken:
            self.has_deadline = False
        elif self.una < self.nxt or self.nxt < self.end:
            if not self.has_deadline:
                self.deadline = now + self._rto_of(self.timeouts)
                self.has_deadline = True
        else:
            self.has_deadline = False

    def receive(self, frame, double now):
        """Take an acknowledgement (any DATA frame with the ACK flag) from the receiver."""
        self.wire = False
        out = Output()
        body = frame.body
        if type(body) is not Data:
            self.c_not_ack += 1
        else:
            self._take(body.flags, body.channel, body.msg_id, body.ack, body.credit, now, out)
        out.timer = self.deadline if self.has_deadline else None
        return out

    def receive_wire(self, raw, double now):
        """:meth:`receive` of an encoded frame (read in C; ProtocolError when it does not decode)."""
        cdef PxView v
        if type(raw) is not bytes:
            raw = bytes(raw)
        if px_view(<const unsigned char*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), &v) or v.cls != PX_CLASS_DATA:
            return wire_output(self.receive(wire_frame(raw), now))  # the codec's error, or not DATA: not an ack
        self.wire = True
        out = WireOutput()
        self._take(v.data_flags, v.channel, v.msg_id, v.ack, v.credit, now, out)
        out.timer = self.deadline if self.has_deadline else None
        return out

    cdef void _take(self, int flags, int channel, int64_t msg_id, int64_t ack, int64_t credit, double now,
                    object out) except *:
        if not flags & _ACK_BIT or channel != self.channel:
            self.c_not_ack += 1
        elif self.broken:
            self.c_after_break += 1
        else:
            self._on_ack(msg_id, ack, credit, now, out)

    cdef void _on_ack(self, int64_t msg_id, int64_t ack, int64_t credit, double now, object out) except *:
        cdef list frames = out.frames
        cdef int64_t pos = -1, old_limit
        cdef Py_ssize_t i
        if msg_id == self.next_id and ack == 0:
            pos = self.end
        elif 0 <= msg_id < ID_SPACE:
            i = self._index_of(<uint32_t>msg_id)
            if i >= 0 and ack <= self.msgs[i].count:
                pos = self.msgs[i].start + ack
        if pos < 0:
            if self.nmsgs == 0 or sdiff(<uint32_t>(msg_id & 0xFFFFFFFF), self.msgs[self.head].msg_id) < 0:
                self.c_stale += 1
            else:
                self.c_bad += 1
            return
        if pos > self.nxt:
            self.c_bad += 1
            return
        self.c_acks += 1
        self.timeouts = 0
        old_limit = self.limit
        self.limit = pos + credit
        if pos > self.una:
            self._advance(pos, now, out)
        elif pos == self.una and self.una < self.nxt and self.limit == old_limit:
            self.dupacks += 1
            if self.dupacks == DUPACKS and self.recover < 0:
                self.c_fast += 1
                self.recover = self.nxt
                self._retransmit_una(now, frames)
        self._pump(now, frames)

    cdef void _advance(self, int64_t pos, double now, object out) except *:
        cdef int64_t p, mask = self.fcap - 1
        cdef double best = 0.0, rtt
        cdef bint any_sample = False
        for p in range(self.una, pos):
            if not self.retrans[p & mask]:
                rtt = now - self.sent_at[p & mask]
                if not any_sample or rtt < best:
                    best, any_sample = rtt, True
        if any_sample:
            if not self.has_srtt:
                self.srtt, self.rttvar, self.has_srtt = best, best / 2, True
            else:
                self.rttvar = 0.75 * self.rttvar + 0.25 * fabs(self.srtt - best)
                self.srtt = 0.875 * self.srtt + 0.125 * best
        self.una = pos
        self.dupacks = 0
        cdef list events = out.events
        cdef Py_ssize_t i
        while self.nmsgs and self.msgs[self.head].start + self.msgs[self.head].count <= pos:
            events.append(MessageAcked(self.channel, self.msgs[self.head].msg_id))
            self.payloads[self.head] = None
            self.head += 1
            self.nmsgs -= 1
        if self.nmsgs == 0:
            self.head = 0
            del self.payloads[:]
        self.has_deadline = False
        if self.recover >= 0:
            if pos < self.recover:
                self._retransmit_una(now, out.frames)  # a partial ack: the next hole
            else:
                self.recover = -1

    cdef void _retransmit_una(self, double now, list frames) except *:
        if self.una < self.nxt and self.una < self.limit:
            self._transmit(self.una, now, frames)
            self.deadline = now + self._rto_of(self.timeouts)
            self.has_deadline = True

    def get_timer(self):
        return self.deadline if self.has_deadline else None

    def handle_timer(self, double now):
        """Retransmit the first unacknowledged fragment, or probe a closed window; break after too many."""
        self.wire = False
        return self._timer(now, Output())

    def handle_timer_wire(self, double now):
        """:meth:`handle_timer`, its frames encoded (in C)."""
        self.wire = True
        return self._timer(now, WireOutput())

    cdef object _timer(self, double now, object out):
        if not self.has_deadline or now < self.deadline:
            out.timer = self.deadline if self.has_deadline else None
            return out
        self.has_deadline = False
        self.timeouts += 1
        cdef Py_ssize_t i
        if self.timeouts > self.max_retries:
            self.broken = True
            ids = tuple([self.msgs[i].msg_id for i in range(self.head, self.head + self.nmsgs)])
            out.events.append(ChannelBroken(self.channel, self.peer, ids))
            return out
        if self.una < self.nxt and self.una < self.limit:
            self.c_timeouts += 1
            self.recover = self.nxt
            self._retransmit_una(now, out.frames)
        elif self.una < self.end:
            self.c_probes += 1
            out.frames.append(self.data(self.channel, 0, b"", NULL, 0, 0, 0, 0, 0, 0, 0, _ACK_BIT))
            self.deadline = now + self._rto_of(self.timeouts)
            self.has_deadline = True
        self._arm(now)
        out.timer = self.deadline if self.has_deadline else None
        return out


# ---------------------------------------------------------------------- receiver


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
    char* buf            # the message's bytes (multi-fragment messages), grown up to msg_len
    int64_t cap
    PyObject* single     # a one-fragment message: the fragment's own bytes
    uint32_t off1, len1
    uint8_t have1


cdef void _slot_clear(InMsg* m) noexcept:
    if m.count > 1:
        free(m.offs)
    free(m.buf)
    Py_XDECREF(m.single)
    memset(m, 0, sizeof(InMsg))


cdef class ChannelReceiver(_Ends):
    """The receiving end of a data channel (compiled; see :class:`pxproto.dime.channel_rx.ChannelReceiver`)."""

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
    cdef double ack_deadline
    cdef bint has_ack_deadline
    cdef int64_t c_fragments, c_duplicates, c_over_credit, c_inconsistent, c_overflow, c_dropped, c_messages
    cdef int64_t c_acks, c_probes, c_not_data, c_malformed

    def __init__(self, local, peer, int channel, *, window=64, max_buffer_bytes=8 << 20, max_message_bytes=None,
                 ack_every=1, ack_delay=0.002, first_msg_id=0):
        _Ends.__init__(self, local, peer)
        max_message_bytes = max_buffer_bytes if max_message_bytes is None else max_message_bytes
        if max_message_bytes > max_buffer_bytes:
            raise ValueError("max_message_bytes cannot exceed max_buffer_bytes: the next message must always fit")
        if not 0 <= window <= MAX_CREDIT or ack_every < 1:
            raise ValueError(f"window must be 0..{MAX_CREDIT} and ack_every >= 1")
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

    cdef inline void _inline(self, InMsg* m) noexcept:
        m.offs, m.lens, m.have = &m.off1, &m.len1, &m.have1

    cdef inline InMsg* _get(self, uint32_t msg_id) noexcept:
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
        self.has_ack_deadline = False
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
        out.timer = self.ack_deadline if self.has_ack_deadline else None
        return out

    def receive_wire(self, raw, double now):
        """:meth:`receive` of an encoded frame (read in C; ProtocolError when it does not decode)."""
        cdef PxView v
        if type(raw) is not bytes:
            raw = bytes(raw)
        cdef const char* p = PyBytes_AS_STRING(raw)
        if px_view(<const unsigned char*>p, PyBytes_GET_SIZE(raw), &v) or v.cls != PX_CLASS_DATA:
            return wire_output(self.receive(wire_frame(raw), now))  # the codec's error, or not DATA
        self.wire = True
        out = WireOutput()
        if v.channel != self.channel:
            self.c_not_data += 1
        elif v.frag_count == 0:
            self.c_probes += 1
            out.frames.append(self._ack())
        else:
            self._on_fragment(v.msg_id, v.frag_index, v.frag_count, v.msg_len, v.frag_offset, v.data_flags & _FIN_BIT,
                              None, p + v.payload, v.payload_len, now, out)
        out.timer = self.ack_deadline if self.has_ack_deadline else None
        return out

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
        if keep:
            self._store(m, off, payload, data, keep)
        m.size += keep
        m.fin = m.fin or fin
        self.buffered += keep
        cdef bint in_order = d == 0 and index == self.next_frag
        cdef int64_t delivered = self._deliver(out.events) if in_order else 0
        self.nunacked += 1
        if not in_order or delivered or self.nunacked >= self.ack_every:
            frames.append(self._ack())
        elif not self.has_ack_deadline:
            self.ack_deadline = now + self.ack_delay
            self.has_ack_deadline = True

    cdef void _store(self, InMsg* m, int64_t off, object payload, const char* data, Py_ssize_t n) except *:
        cdef int64_t cap
        cdef char* grown
        if m.count == 1:
            if payload is None:
                payload = PyBytes_FromStringAndSize(data, n)
            Py_INCREF(payload)
            m.single = <PyObject*>payload
            return
        if off + n > m.cap:
            cap = max(off + n, min(m.msg_len, max(2 * m.cap, <int64_t>65536)))
            grown = <char*>realloc(m.buf, cap)
            if grown == NULL:
                raise MemoryError()
            m.buf, m.cap = grown, cap
        memcpy(m.buf + off, data, n)

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
        if m.count == 1:
            payload = <object>m.single if m.single != NULL else b""
        else:
            payload = PyBytes_FromStringAndSize(m.buf, m.msg_len)
        return MessageReceived(self.channel, m.msg_id, payload, bool(m.fin))

    def get_timer(self):
        return self.ack_deadline if self.has_ack_deadline else None

    def handle_timer(self, double now):
        """Send a delayed acknowledgement that is due."""
        self.wire = False
        return self._timer(now, Output())

    def handle_timer_wire(self, double now):
        """:meth:`handle_timer`, its frames encoded (in C)."""
        self.wire = True
        return self._timer(now, WireOutput())

    cdef object _timer(self, double now, object out):
        if self.has_ack_deadline and now >= self.ack_deadline:
            out.frames.append(self._ack())
        out.timer = self.ack_deadline if self.has_ack_deadline else None
        return out
