# Included by wirec.pyx after _frames.pxi: the C frame builders of px_codec.h, callable
# from Python (tests, tools).

cdef PxAddr _addr(bytes dst_mac, bytes src_mac, int scope, int src_dime, int src_thread, int dst_dime,
                  int dst_thread, uint64_t seq) except *:
    cdef PxAddr a
    if len(dst_mac) != 6 or len(src_mac) != 6:
        raise ValueError("MACs are 6 bytes")
    memcpy(a.dst_mac, <const char*>dst_mac, 6)
    memcpy(a.src_mac, <const char*>src_mac, 6)
    a.scope = scope
    a.src_dime = src_dime
    a.src_thread = src_thread
    a.dst_dime = dst_dime
    a.dst_thread = dst_thread
    a.seq = seq
    return a


cdef PxAuth* _auth(object auth, PxAuth* out) except? NULL:
    if auth is None:
        return NULL
    out.key_id = auth[0]
    out.counter = auth[1]
    tag = bytes(auth[2])
    if len(tag) != PX_TAG_LEN:
        raise ValueError("a tag is 16 bytes")
    memcpy(out.tag, <const char*>tag, PX_TAG_LEN)
    return out


cdef bytes _built(unsigned char* buf, Py_ssize_t n):
    if n < 0:
        raise ProtocolError(PX_ERROR_FIELDS[-n].decode(), 0, "the C builder refused the frame")
    return PyBytes_FromStringAndSize(<const char*>buf, n)


def put_heartbeat(bytes dst_mac, bytes src_mac, int src_dime, int src_thread, uint64_t seq, tuple hb,
                  auth=None) -> bytes:
    """px_put_heartbeat from Python: ``hb`` = (epoch, state, period_ms, cpu_permille, stage, mem_used,
    mem_limit, rx_queue, tx_queue, service); ``auth`` = (key_id, counter, tag) or None."""
    cdef unsigned char buf[256]
    cdef PxAddr a = _addr(dst_mac, src_mac, 0, src_dime, src_thread, PX_DIME_ALL, 0, seq)
    cdef PxHeartbeatBody h
    cdef PxAuth au
    h.epoch, h.state, h.period_ms, h.cpu_permille, h.stage = hb[0], hb[1], hb[2], hb[3], hb[4]
    h.mem_used, h.mem_limit, h.rx_queue, h.tx_queue, h.service = hb[5], hb[6], hb[7], hb[8], hb[9]
    return _built(buf, px_put_heartbeat(buf, sizeof(buf), &a, &h, _auth(auth, &au)))


def put_data(bytes dst_mac, bytes src_mac, int src_dime, int src_thread, int dst_dime, int dst_thread,
             uint64_t seq, tuple fixed, bytes payload, auth=None) -> bytes:
    """px_put_data from Python: ``fixed`` = (channel, flags, msg_id, msg_len, frag_offset, frag_index,
    frag_count, ack, credit)."""
    cdef Py_ssize_t cap = PX_BODY_OFFSET + PX_DATA_LEN + len(payload) + PX_AUTH_LEN + PX_MIN_ETHERNET_FRAME
    cdef bytearray buf = bytearray(cap)
    cdef PxAddr a = _addr(dst_mac, src_mac, 1, src_dime, src_thread, dst_dime, dst_thread, seq)
    cdef PxDataFixed d
    cdef PxAuth au
    d.channel, d.flags, d.msg_id, d.msg_len, d.frag_offset = fixed[0], fixed[1], fixed[2], fixed[3], fixed[4]
    d.frag_index, d.frag_count, d.ack, d.credit = fixed[5], fixed[6], fixed[7], fixed[8]
    cdef unsigned char* p = <unsigned char*><char*>buf
    return _built(p, px_put_data(p, cap, &a, &d, <const unsigned char*><const char*>payload, len(payload),
                                 _auth(auth, &au)))


def put_signaling(bytes dst_mac, bytes src_mac, int scope, int src_dime, int src_thread, int dst_dime,
                  int dst_thread, uint64_t seq, uint32_t req_id, int cmd, int op, int status, list tlvs,
                  auth=None) -> bytes:
    """px_put_signaling from Python, TLVs written with px_put_tlv / px_put_tlv_uint:
    ``tlvs`` = [(type, bytes) or (type, int, size)]."""
    cdef unsigned char body[65535]
    cdef Py_ssize_t pos = 0, r
    cdef bytes value
    cdef Py_ssize_t cap = PX_BODY_OFFSET + PX_SIG_LEN + 65535 + PX_AUTH_LEN
    cdef bytearray buf = bytearray(cap)
    cdef PxAddr a = _addr(dst_mac, src_mac, scope, src_dime, src_thread, dst_dime, dst_thread, seq)
    cdef PxAuth au
    for t in tlvs:
        if len(t) == 3:
            r = px_put_tlv_uint(body + pos, sizeof(body) - PX_SIG_LEN - pos, t[0], t[1], t[2])
        else:
            value = bytes(t[1])
            r = px_put_tlv(body + pos, sizeof(body) - PX_SIG_LEN - pos, t[0],
                           <const unsigned char*><const char*>value, len(value))
        if r < 0:
            raise ProtocolError("tlv", PX_BODY_OFFSET + PX_SIG_LEN + pos, "does not fit")
        pos += r
    cdef unsigned char* p = <unsigned char*><char*>buf
    return _built(p, px_put_signaling(p, cap, &a, req_id, cmd, op, status, len(tlvs), body, pos, _auth(auth, &au)))
