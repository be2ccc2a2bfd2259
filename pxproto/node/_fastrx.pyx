# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The kernel build: per-frame work of the server relay and the DIME, compiled over the fastpath.

``route`` tells the server process where a frame from the wire goes without
decoding it; ``ping_reply`` answers an unauthenticated PING request entirely in
C (px_view to validate, px_put_signaling to build), so a ping costs the DIME
no Frame, Tlv or dataclass objects: one bytes object in, one out.
:mod:`pxproto.node.fastrx` is the pure-Python twin used when this is not compiled.
:class:`WireRx` reads a DIME's own wire socket (recvmmsg) and takes each clear DATA fragment of a wired input
straight from the receive buffer into its channel's reassembly (no bytes and no Python call per frame); every
other frame takes the DIME's per-frame path (it has no twin: without it that path takes every frame).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.long cimport PyLong_FromLong
from cpython.ref cimport PyObject
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memcmp, memcpy

from pxproto.dime._channel_rx cimport ChannelReceiver
from pxproto.node._flowc cimport arrive_at
from pxproto.switch._packetring cimport BATCH, Batch, _Slots

from pxproto.fastpath.wirec cimport (
    PxAddr,
    PxView,
    px_class_of,
    px_put_signaling,
    px_put_tlv,
    px_put_tlv_uint,
    px_view,
    rd16,
)
from pxproto.fastpath.wiregen cimport *
from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH

DEF BUF = 1600

ROUTE_DROP = -2
ROUTE_SERVER = -1
DEF COMPLETION_BIT = 0x8000  # (pxproto.node.channels.COMPLETION_BIT: completions, not items, come on such a channel)


