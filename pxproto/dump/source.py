"""Where batches come from: capture files (whole-buffer fast path, or the
reference reader frame by frame) and live interfaces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pxproto.capture.pcapng import CaptureError, Packet, read_packets
from pxproto.dump.columns import Batch, from_packets

CHUNK = 8192
"""Frames per batch on the reference path."""


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
