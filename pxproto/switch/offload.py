"""Checksum and segmentation offload, done in software for frames that leave through a port without it.

An AF_PACKET socket with PACKET_VNET_HDR hands each frame over with a
``virtio_net_hdr``: a TCP sender on a veth or a QEMU guest on a tap (virtio-net
with offloads, QEMU's default) leaves checksums partial and sends segments of
up to 64 KiB for the kernel (or the NIC) to cut.  Between two such sockets the
switch passes the header on and the kernel finishes the work on output;
towards a port that carries plain frames (UDP, stream, TAP, VXLAN, an
AF_PACKET port without the header) :func:`complete` does it here: it fills in
the checksum, and cuts a TCP (or UDP_L4) segment into frames of ``gso_size``.
"""

from __future__ import annotations

import struct

VNET_HDR = struct.Struct("=BBHHHH")
"""virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (host byte order)."""
VNET_HDR_LEN = VNET_HDR.size
F_NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 3, 4, 5
GSO_ECN = 0x80
PLAIN = bytes(VNET_HDR_LEN)
"""The header of a frame that needs nothing done: what a port sends ahead of a frame the core queued."""


class OffloadError(ValueError):
    """A header that asks for something this module cannot do (UFO, a checksum outside the frame)."""


def _sum16(data: bytes | bytearray | memoryview, acc: int = 0) -> int:
    """Ones' complement sum of ``data`` as big-endian 16-bit words, not folded."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    return acc + sum(struct.unpack(f"!{len(data) // 2}H", data))


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _l3(frame: bytes | bytearray) -> int:
    off = 14
    while int.from_bytes(frame[off - 2 : off], "big") in (0x8100, 0x88A8):
        off += 4
    return off


def _pseudo(frame: bytes | bytearray, l3: int, proto: int, l4_len: int) -> int:
    if frame[l3] >> 4 == 4:
        return _sum16(frame[l3 + 12 : l3 + 20], proto + l4_len)
    return _sum16(frame[l3 + 8 : l3 + 40], proto + l4_len)


def _l4_checksum(f: bytearray, l3: int, l4: int, proto: int, field: int) -> None:
    f[field : field + 2] = b"\0\0"
    c = 0xFFFF ^ _fold(_sum16(memoryview(f)[l4:], _pseudo(f, l3, proto, len(f) - l4)))
    if c == 0 and proto == 17:
        c = 0xFFFF
    f[field : field + 2] = c.to_bytes(2, "big")


def complete(header: bytes, frame: bytes) -> list[bytes]:
    """The plain frames ``frame`` stands for under its virtio_net_hdr ``header``."""
    flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HDR.unpack(header)
    gso = gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if not flags & F_NEEDS_CSUM:
            return [frame]
        field = csum_start + csum_offset
        if field + 2 > len(frame):
            raise OffloadError(f"checksum at {field} past the frame's {len(frame)} bytes")
        f = bytearray(frame)
        c = 0xFFFF ^ _fold(_sum16(memoryview(f)[csum_start:]))  # the field holds the pseudo-header sum
        if c == 0 and csum_offset == 6:
            c = 0xFFFF  # UDP: 0 means "no checksum"
        f[field : field + 2] = c.to_bytes(2, "big")
        return [bytes(f)]
    if gso not in (GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4) or gso_size == 0:
        raise OffloadError(f"segmentation type {gso_type} (size {gso_size}) is not handled")
    l3 = _l3(frame)
    l4 = csum_start
    tcp = gso != GSO_UDP_L4
    hdrs = l4 + ((frame[l4 + 12] >> 4) * 4 if tcp else 8)
    if not l3 < l4 < hdrs <= len(frame):
        raise OffloadError("segment headers past the frame")
    v4 = frame[l3] >> 4 == 4
    head, payload = frame[:hdrs], frame[hdrs:]
    seq = int.from_bytes(frame[l4 + 4 : l4 + 8], "big") if tcp else 0
    ip_id = int.from_bytes(frame[l3 + 4 : l3 + 6], "big") if v4 else 0
    n = max(1, -(-len(payload) // gso_size))
    out = []
    for i in range(n):
        f = bytearray(head)
        f += payload[i * gso_size : (i + 1) * gso_size]
        if v4:
            f[l3 + 2 : l3 + 4] = (len(f) - l3).to_bytes(2, "big")
            f[l3 + 4 : l3 + 6] = ((ip_id + i) & 0xFFFF).to_bytes(2, "big")
            f[l3 + 10 : l3 + 12] = b"\0\0"
            ihl = (f[l3] & 15) * 4
            f[l3 + 10 : l3 + 12] = (0xFFFF ^ _fold(_sum16(f[l3 : l3 + ihl]))).to_bytes(2, "big")
        else:
            f[l3 + 4 : l3 + 6] = (len(f) - l3 - 40).to_bytes(2, "big")
        if tcp:
            f[l4 + 4 : l4 + 8] = ((seq + i * gso_size) & 0xFFFFFFFF).to_bytes(4, "big")
            if i < n - 1:
                f[l4 + 13] &= ~0x09 & 0xFF  # FIN and PSH only on the last segment
            if i > 0:
                f[l4 + 13] &= ~0x80 & 0xFF  # CWR only on the first
            _l4_checksum(f, l3, l4, 6, l4 + 16)
        else:
            f[l4 + 4 : l4 + 6] = (len(f) - l4).to_bytes(2, "big")
            _l4_checksum(f, l3, l4, 17, l4 + 6)
        out.append(bytes(f))
    return out
