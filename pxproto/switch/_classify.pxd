# cython: language_level=3
"""How deep the AF_PACKET loop (_afpacket.pyx) looks into a frame before it forwards it: its class from the
EtherType map, then nothing more (``none``), the header rules of :func:`pxproto.switch.peek.peek`
(``header``) or every rule of the reference codec (``full``, ``px_view``)."""

from pxproto.fastpath.wirec cimport PxView, px_class_of, px_view
from pxproto.fastpath.wiregen cimport *
from pxproto.switch._cutil cimport u16


cdef enum:
    V_NONE = 0
    V_HEADER = 1
    V_FULL = 2


cdef inline bint header_ok(const unsigned char* b, Py_ssize_t n, int c, unsigned int flags, int dime_scope,
                           unsigned int src_dime, unsigned int dst_dime) noexcept nogil:
    """The rules of pxproto.switch.peek._check_header, for a frame of class ``c`` at least PX_BODY_OFFSET long."""
    cdef unsigned int end
    cdef Py_ssize_t k
    if b[PX_ETH_LEN + PX_HDR_VERSION] != PX_PROTOCOL_VERSION or flags & ~(
            PX_HFLAG_SCOPE_DIME | PX_HFLAG_AUTH | PX_HFLAG_ENCRYPTED):
        return False
    if flags & PX_HFLAG_ENCRYPTED and not flags & PX_HFLAG_AUTH:  # an encrypted body needs its tag
        return False
    end = PX_BODY_OFFSET + u16(b + PX_ETH_LEN + PX_HDR_LENGTH) + (PX_AUTH_LEN if flags & PX_HFLAG_AUTH else 0)
    if end > n:
        return False
    if end < n:
        if n != PX_MIN_ETHERNET_FRAME:
            return False
        for k in range(end, n):
            if b[k]:
                return False
    if c == PX_CLASS_DATA and not dime_scope:
        return False
    if (c == PX_CLASS_DISCOVERY or c == PX_CLASS_HEARTBEAT) and dime_scope:
        return False
    if dime_scope == (dst_dime == PX_DIME_ALL):
        return False
    return not (c == PX_CLASS_HEARTBEAT and src_dime == PX_DIME_ALL)


cdef inline int classify(const unsigned char* b, Py_ssize_t n, int validation, bint non_parallax_drop, int* ci,
                         int* dime_scope, unsigned int* src_dime, unsigned int* dst_dime, int* err) noexcept nogil:
    """0 when the loop may forward the frame itself; -1 sends it to Python; 1: malformed (``full``), ``err`` set.
    ``ci`` gets the class, the others the header's DIME scope and DIME ids."""
    cdef unsigned int flags
    cdef PxView v
    cdef int c
    if n < PX_ETH_LEN:
        return -1
    c = px_class_of(u16(b + PX_ETH_TYPE))
    ci[0] = c
    if c == 0:
        return -1 if non_parallax_drop else 0
    if validation == V_FULL:
        err[0] = px_view(b, n, &v)
        if err[0]:
            return 1
        dime_scope[0] = v.scope
        src_dime[0] = v.src_dime
        dst_dime[0] = v.dst_dime
        return 0
    if n < PX_BODY_OFFSET:
        return -1
    flags = b[PX_ETH_LEN + PX_HDR_FLAGS]
    dime_scope[0] = 1 if flags & PX_HFLAG_SCOPE_DIME else 0
    src_dime[0] = u16(b + PX_ETH_LEN + PX_HDR_SRC_DIME)
    dst_dime[0] = u16(b + PX_ETH_LEN + PX_HDR_DST_DIME)
    if validation == V_NONE:
        return 0
    # header depth: the rules of peek._check_header; a frame that breaks one goes to Python to be counted
    return 0 if header_ok(b, n, c, flags, dime_scope[0], src_dime[0], dst_dime[0]) else -1
