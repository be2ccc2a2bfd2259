"""What a DIME's item flow (:mod:`pxproto.node.flow`) keeps beside its inputs and outputs: the lineages completed
here, behind watermarks (:class:`Completed`), and the items waiting for the MICE (:class:`MiceQueue`)."""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator

from pxproto.fastpath import select
from pxproto.node import mice

LOW_BITS = 48
LOW_MASK = (1 << LOW_BITS) - 1
COMPLETED_MAX = 1 << 20
"""Completed lineages kept above their watermarks, at most (the oldest are forgotten past this)."""


class Completed:
    """The lineages completed here, in bounded memory: a watermark per high 16 bits, and a set above it.

    A lineage is (high 16 bits, low 48 bits).  Source lineages are ``stage << 48 | i + 1``
    and arrive nearly in order, so for each high part a *watermark* says "every low part up
    to here is complete", and only lineages completed out of order are kept one by one, in
    ``above``; a lineage that closes the gap above a watermark moves it up and frees them.
    A stage passing each input on as its first output keeps source lineages, so the marks do
    the work along the whole workflow.  Derived lineages (hashes, :func:`pxproto.node.mice.derive_lineage`)
    never join a watermark: they stay in ``above``, which holds at most ``cap`` lineages, the
    oldest forgotten first (``forgotten`` counts them; a copy of a forgotten lineage would be
    handed to the MICE again, so ``cap`` bounds how far back a replay is recognised).
    """

    __slots__ = ("above", "cap", "forgotten", "marks")

    def __init__(self, cap: int = COMPLETED_MAX) -> None:
        self.marks: dict[int, int] = {}
        self.above: dict[int, None] = {}
        self.cap = cap
        self.forgotten = 0

    def __contains__(self, lineage: int) -> bool:
        return (lineage & LOW_MASK) <= self.marks.get(lineage >> LOW_BITS, 0) or lineage in self.above

    def __len__(self) -> int:
        """Entries held (marks plus lineages above them): the memory, not the count of lineages completed."""
        return len(self.marks) + len(self.above)

    def add(self, lineage: int) -> None:
        hi, lo = lineage >> LOW_BITS, lineage & LOW_MASK
        mark = self.marks.get(hi, 0)
        if lo <= mark:
            return
        if lo != mark + 1:
            self.above[lineage] = None
            if len(self.above) > self.cap:
                del self.above[next(iter(self.above))]
                self.forgotten += 1
            return
        mark = lo
        base = hi << LOW_BITS
        above = self.above
        while above and base | (mark + 1) in above:
            mark += 1
            del above[base | mark]
        self.marks[hi] = mark


Records = bytes | list[bytes | memoryview]
"""A chunk's ITEM records: one bytes object, or its parts in order (each item's 13-byte record header, then a view
of its bytes in the message it came in: large items are handed over without a copy of their own)."""


def _size(recs: Records) -> int:
    return len(recs) if isinstance(recs, bytes) else sum([len(part) for part in recs])


def split_from_py(records: bytes, off: int, max_k: int, room: int) -> tuple[int, int, int]:
    """Walk the (well-formed) records of ``records[off:]`` (no copy of it made) while fewer than ``max_k`` are taken
    and fewer than ``room`` bytes (at least one is taken); return (how many, their bytes, the lineage of the next
    record or 0)."""
    rec = mice.REC
    pos, k, end = off, 0, len(records)
    while pos < end and k < max_k and pos - off < room:
        pos += rec.size + rec.unpack_from(records, pos)[2]
        k += 1
    return k, pos - off, rec.unpack_from(records, pos)[1] if pos + rec.size <= end else 0


def pack_lineages_py(lineages: list[int], start: int, count: int) -> bytes:
    """A COMPLETION message's payload: ``count`` of ``lineages`` from ``start``, u64 each (what the sink completed)."""
    return struct.pack(f"!{count}Q", *lineages[start : start + count])


_flowc = select.compiled("pxproto.node._flowc")
split_from = _flowc.split_from if _flowc is not None else split_from_py
pack_lineages = _flowc.pack_lineages if _flowc is not None else pack_lineages_py


