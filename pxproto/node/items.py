"""The item codecs of the data plane: MICE record batches (``kind u8 | lineage u64 | length u32 | bytes``, see
:mod:`pxproto.node.mice`) and data-channel item messages (one item, or a batch behind a zero mark).

Each ``*_py`` function is the pure twin of a compiled one in ``pxproto.node._items``; the unsuffixed names are the
compiled ones when built, else the twins (``tests/test_items_codec.py`` runs both on the same inputs).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque
from collections.abc import Iterable, Sequence

from pxproto.fastpath import select

REC = struct.Struct("!BQI")
LINEAGE = struct.Struct("!Q")


def pack_item(lineage: int, item: bytes) -> bytes:
    """A data-channel message: the lineage, then the item."""
    return LINEAGE.pack(lineage) + item


def unpack_item(message: bytes) -> tuple[int, bytes]:
    if len(message) < LINEAGE.size:
        raise ValueError(f"item message of {len(message)} bytes, a lineage needs {LINEAGE.size}")
    return LINEAGE.unpack_from(message)[0], message[LINEAGE.size :]


BATCH_MARK = bytes(8)
ITEM_REC = struct.Struct("!QI")


def pack_items_py(items: Iterable[tuple[int, bytes]]) -> bytes:
    """A batch message: the zero mark, then ``lineage u64 | length u32 | bytes`` per item."""
    parts = [BATCH_MARK]
    for lineage, data in items:
        parts.append(ITEM_REC.pack(lineage, len(data)))
        parts.append(data)
    return b"".join(parts)


def unpack_items_py(message: bytes) -> list[tuple[int, bytes]]:
    """The (lineage, item) pairs of a data-channel message, single or batch; ValueError names the bad byte."""
    if message[:8] != BATCH_MARK:
        return [unpack_item(message)]
    out = []
    pos, n = 8, len(message)
    rec = ITEM_REC
    while pos < n:
        if pos + rec.size > n:
            raise ValueError(f"batch item header at byte {pos} truncated ({n - pos} bytes left)")
        lineage, length = rec.unpack_from(message, pos)
        pos += rec.size
        if pos + length > n:
            raise ValueError(f"batch item at byte {pos - rec.size} says {length} bytes, {n - pos} left")
        if lineage == 0:
            raise ValueError(f"batch item at byte {pos - rec.size} has lineage 0")
        out.append((lineage, message[pos : pos + length]))
        pos += length
    return out


def records_py(message: bytes) -> list[tuple[int, int, bytes]]:
    """The (kind, lineage, bytes) records of one socketpair message; ValueError on a malformed batch."""
    pos, n = 0, len(message)
    out = []
    unpack, size = REC.unpack_from, REC.size
    while pos < n:
        if pos + size > n:
            raise ValueError(f"record header at byte {pos} truncated")
        kind, lineage, length = unpack(message, pos)
        pos += size
        if pos + length > n:
            raise ValueError(f"record at byte {pos - size} says {length} bytes, {n - pos} left")
        out.append((kind, lineage, message[pos : pos + length]))
        pos += length
    return out


Bytes = bytes | bytearray | memoryview


def pack_records_py(kind: int, pairs: Iterable[tuple[int, Bytes]]) -> bytes:
    """``kind u8 | lineage u64 | length u32 | bytes`` for each (lineage, bytes) pair, in one message."""
    parts: list[Bytes] = []
    for lineage, data in pairs:
        parts.append(REC.pack(kind, lineage, len(data)))
        parts.append(data)
    return b"".join(parts)


def take_records_py(kind: int, queue: deque[tuple[int, bytes]], max_n: int, limit: int) -> tuple[bytes, int, int]:
    """Pop up to ``max_n`` (lineage, bytes) pairs off the left of ``queue``, at least one and no more than fit
    ``limit`` bytes of records; return (message, how many, first lineage or 0)."""
    taken: list[tuple[int, bytes]] = []
    size = 0
    while len(taken) < max_n and size < limit and queue:
        pair = queue.popleft()
        taken.append(pair)
        size += REC.size + len(pair[1])
    if not taken:
        return b"", 0, 0
    return pack_records_py(kind, taken), len(taken), taken[0][0]


def pack_run_py(
    kind: int, first: int, items: Sequence[Bytes], start: int, limit: int, max_item: int
) -> tuple[bytes, int]:
    """Records for ``items[start:]`` with lineages ``first``, ``first + 1``...: as many as fit ``limit`` bytes
    (at least one); return (message, how many).  TypeError or ValueError when an item is not bytes-like or
    longer than ``max_item`` (the caller reports it through its slow path)."""
    pairs: list[tuple[int, Bytes]] = []
    size = 0
    for i in range(start, len(items)):
        one = items[i]
        if not isinstance(one, bytes | bytearray | memoryview):
            raise TypeError("not bytes")
        if len(one) > max_item:
            raise ValueError("too long")
        if pairs and size + REC.size + len(one) > limit:
            break
        pairs.append((first + i - start, one))
        size += REC.size + len(one)
    return pack_records_py(kind, pairs), len(pairs)


def item_lists_py(message: bytes | memoryview, kind: int, stop: int) -> tuple[list[int], list[bytes], bool]:
    """The ``kind`` records of one socketpair message (bytes, or a view of a reused buffer: each item is copied out)
    as two lists, (lineages, bytes), up to the first ``stop`` record; returns (lineages, items, whether a ``stop``
    record came).  Other records are skipped; ValueError on a malformed batch."""
    lineages, items, stopped = item_views_py(message, kind, stop)  # type: ignore[arg-type]
    return lineages, [bytes(v) for v in items], stopped  # (a bytes slice is returned as is)


def item_views_py(view: memoryview, kind: int, stop: int) -> tuple[list[int], list[memoryview], bool]:
    """:func:`item_lists_py` with no copy: each item is a view of ``view``, valid as long as ``view`` is."""
    lineages: list[int] = []
    items: list[memoryview] = []
    for k, lineage, data in records_py(view):  # type: ignore[arg-type]  # (slices of a view are views)
        if k == stop:
            return lineages, items, True
        if k == kind:
            lineages.append(lineage)
            items.append(data)  # type: ignore[arg-type]
    return lineages, items, False


def release_views_py(views: list[memoryview]) -> None:
    """Release each of ``views`` (item views handed to a stage); one a stage took a buffer of stays (BufferError)."""
    for one in views:
        try:
            one.release()
        except BufferError:
            pass


def recv_items_py(
    sock: socket.socket, buf: bytearray, kind: int, stop: int, least: int, peek: bool
) -> tuple[list[int], list[bytes], bool, int, bool]:
    """Receive the next message of ``sock`` into ``buf`` and return :func:`item_lists_py` of it, then its size (0: end
    of file) and whether it opened with a ``kind`` record of ``least`` bytes or more.  (The compiled twin, given
    ``peek``, receives such a record straight into the bytes it hands over; this one copies it out of ``buf``.)"""
    n, _, flags, _ = sock.recvmsg_into([buf])
    if flags & socket.MSG_TRUNC:
        raise OSError(errno.EMSGSIZE, f"a MICE message of more than {n} bytes")
    if n == 0:
        return [], [], False, 0, False
    lineages, items, stopped = item_lists_py(memoryview(buf)[:n], kind, stop)
    large = n >= REC.size and buf[0] == kind and REC.unpack_from(buf)[2] >= least
    return lineages, items, stopped, n, large


def pack_dones_py(kind: int, lineages: Sequence[int]) -> bytes:
    """``kind u8 | lineage u64 | 0 u32`` for each lineage (records with no bytes), in one message."""
    return b"".join(REC.pack(kind, lin, 0) for lin in lineages)


_items = select.compiled("pxproto.node._items")
COMPILED = _items is not None
"""Whether the item codecs below are the compiled ``pxproto.node._items`` (else the ``*_py`` twins above)."""
records = _items.records if _items is not None else records_py
unpack_items = _items.unpack_items if _items is not None else unpack_items_py
pack_items = _items.pack_items if _items is not None else pack_items_py
pack_records = _items.pack_records if _items is not None else pack_records_py
take_records = _items.take_records if _items is not None else take_records_py
pack_run = _items.pack_run if _items is not None else pack_run_py
item_lists = _items.item_lists if _items is not None else item_lists_py
item_views = _items.item_views if _items is not None else item_views_py
release_views = _items.release_views if _items is not None else release_views_py
pack_dones = _items.pack_dones if _items is not None else pack_dones_py
recv_items = _items.recv_items if _items is not None else recv_items_py
