"""Index a pcap or pcapng file: where each frame's bytes are, without a Python object per frame.

The rules and error fields/offsets are those of :func:`pxproto.capture.read_packets`.
:class:`Indexer` is the pure twin of the compiled ``pxproto.fastpath._capindex.Indexer``
(same rows, same errors, same ``consumed``); it is fed the bytes that follow what it
consumed so far, so a pipe is indexed as it arrives.  :func:`index_with` indexes a whole
buffer with either and raises :class:`CaptureError` with ``partial``, the index of the
frames read before the damage.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple, Protocol

import numpy as np

from pxproto.capture.pcapng import BYTE_ORDER_MAGIC, EPB, IDB, MAX_BLOCK, PCAP_MAGICS, SHB, SPB, CaptureError

Fed = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]
"""What ``feed`` returns: (offsets, lengths, wirelens, ts_ns, linktypes, consumed)."""


class CaptureIndex(NamedTuple):
    """Per-frame arrays: byte offset in the file, captured length, time in ns, link type, on-wire length.

    ``ts_ns`` is int64 nanoseconds; a timestamp past the year 2262 wraps modulo 2**64."""

    offsets: np.ndarray
    lengths: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray
    wirelens: np.ndarray


class IndexerLike(Protocol):
    """The interface both indexers share."""

    error: tuple[str, int, str] | None

    def feed(self, data: Any, final: bool) -> Fed: ...


def index_with(indexer: IndexerLike, buf: Any) -> CaptureIndex:
    """Index a whole pcap/pcapng buffer with a fresh ``indexer``; CaptureError (with ``.partial``) on damage."""
    off, length, wire, ts, lt, _used = indexer.feed(buf, True)
    idx = CaptureIndex(off, length, ts, lt, wire)
    if indexer.error is not None:
        exc = CaptureError(*indexer.error)
        exc.partial = idx  # type: ignore[attr-defined]
        raise exc
    return idx


def index_capture(buf: Any) -> CaptureIndex:
    """Index every frame of a pcap or pcapng buffer with the pure indexer."""
    return index_with(Indexer(), buf)


_Rows = tuple[list[int], list[int], list[int], list[int], list[int]]


class _Wait(Exception):
    """A record runs past the bytes fed so far and more may come."""


class Indexer:
    """Incremental pcap/pcapng indexer; offsets in the arrays are file offsets."""

    def __init__(self) -> None:
        self.error: tuple[str, int, str] | None = None
        """(field, offset, reason) of the damage that stopped indexing, or None."""
        self._fmt = 0  # 0 not started, 1 pcap, 2 pcapng
        self._endian = "<"
        self._ns_per_unit = 1000
        self._snaplen = 0
        self._linktype = 0
        self._base = 0  # file offset of the next byte fed
        self._interfaces: list[tuple[int, int]] = []  # (linktype, ns per tick) of the current section
        self._pos = 0  # bytes of the current feed consumed
        self._final = False
        self._rows: _Rows = ([], [], [], [], [])

    def feed(self, data: Any, final: bool) -> Fed:
        """Index the complete records at the start of ``data`` (the bytes after what was consumed so far).

        When ``final`` is false a record cut by the end of ``data`` is left for the next call; when true
        (or on corruption) ``self.error`` is set to (field, offset, reason) and indexing stops for good."""
        mv = memoryview(data).cast("B")
        self._pos = 0
        self._final = final
        rows: _Rows = ([], [], [], [], [])
        self._rows = rows
        if self.error is None:
            try:
                if self._fmt == 0:
                    self._start(mv)
                if self._fmt == 1:
                    self._pcap(mv)
                elif self._fmt == 2:
                    self._pcapng(mv)
            except _Wait:
                pass
            except CaptureError as exc:
                self.error = (exc.field, exc.offset, exc.reason)
        self._base += self._pos
        off, length, wire, ts, lt = rows
        return (
            np.asarray(off, dtype=np.int64),
            np.asarray(length, dtype=np.int64),
            np.asarray(wire, dtype=np.int64),
            np.asarray(ts, dtype=np.uint64).view(np.int64) if ts else np.zeros(0, dtype=np.int64),
            np.asarray(lt, dtype=np.uint16),
            self._pos,
        )

    def _add(self, off: int, length: int, wire: int, ts: int, lt: int) -> None:
        for column, v in zip(self._rows, (self._base + off, length, wire, ts, lt), strict=True):
            column.append(v)

    def _cut(self, field: str, at: int, reason: str) -> CaptureError:
        """The error for bytes missing at ``at``; waits for more bytes instead when the feed is not final."""
        if not self._final:
            raise _Wait
        return CaptureError(field, self._base + at, reason)

    def _need(self, data: memoryview, at: int, want: int, field: str) -> None:
        have = max(0, min(want, len(data) - at))
        if have != want:
            raise self._cut(field, at, f"truncated: {have} of {want} bytes")

    def _start(self, data: memoryview) -> None:
        n = len(data)
        if n < 4:
            raise self._cut("file", 0, f"truncated: {n} bytes, not a pcap or pcapng file")
        head = bytes(data[:4])
        if head in PCAP_MAGICS:
            self._need(data, 4, 20, "pcap.header")
            self._endian, self._ns_per_unit = PCAP_MAGICS[head]
            self._snaplen, self._linktype = struct.unpack_from(self._endian + "II", data, 16)
            self._fmt = 1
            self._pos = 24
        elif struct.unpack("<I", head)[0] == SHB:
            self._fmt = 2
        else:
            raise CaptureError("file", 0, f"magic {head.hex()} is neither pcap nor pcapng")

    def _pcap(self, data: memoryview) -> None:
        rec = struct.Struct(self._endian + "IIII")
        limit = min(max(self._snaplen, 262144), MAX_BLOCK)
        n = len(data)
        pos = self._pos
        while pos < n:
            if pos + 16 > n:
                raise self._cut("pcap.record", pos, f"truncated record header: {n - pos} of 16 bytes")
            sec, frac, incl, orig = rec.unpack_from(data, pos)
            if incl > limit:
                raise CaptureError(
                    "pcap.record", self._base + pos, f"record length {incl} exceeds the snap length {self._snaplen}"
                )
            self._need(data, pos + 16, incl, "pcap.record")
            self._add(pos + 16, incl, orig, sec * 1_000_000_000 + frac * self._ns_per_unit, self._linktype & 0xFFFF)
            pos += 16 + incl
            self._pos = pos

    def _pcapng(self, data: memoryview) -> None:
        n = len(data)
        off = self._pos
        base = self._base
        while off < n:
            if off + 4 > n:
                raise self._cut("pcapng.block", off, "truncated block type")
            self._need(data, off + 4, 4, "pcapng.block")
            prefix = 0
            if struct.unpack_from("<I", data, off)[0] == SHB:
                self._need(data, off + 8, 4, "pcapng.shb")
                if struct.unpack_from("<I", data, off + 8)[0] == BYTE_ORDER_MAGIC:
                    self._endian = "<"
                elif struct.unpack_from(">I", data, off + 8)[0] == BYTE_ORDER_MAGIC:
                    self._endian = ">"
                else:
                    raise CaptureError(
                        "pcapng.shb", base + off + 8, f"byte-order magic {bytes(data[off + 8 : off + 12]).hex()}"
                    )
                self._interfaces = []
                prefix = 4
            e = self._endian
            btype, blen = struct.unpack_from(e + "II", data, off)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                raise CaptureError("pcapng.block", base + off + 4, f"block length {blen} is invalid")
            if blen < 12 + prefix:  # read_packets fails reading the rest of such a section header
                raise CaptureError(
                    "pcapng.block", base + off + 12, f"block length {blen} leaves no section header body"
                )
            self._need(data, off + 8 + prefix, blen - 12 - prefix, "pcapng.block")
            self._need(data, off + blen - 4, 4, "pcapng.block")
            if struct.unpack_from(e + "I", data, off + blen - 4)[0] != blen:
                raise CaptureError(
                    "pcapng.block", base + off + blen - 4, "trailing block length differs from the leading one"
                )
            body = off + 8  # the body as read_packets sees it (an SHB's includes its byte-order magic)
            body_len = blen - 12
            if btype == SHB and body_len >= 6 and struct.unpack_from(e + "H", data, body + 4)[0] != 1:
                major = struct.unpack_from(e + "H", data, body + 4)[0]
                raise CaptureError("pcapng.shb", base + off + 12, f"major version {major} is not 1")
            if btype == IDB:
                if body_len < 8:
                    raise CaptureError("pcapng.idb", base + body, "interface block shorter than 8 bytes")
                (link,) = struct.unpack_from(e + "H", data, body)
                resol = _resolution(data, body + 8, body + body_len, e, base)
                self._interfaces.append((link, _tick(resol)))
            elif btype == EPB:
                if body_len < 20:
                    raise CaptureError("pcapng.epb", base + body, "packet block shorter than 20 bytes")
                iface, hi, lo, cap, orig = struct.unpack_from(e + "IIIII", data, body)
                if iface >= len(self._interfaces):
                    raise CaptureError("pcapng.epb", base + body, f"interface {iface} was never described")
                if 20 + cap > body_len:
                    raise CaptureError("pcapng.epb", base + off + 20, f"captured length {cap} runs past the block")
                if cap > orig:
                    raise CaptureError("pcapng.epb", base + off + 20, f"captured length {cap} > packet length {orig}")
                link, tick = self._interfaces[iface]
                self._add(body + 20, cap, orig, (((hi << 32) | lo) * tick) & 0xFFFFFFFFFFFFFFFF, link)  # wraps like C
            elif btype == SPB:
                if not self._interfaces:
                    raise CaptureError("pcapng.spb", base + body, "simple packet block before any interface")
                if body_len < 4:
                    raise CaptureError("pcapng.spb", base + body, "simple packet block shorter than 4 bytes")
                (orig,) = struct.unpack_from(e + "I", data, body)
                self._add(body + 4, min(orig, body_len - 4), orig, 0, self._interfaces[0][0])
            off += blen
            self._pos = off


def _resolution(data: memoryview, pos: int, end: int, endian: str, base: int) -> int:
    """The if_tsresol option (code 9) of an interface block's options, 6 (µs) when absent or empty;
    an option that runs past the block is an error (as read_packets)."""
    resol = None
    while pos + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", data, pos)
        if code == 0:
            break
        if pos + 4 + (length + 3) // 4 * 4 > end:
            raise CaptureError("pcapng.option", base + pos, f"option {code} of {length} bytes runs past its block")
        if code == 9 and resol is None:
            resol = data[pos + 4] if length else 6
        pos += 4 + (length + 3) // 4 * 4
    return 6 if resol is None else resol


def _tick(resol: int) -> int:
    """Nanoseconds per timestamp unit; 1 for binary or finer-than-ns resolutions (as read_packets)."""
    return 10 ** (9 - (resol & 0x7F)) if not resol & 0x80 and resol <= 9 else 1
