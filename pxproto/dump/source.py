"""Where batches come from: capture files (whole-buffer fast path, or the
reference reader frame by frame) and live interfaces."""

from __future__ import annotations

import io
import mmap
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from pxproto.capture.pcapng import CaptureError, Packet, read_packets
from pxproto.dump import accel
from pxproto.dump.columns import Batch, from_fastpath, from_packets

CHUNK = 8192
"""Frames per batch on the reference path."""
FAST_CHUNK = 65536
"""Frames per batch on the fast path (enough to amortise numpy calls, small enough for the cache)."""


class CaptureEndsEarly(Exception):
    """A capture file broke off; every frame before ``error.offset`` was delivered."""

    def __init__(self, error: CaptureError, frames: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.frames = frames


def reference_batches(f: BinaryIO, chunk: int = CHUNK) -> Iterator[Batch]:
    """Batches decoded by the reference codec; raises CaptureEndsEarly after the last good frame."""
    first = 0
    pending: list[Packet] = []
    try:
        for p in read_packets(f):
            pending.append(p)
            if len(pending) == chunk:
                yield from_packets(pending, first)
                first += len(pending)
                pending = []
    except CaptureError as exc:
        if pending:
            yield from_packets(pending, first)
        raise CaptureEndsEarly(exc, first + len(pending)) from None
    if pending:
        yield from_packets(pending, first)


def packet_batches(batches: Iterator[list[Packet]]) -> Iterator[Batch]:
    """Batches from lists of packets (live capture)."""
    first = 0
    for packets in batches:
        yield from_packets(packets, first)
        first += len(packets)


@dataclass
class Frames:
    """Frames of one capture buffer, indexed but not decoded: ``buf[offset[i] : offset[i] + caplen[i]]``.

    The compiled views read them straight from the bytes; :meth:`batch` decodes them into columns
    (the fast path) for the views that need a :class:`Batch`."""

    buf: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray
    first: int

    def __len__(self) -> int:
        return len(self.offset)

    def batch(self) -> Batch:
        b = from_fastpath(self.buf, self.offset, self.caplen, self.ts_ns, self.first)
        b.wirelen = self.wirelen
        return b

    def row_batch(self, i: int) -> Batch:
        """Row ``i`` alone, decoded, as a one-row batch."""
        s = slice(i, i + 1)
        b = from_fastpath(self.buf, self.offset[s], self.caplen[s], self.ts_ns[s], self.first + i)
        b.wirelen = self.wirelen[s]
        return b


class InputError(Exception):
    """The input cannot be read (an OSError on read); the message is one line: the file and the reason."""


def load(f: BinaryIO) -> mmap.mmap | None:
    """A regular capture file, mapped (pages come in as they are read, and :func:`capture_frames`
    drops them behind it), or None when ``f`` is not a non-empty regular file read from its start."""
    try:
        fd = f.fileno()
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size > 0 and f.tell() == 0:
            return mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    return None


def _chunks(
    buf: np.ndarray, idx: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], first: int, chunk: int
) -> Iterator[Frames]:
    offsets, lengths, wirelen, ts = idx
    for start in range(0, len(offsets), chunk):
        end = min(len(offsets), start + chunk)
        yield Frames(buf, offsets[start:end], lengths[start:end], wirelen[start:end], ts[start:end], first + start)


WINDOW = 1 << 26
"""Bytes of a mapped file indexed at a time: the index (and the pages in memory) stay bounded."""


def capture_frames(data: bytes | mmap.mmap, chunk: int = FAST_CHUNK, window: int = WINDOW) -> Iterator[Frames]:
    """Chunks of a capture in memory, indexed by :mod:`pxproto.fastpath`'s indexer (``accel.index``:
    compiled, or its pure twin) a window at a time; raises CaptureEndsEarly after the last good frame
    of a damaged file."""
    buf = np.frombuffer(data, np.uint8)
    mv = memoryview(data)
    ix = accel.index.Indexer()
    pos = first = 0
    dropped = 0  # mapped pages before this offset were given back
    w = window
    while True:
        end = min(len(mv), pos + w)
        final = end == len(mv)
        off, ln, wire, ts, _lt, used = ix.feed(mv[pos:end], final)
        yield from _chunks(buf, (off, ln, wire, ts), first, chunk)
        first += len(off)
        if ix.error is not None:
            raise CaptureEndsEarly(CaptureError(*ix.error), first)
        if final:
            return
        # a record longer than the window: look further; else the next window starts at the cut record
        w = w * 2 if used == 0 else window
        pos += used
        upto = pos // mmap.PAGESIZE * mmap.PAGESIZE
        if isinstance(data, mmap.mmap) and upto > dropped and hasattr(mmap, "MADV_DONTNEED"):
            data.madvise(mmap.MADV_DONTNEED, dropped, upto - dropped)
            dropped = upto


READ_BLOCK = 1 << 22
"""Bytes read from a pipe at a time."""


def stream_frames(f: BinaryIO, chunk: int = FAST_CHUNK) -> Iterator[Frames]:
    """Chunks of a capture arriving on a pipe (``-r -``), indexed as the bytes come; a record cut by
    the end of a read waits for the next read."""
    ix = accel.index.Indexer()
    pending = b""
    start = 0  # file offset of pending[0]
    first = 0
    read = getattr(f, "read1", f.read)
    while True:
        try:
            block = read(READ_BLOCK)
        except OSError as exc:
            raise InputError(f"{getattr(f, 'name', '-')}: {exc.strerror or exc}") from None
        final = not block
        data = pending + block if pending else block
        off, ln, wire, ts, _lt, used = ix.feed(data, final)
        if len(off):
            yield from _chunks(np.frombuffer(data, np.uint8), (off - start, ln, wire, ts), first, chunk)
            first += len(off)
        if ix.error is not None:
            raise CaptureEndsEarly(CaptureError(*ix.error), first)
        if final:
            return
        pending = data[used:]
        start += used
