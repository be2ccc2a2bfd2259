# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The sending end of the data channel, compiled: the API, frames, events and timers of the pure twin.

:class:`ChannelSender` is :class:`pxproto.dime.channel.ChannelSender`, state for state; its receiver is
``pxproto/dime/_channel_rx.pyx``.  :mod:`pxproto.dime.fastchannel` picks these when built
(``PXPROTO_PURE=1``: the twins), and ``tests/test_channel_diff.py`` runs both side by side over lossy,
reordering, duplicating links and hostile fragments and compares every frame, event, timer and counter.

Only how the state is held differs: the messages in one C array (id, stream position, fragment count)
beside a list of their payloads, the send time of each fragment in flight in a ring indexed by position
(no dict, set or Counter per fragment), the RTO estimator in C doubles (``rto`` returns an
:class:`RtoEstimator` with the current figures; its settings are taken at construction) and counters in C
integers (``counters`` returns a fresh :class:`collections.Counter` of them).  The ``*_wire`` methods
build DATA frames in C with ``px_put_data`` and read acks with ``px_view``: no Frame on that path.

A sender with ``iov`` set (the DIME process's driver, which sends with :func:`send_frames`) gives each DATA
frame of at least IOV_MIN payload bytes as a :class:`TxFrame`: its header bytes and a slice of the message it
carries, sent as two iovecs, so the payload is not copied into a frame (``bytes(f)`` is the frame the copy path
builds, byte for byte).  Such a sender also takes a message as a :class:`Gather` of pieces (a source DIME's kept
runs, not joined): its TxFrames point into the pieces, an iovec each.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
cimport cython
from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from libc.math cimport fabs, ldexp
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memmove, memset

from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH
from pxproto.fastpath.tpacket cimport MSG_DONTWAIT, iovec, mmsghdr, sendmmsg
from pxproto.fastpath.wirec cimport PxAddr, PxDataFixed, PxView, px_put_data, px_put_header, px_view, wr16, wr32
from pxproto.fastpath.wiregen cimport (
    PX_BODY_OFFSET,
    PX_CLASS_DATA,
    PX_DATA_ACK,
    PX_DATA_CHANNEL,
    PX_DATA_CREDIT,
    PX_DATA_FLAGS,
    PX_DATA_FRAG_COUNT,
    PX_DATA_FRAG_INDEX,
    PX_DATA_FRAG_OFFSET,
    PX_DATA_LEN,
    PX_DATA_MSG_ID,
    PX_DATA_MSG_LEN,
    PX_MIN_ETHERNET_FRAME,
)

from collections import Counter

from pxproto.dime.channel import (
    MAX_FRAGMENTS,
    MTU_ETHERNET,
    ChannelBroken,
    MessageAcked,
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
DEF IOV_BATCH = 64  # frames per sendmmsg in send_frames
IOV_MIN = 1024
"""Payload bytes from which an ``iov`` sender's DATA frame is a :class:`TxFrame` (below, a copy costs less than
the object and the second iovec)."""
cdef int64_t ID_SPACE = 0x100000000  # message ids wrap at 2**32

cdef object _FIN = DataFlag.FIN
cdef object _NOFLAG = DataFlag(0)
cdef object _SCOPE_DIME = Scope.DIME
cdef int _ACK_BIT = int(DataFlag.ACK)
cdef int _FIN_BIT = int(DataFlag.FIN)


include "_txframe.pxi"


cdef class _Ends:
    """The two addresses of a channel end and the frame header fields they give."""

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

    def get_timer(self):
        return self.deadline if self.has_deadline else None

    def handle_timer(self, double now):
        """Act on a timer that is due (see the twins); nothing when it is not."""
        self.wire = False
        return self._timer(now, Output())

    def handle_timer_wire(self, double now):
        """:meth:`handle_timer`, its frames encoded (in C)."""
        self.wire = True
        return self._timer(now, WireOutput())

    cdef object _timer(self, double now, object out):
        return out

    cdef bint view(self, bytes raw, PxView* v) except -1:
        """Read a received DATA frame in C (true; a *_wire call under way), or false: not valid DATA."""
        if px_view(<const unsigned char*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), v) or v.cls != PX_CLASS_DATA:
            return False
        self.wire = True
        return True

    cdef object frame(self, object body):
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
    cdef public bint iov  # DATA frames of IOV_MIN payload bytes and more as TxFrame (a send_frames driver)
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
        return [(self.msgs[i].msg_id, bytes(self.payloads[i]) if type(self.payloads[i]) is Gather else self.payloads[i])
                for i in range(self.head, self.head + self.nmsgs)]

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
        cdef Py_ssize_t n
        if type(payload) is Gather:  # (held as its pieces: a source's kept runs, not joined)
            n = (<Gather>payload).n
        else:
            if type(payload) is not bytes:
                payload = bytes(payload)
            n = PyBytes_GET_SIZE(payload)
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
        cdef Gather g = <Gather>payload if type(payload) is Gather else None
        cdef Py_ssize_t n = g.n if g is not None else PyBytes_GET_SIZE(payload)
        cdef Py_ssize_t off = i * self.frag_size
        cdef Py_ssize_t size = min(self.frag_size, n - off)
        cdef int flags = _FIN_BIT if m.fin and i == m.count - 1 else 0
        if self.wire and self.iov and size >= IOV_MIN and (g is None or g.pieces(off, size) <= GATHER_IOV):
            f = self._tx_frame(m, payload, off, size, n, i, flags)
            if f is not None:
                return f
        cdef Py_ssize_t at = off  # where the fragment's bytes start in ``payload``
        if g is not None:  # the copy path: this fragment's bytes joined
            payload = g.piece_bytes(off, size)
            at = 0
        if self.wire:
            return self.data(self.channel, m.msg_id, None, PyBytes_AS_STRING(payload) + at, size, n, off, i,
                             m.count, 0, 0, flags)
        piece = payload if size == PyBytes_GET_SIZE(payload) else PyBytes_FromStringAndSize(
            PyBytes_AS_STRING(payload) + at, size)
        return self.frame(Data(self.channel, m.msg_id, piece, n, off, i, m.count, 0, 0, _FIN if flags else _NOFLAG))

    cdef object _tx_frame(self, OutMsg* m, object payload, Py_ssize_t off, Py_ssize_t size, Py_ssize_t n,
                          int64_t i, int flags):
        """The DATA frame of fragment ``i`` (``size`` bytes of ``payload`` from ``off``) as a :class:`TxFrame`: its
        header written as ``px_put_data`` writes it (no trailer, ack and credit 0), the payload not copied; None
        when the header does not encode (the copy path then says why)."""
        cdef Py_ssize_t h = <Py_ssize_t>PX_BODY_OFFSET + PX_DATA_LEN
        cdef bytes head = PyBytes_FromStringAndSize(NULL, h)
        cdef unsigned char* o = <unsigned char*>PyBytes_AS_STRING(head)
        if px_put_header(o, h, &self.addr, PX_CLASS_DATA, 0, PX_DATA_LEN + size) != PX_BODY_OFFSET:
            return None
        cdef unsigned char* b = o + PX_BODY_OFFSET
        wr16(b + PX_DATA_CHANNEL, <unsigned int>self.channel)
        b[PX_DATA_FLAGS] = <unsigned char>flags
        wr32(b + PX_DATA_MSG_ID, m.msg_id)
        wr32(b + PX_DATA_MSG_LEN, <uint32_t>n)
        wr32(b + PX_DATA_FRAG_OFFSET, <uint32_t>off)
        wr16(b + PX_DATA_FRAG_INDEX, <unsigned int>i)
        wr16(b + PX_DATA_FRAG_COUNT, <unsigned int>m.count)
        wr32(b + PX_DATA_ACK, 0)
        wr16(b + PX_DATA_CREDIT, 0)
        cdef TxFrame f = TxFrame.__new__(TxFrame)
        f.head, f.payload, f.offset, f.size = head, payload, off, size
        return f

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
        if not self.view(raw, &v):
            return wire_output(self.receive(wire_frame(raw), now))  # the codec's error, or not DATA: not an ack
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

    cdef object _timer(self, double now, object out):
        # Retransmit the first unacknowledged fragment, or probe a closed window; break after too many.
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
