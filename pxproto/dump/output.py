"""``-w``: frames written to pcapng as they arrive, a batch at a time, with ``-C`` size rotation."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

from pxproto.capture.pcapng import PcapngWriter
from pxproto.fastpath import select

_ring = select.compiled("pxproto.dump._ring")
epb_records = _ring.epb_records if _ring is not None else None  # else the pure twin: the writer's own records


class CaptureWriter:
    """A pcapng file (or stdout for ``-``); with ``rotate_bytes``, a new file (``NAME``, ``NAME1``,
    ``NAME2``, ... as tcpdump's ``-C``) once the current one holds that many bytes."""

    def __init__(self, path: str, snaplen: int, rotate_bytes: int | None = None) -> None:
        self.path = path
        self.snaplen = snaplen
        self.rotate_bytes = rotate_bytes
        self.files = 0
        self.file: BinaryIO
        self.writer: PcapngWriter
        self._open()

    def _open(self) -> None:
        name = self.name = self.path if self.files == 0 else f"{self.path}{self.files}"
        if self.path == "-":
            self.file = sys.stdout.buffer
        else:
            try:
                self.file = open(name, "wb")
            except OSError as exc:
                raise RuntimeError(f"{name}: {exc.strerror}") from None
        self.files += 1
        self.writer = PcapngWriter(self.file, self.snaplen)  # the header stays in the buffer until a flush
        self.size = self.file.tell() if self.path != "-" else 0

    def write_rows(
        self, buf: np.ndarray, offset: np.ndarray, caplen: np.ndarray, wirelen: np.ndarray, ts_ns: np.ndarray
    ) -> None:
        """Rows ``buf[offset[i] : offset[i] + caplen[i]]`` as Enhanced Packet Blocks; with rotation, a
        file is closed after the record that brings it to ``rotate_bytes``."""
        start, n = 0, len(offset)
        while start < n:
            end = n
            if self.rotate_bytes is not None and self.path != "-":
                sizes = np.cumsum(32 + (np.asarray(caplen[start:], np.int64) + 3) // 4 * 4)
                end = start + min(n - start, int(np.searchsorted(sizes, self.rotate_bytes - self.size)) + 1)
            s = slice(start, end)
            self._write(buf, offset[s], caplen[s], wirelen[s], ts_ns[s])
            start = end
            if self.rotate_bytes is not None and self.size >= self.rotate_bytes and self.path != "-":
                self.file.close()
                self._open()

    def _write(
        self, buf: np.ndarray, offset: np.ndarray, caplen: np.ndarray, wirelen: np.ndarray, ts_ns: np.ndarray
    ) -> None:
        if epb_records is not None:
            i64 = np.int64
            blob = epb_records(
                np.ascontiguousarray(buf, np.uint8),
                np.ascontiguousarray(offset, i64),
                np.ascontiguousarray(caplen, i64),
                np.ascontiguousarray(wirelen, i64),
                np.ascontiguousarray(ts_ns, i64),
            )
            self._io(self.file.write, blob)
            self.size += len(blob)
        else:
            for o, c, w, t in zip(offset.tolist(), caplen.tolist(), wirelen.tolist(), ts_ns.tolist(), strict=True):
                self._io(self.writer.write, buf[o : o + c].tobytes(), t, w)
                self.size += 32 + (c + 3) // 4 * 4

    def _io(self, op: Callable[..., object], *args: object) -> None:
        try:
            op(*args)
        except OSError as exc:
            raise RuntimeError(f"{self.name}: {exc.strerror or exc}") from None

    def flush(self) -> None:
        self._io(self.file.flush)

    def close(self) -> None:
        self._io(self.file.flush)
        if self.file is not sys.stdout.buffer:
            self._io(self.file.close)
