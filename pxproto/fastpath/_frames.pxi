# Included by wirec.pyx: the Python API that turns a PxView into the reference
# Frame dataclasses and encodes them.  FrameView is in _view.pxi, the C builders
# callable from Python in _builders.pxi.
#
# The Frame model is slots dataclasses; building one through its __init__ costs
# more than the whole validation, so objects are allocated with the type's
# allocator and their slots are filled at the member descriptors' offsets.
# _check_layout() verifies at import time that every class still has exactly
# the slots this code fills; if frame.py changes shape the import fails and
# pxproto.fastpath falls back to the reference codec with a warning.

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    object PyType_GenericAlloc(PyTypeObject* t, Py_ssize_t nitems)
    bint PyLong_CheckExact(object o)
    bint PyLong_Check(object o)
    bint PyBytes_CheckExact(object o)
    bint PyUnicode_Check(object o)
    object PyTuple_New(Py_ssize_t n)
    void PyTuple_SET_ITEM(object t, Py_ssize_t i, object v)
    object PyUnicode_AsUTF8String(object s)


from pxproto.wire import codec as _reference

cdef dict _FIELDS = {
    Frame: ("body", "scope", "src_dime", "src_thread", "dst_dime", "dst_thread", "seq", "dst_mac", "src_mac", "auth",
            "version", "padding"),
    Signaling: ("cmd", "op", "req_id", "status", "params"),
    Data: ("channel", "msg_id", "payload", "msg_len", "frag_offset", "frag_index", "frag_count", "ack", "credit",
           "flags"),
    DimeInfo: ("dime", "core", "state", "mem_total", "mem_free", "epoch"),
    Discovery: ("op", "probe_id", "sw_version", "caps", "state_filter", "dimes"),
    Heartbeat: ("epoch", "state", "period_ms", "cpu_permille", "stage", "mem_used", "mem_limit", "rx_queue", "tx_queue",
                "service"),
    Auth: ("key_id", "counter", "tag"),
    Tlv: ("type", "value"),
    Sealed: ("cls", "ciphertext"),
}


cdef Py_ssize_t _offset(type cls, str name) except -1:
    descr = cls.__dict__.get(name)
    if type(descr).__name__ != "member_descriptor":
        raise ImportError(f"{cls.__name__}.{name} is not a slot; the fastpath must follow frame.py")
    return (<PyMemberDescrObject*><PyObject*>descr).d_member.offset


def _check_layout() -> None:
    for cls, names in _FIELDS.items():
        if tuple(cls.__slots__) != names:
            raise ImportError(f"{cls.__name__} slots {cls.__slots__} differ from the fastpath's {names}")


_check_layout()

# slot offsets, in _FIELDS order
cdef Py_ssize_t FR[12]
cdef Py_ssize_t SG[5]
cdef Py_ssize_t DT[10]
cdef Py_ssize_t DI[6]
cdef Py_ssize_t DS[6]
cdef Py_ssize_t HB[10]
cdef Py_ssize_t AU[3]
cdef Py_ssize_t TL[2]
cdef Py_ssize_t SE[2]


cdef void _fill(Py_ssize_t* arr, type cls) except *:
    cdef Py_ssize_t i = 0
    for name in _FIELDS[cls]:
        arr[i] = _offset(cls, name)
        i += 1


_fill(FR, Frame)
_fill(SG, Signaling)
_fill(DT, Data)
_fill(DI, DimeInfo)
_fill(DS, Discovery)
_fill(HB, Heartbeat)
_fill(AU, Auth)
_fill(TL, Tlv)
_fill(SE, Sealed)


cdef inline object _new(type cls):
    return PyType_GenericAlloc(<PyTypeObject*>cls, 0)


cdef inline void _put(object obj, Py_ssize_t off, object val) noexcept:
    cdef PyObject** p = <PyObject**>((<char*><PyObject*>obj) + off)
    Py_INCREF(val)
    Py_XDECREF(p[0])
    p[0] = <PyObject*>val


cdef inline object _get(object obj, Py_ssize_t off):
    cdef PyObject* p = (<PyObject**>((<char*><PyObject*>obj) + off))[0]
    if p == NULL:
        raise AttributeError("slot not set")
    return <object>p


