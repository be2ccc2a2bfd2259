# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled codec: px_view (C-level validation and field extraction), the
px_put_* builders, and the Python API on top (decode -> Frame, encode,
FrameView, the batch decoder).  The rules mirror pxproto/wire/codec.py check
for check, in the same order, so the first failing check names the same field.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from pxproto.fastpath.wiregen cimport *

from pxproto.errors import ProtocolError
from pxproto.wire import ethertypes as _ethertypes
from pxproto.wire.codes import (
    Command,
    DataFlag,
    DimeState,
    DiscoveryOp,
    Op,
    Scope,
    Status,
    TlvType,
)
from pxproto.wire.frame import Auth, Data, DimeInfo, Discovery, Frame, Heartbeat, Signaling, Tlv

# ------------------------------------------------------------------ EtherType map (C copy)

cdef unsigned int _ET[5]          # index = FrameClass; _ET[0] unused


cdef int px_class_of(unsigned int ethertype) noexcept nogil:
    if ethertype == _ET[1]:
        return 1
    if ethertype == _ET[2]:
        return 2
    if ethertype == _ET[3]:
        return 3
    if ethertype == _ET[4]:
        return 4
    return 0


cdef unsigned int px_ethertype_of(int cls) noexcept nogil:
    if cls < 1 or cls > 4:
        return 0
    return _ET[cls]


cdef const char* px_error_field(int code) noexcept nogil:
    if code < 0 or code >= PX_ERR_COUNT:
        return PX_ERROR_FIELDS[PX_ERR_FRAME]
    return PX_ERROR_FIELDS[code]


def _load_ethertypes(m) -> None:
    """on_change hook: copy the map in force into the C table."""
    _ET[1] = m.signaling
    _ET[2] = m.data
    _ET[3] = m.discovery
    _ET[4] = m.heartbeat


_load_ethertypes(_ethertypes.current())
_ethertypes.on_change(_load_ethertypes)


def current_ethertypes() -> tuple:
    """The C copy of the EtherType map (signaling, data, discovery, heartbeat), for tests."""
    return (_ET[1], _ET[2], _ET[3], _ET[4])


# ------------------------------------------------------------------ byte access

cdef inline unsigned int rd16(const unsigned char* p) noexcept nogil:
    return (<unsigned int>p[0] << 8) | p[1]


cdef inline uint32_t rd32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t rd64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>rd32(p) << 32) | rd32(p + 4)


