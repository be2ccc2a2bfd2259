# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The kernel build: per-frame work of the server relay and the DIME, compiled over the fastpath.

``route`` tells the server process where a frame from the wire goes without
decoding it; ``ping_reply`` answers an unauthenticated PING request entirely in
C (px_view to validate, px_put_signaling to build), so a ping costs the DIME
no Frame, Tlv or dataclass objects: one bytes object in, one out.
:mod:`pxproto.node.fastrx` is the pure-Python twin used when this is not compiled.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memcpy

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