# enum members by code, so decoding never calls an IntEnum constructor
cdef list _table(enum, int size=256):
    out = [None] * size
    for m in enum:
        if 0 <= int(m) < size:
            out[int(m)] = m
    return out


cdef list CMD_M = _table(Command)
cdef list OP_M = _table(Op)
cdef list STATUS_M = _table(Status)
cdef list STATE_M = _table(DimeState)
cdef list DOP_M = _table(DiscoveryOp)
cdef list TLV_M = _table(TlvType, PX_TLV_TYPE_MAX + 1)
cdef list DFLAG_M = [DataFlag(i) for i in range(4)]
cdef object SCOPE_SYSTEM = Scope.SYSTEM
cdef object SCOPE_DIME = Scope.DIME
cdef type FrameT = Frame
cdef type SignalingT = Signaling
cdef type DataT = Data
cdef type DimeInfoT = DimeInfo
cdef type DiscoveryT = Discovery
cdef type HeartbeatT = Heartbeat
cdef type AuthT = Auth
cdef type TlvT = Tlv
cdef type SealedT = Sealed
cdef list CLASS_M = _table(FrameClass, 5)


cdef bint _exact_reasons = True


def exact_reasons(bint on) -> None:
    """Whether a rejection's reason text is the reference codec's (default; costs a reference
    decode per rejected frame) or a short generic one (field and offset are the same either way)."""
    global _exact_reasons
    _exact_reasons = on


cdef object _error(int code, Py_ssize_t offset, bytes data):
    """The ProtocolError for a rejection; the reason text is the reference codec's
    when it names the same field and offset (it always should: the tests check)."""
    field = PX_ERROR_FIELDS[code].decode() if 0 < code < PX_ERR_COUNT else "frame"
    if not _exact_reasons:
        return ProtocolError(field, offset, "breaks the protocol's rule for this field")
    try:
        _reference._decode(data)
    except ProtocolError as exc:
        if exc.field == field and exc.offset == offset:
            return exc
    except Exception:
        pass
    return ProtocolError(field, offset, "rejected by the fast path")


cdef object _tlvs(const unsigned char* buf, PxView* v):
    cdef Py_ssize_t pos = v.body + PX_SIG_LEN
    cdef unsigned int i, t, kind, k
    cdef Py_ssize_t tl
    cdef uint64_t num
    cdef object params = PyTuple_New(v.tlv_count)
    cdef object p, value
    for i in range(v.tlv_count):
        t = rd16(buf + pos)
        tl = rd16(buf + pos + 2)
        kind = PX_TLV_KIND[t] if t <= PX_TLV_TYPE_MAX else 0
        if kind == PX_TLVK_U8 or kind == PX_TLVK_U16 or kind == PX_TLVK_U32 or kind == PX_TLVK_U64:
            num = 0
            for k in range(tl):
                num = (num << 8) | buf[pos + 4 + k]
            value = num
        elif kind == PX_TLVK_TEXT:
            value = PyUnicode_DecodeUTF8(<const char*>buf + pos + 4, tl, NULL)
        else:
            value = PyBytes_FromStringAndSize(<const char*>buf + pos + 4, tl)
        p = _new(TlvT)
        _put(p, TL[0], TLV_M[t] if kind else t)
        _put(p, TL[1], value)
        PyTuple_SET_ITEM(params, i, p)
        Py_INCREF(p)  # PyTuple_SET_ITEM steals a reference
        pos += PX_TLV_LEN + tl
    return params


