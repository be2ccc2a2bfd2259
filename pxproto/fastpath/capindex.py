"""Index a whole pcap or pcapng file held in memory: where each frame's bytes are.

The rules and error fields/offsets are those of
:func:`pxproto.capture.read_packets`; instead of a Packet per frame this
returns arrays, so a capture is decoded with :func:`decode_columns` without a
Python object per frame.  On a corrupt file the :class:`CaptureError` carries
``partial``, the index of the frames read before the damage.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from pxproto.capture.pcapng import BYTE_ORDER_MAGIC, EPB, IDB, MAX_BLOCK, PCAP_MAGICS, SHB, SPB, CaptureError


class CaptureIndex(NamedTuple):
    """Per-frame arrays: byte offset in the file, captured length, time in ns, link type.

    ``ts_ns`` is int64 nanoseconds; a timestamp past the year 2262 wraps modulo 2**64."""

    offsets: np.ndarray
    lengths: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray


def _index(offsets: list[int], lengths: list[int], ts: list[int], lts: list[int]) -> CaptureIndex:
    return CaptureIndex(
        np.asarray(offsets, dtype=np.int64),
        np.asarray(lengths, dtype=np.int64),
        np.asarray(ts, dtype=np.uint64).view(np.int64) if ts else np.zeros(0, dtype=np.int64),
        np.asarray(lts, dtype=np.uint16),
    )


def index_capture(buf: bytes | bytearray | memoryview) -> CaptureIndex:
    """Index every frame of a pcap or pcapng file; CaptureError (with ``.partial``) on damage."""
    data = memoryview(buf).cast("B")
    offsets: list[int] = []
    lengths: list[int] = []
    ts: list[int] = []
    lts: list[int] = []
    try:
        if len(data) < 4:
            raise CaptureError("file", 0, f"truncated: {len(data)} bytes, not a pcap or pcapng file")
        head = bytes(data[:4])
        if head in PCAP_MAGICS:
            _pcap(data, head, offsets, lengths, ts, lts)
        elif struct.unpack("<I", head)[0] == SHB:
            _pcapng(data, offsets, lengths, ts, lts)
        else:
            raise CaptureError("file", 0, f"magic {head.hex()} is neither pcap nor pcapng")
    except CaptureError as exc:
        exc.partial = _index(offsets, lengths, ts, lts)  # type: ignore[attr-defined]
        raise
    return _index(offsets, lengths, ts, lts)


def _need(data: memoryview, pos: int, n: int, offset: int, what: str) -> None:
    have = max(0, min(n, len(data) - pos))
    if n < 0 or have != n:
        raise CaptureError(what, offset, f"truncated: {have} of {n} bytes")


def _pcap(
    data: memoryview, magic: bytes, offsets: list[int], lengths: list[int], ts: list[int], lts: list[int]
) -> None:
    endian, ns_per_unit = PCAP_MAGICS[magic]
    _need(data, 4, 20, 4, "pcap.header")
    _vmaj, _vmin, _zone, _sig, snaplen, linktype = struct.unpack_from(endian + "HHiIII", data, 4)
    rec = struct.Struct(endian + "IIII")
    pos = 24
    n = len(data)
    while pos < n:
        if pos + 16 > n:
            raise CaptureError("pcap.record", pos, f"truncated record header: {n - pos} of 16 bytes")
        sec, frac, incl, _orig = rec.unpack_from(data, pos)
        if incl > max(snaplen, 262144) or incl > MAX_BLOCK:
            raise CaptureError("pcap.record", pos, f"record length {incl} exceeds the snap length {snaplen}")
        _need(data, pos + 16, incl, pos + 16, "pcap.record")
        offsets.append(pos + 16)
        lengths.append(incl)
        ts.append(sec * 1_000_000_000 + frac * ns_per_unit)
        lts.append(linktype & 0xFFFF)
        pos += 16 + incl


def _options(data: memoryview, start: int, end: int, endian: str) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = start
    while pos + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", data, pos)
        if code == 0:
            break
        out.setdefault(code, bytes(data[pos + 4 : min(pos + 4 + length, end)]))
        pos += 4 + (length + 3) // 4 * 4
    return out


def _pcapng(data: memoryview, offsets: list[int], lengths: list[int], ts: list[int], lts: list[int]) -> None:
    n = len(data)
    offset = 0
    endian = "<"
    interfaces: list[tuple[int, int]] = []
    while offset < n:
        if offset + 4 > n:
            raise CaptureError("pcapng.block", offset, "truncated block type")
        _need(data, offset + 4, 4, offset + 4, "pcapng.block")
        btype_raw = bytes(data[offset : offset + 4])
        prefix = 0
        if struct.unpack("<I", btype_raw)[0] == SHB:
            _need(data, offset + 8, 4, offset + 8, "pcapng.shb")
            bom = bytes(data[offset + 8 : offset + 12])
            if struct.unpack("<I", bom)[0] == BYTE_ORDER_MAGIC:
                endian = "<"
            elif struct.unpack(">I", bom)[0] == BYTE_ORDER_MAGIC:
                endian = ">"
            else:
                raise CaptureError("pcapng.shb", offset + 8, f"byte-order magic {bom.hex()}")
            interfaces = []
            prefix = 4
        (blen,) = struct.unpack_from(endian + "I", data, offset + 4)
        (btype,) = struct.unpack(endian + "I", btype_raw)
        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
            raise CaptureError("pcapng.block", offset + 4, f"block length {blen} is invalid")
        _need(data, offset + 8 + prefix, blen - 12 - prefix, offset + 8 + prefix, "pcapng.block")
        _need(data, offset + blen - 4, 4, offset + blen - 4, "pcapng.block")
        if struct.unpack_from(endian + "I", data, offset + blen - 4)[0] != blen:
            raise CaptureError("pcapng.block", offset + blen - 4, "trailing block length differs from the leading one")
        body = offset + 8  # the body as read_packets sees it (an SHB's includes its byte-order magic)
        body_len = blen - 12
        if btype == IDB:
            if body_len < 8:
                raise CaptureError("pcapng.idb", offset + 8, "interface block shorter than 8 bytes")
            linktype = struct.unpack_from(endian + "H", data, body)[0]
            resol_raw = _options(data, body + 8, body + body_len, endian).get(9, b"\x06")[:1] or b"\x06"
            resol = resol_raw[0]
            tick = 10 ** (9 - (resol & 0x7F)) if not resol & 0x80 and resol <= 9 else 1
            interfaces.append((linktype, tick))
        elif btype == EPB:
            if body_len < 20:
                raise CaptureError("pcapng.epb", offset + 8, "packet block shorter than 20 bytes")
            iface, hi, lo, cap, _orig = struct.unpack_from(endian + "IIIII", data, body)
            if iface >= len(interfaces):
                raise CaptureError("pcapng.epb", offset + 8, f"interface {iface} was never described")
            if 20 + cap > body_len:
                raise CaptureError("pcapng.epb", offset + 20, f"captured length {cap} runs past the block")
            linktype, tick = interfaces[iface]
            offsets.append(body + 20)
            lengths.append(cap)
            ts.append((((hi << 32) | lo) * tick) & 0xFFFFFFFFFFFFFFFF)  # wraps like a C uint64
            lts.append(linktype)
        elif btype == SPB:
            if not interfaces:
                raise CaptureError("pcapng.spb", offset + 8, "simple packet block before any interface")
            if body_len < 4:
                raise CaptureError("pcapng.spb", offset + 8, "simple packet block shorter than 4 bytes")
            (orig,) = struct.unpack_from(endian + "I", data, body)
            offsets.append(body + 4)
            lengths.append(min(orig, body_len - 4))
            ts.append(0)
            lts.append(interfaces[0][0])
        offset += blen
