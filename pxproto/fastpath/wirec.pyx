# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled codec: the generated C header px_codec.h (validation, field
extraction, builders: the rules of pxproto/wire/codec.py check for check, in the
same order, so the first failing check names the same field), wrapped with the
EtherType map in force, and the Python API on top (decode -> Frame, encode,
FrameView, the batch decoder).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from pxproto.fastpath.wiregen cimport *
from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH

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
from pxproto.wire.codes import FrameClass
from pxproto.wire.frame import Auth, Data, DimeInfo, Discovery, Frame, Heartbeat, Sealed, Signaling, Tlv

# ------------------------------------------------------------------ EtherType map (C copy)

cdef PxEtherTypes _ET             # index = FrameClass; et[0] unused

ERROR_FIELDS = tuple(PX_ERROR_FIELDS[i].decode() for i in range(PX_ERR_COUNT))
"""px_codec.h's error-field table (the same as pxproto.wire.layout.ERROR_FIELDS: the tests check)."""
CODEC_HASH = PX_CODEC_HASH.decode()
"""PX_CODEC_HASH of the px_codec.h this module was compiled from."""


def _load_ethertypes(m) -> None:
    """on_change hook: copy the map in force into the C table."""
    _ET.et[0] = 0
    _ET.et[1] = m.signaling
    _ET.et[2] = m.data
    _ET.et[3] = m.discovery
    _ET.et[4] = m.heartbeat


_load_ethertypes(_ethertypes.current())
_ethertypes.on_change(_load_ethertypes)


def current_ethertypes() -> tuple:
    """The C copy of the EtherType map (signaling, data, discovery, heartbeat), for tests."""
    return (_ET.et[1], _ET.et[2], _ET.et[3], _ET.et[4])


# ------------------------------------------------------------------ px_codec.h with the map in force
# The codec is the generated C header; these wrappers are what other Cython modules cimport.

cdef inline int _view(const unsigned char* buf, Py_ssize_t n, PxView* v) noexcept nogil:
    return px_decode(buf, n, &_ET, v)


cdef int px_view(const unsigned char* buf, Py_ssize_t n, PxView* out) noexcept nogil:
    return px_decode(buf, n, &_ET, out)


cdef const char* px_error_field(int code) noexcept nogil:
    return px_error_name(code)


cdef int px_class_of(unsigned int ethertype) noexcept nogil:
    return c_class_of(&_ET, ethertype)


cdef unsigned int px_ethertype_of(int cls) noexcept nogil:
    return c_ethertype_of(&_ET, cls)


cdef Py_ssize_t px_put_header(unsigned char* out, Py_ssize_t cap, const PxAddr* addr, int cls,
                              int has_auth, Py_ssize_t body_len) noexcept nogil:
    return px_encode_header(out, cap, &_ET, addr, cls, has_auth, body_len)


cdef Py_ssize_t px_put_heartbeat(unsigned char* out, Py_ssize_t cap, const PxAddr* addr,
                                 const PxHeartbeatBody* hb, const PxAuth* auth) noexcept nogil:
    return px_encode_heartbeat(out, cap, &_ET, addr, hb, auth)


cdef Py_ssize_t px_put_data(unsigned char* out, Py_ssize_t cap, const PxAddr* addr, const PxDataFixed* d,
                            const unsigned char* payload, Py_ssize_t payload_len, const PxAuth* auth) noexcept nogil:
    return px_encode_data(out, cap, &_ET, addr, d, payload, payload_len, auth)


cdef Py_ssize_t px_put_signaling(unsigned char* out, Py_ssize_t cap, const PxAddr* addr, uint32_t req_id,
                                 int cmd, int op, int status, int tlv_count, const unsigned char* tlvs,
                                 Py_ssize_t tlvs_len, const PxAuth* auth) noexcept nogil:
    return px_encode_signaling(out, cap, &_ET, addr, req_id, cmd, op, status, tlv_count, tlvs, tlvs_len, auth)


cdef Py_ssize_t px_put_tlv(unsigned char* out, Py_ssize_t cap, unsigned int type, const unsigned char* value,
                           Py_ssize_t length) noexcept nogil:
    return px_encode_tlv(out, cap, type, value, length)


cdef Py_ssize_t px_put_tlv_uint(unsigned char* out, Py_ssize_t cap, unsigned int type, uint64_t value,
                                int size) noexcept nogil:
    return px_encode_tlv_uint(out, cap, type, value, size)


include "_frames.pxi"
include "_view.pxi"
include "_builders.pxi"
include "_batch.pxi"


BUILD_HASH = PXPROTO_BUILD_HASH.decode()
"""Source hash of this build (pxproto/fastpath/buildhash.py); pxproto.fastpath.select checks it."""
