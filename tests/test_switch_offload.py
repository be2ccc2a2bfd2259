"""Software checksum and segmentation offload (pxproto.switch.offload) against independent checks."""

from __future__ import annotations

import struct

import pytest

from pxproto.switch.offload import F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP, VNET_HDR, OffloadError, complete


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


ETH = bytes.fromhex("020000000002020000000001")


def tcp4(payload: bytes, flags: int = 0x18, partial: bool = True) -> bytes:
    """An IPv4/TCP frame whose TCP checksum holds only the pseudo-header sum, as a sender with offloads leaves it."""
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    tcp = struct.pack("!HHIIBBHHH", 1234, 5001, 1000, 0, 5 << 4, flags, 512, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 7, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + (0xFFFF ^ csum(ip)).to_bytes(2, "big") + ip[12:]
    pseudo = csum(src + dst + struct.pack("!HH", 6, len(tcp)))
    tcp = (
        tcp[:16]
        + (pseudo if partial else 0xFFFF ^ csum(src + dst + struct.pack("!HH", 6, len(tcp)) + tcp)).to_bytes(2, "big")
        + tcp[18:]
    )
    return ETH + b"\x08\x00" + ip + tcp


def valid_tcp4(frame: bytes) -> bool:
    ip = frame[14:34]
    tcp = frame[34:]
    return csum(ip) == 0xFFFF and csum(ip[12:20] + struct.pack("!HH", 6, len(tcp)) + tcp) == 0xFFFF


def test_checksum_completion() -> None:
    f = tcp4(b"hello world")
    assert not valid_tcp4(f)
    (out,) = complete(VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 34, 16), f)
    assert valid_tcp4(out) and out[:50] == f[:50] and out[52:] == f[52:]


def test_tcp4_segmentation() -> None:
    payload = bytes(range(256)) * 234  # 59,904 bytes: 41 segments of 1448 and a short one
    f = tcp4(payload, flags=0x19)  # FIN, PSH, ACK
    out = complete(VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16), f)
    assert len(out) == -(-len(payload) // 1448)
    assert b"".join(o[54:] for o in out) == payload
    for i, o in enumerate(out):
        assert valid_tcp4(o), i
        assert len(o) <= 1448 + 54
        assert struct.unpack("!I", o[38:42])[0] == 1000 + i * 1448
        assert struct.unpack("!H", o[18:20])[0] == 7 + i
        assert o[47] & 0x09 == (0x09 if i == len(out) - 1 else 0)  # FIN/PSH on the last only


def test_tcp6_segmentation_sets_payload_length() -> None:
    src, dst = bytes(15) + b"\1", bytes(15) + b"\2"
    payload = b"x" * 3000
    tcp = struct.pack("!HHIIBBHHH", 1, 2, 5, 0, 5 << 4, 0x10, 512, 0, 0) + payload
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src, dst)
    f = ETH + b"\x86\xdd" + ip + tcp
    out = complete(VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV6, 74, 1000, 54, 16), f)
    assert [len(o) - 74 for o in out] == [1000, 1000, 1000]
    for o in out:
        assert struct.unpack("!H", o[18:20])[0] == len(o) - 54
        t = o[54:]
        assert csum(src + dst + struct.pack("!IxxxB", len(t), 6) + t) == 0xFFFF


def test_what_cannot_be_done_is_an_offload_error() -> None:
    with pytest.raises(OffloadError):
        complete(VNET_HDR.pack(0, GSO_UDP, 0, 1400, 34, 6), tcp4(b"x" * 3000))
    with pytest.raises(OffloadError):
        complete(VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 60, 100), tcp4(b"x"))


def test_a_plain_frame_passes_untouched() -> None:
    f = tcp4(b"abc", partial=False)
    assert complete(bytes(10), f) == [f]
