# cython: language_level=3
"""Compiled ``pxdump -q`` counting: one pass over the frames, counters updated in place,
and the few columns the request matcher and heartbeat watch need, for their rows only.
The pure twin is :meth:`pxproto.dump.stats.Stats.feed` with the trackers' ``feed``."""

from libc.stdint cimport int64_t, uint8_t, uint64_t

import numpy as np

from pxproto.fastpath.wirec cimport PxView, px_view
from pxproto.fastpath.wiregen cimport *
from pxproto.fastpath.buildinfo cimport PXPROTO_BUILD_HASH


cdef inline uint64_t _mac(const unsigned char* m) noexcept nogil:
    cdef uint64_t x = 0
    cdef int k
    for k in range(6):
        x = (x << 8) | m[k]
    return x


def count_frames(
    const uint8_t[::1] buf,
    const int64_t[::1] offs,
    const int64_t[::1] lens,
    const int64_t[::1] wire,
    const int64_t[::1] ts,
    int64_t first_frame,
    int64_t[::1] kinds,
    int64_t[::1] requests,
    int64_t[::1] responses,
    int64_t[::1] statuses,
    int64_t[::1] sent,
    int64_t[::1] received,
):
    """Count rows into the arrays (len 5, 256, 256, 256, 65536, 65536).

    Returns (bytes, malformed, min ts, max ts, signaling, heartbeat) where signaling is a dict of
    arrays over the valid signaling rows (frame, is_req, mac, rc, ep, ts) and heartbeat over the valid
    heartbeat rows (frame, dime, ts, period), as :mod:`pxproto.dump.track` takes them."""
    cdef Py_ssize_t count = offs.shape[0]
    cdef Py_ssize_t total = buf.shape[0]
    cdef Py_ssize_t i, ln, ns = 0, nh = 0
    if lens.shape[0] != count or wire.shape[0] != count or ts.shape[0] != count:
        raise ValueError("columns of different lengths")
    if kinds.shape[0] < 5 or requests.shape[0] < 256 or responses.shape[0] < 256 or statuses.shape[0] < 256:
        raise ValueError("counter arrays too short")
    if sent.shape[0] < 65536 or received.shape[0] < 65536:
        raise ValueError("DIME counter arrays too short")
    for i in range(count):
        if offs[i] < 0 or lens[i] < 0 or offs[i] + lens[i] > total:
            raise ValueError(f"row {i}: bytes {offs[i]}..{offs[i] + lens[i]} lie outside the {total}-byte buffer")
    s_frame = np.empty(count, np.int64)
    s_req = np.empty(count, np.bool_)
    s_mac = np.empty(count, np.uint64)
    s_rc = np.empty(count, np.uint64)
    s_ep = np.empty(count, np.uint64)
    s_ts = np.empty(count, np.int64)
    h_frame = np.empty(count, np.int64)
    h_dime = np.empty(count, np.int64)
    h_ts = np.empty(count, np.int64)
    h_period = np.empty(count, np.int64)
    cdef int64_t[::1] sf = s_frame
    cdef uint8_t[::1] sq = s_req.view(np.uint8)
    cdef uint64_t[::1] sm = s_mac
    cdef uint64_t[::1] sr = s_rc
    cdef uint64_t[::1] se = s_ep
    cdef int64_t[::1] st = s_ts
    cdef int64_t[::1] hf = h_frame
    cdef int64_t[::1] hd = h_dime
    cdef int64_t[::1] ht = h_ts
    cdef int64_t[::1] hp = h_period
    cdef const unsigned char* base = &buf[0] if total else NULL
    cdef const unsigned char* f
    cdef PxView v
    cdef int r
    cdef int64_t nbytes = 0, bad = 0, lo = 0, hi = 0, t
    with nogil:
        for i in range(count):
            f = base + offs[i]
            ln = lens[i]
            t = ts[i]
            if i == 0 or t < lo:
                lo = t
            if i == 0 or t > hi:
                hi = t
            nbytes += wire[i]
            r = px_view(f, ln, &v)
            if ln < PX_ETH_LEN or (v.cls != 0 and r != 0):
                bad += 1
                continue
            kinds[v.cls] += 1
            if v.cls == 0:
                continue
            sent[v.src_dime] += 1
            received[v.dst_dime] += 1
            if v.cls == PX_CLASS_SIGNALING:
                if v.op == PX_OP_REQUEST:
                    requests[v.cmd] += 1
                    sm[ns] = _mac(f + PX_ETH_SRC)
                elif v.op == PX_OP_RESPONSE:
                    responses[v.cmd] += 1
                    statuses[v.status] += 1
                    sm[ns] = _mac(f + PX_ETH_DST)
                else:
                    sm[ns] = _mac(f + PX_ETH_DST)
                sf[ns] = first_frame + i + 1
                sq[ns] = v.op == PX_OP_REQUEST
                sr[ns] = (<uint64_t>v.req_id << 8) | v.cmd
                se[ns] = (<uint64_t>v.src_dime << 16) | v.src_thread
                st[ns] = t
                ns += 1
            elif v.cls == PX_CLASS_HEARTBEAT:
                hf[nh] = first_frame + i + 1
                hd[nh] = v.src_dime
                ht[nh] = t
                hp[nh] = v.hb_period_ms
                nh += 1
    sig = {"frame": s_frame[:ns], "is_req": s_req[:ns], "mac": s_mac[:ns], "rc": s_rc[:ns], "ep": s_ep[:ns],
           "ts": s_ts[:ns]}
    hb = {"frame": h_frame[:nh], "dime": h_dime[:nh], "ts": h_ts[:nh], "period": h_period[:nh]}
    return nbytes, bad, lo, hi, sig, hb


BUILD_HASH = PXPROTO_BUILD_HASH.decode()
"""Source hash of this build (pxproto/fastpath/buildhash.py); pxproto.fastpath.select checks it."""