cdef object _body(const unsigned char* buf, PxView* v):
    cdef object b
    cdef Py_ssize_t pos
    cdef unsigned int i
    if v.encrypted:
        b = _new(SealedT)
        _put(b, SE[0], CLASS_M[v.cls])
        _put(b, SE[1], PyBytes_FromStringAndSize(<const char*>buf + v.body, v.length))
    elif v.cls == PX_CLASS_SIGNALING:
        b = _new(SignalingT)
        _put(b, SG[0], CMD_M[v.cmd])
        _put(b, SG[1], OP_M[v.op])
        _put(b, SG[2], v.req_id)
        _put(b, SG[3], STATUS_M[v.status])
        _put(b, SG[4], _tlvs(buf, v) if v.tlv_count else ())
    elif v.cls == PX_CLASS_DATA:
        b = _new(DataT)
        _put(b, DT[0], v.channel)
        _put(b, DT[1], v.msg_id)
        _put(b, DT[2], PyBytes_FromStringAndSize(<const char*>buf + v.payload, v.payload_len))
        _put(b, DT[3], v.msg_len)
        _put(b, DT[4], v.frag_offset)
        _put(b, DT[5], v.frag_index)
        _put(b, DT[6], v.frag_count)
        _put(b, DT[7], v.ack)
        _put(b, DT[8], v.credit)
        _put(b, DT[9], DFLAG_M[v.data_flags])
    elif v.cls == PX_CLASS_DISCOVERY:
        dimes = PyTuple_New(v.disc_count)
        pos = v.body + PX_DISC_LEN
        for i in range(v.disc_count):
            d = _new(DimeInfoT)
            _put(d, DI[0], rd16(buf + pos + PX_DIME_DIME))
            _put(d, DI[1], rd16(buf + pos + PX_DIME_CORE))
            _put(d, DI[2], STATE_M[buf[pos + PX_DIME_STATE]])
            _put(d, DI[3], rd32(buf + pos + PX_DIME_MEM_TOTAL))
            _put(d, DI[4], rd32(buf + pos + PX_DIME_MEM_FREE))
            _put(d, DI[5], rd32(buf + pos + PX_DIME_EPOCH))
            PyTuple_SET_ITEM(dimes, i, d)
            Py_INCREF(d)
            pos += PX_DIME_LEN
        b = _new(DiscoveryT)
        _put(b, DS[0], DOP_M[v.disc_op])
        _put(b, DS[1], v.probe_id)
        _put(b, DS[2], v.sw_version)
        _put(b, DS[3], v.caps)
        _put(b, DS[4], v.state_filter)
        _put(b, DS[5], dimes)
    else:
        b = _new(HeartbeatT)
        _put(b, HB[0], v.hb_epoch)
        _put(b, HB[1], STATE_M[v.hb_state])
        _put(b, HB[2], v.hb_period_ms)
        _put(b, HB[3], v.hb_cpu_permille)
        _put(b, HB[4], v.hb_stage)
        _put(b, HB[5], v.hb_mem_used)
        _put(b, HB[6], v.hb_mem_limit)
        _put(b, HB[7], v.hb_rx_queue)
        _put(b, HB[8], v.hb_tx_queue)
        _put(b, HB[9], v.hb_service)
    return b


cdef object _frame(const unsigned char* buf, PxView* v):
    cdef object f = _new(FrameT)
    cdef object a
    _put(f, FR[0], _body(buf, v))
    _put(f, FR[1], SCOPE_DIME if v.scope else SCOPE_SYSTEM)
    _put(f, FR[2], v.src_dime)
    _put(f, FR[3], v.src_thread)
    _put(f, FR[4], v.dst_dime)
    _put(f, FR[5], v.dst_thread)
    _put(f, FR[6], v.seq)
    _put(f, FR[7], PyBytes_FromStringAndSize(<const char*>buf + PX_ETH_DST, 6))
    _put(f, FR[8], PyBytes_FromStringAndSize(<const char*>buf + PX_ETH_SRC, 6))
    if v.has_auth:
        a = _new(AuthT)
        _put(a, AU[0], v.auth_key_id)
        _put(a, AU[1], v.auth_counter)
        _put(a, AU[2], PyBytes_FromStringAndSize(<const char*>buf + v.auth + PX_AUTH_TAG, PX_TAG_LEN))
        _put(f, FR[9], a)
    else:
        _put(f, FR[9], None)
    _put(f, FR[10], v.version)
    _put(f, FR[11], v.padding)
    return f


def decode(buf) -> Frame:
    """Decode one Ethernet frame into the reference Frame; raise ProtocolError (same field and
    offset as pxproto.wire.decode) when it breaks the protocol."""
    cdef PxView v
    cdef bytes data = buf if PyBytes_CheckExact(buf) else bytes(buf)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    if _view(p, len(data), &v):
        raise _error(v.error, v.error_offset, data)
    return _frame(p, &v)


def check(buf) -> tuple:
    """(error field or "", byte offset) for one frame, without building a Frame."""
    cdef PxView v
    cdef bytes data = buf if PyBytes_CheckExact(buf) else bytes(buf)
    if _view(<const unsigned char*>PyBytes_AS_STRING(data), len(data), &v):
        return (PX_ERROR_FIELDS[v.error].decode(), v.error_offset)
    return ("", 0)


