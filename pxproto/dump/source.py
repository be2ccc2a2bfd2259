"""Where batches come from: capture files (whole-buffer fast path, or the
reference reader frame by frame) and live interfaces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pxproto.capture.pcapng import CaptureError, Packet, read_packets
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


def fastpath_batches(data: bytes, chunk: int = FAST_CHUNK) -> Iterator[Batch]:
    """Batches of a whole capture in memory, indexed and decoded by the fast path;
    raises CaptureEndsEarly after the last good frame of a damaged file."""
    import numpy as np

    from pxproto.fastpath import index_capture

    damage: CaptureError | None = None
    try:
        idx = index_capture(data)
    except CaptureError as exc:
        idx = exc.partial  # type: ignore[attr-defined]
        damage = exc
    buf = np.frombuffer(data, np.uint8)
    n = len(idx.offsets)
    wirelen = getattr(idx, "orig_lengths", None)
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        b = from_fastpath(buf, idx.offsets[start:end], idx.lengths[start:end], idx.ts_ns[start:end], start)
        if wirelen is not None:
            b.wirelen = wirelen[start:end]
        yield b
    if damage is not None:
        raise CaptureEndsEarly(damage, n)
