"""Live capture with libpcap (pcapy-ng): frames in batches, the filter run by the kernel."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pcapy

from pxproto.capture.pcapng import Packet

BATCH_FRAMES = 4096
TIMEOUT_MS = 100


class LiveError(Exception):
    """The interface cannot be opened or filtered; the message is one line for the user."""


@dataclass
class LiveCounts:
    captured: int = 0
    received: int = 0
    dropped: int = 0


class LiveCapture:
    """An open interface; :meth:`batches` yields lists of packets as they arrive."""

    def __init__(self, iface: str, snaplen: int, promisc: bool, bpf: str | None, timeout_ms: int = TIMEOUT_MS) -> None:
        self.iface = iface
        try:
            self.pcap = pcapy.open_live(iface, snaplen, int(promisc), timeout_ms)
        except pcapy.PcapError as exc:
            raise LiveError(f"{iface}: {_one_line(exc)}") from None
        if self.pcap.datalink() != pcapy.DLT_EN10MB:
            raise LiveError(f"{iface}: link type {self.pcap.datalink()} is not Ethernet")
        if bpf:
            try:
                self.pcap.setfilter(bpf)
            except pcapy.PcapError as exc:
                raise LiveError(f"{iface}: BPF filter {bpf!r}: {_one_line(exc)}") from None
        self.counts = LiveCounts()

    def batches(self) -> Iterator[list[Packet]]:
        got: list[Packet] = []

        def take(header: object, data: bytes) -> None:
            sec, usec = header.getts()  # type: ignore[attr-defined]
            got.append(Packet(bytes(data), sec * 1_000_000_000 + usec * 1000, header.getlen()))  # type: ignore[attr-defined]

        while True:
            try:
                self.pcap.dispatch(BATCH_FRAMES, take)
            except pcapy.PcapError as exc:
                raise LiveError(f"{self.iface}: {_one_line(exc)}") from None
            self.counts.captured += len(got)
            batch, got = got, []
            yield batch

    def close_counts(self) -> LiveCounts:
        try:
            recv, drop, _ifdrop = self.pcap.stats()
            self.counts.received, self.counts.dropped = recv, drop
        except pcapy.PcapError:
            pass
        return self.counts


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