cdef inline void wr16(unsigned char* p, unsigned int v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline void wr32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline void wr64(unsigned char* p, uint64_t v) noexcept nogil:
    wr32(p, <uint32_t>(v >> 32))
    wr32(p + 4, <uint32_t>v)


cdef inline int fail(PxView* v, int code, Py_ssize_t offset) noexcept nogil:
    v.error = code
    v.error_offset = offset
    return code


cdef Py_ssize_t utf8_bad(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Index of the first byte of the first invalid sequence (strict UTF-8, as CPython), or -1."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c, c1
    cdef int need
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            need = 1
        elif 0xE0 <= c <= 0xEF:
            need = 2
        elif 0xF0 <= c <= 0xF4:
            need = 3
        else:
            return i
        if i + 1 >= n:
            return i
        c1 = s[i + 1]
        if c == 0xE0:
            if not 0xA0 <= c1 <= 0xBF:
                return i
        elif c == 0xED:
            if not 0x80 <= c1 <= 0x9F:
                return i
        elif c == 0xF0:
            if not 0x90 <= c1 <= 0xBF:
                return i
        elif c == 0xF4:
            if not 0x80 <= c1 <= 0x8F:
                return i
        elif not 0x80 <= c1 <= 0xBF:
            return i
        if need >= 2:
            if i + 2 >= n or not 0x80 <= s[i + 2] <= 0xBF:
                return i
        if need == 3:
            if i + 3 >= n or not 0x80 <= s[i + 3] <= 0xBF:
                return i
        i += need + 1
    return -1


# ------------------------------------------------------------------ validation

cdef int _tlv(const unsigned char* buf, Py_ssize_t pos, unsigned int t, Py_ssize_t length, PxView* v) noexcept nogil:
    """One known-or-unknown TLV's value rules (codec._decode_tlv)."""
    cdef int kind, err, size
    cdef uint64_t num
    cdef Py_ssize_t k, bad
    cdef const unsigned char* val = buf + pos + 4
    if t > PX_TLV_TYPE_MAX:
        return 0
    kind = PX_TLV_KIND[t]
    if kind == 0:
        return 0
    err = PX_TLV_ERR[t]
    size = PX_TLVK_SIZE[kind]
    if size and length != size:
        return fail(v, err, pos + 2)
    if kind == PX_TLVK_U8 or kind == PX_TLVK_U16 or kind == PX_TLVK_U32 or kind == PX_TLVK_U64:
        num = 0
        for k in range(length):
            num = (num << 8) | val[k]
        if not px_tlv_enum_ok(t, num):
            return fail(v, err, pos + 4)
        return 0
    if kind == PX_TLVK_TEXT:
        if length > PX_TEXT_MAX:
            return fail(v, err, pos + 2)
        bad = utf8_bad(val, length)
        if bad >= 0:
            return fail(v, err, pos + 4 + bad)
        return 0
    if kind == PX_TLVK_ACL:
        if length % PX_ACL_ENTRY_SIZE:
            return fail(v, err, pos + 2)
        k = 0
        while k < length:
            if (val[k + 6] >> PX_FCAPS_COUNT) or val[k + 7]:
                return fail(v, err, pos + 4 + k + 6)
            k += PX_ACL_ENTRY_SIZE
    return 0


cdef int _signaling(const unsigned char* buf, Py_ssize_t start, Py_ssize_t end, PxView* v) noexcept nogil:
    cdef const unsigned char* b = buf + start
    cdef unsigned int i, j, t
    cdef Py_ssize_t pos, tl
    cdef uint16_t seen[256]
    cdef int r
    v.req_id = rd32(b + PX_SIG_REQ_ID)
    v.cmd = b[PX_SIG_CMD]
    v.op = b[PX_SIG_OP]
    v.status = b[PX_SIG_STATUS]
    v.tlv_count = b[PX_SIG_TLV_COUNT]
    if not PX_VALID_CMD[v.cmd]:
        return fail(v, PX_ERR_CMD, start + PX_SIG_CMD)
    if not PX_VALID_OP[v.op]:
        return fail(v, PX_ERR_OP, start + PX_SIG_OP)
    if not PX_VALID_STATUS[v.status]:
        return fail(v, PX_ERR_STATUS, start + PX_SIG_STATUS)
    if v.op == PX_OP_REQUEST and v.status != PX_STATUS_OK:
        return fail(v, PX_ERR_STATUS, start + PX_SIG_STATUS)
    pos = start + PX_SIG_LEN
    for i in range(v.tlv_count):
        if pos + PX_TLV_LEN > end:
            return fail(v, PX_ERR_TLV, pos)
        t = rd16(buf + pos)
        tl = rd16(buf + pos + 2)
        if pos + PX_TLV_LEN + tl > end:
            return fail(v, PX_ERR_TLV_LENGTH, pos + 2)
        for j in range(i):
            if seen[j] == t:
                return fail(v, PX_ERR_TLV, pos)
        seen[i] = <uint16_t>t
        r = _tlv(buf, pos, t, tl, v)
        if r:
            return r
        pos += PX_TLV_LEN + tl
    if pos != end:
        return fail(v, PX_ERR_TLV_COUNT, start + PX_SIG_TLV_COUNT)
    return 0


cdef int _data(const unsigned char* buf, Py_ssize_t start, Py_ssize_t end, PxView* v) noexcept nogil:
    cdef const unsigned char* b = buf + start
    cdef uint64_t frag_end
    v.channel = rd16(b + PX_DATA_CHANNEL)
    v.data_flags = b[PX_DATA_FLAGS]
    v.msg_id = rd32(b + PX_DATA_MSG_ID)
    v.msg_len = rd32(b + PX_DATA_MSG_LEN)
    v.frag_offset = rd32(b + PX_DATA_FRAG_OFFSET)
    v.frag_index = rd16(b + PX_DATA_FRAG_INDEX)
    v.frag_count = rd16(b + PX_DATA_FRAG_COUNT)
    v.ack = rd32(b + PX_DATA_ACK)
    v.credit = rd16(b + PX_DATA_CREDIT)
    v.payload = start + PX_DATA_LEN
    v.payload_len = end - v.payload
    if v.data_flags & ~(PX_DFLAG_ACK | PX_DFLAG_FIN):
        return fail(v, PX_ERR_DATA_FLAGS, start + PX_DATA_FLAGS)
    if not v.data_flags & PX_DFLAG_ACK:
        if v.ack:
            return fail(v, PX_ERR_DATA_ACK, start + PX_DATA_ACK)
        if v.credit:
            return fail(v, PX_ERR_DATA_CREDIT, start + PX_DATA_CREDIT)
    if v.frag_count == 0:
        if not v.data_flags & PX_DFLAG_ACK:
            return fail(v, PX_ERR_DATA_FLAGS, start + PX_DATA_FLAGS)
        if v.msg_len:
            return fail(v, PX_ERR_DATA_MSG_LEN, start + PX_DATA_MSG_LEN)
        if v.frag_offset:
            return fail(v, PX_ERR_DATA_FRAG_OFFSET, start + PX_DATA_FRAG_OFFSET)
        if v.frag_index:
            return fail(v, PX_ERR_DATA_FRAG_INDEX, start + PX_DATA_FRAG_INDEX)
        if v.payload_len:
            return fail(v, PX_ERR_LEN, PX_ETH_LEN + PX_HDR_LENGTH)
        return 0
    if v.frag_index >= v.frag_count:
        return fail(v, PX_ERR_DATA_FRAG_INDEX, start + PX_DATA_FRAG_INDEX)
    frag_end = <uint64_t>v.frag_offset + <uint64_t>v.payload_len
    if frag_end > v.msg_len:
        return fail(v, PX_ERR_DATA_FRAG_OFFSET, start + PX_DATA_FRAG_OFFSET)
    if v.frag_index == 0 and v.frag_offset:
        return fail(v, PX_ERR_DATA_FRAG_OFFSET, start + PX_DATA_FRAG_OFFSET)
    if v.frag_index == v.frag_count - 1 and frag_end != v.msg_len:
        return fail(v, PX_ERR_DATA_MSG_LEN, start + PX_DATA_MSG_LEN)
    if v.payload_len == 0 and v.msg_len:
        return fail(v, PX_ERR_LEN, PX_ETH_LEN + PX_HDR_LENGTH)
    return 0


cdef int _discovery(const unsigned char* buf, Py_ssize_t start, Py_ssize_t end, PxView* v) noexcept nogil:
    cdef const unsigned char* b = buf + start
    cdef Py_ssize_t pos, want
    cdef unsigned int i
    v.disc_op = b[PX_DISC_OP]
    v.state_filter = b[PX_DISC_STATE_FILTER]
    v.disc_count = rd16(b + PX_DISC_COUNT)
    v.probe_id = rd32(b + PX_DISC_PROBE_ID)
    v.sw_version = rd32(b + PX_DISC_SW_VERSION)
    v.caps = rd32(b + PX_DISC_CAPS)
    if not PX_VALID_DISC_OP[v.disc_op]:
        return fail(v, PX_ERR_DISC_OP, start + PX_DISC_OP)
    if v.state_filter != PX_STATE_ANY and not PX_VALID_STATE[v.state_filter]:
        return fail(v, PX_ERR_DISC_STATE_FILTER, start + PX_DISC_STATE_FILTER)
    want = PX_DISC_LEN + PX_DIME_LEN * <Py_ssize_t>v.disc_count
    if end - start != want:
        return fail(v, PX_ERR_DISC_COUNT, start + PX_DISC_COUNT)
    if v.disc_op == PX_DISC_OP_PROBE and v.disc_count:
        return fail(v, PX_ERR_DISC_COUNT, start + PX_DISC_COUNT)
    if v.disc_op == PX_DISC_OP_GRATUITOUS and v.probe_id:
        return fail(v, PX_ERR_DISC_PROBE_ID, start + PX_DISC_PROBE_ID)
    pos = start + PX_DISC_LEN
    for i in range(v.disc_count):
        if not PX_VALID_STATE[buf[pos + PX_DIME_STATE]]:
            return fail(v, PX_ERR_DISC_DIME_STATE, pos + PX_DIME_STATE)
        if rd32(buf + pos + PX_DIME_MEM_FREE) > rd32(buf + pos + PX_DIME_MEM_TOTAL):
            return fail(v, PX_ERR_DISC_DIME_MEM_FREE, pos + PX_DIME_MEM_FREE)
        pos += PX_DIME_LEN
    return 0


cdef int _heartbeat(const unsigned char* buf, Py_ssize_t start, Py_ssize_t end, PxView* v) noexcept nogil:
    cdef const unsigned char* b = buf + start
    if end - start != PX_HB_LEN:
        return fail(v, PX_ERR_LEN, PX_ETH_LEN + PX_HDR_LENGTH)
    v.hb_epoch = rd32(b + PX_HB_EPOCH)
    v.hb_state = b[PX_HB_STATE]
    v.hb_period_ms = rd16(b + PX_HB_PERIOD_MS)
    v.hb_cpu_permille = rd16(b + PX_HB_CPU_PERMILLE)
    v.hb_stage = rd16(b + PX_HB_STAGE)
    v.hb_mem_used = rd32(b + PX_HB_MEM_USED)
    v.hb_mem_limit = rd32(b + PX_HB_MEM_LIMIT)
    v.hb_rx_queue = rd32(b + PX_HB_RX_QUEUE)
    v.hb_tx_queue = rd32(b + PX_HB_TX_QUEUE)
    v.hb_service = rd32(b + PX_HB_SERVICE)
    if not PX_VALID_STATE[v.hb_state]:
        return fail(v, PX_ERR_HB_STATE, start + PX_HB_STATE)
    if v.hb_period_ms == 0:
        return fail(v, PX_ERR_HB_PERIOD_MS, start + PX_HB_PERIOD_MS)
    if v.hb_cpu_permille > 1000:
        return fail(v, PX_ERR_HB_CPU_PERMILLE, start + PX_HB_CPU_PERMILLE)
    return 0


cdef inline int _view(const unsigned char* buf, Py_ssize_t n, PxView* v) noexcept nogil:
    cdef const unsigned char* h
    cdef Py_ssize_t body_end, end, i, fixed
    cdef int r
    memset(v, 0, sizeof(PxView))
    v.auth = -1
    if n < PX_ETH_LEN:
        return fail(v, PX_ERR_ETH, 0)
    v.ethertype = rd16(buf + PX_ETH_TYPE)
    v.cls = px_class_of(v.ethertype)
    if v.cls == 0:
        return fail(v, PX_ERR_ETH_TYPE, PX_ETH_TYPE)
    if n < PX_BODY_OFFSET:
        return fail(v, PX_ERR_HEADER, PX_ETH_LEN)
    h = buf + PX_ETH_LEN
    v.version = h[PX_HDR_VERSION]
    v.flags = h[PX_HDR_FLAGS]
    v.length = rd16(h + PX_HDR_LENGTH)
    v.src_dime = rd16(h + PX_HDR_SRC_DIME)
    v.src_thread = rd16(h + PX_HDR_SRC_THREAD)
    v.dst_dime = rd16(h + PX_HDR_DST_DIME)
    v.dst_thread = rd16(h + PX_HDR_DST_THREAD)
    v.seq = rd64(h + PX_HDR_SEQ)
    v.body = PX_BODY_OFFSET
    v.scope = 1 if v.flags & PX_HFLAG_SCOPE_DIME else 0
    v.has_auth = 1 if v.flags & PX_HFLAG_AUTH else 0
    if v.version != PX_PROTOCOL_VERSION:
        return fail(v, PX_ERR_VERSION, PX_ETH_LEN + PX_HDR_VERSION)
    if v.flags & ~(PX_HFLAG_SCOPE_DIME | PX_HFLAG_AUTH):
        return fail(v, PX_ERR_FLAGS, PX_ETH_LEN + PX_HDR_FLAGS)
    body_end = PX_BODY_OFFSET + <Py_ssize_t>v.length
    if body_end > n:
        return fail(v, PX_ERR_LEN, PX_ETH_LEN + PX_HDR_LENGTH)
    end = body_end + (PX_AUTH_LEN if v.has_auth else 0)
    if end > n:
        return fail(v, PX_ERR_AUTH, body_end)
    v.end = end
    v.padding = n - end
    if v.padding:
        if n != PX_MIN_ETHERNET_FRAME:
            return fail(v, PX_ERR_LEN, PX_ETH_LEN + PX_HDR_LENGTH)
        for i in range(end, n):
            if buf[i]:
                return fail(v, PX_ERR_LEN, PX_ETH_LEN + PX_HDR_LENGTH)
    # scope rules (codec._check_scope)
    if v.cls == PX_CLASS_DATA and v.scope != 1:
        return fail(v, PX_ERR_FLAGS, PX_ETH_LEN + PX_HDR_FLAGS)
    if (v.cls == PX_CLASS_DISCOVERY or v.cls == PX_CLASS_HEARTBEAT) and v.scope != 0:
        return fail(v, PX_ERR_FLAGS, PX_ETH_LEN + PX_HDR_FLAGS)
    if v.scope == 0 and v.dst_dime != PX_DIME_ALL:
        return fail(v, PX_ERR_DIME_DST, PX_ETH_LEN + PX_HDR_DST_DIME)
    if v.scope == 1 and v.dst_dime == PX_DIME_ALL:
        return fail(v, PX_ERR_DIME_DST, PX_ETH_LEN + PX_HDR_DST_DIME)
    if v.cls == PX_CLASS_HEARTBEAT and v.src_dime == PX_DIME_ALL:
        return fail(v, PX_ERR_DIME_SRC, PX_ETH_LEN + PX_HDR_SRC_DIME)
    if v.cls == PX_CLASS_SIGNALING:
        fixed = PX_SIG_LEN
    elif v.cls == PX_CLASS_DATA:
        fixed = PX_DATA_LEN
    elif v.cls == PX_CLASS_DISCOVERY:
        fixed = PX_DISC_LEN
    else:
        fixed = PX_HB_LEN
    if <Py_ssize_t>v.length < fixed:
        return fail(v, PX_ERR_LEN, PX_ETH_LEN + PX_HDR_LENGTH)
    if v.cls == PX_CLASS_SIGNALING:
        r = _signaling(buf, PX_BODY_OFFSET, body_end, v)
    elif v.cls == PX_CLASS_DATA:
        r = _data(buf, PX_BODY_OFFSET, body_end, v)
    elif v.cls == PX_CLASS_DISCOVERY:
        r = _discovery(buf, PX_BODY_OFFSET, body_end, v)
    else:
        r = _heartbeat(buf, PX_BODY_OFFSET, body_end, v)
    if r:
        return r
    if v.has_auth:
        v.auth = body_end
        v.auth_key_id = rd16(buf + body_end + PX_AUTH_KEY_ID)
        v.auth_counter = rd64(buf + body_end + PX_AUTH_COUNTER)
        if v.auth_key_id == 0:
            return fail(v, PX_ERR_AUTH_KEY_ID, body_end + PX_AUTH_KEY_ID)
        if v.auth_counter == 0:
            return fail(v, PX_ERR_AUTH_COUNTER, body_end + PX_AUTH_COUNTER)
    return 0


cdef int px_view(const unsigned char* buf, Py_ssize_t n, PxView* out) noexcept nogil:
    return _view(buf, n, out)


# ------------------------------------------------------------------ C builders

cdef Py_ssize_t px_put_header(unsigned char* out, Py_ssize_t cap, const PxAddr* addr, int cls,
                              int has_auth, Py_ssize_t body_len) noexcept nogil:
    cdef unsigned char* h = out + PX_ETH_LEN
    if cap < PX_BODY_OFFSET or body_len < 0 or body_len > 0xFFFF or px_ethertype_of(cls) == 0:
        return -PX_ERR_FRAME
    memcpy(out + PX_ETH_DST, addr.dst_mac, 6)
    memcpy(out + PX_ETH_SRC, addr.src_mac, 6)
    wr16(out + PX_ETH_TYPE, px_ethertype_of(cls))
    h[PX_HDR_VERSION] = PX_PROTOCOL_VERSION
    h[PX_HDR_FLAGS] = (PX_HFLAG_SCOPE_DIME if addr.scope else 0) | (PX_HFLAG_AUTH if has_auth else 0)
    wr16(h + PX_HDR_LENGTH, <unsigned int>body_len)
    wr16(h + PX_HDR_SRC_DIME, addr.src_dime)
    wr16(h + PX_HDR_SRC_THREAD, addr.src_thread)
    wr16(h + PX_HDR_DST_DIME, addr.dst_dime)
    wr16(h + PX_HDR_DST_THREAD, addr.dst_thread)
    wr64(h + PX_HDR_SEQ, addr.seq)
    return PX_BODY_OFFSET


cdef Py_ssize_t _finish(unsigned char* out, Py_ssize_t cap, Py_ssize_t pos, const PxAuth* auth) noexcept nogil:
    """Append the trailer and the padding, then check the whole frame."""
    cdef PxView v
    cdef int r
    if auth != NULL:
        if pos + PX_AUTH_LEN > cap:
            return -PX_ERR_FRAME
        wr16(out + pos + PX_AUTH_KEY_ID, auth.key_id)
        wr64(out + pos + PX_AUTH_COUNTER, auth.counter)
        memcpy(out + pos + PX_AUTH_TAG, auth.tag, PX_TAG_LEN)
        pos += PX_AUTH_LEN
    if pos < PX_MIN_ETHERNET_FRAME:
        if cap < PX_MIN_ETHERNET_FRAME:
            return -PX_ERR_FRAME
        memset(out + pos, 0, PX_MIN_ETHERNET_FRAME - pos)
        pos = PX_MIN_ETHERNET_FRAME
    r = _view(out, pos, &v)
    if r:
        return -r
    return pos


cdef Py_ssize_t px_put_heartbeat(unsigned char* out, Py_ssize_t cap, const PxAddr* addr,
                                 const PxHeartbeatBody* hb, const PxAuth* auth) noexcept nogil:
    cdef Py_ssize_t pos = px_put_header(out, cap, addr, PX_CLASS_HEARTBEAT, auth != NULL, PX_HB_LEN)
    cdef unsigned char* b = out + PX_BODY_OFFSET
    if pos < 0:
        return pos
    if cap < PX_BODY_OFFSET + PX_HB_LEN:
        return -PX_ERR_FRAME
    wr32(b + PX_HB_EPOCH, hb.epoch)
    b[PX_HB_STATE] = hb.state
    wr16(b + PX_HB_PERIOD_MS, hb.period_ms)
    wr16(b + PX_HB_CPU_PERMILLE, hb.cpu_permille)
    wr16(b + PX_HB_STAGE, hb.stage)
    wr32(b + PX_HB_MEM_USED, hb.mem_used)
    wr32(b + PX_HB_MEM_LIMIT, hb.mem_limit)
    wr32(b + PX_HB_RX_QUEUE, hb.rx_queue)
    wr32(b + PX_HB_TX_QUEUE, hb.tx_queue)
    wr32(b + PX_HB_SERVICE, hb.service)
    return _finish(out, cap, PX_BODY_OFFSET + PX_HB_LEN, auth)


cdef Py_ssize_t px_put_data(unsigned char* out, Py_ssize_t cap, const PxAddr* addr, const PxDataFixed* d,
                            const unsigned char* payload, Py_ssize_t payload_len, const PxAuth* auth) noexcept nogil:
    cdef Py_ssize_t body_len = PX_DATA_LEN + payload_len
    cdef Py_ssize_t pos = px_put_header(out, cap, addr, PX_CLASS_DATA, auth != NULL, body_len)
    cdef unsigned char* b = out + PX_BODY_OFFSET
    if pos < 0:
        return pos
    if payload_len < 0 or cap < PX_BODY_OFFSET + body_len:
        return -PX_ERR_FRAME
    wr16(b + PX_DATA_CHANNEL, d.channel)
    b[PX_DATA_FLAGS] = d.flags
    wr32(b + PX_DATA_MSG_ID, d.msg_id)
    wr32(b + PX_DATA_MSG_LEN, d.msg_len)
    wr32(b + PX_DATA_FRAG_OFFSET, d.frag_offset)
    wr16(b + PX_DATA_FRAG_INDEX, d.frag_index)
    wr16(b + PX_DATA_FRAG_COUNT, d.frag_count)
    wr32(b + PX_DATA_ACK, d.ack)
    wr16(b + PX_DATA_CREDIT, d.credit)
    if payload_len:
        memcpy(b + PX_DATA_LEN, payload, payload_len)
    return _finish(out, cap, PX_BODY_OFFSET + body_len, auth)


cdef Py_ssize_t px_put_signaling(unsigned char* out, Py_ssize_t cap, const PxAddr* addr, uint32_t req_id,
                                 int cmd, int op, int status, int tlv_count, const unsigned char* tlvs,
                                 Py_ssize_t tlvs_len, const PxAuth* auth) noexcept nogil:
    cdef Py_ssize_t body_len = PX_SIG_LEN + tlvs_len
    cdef Py_ssize_t pos = px_put_header(out, cap, addr, PX_CLASS_SIGNALING, auth != NULL, body_len)
    cdef unsigned char* b = out + PX_BODY_OFFSET
    if pos < 0:
        return pos
    if tlvs_len < 0 or cap < PX_BODY_OFFSET + body_len or not 0 <= tlv_count <= 255:
        return -PX_ERR_FRAME
    if not (0 <= cmd <= 255 and 0 <= op <= 255 and 0 <= status <= 255):
        return -PX_ERR_FRAME
    wr32(b + PX_SIG_REQ_ID, req_id)
    b[PX_SIG_CMD] = cmd
    b[PX_SIG_OP] = op
    b[PX_SIG_STATUS] = status
    b[PX_SIG_TLV_COUNT] = tlv_count
    if tlvs_len:
        memcpy(b + PX_SIG_LEN, tlvs, tlvs_len)
    return _finish(out, cap, PX_BODY_OFFSET + body_len, auth)


cdef Py_ssize_t px_put_tlv(unsigned char* out, Py_ssize_t cap, unsigned int type, const unsigned char* value,
                           Py_ssize_t length) noexcept nogil:
    if length < 0 or length > 0xFFFF or cap < PX_TLV_LEN + length:
        return -1
    wr16(out + PX_TLV_TYPE, type & 0xFFFF)
    wr16(out + PX_TLV_LENGTH, <unsigned int>length)
    if length:
        memcpy(out + PX_TLV_LEN, value, length)
    return PX_TLV_LEN + length


cdef Py_ssize_t px_put_tlv_uint(unsigned char* out, Py_ssize_t cap, unsigned int type, uint64_t value,
                                int size) noexcept nogil:
    cdef int k
    if size not in (1, 2, 4, 8) or cap < PX_TLV_LEN + size:
        return -1
    wr16(out + PX_TLV_TYPE, type & 0xFFFF)
    wr16(out + PX_TLV_LENGTH, size)
    for k in range(size):
        out[PX_TLV_LEN + k] = (value >> (8 * (size - 1 - k))) & 0xFF
    return PX_TLV_LEN + size


include "_frames.pxi"
include "_batch.pxi"