# ------------------------------------------------------------------ encoding

class _Unencodable(Exception):
    pass


cdef inline uint64_t _u(object x, uint64_t maxv) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t r
    if not PyLong_Check(x):
        raise _Unencodable(f"{x!r} is not an integer")
    if x < 0 or x > maxv:
        raise _Unencodable(f"{x!r} is out of range 0..{maxv}")
    r = x
    return r


cdef bytes _mac(object x):
    if PyLong_Check(x) or PyUnicode_Check(x):
        raise _Unencodable(f"MAC {x!r} is not bytes")
    b = bytes(x)
    if len(b) != 6:
        raise _Unencodable(f"MAC {x!r} is not 6 bytes")
    return b


cdef bytes _tlv_raw(object p):
    """A TLV's value bytes, converted as codec._encode_tlv does."""
    t = _get(p, TL[0])
    v = _get(p, TL[1])
    cdef unsigned int ti
    cdef int kind
    if PyLong_Check(v):
        ti = <unsigned int>_u(t, 0xFFFF)
        kind = PX_TLV_KIND[ti] if ti <= PX_TLV_TYPE_MAX else 0
        if kind == 0 or PX_TLVK_SIZE[kind] == 0 or kind > PX_TLVK_U64:
            raise _Unencodable(f"TLV type {t!r} does not take an integer")
        size = PX_TLVK_SIZE[kind]
        return (<object>_u(v, 0xFFFFFFFFFFFFFFFF if size == 8 else ((1 << (8 * size)) - 1))).to_bytes(size, "big")
    if PyUnicode_Check(v):
        return PyUnicode_AsUTF8String(v)
    return bytes(v)


