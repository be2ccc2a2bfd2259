# Included by wirec.pyx: the batch decoder, px_view over many frames of one
# buffer writing straight into numpy column arrays (no Python object per frame).

import numpy as _np

from pxproto.fastpath.columns import COLUMNS as _COLUMNS


cdef inline void* _ptr(dict arrays, str name) except NULL:
    a = arrays[name]
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"column {name} must be a writeable contiguous array")
    return <void*><size_t>a.__array_interface__["data"][0]


def decode_columns_into(buf, offsets, lengths, dict arrays, linktypes=None) -> None:
    """Fill ``arrays`` (name -> array of len(offsets), see columns.COLUMNS) for the frames
    buf[offsets[i]:offsets[i]+lengths[i]].  Rows whose linktype is not Ethernet (1) are cls 0,
    error "frame"."""
    cdef const unsigned char[::1] data = memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf
    cdef const int64_t[::1] offs = _np.ascontiguousarray(offsets, dtype=_np.int64)
    cdef const int64_t[::1] lens = _np.ascontiguousarray(lengths, dtype=_np.int64)
    cdef const uint16_t[::1] lts
    cdef Py_ssize_t count = offs.shape[0]
    cdef Py_ssize_t total = data.shape[0]
    cdef Py_ssize_t i, o, ln
    cdef bint check_lt = linktypes is not None
    cdef PxView v
    cdef int r
    if lens.shape[0] != count:
        raise ValueError(f"{count} offsets but {lens.shape[0]} lengths")
    for name, dt, _doc in _COLUMNS:
        a = arrays[name]
        if a.shape[0] != count or a.dtype != _np.dtype(dt):
            raise ValueError(f"column {name} must be {count} x {dt}")
    if check_lt:
        lts = _np.ascontiguousarray(linktypes, dtype=_np.uint16)
        if lts.shape[0] != count:
            raise ValueError(f"{count} offsets but {lts.shape[0]} linktypes")
    if count == 0:
        return
    for i in range(count):
        if offs[i] < 0 or lens[i] < 0 or offs[i] + lens[i] > total:
            raise ValueError(f"frame {i}: bytes {offs[i]}..{offs[i] + lens[i]} lie outside the {total}-byte buffer")
    cdef const unsigned char* base = &data[0] if total else NULL
    cdef int64_t* c_offset = <int64_t*>_ptr(arrays, "offset")
    cdef uint32_t* c_length = <uint32_t*>_ptr(arrays, "length")
    cdef uint8_t* c_cls = <uint8_t*>_ptr(arrays, "cls")
    cdef uint8_t* c_valid = <uint8_t*>_ptr(arrays, "valid")
    cdef uint8_t* c_error = <uint8_t*>_ptr(arrays, "error")
    cdef int32_t* c_error_offset = <int32_t*>_ptr(arrays, "error_offset")
    cdef uint16_t* c_ethertype = <uint16_t*>_ptr(arrays, "ethertype")
    cdef uint8_t* c_version = <uint8_t*>_ptr(arrays, "version")
    cdef uint8_t* c_flags = <uint8_t*>_ptr(arrays, "flags")
    cdef uint8_t* c_scope = <uint8_t*>_ptr(arrays, "scope")
    cdef uint16_t* c_body_len = <uint16_t*>_ptr(arrays, "body_len")
    cdef uint16_t* c_src_dime = <uint16_t*>_ptr(arrays, "src_dime")
    cdef uint16_t* c_src_thread = <uint16_t*>_ptr(arrays, "src_thread")
    cdef uint16_t* c_dst_dime = <uint16_t*>_ptr(arrays, "dst_dime")
    cdef uint16_t* c_dst_thread = <uint16_t*>_ptr(arrays, "dst_thread")
    cdef uint64_t* c_seq = <uint64_t*>_ptr(arrays, "seq")
    cdef uint8_t* c_has_auth = <uint8_t*>_ptr(arrays, "has_auth")
    cdef uint16_t* c_padding = <uint16_t*>_ptr(arrays, "padding")
    cdef uint32_t* c_req_id = <uint32_t*>_ptr(arrays, "req_id")
    cdef uint8_t* c_cmd = <uint8_t*>_ptr(arrays, "cmd")
    cdef uint8_t* c_op = <uint8_t*>_ptr(arrays, "op")
    cdef uint8_t* c_status = <uint8_t*>_ptr(arrays, "status")
    cdef uint8_t* c_tlv_count = <uint8_t*>_ptr(arrays, "tlv_count")
    cdef uint16_t* c_channel = <uint16_t*>_ptr(arrays, "channel")
    cdef uint8_t* c_data_flags = <uint8_t*>_ptr(arrays, "data_flags")
    cdef uint32_t* c_msg_id = <uint32_t*>_ptr(arrays, "msg_id")
    cdef uint32_t* c_msg_len = <uint32_t*>_ptr(arrays, "msg_len")
    cdef uint32_t* c_frag_offset = <uint32_t*>_ptr(arrays, "frag_offset")
    cdef uint16_t* c_frag_index = <uint16_t*>_ptr(arrays, "frag_index")
    cdef uint16_t* c_frag_count = <uint16_t*>_ptr(arrays, "frag_count")
    cdef uint32_t* c_ack = <uint32_t*>_ptr(arrays, "ack")
    cdef uint16_t* c_credit = <uint16_t*>_ptr(arrays, "credit")
    cdef uint32_t* c_payload_len = <uint32_t*>_ptr(arrays, "payload_len")
    cdef uint8_t* c_disc_op = <uint8_t*>_ptr(arrays, "disc_op")
    cdef uint8_t* c_state_filter = <uint8_t*>_ptr(arrays, "state_filter")
    cdef uint16_t* c_disc_count = <uint16_t*>_ptr(arrays, "disc_count")
    cdef uint32_t* c_probe_id = <uint32_t*>_ptr(arrays, "probe_id")
    cdef uint32_t* c_hb_epoch = <uint32_t*>_ptr(arrays, "hb_epoch")
    cdef uint8_t* c_hb_state = <uint8_t*>_ptr(arrays, "hb_state")
    cdef uint16_t* c_hb_period_ms = <uint16_t*>_ptr(arrays, "hb_period_ms")
    cdef uint16_t* c_hb_cpu_permille = <uint16_t*>_ptr(arrays, "hb_cpu_permille")
    cdef uint16_t* c_hb_stage = <uint16_t*>_ptr(arrays, "hb_stage")
    cdef uint32_t* c_hb_service = <uint32_t*>_ptr(arrays, "hb_service")
    cdef uint16_t* c_auth_key_id = <uint16_t*>_ptr(arrays, "auth_key_id")
    cdef uint64_t* c_auth_counter = <uint64_t*>_ptr(arrays, "auth_counter")
    with nogil:
        for i in range(count):
            o = offs[i]
            ln = lens[i]
            c_offset[i] = o
            c_length[i] = <uint32_t>ln
            if check_lt and lts[i] != 1:
                memset(&v, 0, sizeof(PxView))
                r = v.error = PX_ERR_FRAME
            else:
                r = _view(base + o, ln, &v)
            c_cls[i] = v.cls
            c_valid[i] = r == 0
            c_error[i] = r
            c_error_offset[i] = <int32_t>v.error_offset
            c_ethertype[i] = v.ethertype
            c_version[i] = v.version
            c_flags[i] = v.flags
            c_scope[i] = v.scope
            c_body_len[i] = v.length
            c_src_dime[i] = v.src_dime
            c_src_thread[i] = v.src_thread
            c_dst_dime[i] = v.dst_dime
            c_dst_thread[i] = v.dst_thread
            c_seq[i] = v.seq
            c_has_auth[i] = v.has_auth
            if r:
                continue  # body, trailer and padding columns only for valid rows
            c_padding[i] = <uint16_t>v.padding
            c_auth_key_id[i] = v.auth_key_id
            c_auth_counter[i] = v.auth_counter
            if v.cls == PX_CLASS_SIGNALING:
                c_req_id[i] = v.req_id
                c_cmd[i] = v.cmd
                c_op[i] = v.op
                c_status[i] = v.status
                c_tlv_count[i] = v.tlv_count
            elif v.cls == PX_CLASS_DATA:
                c_channel[i] = v.channel
                c_data_flags[i] = v.data_flags
                c_msg_id[i] = v.msg_id
                c_msg_len[i] = v.msg_len
                c_frag_offset[i] = v.frag_offset
                c_frag_index[i] = v.frag_index
                c_frag_count[i] = v.frag_count
                c_ack[i] = v.ack
                c_credit[i] = v.credit
                c_payload_len[i] = <uint32_t>v.payload_len
            elif v.cls == PX_CLASS_DISCOVERY:
                c_disc_op[i] = v.disc_op
                c_state_filter[i] = v.state_filter
                c_disc_count[i] = v.disc_count
                c_probe_id[i] = v.probe_id
            elif v.cls == PX_CLASS_HEARTBEAT:
                c_hb_epoch[i] = v.hb_epoch
                c_hb_state[i] = v.hb_state
                c_hb_period_ms[i] = v.hb_period_ms
                c_hb_cpu_permille[i] = v.hb_cpu_permille
                c_hb_stage[i] = v.hb_stage
                c_hb_service[i] = v.hb_service