class MiceQueue:
    """Items waiting for the MICE, kept as the ITEM records that hand them over: a chunk per item message
    (how many, first lineage, records), so an arriving batch costs one bytes object and :meth:`take` joins
    whole chunks.  A chunk of large items holds its records as parts (:data:`Records`), given to the ring as they
    are (it gathers them).  A chunk :meth:`take` splits stays whole: ``off`` says how many bytes of the first chunk's
    records (one bytes object) were taken already, and what is taken of it goes out as a view (no copy).  ``len``
    counts items; iterating gives (lineage, bytes) pairs, whatever the chunking."""

    __slots__ = ("chunks", "n", "off", "size")

    def __init__(self) -> None:
        self.chunks: deque[tuple[int, int, Records]] = deque()
        self.n = 0
        self.size = 0
        """Bytes of the records waiting."""
        self.off = 0
        """Bytes taken already of the first chunk's records (a bytes object; 0 for parts)."""

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        off = self.off
        for _, _, recs in self.chunks:
            for _, lineage, data in mice.records(recs[off:] if isinstance(recs, bytes) else b"".join(recs)):
                yield lineage, data
            off = 0

    def clear(self) -> None:
        self.chunks.clear()
        self.n = self.size = self.off = 0

    def add(self, n: int, first: int, records: Records, size: int = -1) -> None:
        """``n`` items as ITEM records (the first's lineage ``first``; ``size``: their bytes, when known)."""
        if n:
            self.chunks.append((n, first, records))
            self.n += n
            self.size += size if size >= 0 else _size(records)

    def append(self, pair: tuple[int, bytes]) -> None:
        self.add(1, pair[0], mice.pack_records(mice.ITEM, [pair]))

    def take(self, max_n: int, limit: int, gather: bool = False) -> tuple[bytes | list[bytes | memoryview], int, int]:
        """Pop up to ``max_n`` items (at least one), no more than fit ``limit`` bytes of records (the last may
        cross it), as one message of ITEM records; return (message, how many, first lineage or 0), as
        :func:`pxproto.node.mice.take_records` does for a deque of pairs.  With ``gather`` the message may be a list
        of its parts (for a ring that gathers them: no join), else it is one bytes object."""
        chunks = self.chunks
        parts: list[bytes | memoryview] = []
        n = size = first = 0
        while chunks and n < max_n and size < limit:
            cn, cfirst, recs = chunks[0]
            if not n:
                first = cfirst
            if not isinstance(recs, bytes):
                k, used, i = _split_parts(recs, max_n - n, limit - size)
                if k == cn:
                    chunks.popleft()
                    parts += recs
                else:
                    chunks[0] = (cn - k, int.from_bytes(recs[i][1:9], "big"), recs[i:])
                    parts += recs[:i]
            else:
                off = self.off
                if n + cn <= max_n and size + len(recs) - off <= limit:
                    k, used = cn, len(recs) - off
                else:
                    k, used, nxt = split_from(recs, off, max_n - n, limit - size)
                if k == cn:
                    chunks.popleft()
                    self.off = 0
                    parts.append(recs if not off else memoryview(recs)[off:])
                else:  # the chunk stays, its head taken as a view
                    chunks[0] = (cn - k, nxt, recs)
                    self.off = off + used
                    parts.append(memoryview(recs)[off : off + used])
            n += k
            size += used
        self.n -= n
        self.size -= size
        if not parts:
            return b"", 0, 0
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0], n, first
        return (parts if gather else b"".join(parts)), n, first


def _split_parts(recs: list[bytes | memoryview], max_k: int, room: int) -> tuple[int, int, int]:
    """:func:`split_from` over a chunk's parts (a header and a view per item): how many items, their
    bytes, and the index of the next item's header."""
    k = used = i = 0
    end = len(recs)
    while i < end and k < max_k and used < room:
        used += len(recs[i]) + len(recs[i + 1])
        k += 1
        i += 2
    return k, used, i