def encode(frame) -> bytes:
    """Encode a Frame; a frame the decoder would reject raises ProtocolError (as pxproto.wire.encode)."""
    cdef PxView v
    cdef Py_ssize_t body_len, n, pos, i, pad
    cdef unsigned char* out
    cdef unsigned char* h
    cdef unsigned char* b
    cdef int cls, has_auth, sealed = 0
    cdef bytes raw, data, dst_mac, src_mac, payload, tag
    if not isinstance(frame, FrameT):
        raise ProtocolError("frame", 0, f"cannot encode: {type(frame).__name__} is not a Frame")
    try:
        body = _get(frame, FR[0])
        auth = _get(frame, FR[9])
        has_auth = auth is not None
        raws = None
        if isinstance(body, SealedT):
            sealed = 1
            cls = <int>_u(_get(body, SE[0]), 4)
            if cls == 0:
                raise _Unencodable("sealed body of class 0")
            payload = bytes(_get(body, SE[1]))
            body_len = len(payload)
        elif isinstance(body, SignalingT):
            cls = PX_CLASS_SIGNALING
            params = _get(body, SG[4])
            raws = [_tlv_raw(p) for p in params]
            body_len = PX_SIG_LEN
            for raw in raws:
                if len(raw) > 0xFFFF:
                    raise _Unencodable("TLV value longer than 65535 bytes")
                body_len += PX_TLV_LEN + len(raw)
        elif isinstance(body, DataT):
            cls = PX_CLASS_DATA
            payload = bytes(_get(body, DT[2]))
            body_len = PX_DATA_LEN + len(payload)
        elif isinstance(body, DiscoveryT):
            cls = PX_CLASS_DISCOVERY
            dimes = _get(body, DS[5])
            body_len = PX_DISC_LEN + PX_DIME_LEN * len(dimes)
        elif isinstance(body, HeartbeatT):
            cls = PX_CLASS_HEARTBEAT
            body_len = PX_HB_LEN
        else:
            raise _Unencodable(f"{type(body).__name__} is not a frame body")
        if body_len > 0xFFFF:
            raise _Unencodable(f"body of {body_len} bytes is longer than 65535")
        pad_obj = _get(frame, FR[11])
        if not PyLong_Check(pad_obj):
            raise _Unencodable("padding is not an integer")
        pad = pad_obj if 0 < pad_obj < 1 << 20 else 0
        n = PX_BODY_OFFSET + body_len + (PX_AUTH_LEN if has_auth else 0) + pad
        data = PyBytes_FromStringAndSize(NULL, n)
        out = <unsigned char*>PyBytes_AS_STRING(data)
        dst_mac = _mac(_get(frame, FR[7]))
        src_mac = _mac(_get(frame, FR[8]))
        memcpy(out + PX_ETH_DST, <const char*>dst_mac, 6)
        memcpy(out + PX_ETH_SRC, <const char*>src_mac, 6)
        wr16(out + PX_ETH_TYPE, _ET.et[cls])
        h = out + PX_ETH_LEN
        h[PX_HDR_VERSION] = <unsigned char>_u(_get(frame, FR[10]), 0xFF)
        h[PX_HDR_FLAGS] = (PX_HFLAG_SCOPE_DIME if _get(frame, FR[1]) is SCOPE_DIME else 0) | (
            PX_HFLAG_AUTH if has_auth else 0) | (PX_HFLAG_ENCRYPTED if sealed else 0)
        wr16(h + PX_HDR_LENGTH, <unsigned int>body_len)
        wr16(h + PX_HDR_SRC_DIME, <unsigned int>_u(_get(frame, FR[2]), 0xFFFF))
        wr16(h + PX_HDR_SRC_THREAD, <unsigned int>_u(_get(frame, FR[3]), 0xFFFF))
        wr16(h + PX_HDR_DST_DIME, <unsigned int>_u(_get(frame, FR[4]), 0xFFFF))
        wr16(h + PX_HDR_DST_THREAD, <unsigned int>_u(_get(frame, FR[5]), 0xFFFF))
        wr64(h + PX_HDR_SEQ, _u(_get(frame, FR[6]), 0xFFFFFFFFFFFFFFFF))
        b = out + PX_BODY_OFFSET
        if sealed:
            if body_len:
                memcpy(b, <const char*>payload, body_len)
        elif cls == PX_CLASS_SIGNALING:
            wr32(b + PX_SIG_REQ_ID, <uint32_t>_u(_get(body, SG[2]), 0xFFFFFFFF))
            b[PX_SIG_CMD] = <unsigned char>_u(_get(body, SG[0]), 0xFF)
            b[PX_SIG_OP] = <unsigned char>_u(_get(body, SG[1]), 0xFF)
            b[PX_SIG_STATUS] = <unsigned char>_u(_get(body, SG[3]), 0xFF)
            if len(raws) > 255:
                raise _Unencodable("more than 255 TLVs")
            b[PX_SIG_TLV_COUNT] = len(raws)
            pos = PX_SIG_LEN
            for i in range(len(raws)):
                raw = raws[i]
                px_put_tlv(b + pos, body_len - pos, <unsigned int>_u(_get(params[i], TL[0]), 0xFFFF),
                           <const unsigned char*><const char*>raw, len(raw))
                pos += PX_TLV_LEN + len(raw)
        elif cls == PX_CLASS_DATA:
            wr16(b + PX_DATA_CHANNEL, <unsigned int>_u(_get(body, DT[0]), 0xFFFF))
            b[PX_DATA_FLAGS] = <unsigned char>_u(_get(body, DT[9]), 0xFF)
            wr32(b + PX_DATA_MSG_ID, <uint32_t>_u(_get(body, DT[1]), 0xFFFFFFFF))
            wr32(b + PX_DATA_MSG_LEN, <uint32_t>_u(_get(body, DT[3]), 0xFFFFFFFF))
            wr32(b + PX_DATA_FRAG_OFFSET, <uint32_t>_u(_get(body, DT[4]), 0xFFFFFFFF))
            wr16(b + PX_DATA_FRAG_INDEX, <unsigned int>_u(_get(body, DT[5]), 0xFFFF))
            wr16(b + PX_DATA_FRAG_COUNT, <unsigned int>_u(_get(body, DT[6]), 0xFFFF))
            wr32(b + PX_DATA_ACK, <uint32_t>_u(_get(body, DT[7]), 0xFFFFFFFF))
            wr16(b + PX_DATA_CREDIT, <unsigned int>_u(_get(body, DT[8]), 0xFFFF))
            if len(payload):
                memcpy(b + PX_DATA_LEN, <const char*>payload, len(payload))
        elif cls == PX_CLASS_DISCOVERY:
            b[PX_DISC_OP] = <unsigned char>_u(_get(body, DS[0]), 0xFF)
            b[PX_DISC_STATE_FILTER] = <unsigned char>_u(_get(body, DS[4]), 0xFF)
            wr16(b + PX_DISC_COUNT, len(dimes))
            wr32(b + PX_DISC_PROBE_ID, <uint32_t>_u(_get(body, DS[1]), 0xFFFFFFFF))
            wr32(b + PX_DISC_SW_VERSION, <uint32_t>_u(_get(body, DS[2]), 0xFFFFFFFF))
            wr32(b + PX_DISC_CAPS, <uint32_t>_u(_get(body, DS[3]), 0xFFFFFFFF))
            pos = PX_DISC_LEN
            for d in dimes:
                if not isinstance(d, DimeInfoT):
                    raise _Unencodable(f"{type(d).__name__} is not a DimeInfo")
                wr16(b + pos + PX_DIME_DIME, <unsigned int>_u(_get(d, DI[0]), 0xFFFF))
                wr16(b + pos + PX_DIME_CORE, <unsigned int>_u(_get(d, DI[1]), 0xFFFF))
                b[pos + PX_DIME_STATE] = <unsigned char>_u(_get(d, DI[2]), 0xFF)
                wr32(b + pos + PX_DIME_MEM_TOTAL, <uint32_t>_u(_get(d, DI[3]), 0xFFFFFFFF))
                wr32(b + pos + PX_DIME_MEM_FREE, <uint32_t>_u(_get(d, DI[4]), 0xFFFFFFFF))
                wr32(b + pos + PX_DIME_EPOCH, <uint32_t>_u(_get(d, DI[5]), 0xFFFFFFFF))
                pos += PX_DIME_LEN
        else:
            wr32(b + PX_HB_EPOCH, <uint32_t>_u(_get(body, HB[0]), 0xFFFFFFFF))
            b[PX_HB_STATE] = <unsigned char>_u(_get(body, HB[1]), 0xFF)
            wr16(b + PX_HB_PERIOD_MS, <unsigned int>_u(_get(body, HB[2]), 0xFFFF))
            wr16(b + PX_HB_CPU_PERMILLE, <unsigned int>_u(_get(body, HB[3]), 0xFFFF))
            wr16(b + PX_HB_STAGE, <unsigned int>_u(_get(body, HB[4]), 0xFFFF))
            wr32(b + PX_HB_MEM_USED, <uint32_t>_u(_get(body, HB[5]), 0xFFFFFFFF))
            wr32(b + PX_HB_MEM_LIMIT, <uint32_t>_u(_get(body, HB[6]), 0xFFFFFFFF))
            wr32(b + PX_HB_RX_QUEUE, <uint32_t>_u(_get(body, HB[7]), 0xFFFFFFFF))
            wr32(b + PX_HB_TX_QUEUE, <uint32_t>_u(_get(body, HB[8]), 0xFFFFFFFF))
            wr32(b + PX_HB_SERVICE, <uint32_t>_u(_get(body, HB[9]), 0xFFFFFFFF))
        pos = PX_BODY_OFFSET + body_len
        if has_auth:
            if not isinstance(auth, AuthT):
                raise _Unencodable(f"{type(auth).__name__} is not an Auth")
            tag = _get(auth, AU[2])
            if PyLong_Check(tag) or PyUnicode_Check(tag):
                raise _Unencodable("auth tag is not bytes")
            tag = bytes(tag)
            if len(tag) != PX_TAG_LEN:
                raise _Unencodable(f"auth tag of {len(tag)} bytes, not {PX_TAG_LEN}")
            wr16(out + pos + PX_AUTH_KEY_ID, <unsigned int>_u(_get(auth, AU[0]), 0xFFFF))
            wr64(out + pos + PX_AUTH_COUNTER, _u(_get(auth, AU[1]), 0xFFFFFFFFFFFFFFFF))
            memcpy(out + pos + PX_AUTH_TAG, <const char*>tag, PX_TAG_LEN)
            pos += PX_AUTH_LEN
        if pad:
            memset(out + pos, 0, pad)
    except (_Unencodable, AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError("frame", 0, f"cannot encode: {exc}") from None
    if _view(out, n, &v):
        raise _error(v.error, v.error_offset, data)
    return data
