# cython: language_level=3
"""C-level contract of the Parallax fast path.

The codec itself is plain C: ``px_codec.h``, generated from the spec by
pxproto/wire/gen_fastpath.py (constants, tables, static inline decoder and
encoders; no Python.h).  The types below are that header's; the ``px_*``
functions are wirec.pyx's thin wrappers, which pass the EtherType map in force
(one copy, in wirec, that follows pxproto.wire.ethertypes.configure).

Other Cython modules (the node kernel's RX/TX loops, the switch) do::

    from pxproto.fastpath.wirec cimport PxView, px_view, px_put_heartbeat, ...
    from pxproto.fastpath.wiregen cimport *      # generated constants (PX_ERR_*, PX_CLASS_*, ...)

and call these functions per frame with no Python object and without the GIL.

Decoding
--------
``px_view(buf, n, &v)`` validates one Ethernet frame of ``n`` bytes by exactly
the rules of the reference codec (pxproto/wire/codec.py) and fills ``v``.
It returns 0 when the frame is valid, else an error code ``PX_ERR_*`` (also
stored in ``v.error``, with the byte offset in ``v.error_offset``);
``px_error_field(code)`` is its ``ProtocolError.field`` string.  On error the
fields read before the failing check are filled and the others are 0;
``v.cls`` is 0 when the EtherType is not a Parallax one (or the frame is
shorter than an Ethernet header).

Encoding
--------
The ``px_put_*`` builders write one whole frame (Ethernet header to padding)
into a caller buffer of ``cap`` bytes and return its length, or
``-code`` (a negative PX_ERR_* code) when the frame would be rejected by the
decoder (the frame is checked with px_view after building it);
``-PX_ERR_FRAME`` also means ``cap`` is too small.  Frames shorter than 60
bytes are zero-padded to 60.  ``auth`` may be NULL (no trailer); with a
trailer the caller computes the tag (pxproto.wire.auth) over the bytes
written, and passes the tag or zeros.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "px_codec.h":
    ctypedef struct PxEtherTypes:
        unsigned int et[5]   # index = FrameClass; et[0] unused

    ctypedef struct PxView:
        # common header
        int cls                  # 1..4 = FrameClass, 0 = not a Parallax EtherType
        unsigned int ethertype
        unsigned int version
        unsigned int flags       # header flags byte (SCOPE_DIME 0x01, AUTH 0x02, ENCRYPTED 0x04)
        int scope                # 0 = SYSTEM, 1 = DIME
        unsigned int length      # body length (header field)
        unsigned int src_dime
        unsigned int src_thread
        unsigned int dst_dime
        unsigned int dst_thread
        uint64_t seq
        int has_auth
        int encrypted            # ENCRYPTED flag: the body is AEAD ciphertext, no body field is read
        Py_ssize_t body          # offset of the body (PX_BODY_OFFSET)
        Py_ssize_t end           # end of the frame proper (body + trailer), before padding
        Py_ssize_t padding       # zero padding bytes after end
        # signaling
        uint32_t req_id
        unsigned int cmd
        unsigned int op
        unsigned int status
        unsigned int tlv_count
        # data
        unsigned int channel
        unsigned int data_flags
        uint32_t msg_id
        uint32_t msg_len
        uint32_t frag_offset
        unsigned int frag_index
        unsigned int frag_count
        uint32_t ack
        unsigned int credit
        Py_ssize_t payload       # offset of the data payload
        Py_ssize_t payload_len
        # discovery
        unsigned int disc_op
        unsigned int state_filter
        unsigned int disc_count
        uint32_t probe_id
        uint32_t sw_version
        uint32_t caps
        # heartbeat
        uint32_t hb_epoch
        unsigned int hb_state
        unsigned int hb_period_ms
        unsigned int hb_cpu_permille
        unsigned int hb_stage
        uint32_t hb_mem_used
        uint32_t hb_mem_limit
        uint32_t hb_rx_queue
        uint32_t hb_tx_queue
        uint32_t hb_service
        # authentication trailer
        Py_ssize_t auth          # offset of the trailer, -1 when absent
        unsigned int auth_key_id
        uint64_t auth_counter
        # verdict
        int error                # 0 = valid, else a PX_ERR_* code
        Py_ssize_t error_offset

    ctypedef struct PxAddr:
        uint8_t dst_mac[6]
        uint8_t src_mac[6]
        int scope                # 0 = SYSTEM, 1 = DIME
        uint16_t src_dime
        uint16_t src_thread
        uint16_t dst_dime
        uint16_t dst_thread
        uint64_t seq

    ctypedef struct PxAuth:
        uint16_t key_id
        uint64_t counter
        uint8_t tag[16]

    ctypedef struct PxHeartbeatBody:
        uint32_t epoch
        uint8_t state
        uint16_t period_ms
        uint16_t cpu_permille
        uint16_t stage
        uint32_t mem_used
        uint32_t mem_limit
        uint32_t rx_queue
        uint32_t tx_queue
        uint32_t service

    ctypedef struct PxDataFixed:
        uint16_t channel
        uint8_t flags
        uint32_t msg_id
        uint32_t msg_len
        uint32_t frag_offset
        uint16_t frag_index
        uint16_t frag_count
        uint32_t ack
        uint16_t credit

    # big-endian byte access
    unsigned int rd16 "px_rd16"(const unsigned char* p) noexcept nogil
    uint32_t rd32 "px_rd32"(const unsigned char* p) noexcept nogil
    uint64_t rd64 "px_rd64"(const unsigned char* p) noexcept nogil
    void wr16 "px_wr16"(unsigned char* p, unsigned int v) noexcept nogil
    void wr32 "px_wr32"(unsigned char* p, uint32_t v) noexcept nogil
    void wr64 "px_wr64"(unsigned char* p, uint64_t v) noexcept nogil

    # the header's codec, under its C names (the EtherType map is an argument)
    int px_decode(const unsigned char* buf, Py_ssize_t n, const PxEtherTypes* m, PxView* v) noexcept nogil
    int c_class_of "px_class_of"(const PxEtherTypes* m, unsigned int ethertype) noexcept nogil
    unsigned int c_ethertype_of "px_ethertype_of"(const PxEtherTypes* m, int cls) noexcept nogil
    const char* px_error_name(int code) noexcept nogil
    Py_ssize_t px_encode_header(unsigned char* out, Py_ssize_t cap, const PxEtherTypes* m, const PxAddr* addr,
                                int cls, int has_auth, Py_ssize_t body_len) noexcept nogil
    Py_ssize_t px_encode_heartbeat(unsigned char* out, Py_ssize_t cap, const PxEtherTypes* m, const PxAddr* addr,
                                   const PxHeartbeatBody* hb, const PxAuth* auth) noexcept nogil
    Py_ssize_t px_encode_data(unsigned char* out, Py_ssize_t cap, const PxEtherTypes* m, const PxAddr* addr,
                              const PxDataFixed* d, const unsigned char* payload, Py_ssize_t payload_len,
                              const PxAuth* auth) noexcept nogil
    Py_ssize_t px_encode_signaling(unsigned char* out, Py_ssize_t cap, const PxEtherTypes* m, const PxAddr* addr,
                                   uint32_t req_id, int cmd, int op, int status, int tlv_count,
                                   const unsigned char* tlvs, Py_ssize_t tlvs_len, const PxAuth* auth) noexcept nogil
    Py_ssize_t px_encode_tlv(unsigned char* out, Py_ssize_t cap, unsigned int type,
                             const unsigned char* value, Py_ssize_t length) noexcept nogil
    Py_ssize_t px_encode_tlv_uint(unsigned char* out, Py_ssize_t cap, unsigned int type, uint64_t value,
                                  int size) noexcept nogil


# --- decoding, with the EtherType map in force
cdef int px_view(const unsigned char* buf, Py_ssize_t n, PxView* out) noexcept nogil
cdef const char* px_error_field(int code) noexcept nogil
cdef int px_class_of(unsigned int ethertype) noexcept nogil           # 0 if not Parallax
cdef unsigned int px_ethertype_of(int cls) noexcept nogil              # current map; 0 for a bad class

# --- encoding (whole frames into a caller buffer)
cdef Py_ssize_t px_put_header(unsigned char* out, Py_ssize_t cap, const PxAddr* addr, int cls,
                              int has_auth, Py_ssize_t body_len) noexcept nogil
cdef Py_ssize_t px_put_heartbeat(unsigned char* out, Py_ssize_t cap, const PxAddr* addr,
                                 const PxHeartbeatBody* hb, const PxAuth* auth) noexcept nogil
cdef Py_ssize_t px_put_data(unsigned char* out, Py_ssize_t cap, const PxAddr* addr, const PxDataFixed* d,
                            const unsigned char* payload, Py_ssize_t payload_len, const PxAuth* auth) noexcept nogil
cdef Py_ssize_t px_put_signaling(unsigned char* out, Py_ssize_t cap, const PxAddr* addr, uint32_t req_id,
                                 int cmd, int op, int status, int tlv_count, const unsigned char* tlvs,
                                 Py_ssize_t tlvs_len, const PxAuth* auth) noexcept nogil
# TLV helpers for the signaling body: write one TLV at out, return its size (4 + value) or -1 if cap is short.
cdef Py_ssize_t px_put_tlv(unsigned char* out, Py_ssize_t cap, unsigned int type, const unsigned char* value,
                           Py_ssize_t length) noexcept nogil
cdef Py_ssize_t px_put_tlv_uint(unsigned char* out, Py_ssize_t cap, unsigned int type, uint64_t value,
                                int size) noexcept nogil
