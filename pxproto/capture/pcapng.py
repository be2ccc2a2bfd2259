"""Reading pcap/pcapng and writing pcapng, with frames kept byte for byte.

A corrupt or truncated file raises :class:`CaptureError` naming the byte
offset where reading stopped; the packets read before it have already been
yielded, so nothing accepted is lost.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pxproto.errors import ProtocolError

LINKTYPE_ETHERNET = 1
SHB = 0x0A0D0D0A
IDB = 0x00000001
EPB = 0x00000006
SPB = 0x00000003
BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
OPT_COMMENT = 1
MAX_BLOCK = 64 * 1024 * 1024


class CaptureError(ProtocolError):
    """A capture file is corrupt or truncated; ``offset`` is where reading stopped."""


@dataclass(slots=True)
class Packet:
    """One captured frame."""

    data: bytes
    ts_ns: int
    orig_len: int
    linktype: int = LINKTYPE_ETHERNET
    comment: str | None = None


def _read_exact(f: BinaryIO, n: int, offset: int, what: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise CaptureError(what, offset, f"truncated: {len(b)} of {n} bytes")
    return b


def read_packets(f: BinaryIO) -> Iterator[Packet]:
    """Yield every packet of a pcap or pcapng stream."""
    head = f.read(4)
    if len(head) < 4:
        raise CaptureError("file", 0, f"truncated: {len(head)} bytes, not a pcap or pcapng file")
    if head in PCAP_MAGICS:
        yield from _read_pcap(f, head)
    elif struct.unpack("<I", head)[0] == SHB:
        yield from _read_pcapng(f, head)
    else:
        raise CaptureError("file", 0, f"magic {head.hex()} is neither pcap nor pcapng")


def _read_pcap(f: BinaryIO, magic: bytes) -> Iterator[Packet]:
    endian, ns_per_unit = PCAP_MAGICS[magic]
    rest = _read_exact(f, 20, 4, "pcap.header")
    _vmaj, _vmin, _zone, _sig, snaplen, linktype = struct.unpack(endian + "HHiIII", rest)
    offset = 24
    rec = struct.Struct(endian + "IIII")
    while True:
        h = f.read(16)
        if not h:
            return
        if len(h) < 16:
            raise CaptureError("pcap.record", offset, f"truncated record header: {len(h)} of 16 bytes")
        sec, frac, incl, orig = rec.unpack(h)
        if incl > max(snaplen, 262144) or incl > MAX_BLOCK:
            raise CaptureError("pcap.record", offset, f"record length {incl} exceeds the snap length {snaplen}")
        data = _read_exact(f, incl, offset + 16, "pcap.record")
        yield Packet(data, sec * 1_000_000_000 + frac * ns_per_unit, orig, linktype & 0xFFFF)
        offset += 16 + incl


def _options(body: bytes, endian: str, strict_at: int | None = None) -> dict[int, bytes]:
    """Options by code (the first of each); with ``strict_at`` (the file offset of ``body``), an option
    whose padded value runs past the block is an error (an interface's options decide its time stamps)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(endian + "HH", body, pos)
        if code == 0:
            break
        if strict_at is not None and pos + 4 + (length + 3) // 4 * 4 > len(body):
            raise CaptureError("pcapng.option", strict_at + pos, f"option {code} of {length} bytes runs past its block")
        out.setdefault(code, body[pos + 4 : pos + 4 + length])
        pos += 4 + (length + 3) // 4 * 4
    return out


def _read_pcapng(f: BinaryIO, head: bytes) -> Iterator[Packet]:
    offset = 0
    endian = "<"
    interfaces: list[tuple[int, int]] = []  # (linktype, ns per tick)
    first = True
    while True:
        if first:
            btype_raw = head
            first = False
        else:
            btype_raw = f.read(4)
            if not btype_raw:
                return
            if len(btype_raw) < 4:
                raise CaptureError("pcapng.block", offset, "truncated block type")
        length_raw = _read_exact(f, 4, offset + 4, "pcapng.block")
        if struct.unpack("<I", btype_raw)[0] == SHB:
            bom = _read_exact(f, 4, offset + 8, "pcapng.shb")
            if struct.unpack("<I", bom)[0] == BYTE_ORDER_MAGIC:
                endian = "<"
            elif struct.unpack(">I", bom)[0] == BYTE_ORDER_MAGIC:
                endian = ">"
            else:
                raise CaptureError("pcapng.shb", offset + 8, f"byte-order magic {bom.hex()}")
            interfaces = []
            (blen,) = struct.unpack(endian + "I", length_raw)
            prefix = bom
        else:
            (blen,) = struct.unpack(endian + "I", length_raw)
            prefix = b""
        (btype,) = struct.unpack(endian + "I", btype_raw)
        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
            raise CaptureError("pcapng.block", offset + 4, f"block length {blen} is invalid")
        if blen < 12 + len(prefix):
            raise CaptureError("pcapng.block", offset + 12, f"block length {blen} leaves no section header body")
        body = prefix + _read_exact(f, blen - 12 - len(prefix), offset + 8 + len(prefix), "pcapng.block")
        trailer = _read_exact(f, 4, offset + blen - 4, "pcapng.block")
        if struct.unpack(endian + "I", trailer)[0] != blen:
            raise CaptureError("pcapng.block", offset + blen - 4, "trailing block length differs from the leading one")
        if btype == SHB and len(body) >= 6 and struct.unpack_from(endian + "H", body, 4)[0] != 1:
            major = struct.unpack_from(endian + "H", body, 4)[0]
            raise CaptureError("pcapng.shb", offset + 12, f"major version {major} is not 1")
        if btype == IDB:
            if len(body) < 8:
                raise CaptureError("pcapng.idb", offset + 8, "interface block shorter than 8 bytes")
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            resol = (_options(body[8:], endian, offset + 16).get(9) or b"\x06")[0]
            tick = 10 ** (9 - (resol & 0x7F)) if not resol & 0x80 and resol <= 9 else 1
            interfaces.append((linktype, tick))
        elif btype == EPB:
            if len(body) < 20:
                raise CaptureError("pcapng.epb", offset + 8, "packet block shorter than 20 bytes")
            iface, hi, lo, cap, orig = struct.unpack_from(endian + "IIIII", body, 0)
            if iface >= len(interfaces):
                raise CaptureError("pcapng.epb", offset + 8, f"interface {iface} was never described")
            if 20 + cap > len(body):
                raise CaptureError("pcapng.epb", offset + 20, f"captured length {cap} runs past the block")
            if cap > orig:
                raise CaptureError("pcapng.epb", offset + 20, f"captured length {cap} > packet length {orig}")
            linktype, tick = interfaces[iface]
            opts = _options(body[20 + (cap + 3) // 4 * 4 :], endian)
            comment = opts[OPT_COMMENT].decode("utf-8", "replace") if OPT_COMMENT in opts else None
            yield Packet(body[20 : 20 + cap], ((hi << 32) | lo) * tick, orig, linktype, comment)
        elif btype == SPB:
            if not interfaces:
                raise CaptureError("pcapng.spb", offset + 8, "simple packet block before any interface")
            if len(body) < 4:
                raise CaptureError("pcapng.spb", offset + 8, "simple packet block shorter than 4 bytes")
            (orig,) = struct.unpack_from(endian + "I", body, 0)
            data = body[4 : 4 + min(orig, len(body) - 4)]
            yield Packet(data, 0, orig, interfaces[0][0])
        offset += blen


def _pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


class PcapngWriter:
    """Write Ethernet frames to a pcapng stream, untouched, with ns timestamps."""

    def __init__(self, f: BinaryIO, snaplen: int = 262144, comment: str | None = None) -> None:
        self.f = f
        shb_opts = _option(OPT_COMMENT, comment.encode()) + _option(0, b"") if comment else b""
        shb_body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + shb_opts
        self._block(SHB, shb_body)
        idb_opts = _option(9, b"\x09") + _option(0, b"")  # if_tsresol: nanoseconds
        self._block(IDB, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, snaplen) + idb_opts)

    def _block(self, btype: int, body: bytes) -> None:
        blen = 12 + len(body)
        self.f.write(struct.pack("<II", btype, blen) + body + struct.pack("<I", blen))

    def write(self, data: bytes, ts_ns: int, orig_len: int | None = None, comment: str | None = None) -> None:
        opts = _option(OPT_COMMENT, comment.encode()) + _option(0, b"") if comment else b""
        hdr = struct.pack("<IIIII", 0, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data), orig_len or len(data))
        self._block(EPB, hdr + _pad4(data) + opts)

    def flush(self) -> None:
        self.f.flush()