def route(bytes raw, bytes mac):
    """The DIME id a wire frame is for, ROUTE_SERVER (-1) for the server itself, or ROUTE_DROP (-2)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef const unsigned char* m = <const unsigned char*>PyBytes_AS_STRING(mac)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef int i
    if n < PX_BODY_OFFSET or px_class_of(rd16(p + PX_ETH_TYPE)) == 0:
        return ROUTE_DROP
    if not (p[PX_ETH_DST] & 1):  # unicast: to this server's MAC only
        for i in range(6):
            if p[PX_ETH_DST + i] != m[i]:
                return ROUTE_DROP
    if p[PX_ETH_LEN + PX_HDR_FLAGS] & PX_HFLAG_SCOPE_DIME:
        return rd16(p + PX_ETH_LEN + PX_HDR_DST_DIME)
    return ROUTE_SERVER


def ping_reply(bytes raw, uint32_t epoch):
    """The response to a valid, unauthenticated PING request carrying ECHO, or None (take the slow path)."""
    cdef PxView v
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef unsigned char tlvs[BUF]
    cdef unsigned char out[BUF]
    cdef PxAddr a
    cdef Py_ssize_t pos, end, tl, k, echo_at = -1, echo_len = 0
    cdef unsigned int t, i
    if n > BUF - 64 or px_view(p, n, &v) != 0:
        return None
    if v.cls != PX_CLASS_SIGNALING or v.cmd != PX_CMD_PING or v.op != PX_OP_REQUEST or v.has_auth:
        return None
    pos = v.body + 8
    end = v.body + v.length
    for i in range(v.tlv_count):
        t = (<unsigned int>p[pos] << 8) | p[pos + 1]
        tl = (<Py_ssize_t>p[pos + 2] << 8) | p[pos + 3]
        if t == PX_TLV_ECHO:
            echo_at, echo_len = pos + 4, tl
        pos += 4 + tl
    if echo_at < 0:
        return None
    k = px_put_tlv(tlvs, BUF, PX_TLV_ECHO, p + echo_at, echo_len)
    if k < 0:
        return None
    pos = k
    k = px_put_tlv_uint(tlvs + pos, BUF - pos, PX_TLV_EPOCH, epoch, 4)
    if k < 0:
        return None
    pos += k
    memcpy(a.dst_mac, p + 6, 6)
    memcpy(a.src_mac, p, 6)
    a.scope = 0 if v.src_dime == 0xFFFF else 1  # the answer's scope follows its destination
    a.src_dime = v.dst_dime
    a.src_thread = v.dst_thread
    a.dst_dime = v.src_dime
    a.dst_thread = v.src_thread
    a.seq = 0
    k = px_put_signaling(out, BUF, &a, v.req_id, PX_CMD_PING, PX_OP_RESPONSE, PX_STATUS_OK, 2, tlvs, pos, NULL)
    if k < 0:
        return None
    return PyBytes_FromStringAndSize(<char*>out, k)


BUILD_HASH = PXPROTO_BUILD_HASH.decode()
"""Source hash of this build (pxproto/fastpath/buildhash.py); pxproto.fastpath.select checks it."""


cdef class WireRx:
    """A DIME's own wire socket, read with recvmmsg into reused slots; see the module's docstring.

    A frame takes the fast path when it is clear DATA (the DATA EtherType ``data_type``, none of the header flags
    ``clear_only``, at least ``data_min`` bytes), it is valid (px_view), and the plane has a compiled receiver for
    its (channel, source MAC, source DIME) and no sender: ``ChannelReceiver.take_view`` reassembles it from the
    slot, its acks are held in ``plane.acks_held`` as ``ChannelPlane._hold_acks`` holds them (the ack's message id
    at ``ack_id_at``, its position at ``ack_pos_at``), a delivered message goes to ``plane.message``.  The layout
    offsets come from :mod:`pxproto.node.channels`, which checks them against the spec."""

    cdef _Slots slots
    cdef unsigned int data_type
    cdef int clear_only
    cdef Py_ssize_t data_min, key_at, ack_id_at, ack_pos_at
    cdef object c_frames, c_bytes, c_merged, c_bugs, wire_output, message_received, arrive
    cdef readonly long long fast, slow
    """Frames each path took (for tests and profiles)."""

    def __init__(self, unsigned int data_type, int clear_only, Py_ssize_t data_min, Py_ssize_t key_at,
                 Py_ssize_t ack_id_at, Py_ssize_t ack_pos_at, counters, wire_output, message_received, arrive):
        """``counters``: the CounterId values of frames and bytes received, acks merged, frame bugs;
        ``wire_output``, ``message_received``: the WireOutput and MessageReceived classes; ``arrive``: the compiled
        flow's (None: every delivered message goes through ``ChannelPlane.message``)."""
        self.slots = _Slots()
        self.data_type, self.clear_only, self.data_min = data_type, clear_only, data_min
        self.key_at, self.ack_id_at, self.ack_pos_at = key_at, ack_id_at, ack_pos_at
        self.c_frames, self.c_bytes, self.c_merged, self.c_bugs = counters
        self.wire_output, self.message_received, self.arrive = wire_output, message_received, arrive

    def drain(self, int fd, dime, double now, int split):
        """One recvmmsg on ``fd`` (non-blocking), each frame into ``dime`` (a :class:`pxproto.node.dime.Dime`):
        the fast path, or ``dime._from_server``; every ``split`` frames (``dime.rx_run`` counts them) the held acks
        and the items go (``plane.flush_acks``, ``dime._flush``).  Returns how many frames were read (BATCH: more
        may wait); OSError for a socket error."""
        cdef Batch b
        cdef int n, i
        with nogil:
            n = self.slots.recv(fd, &b)
        if n < 0:
            if errno == EAGAIN or errno == EINTR:
                return 0
            raise OSError(errno, "recvmmsg")
        m = dime.m
        plane = m.plane
        m.now = now
        cdef long long frames = 0, nbytes = 0, merged = 0
        cdef int run = dime.rx_run
        cdef PxView v
        cdef PyObject* found
        cdef const unsigned char* p
        cdef Py_ssize_t size, key_at = self.key_at
        cdef ChannelReceiver rx
        out = self.wire_output()
        cdef list acks = out.frames, events = out.events
        try:
            for i in range(b.n):
                if b.trunc[i]:
                    continue
                p, size = b.ptr[i], b.len[i]
                rx = None
                if (size >= self.data_min and rd16(p + PX_ETH_TYPE) == self.data_type
                        and not p[PX_ETH_LEN + PX_HDR_FLAGS] & self.clear_only):
                    key = (PyLong_FromLong(rd16(p + key_at + 16)), PyBytes_FromStringAndSize(<const char*>p + 6, 6),
                           PyLong_FromLong(rd16(p + key_at)))
                    if PyDict_GetItem(plane.senders, key) == NULL:
                        found = PyDict_GetItem(plane.receivers, key)
                        if (found != NULL and type(<object>found) is ChannelReceiver and px_view(p, size, &v) == 0
                                and v.cls == PX_CLASS_DATA):
                            rx = <ChannelReceiver>found
                if rx is None:
                    self.slow += 1
                    dime.rx_run = run
                    dime._from_server(PyBytes_FromStringAndSize(<const char*>p, size), now)
                    run = dime.rx_run
                    continue
                self.fast += 1
                frames += 1
                nbytes += size
                try:
                    plane._rx_key = key
                    rx.bare = self.arrive is not None and m.mice is not None and rx.channel < COMPLETION_BIT
                    try:
                        rx.take_view(<const char*>p, &v, now, out)
                    finally:
                        rx.bare = False
                    if acks:
                        merged += self._hold(plane.acks_held, key, acks, m)
                        del acks[:]
                    if events:
                        self._messages(m, plane, key, events, rx)
                except Exception as exc:  # as Dime.on_frame_guarded: a frame never ends the DIME
                    self._bug(m, exc, PyBytes_FromStringAndSize(<const char*>p, size if size < 54 else 54))
                finally:
                    del acks[:]
                    del events[:]
                run += 1
                if run >= split:
                    run = 0
                    dime.rx_run = 0
                    plane.flush_acks(now)
                    dime._flush()
        finally:
            dime.rx_run = run
            c = m.counters
            if frames:
                c[self.c_frames] += frames
                c[self.c_bytes] += nbytes
            if merged:
                c[self.c_merged] += merged
        return n

    cdef long long _hold(self, dict held_now, object key, list frames, object m) except -1:
        """ChannelPlane._hold_acks: the latest ack held per channel end; a repeated position (a duplicate ack) goes
        at once, with the one it repeats.  Returns how many acks were merged away."""
        cdef list rest = None
        cdef long long merged = 0
        cdef PyObject* held
        cdef const char* h
        cdef const char* f
        for frame in frames:
            held = PyDict_GetItem(held_now, key)
            if held != NULL:
                h, f = PyBytes_AS_STRING(<bytes>held), PyBytes_AS_STRING(<bytes>frame)
                if memcmp(h + self.ack_id_at, f + self.ack_id_at, 4) == 0 and \
                        memcmp(h + self.ack_pos_at, f + self.ack_pos_at, 4) == 0:
                    if rest is None:
                        rest = []
                    rest.append(<object>held)
                else:
                    merged += 1
            PyDict_SetItem(held_now, key, frame)
        if rest is not None:
            m.out(self.wire_output(rest))
        return merged

    cdef void _messages(self, object m, object plane, object key, list events, ChannelReceiver rx) except *:
        """What ``m.out`` does with a receiver's events: a delivered item message (a bare (msg_id, payload, fin)
        tuple: the receiver makes one only when the compiled flow has a MICE to give it to, on an item channel) straight
        into ``arrive`` as ``ChannelPlane.message`` gives it; a bad one, and any other event, through them.  A payload
        None lies in the receive buffer (``rx.lent_ptr``, valid until the next recvmmsg): ``arrive_at`` reads it
        there, no bytes made of it."""
        for ev in events:
            if type(ev) is not tuple:
                m.out(self.wire_output([], [ev]))
                continue
            payload = ev[1]
            try:
                if payload is None:
                    if m.mice is None:
                        payload = PyBytes_FromStringAndSize(rx.lent_ptr, rx.lent_len)
                        raise ValueError
                    done = arrive_at(<const uint8_t*>rx.lent_ptr, rx.lent_len, None, plane.flow, key, plane.mice_queue)
                else:
                    if type(payload) is not bytes or m.mice is None:
                        raise ValueError
                    done = self.arrive(payload, plane.flow, key, plane.mice_queue)
            except ValueError:  # ChannelPlane.message says what is wrong, and counts it
                if payload is None:
                    payload = PyBytes_FromStringAndSize(rx.lent_ptr, rx.lent_len)
                plane.message(self.message_received(rx.channel, ev[0], payload, ev[2]))
                continue
            if done:
                plane.completions.setdefault(key, []).extend(done)

    cdef void _bug(self, object m, object exc, bytes head) except *:
        import traceback

        m.counters[self.c_bugs] += 1
        m.reasons[f"bug:{type(exc).__name__}"] += 1
        m.log(f"bug: frame {head.hex()}... raised {exc!r}\n{traceback.format_exc()}")
