# The transmit path of :class:`FastLoop` (included by _afpacket.pyx after the class): what one batch queued
# for a port goes out through the port's PACKET_TX_RING, or with sendmmsg, and is counted.

cdef int ring_send(FastLoop self, int p, short* slots, int k) except -2:
    """Send from the start of ``slots`` through ``p``'s transmit ring: how many went (the rest: the ring
    is full or a frame is too long for a slot), or -1 when the socket failed."""
    cdef Tx tx = <Tx>self.txr[p]
    cdef int n = 0, s, r
    cdef bint flushed = False
    while n < k:
        s = slots[n]
        if not tx.put(self.batch.vh[s] if self.vnet[p] else NULL, self.batch.ptr[s], self.batch.len[s]):
            if flushed or self.batch.len[s] > tx.cap:
                break
            flushed = True  # the ring is full: send what waits, which frees slots, and try once more
            with nogil:
                tx.flush(True)
            continue
        self.tx[p] += 1
        self.tx_bytes[p] += self.batch.len[s]
        self.tx_class[p][self.cls_of[s]] += 1
        n += 1
    with nogil:
        r = tx.flush()
    if r < 0 and errno != EAGAIN and errno != ENOBUFS and errno != EINTR:
        return -1
    return n

cdef int send_out(FastLoop self, int p, list retry) except -2:
    """Send what the batch queued for port ``p`` (control frames first): through its transmit ring when it has
    one, the rest with sendmmsg; control frames the socket refuses go to ``retry``, data is dropped; -1 when
    the socket failed."""
    cdef iovec iov[4 * BATCH]
    cdef mmsghdr hdr[2 * BATCH]
    cdef short slots[2 * BATCH]
    cdef int k = 0, i, off = 0, r, err = 0, ci, ln, s, first = 0
    cdef bint vnet = self.vnet[p]
    for i in range(self.nc[p]):
        slots[k] = self.outc[p][i]
        k += 1
    for i in range(self.nd[p]):
        slots[k] = self.outd[p][i]
        k += 1
    if self.txr[p] != NULL:
        first = ring_send(self, p, slots, k)
        if first < 0:
            return -1
        if first == k:
            return 0
        off = first  # the rest with sendmmsg, after what the ring sent
    memset(hdr, 0, k * sizeof(mmsghdr))
    for i in range(first, k):
        s = slots[i]
        hdr[i].msg_hdr.msg_iov = &iov[2 * i]
        if self.dstlen[p]:
            hdr[i].msg_hdr.msg_name = self.dst[p]
            hdr[i].msg_hdr.msg_namelen = self.dstlen[p]
        if vnet:  # the header the frame came with (the kernel cuts and checksums on the way out), or none
            iov[2 * i].iov_base = self.batch.vh[s] if self.batch.vh[s] != NULL else self.zero_vh
            iov[2 * i].iov_len = VNET
            iov[2 * i + 1].iov_base = self.batch.ptr[s]
            iov[2 * i + 1].iov_len = self.batch.len[s]
            hdr[i].msg_hdr.msg_iovlen = 2
        else:
            iov[2 * i].iov_base = self.batch.ptr[s]
            iov[2 * i].iov_len = self.batch.len[s]
            hdr[i].msg_hdr.msg_iovlen = 1
    while off < k:
        with nogil:
            r = sendmmsg(self.fd[p], hdr + off, k - off, MSG_DONTWAIT)
        if r > 0:
            for i in range(off, off + r):
                ci = self.cls_of[slots[i]]
                self.tx[p] += 1
                self.tx_bytes[p] += self.batch.len[slots[i]]
                self.tx_class[p][ci] += 1
            off += r
            continue
        err = errno
        if err == EINTR or err == ECONNREFUSED:
            continue  # (a UDP port: an ICMP error for an earlier send, reported once; the frames still go)
        ci = self.cls_of[slots[off]]
        if err == ENOBUFS and not is_control(ci):
            self.tx_drop[p] += 1  # the wire refused this data frame: drop it, go on
            off += 1
            continue
        # the socket is full (or refused a control frame): control frames wait in the core, data is dropped
        for i in range(off, k):
            ci = self.cls_of[slots[i]]
            if is_control(ci):
                ln = self.batch.len[slots[i]]
                retry.append((p, self.batch.ptr[slots[i]][:ln], ci))
            else:
                self.tx_drop[p] += 1
        if err != EAGAIN and err != ENOBUFS:
            return -1
        break
    return 0
