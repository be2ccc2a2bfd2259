# How :class:`FastLoop` (included by _afpacket.pyx after the class) decides where a frame read on a port goes:
# classified, its source learned, its destination looked up in the forwarding database.

cdef int decide(FastLoop self, int pid, const unsigned char* b, Py_ssize_t n, double now, int* ci,
                int* err) noexcept nogil:
    """Where frame ``b`` (``n`` bytes) read on port ``pid`` goes: a port, or FLOOD, DROP, SLOW or MALFORMED;
    its source learned (and its DIME's, for Parallax frames); ``ci``: its class, ``err``: what is malformed."""
    cdef int dime_scope = 0, r, out = -1
    cdef unsigned int src_dime = PX_DIME_ALL, dst_dime = PX_DIME_ALL
    cdef uint64_t src, dst
    r = classify(b, n, self.validation, self.non_parallax_drop, ci, &dime_scope, &src_dime, &dst_dime, err)
    if r > 0:
        if self.malformed_drop:
            return MALFORMED
        return SLOW
    if r < 0:
        return SLOW
    if not b[6] & 1:
        src = mac48(b + 6)
        r = self.fdb.c_learn(src | (<uint64_t>PX_DIME_ALL << 48), pid, now)
        if r == 1:
            self.learned += 1
        elif r == 2:
            self.moved += 1
        if ci[0] and src_dime != PX_DIME_ALL:
            r = self.fdb.c_learn(src | (<uint64_t>src_dime << 48), pid, now)
            if r == 1:
                self.learned += 1
            elif r == 2:
                self.moved += 1
    if b[0] & 1:
        return FLOOD
    dst = mac48(b)
    if dime_scope:
        out = self.fdb.c_lookup(dst | (<uint64_t>dst_dime << 48), now)
    if out < 0:
        out = self.fdb.c_lookup(dst | (<uint64_t>PX_DIME_ALL << 48), now)
    if out < 0:
        self.unknown += 1
        return FLOOD
    if out == pid:
        self.filtered += 1
        return DROP
    return out
