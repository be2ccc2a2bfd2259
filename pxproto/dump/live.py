"""Live capture: an AF_PACKET socket with a TPACKET_V3 ring, the filter compiled to BPF by libpcap
and run by the kernel, frames taken in batches for as long as blocks are ready.

The loop waits in ``poll`` only when the ring is empty, and then for at most :data:`POLL_MS`, so a
stop request (Ctrl-C, SIGTERM) is seen within that time even on an idle interface.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pcapy

from pxproto.dump.source import Frames
from pxproto.fastpath import select

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
POLL_MS = 50
"""Longest wait in poll before the stop flag is looked at again."""
BUFFER_BYTES = 32 << 20
"""Default ring size (``-B``), 16 times libpcap's default: a burst at line rate waits here."""
BATCH_BYTES = 1 << 22
"""Frame bytes per batch (about 70,000 small frames)."""


class LiveError(Exception):
    """The interface cannot be opened or filtered; the message is one line for the user."""


@dataclass
class LiveCounts:
    captured: int = 0
    received: int = 0
    dropped: int = 0


def _ring_module():  # type: ignore[no-untyped-def]
    ring = select.compiled("pxproto.dump._ring")
    if ring is None:
        raise LiveError("live capture needs the compiled ring (pxproto.dump._ring; not built, or PXPROTO_PURE=1)")
    return ring


def _link_type(iface: str) -> int:
    try:
        with open(f"/sys/class/net/{iface}/type") as f:
            return int(f.read())
    except (OSError, ValueError):
        return ARPHRD_ETHER


class LiveCapture:
    """An open interface; :meth:`frames` yields batches of frames as they arrive."""

    def __init__(
        self, iface: str, snaplen: int, promisc: bool, bpf: str | None, buffer_bytes: int = BUFFER_BYTES
    ) -> None:
        ring = _ring_module()
        self.iface = iface
        self.counts = LiveCounts()
        try:
            program = pcapy.compile(pcapy.DLT_EN10MB, snaplen, bpf or "", 1, 0xFFFFFFFF).get_bpf()
        except pcapy.PcapError as exc:
            raise LiveError(f"{iface}: BPF filter {bpf!r}: {_one_line(exc)}") from None
        try:
            index = socket.if_nametoindex(iface)
        except OSError:
            raise LiveError(f"{iface}: No such device exists") from None
        link = _link_type(iface)
        if link not in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
            raise LiveError(f"{iface}: link type {link} is not Ethernet")
        try:
            # Protocol 0: nothing arrives before the filter and the ring are in place and bind names one.
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise LiveError(f"{iface}: cannot capture: {exc.strerror} (root or CAP_NET_RAW needed)") from None
        try:
            ring.attach_filter(self.sock.fileno(), program)
            self.ring = ring.CaptureRing(self.sock.fileno(), buffer_bytes, skip_outgoing=link == ARPHRD_LOOPBACK)
            self.sock.bind((iface, ETH_P_ALL))
            if promisc:
                mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
                self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except OSError as exc:
            self.sock.close()
            raise LiveError(f"{iface}: {exc.strerror or exc}") from None

    def frames(self, stop: Callable[[], bool], batch_bytes: int = BATCH_BYTES) -> Iterator[Frames]:
        """Batches until ``stop()`` says so; then what the ring already holds, in one last batch."""
        first = 0
        ring = self.ring
        while True:
            stopping = stop()
            if not stopping and not ring.wait(POLL_MS):
                continue
            buf, off, ln, wire, ts = ring.take(batch_bytes)
            if len(off):
                yield Frames(buf, off, ln, wire, ts, first)
                first += len(off)
                self.counts.captured = first
            if stopping:
                return

    def close_counts(self) -> LiveCounts:
        """Counts of the kernel (received by the filter, dropped), then the socket closed."""
        self.counts.received, self.counts.dropped = self.ring.stats()
        self.sock.close()
        return self.counts


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
