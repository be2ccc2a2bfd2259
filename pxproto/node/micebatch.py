"""The MICE's record batches (see :mod:`pxproto.node.mice`): the record kinds, the receive buffer a socketpair's
messages go through (:class:`Inbox`), and the packer that sends them (:class:`Batcher`)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from typing import Any

from pxproto.node.items import REC, Bytes, pack_dones, pack_run

ITEM, OUT, DONE, EOF, STOP, FAULT, READY = 1, 2, 3, 4, 5, 6, 7
BATCH_BYTES = 64 * 1024
"""A record batch is flushed when it reaches this size.  At 32 KiB, bench/channel.py alternated single runs on one
host (2026-12-01, load 2.7-3.4) gave 16 B 26.8, 24.0, 26.8 MB/s against 31.4, 32.0, 27.2 at 64 KiB (sink DIME 0.29-0.31
against 0.23-0.25 us/item), and 1400 B 422, 371, 445 against 493, 469, 387 MB/s: half the messages, wake-ups and
DONE batches per item."""
SEQPACKET_MAX = 200 * 1024
DONES_MAX = BATCH_BYTES // 13
"""DONE records a Batcher holds as bare lineages before packing them (a message's worth)."""
GATHER_BYTES = 16 * 1024
"""An exact ``bytes`` item at least this long is never copied into a packed batch: its record goes out as a header
and the item itself, and a message of at least this size is sent from its parts by one ``sendmsg`` (no join)."""
LARGE_BATCH_BYTES = 4 * (64 * 1024 + REC.size)
"""Into the shared ring, gathered large items share a message up to this size (four of 64 KiB), not BATCH_BYTES: one
message, wake-up and DONE batch per four items instead of one.  bench/channel.py, 64 KiB items, three alternated pairs
(2026-12-01, load 1.0-2.0): source DIME 47.1, 41.1, 42.1 us/item against 57.9, 45.0, 59.1 at BATCH_BYTES (its MICE
8.4, 8.0, 7.8 against 10.4, 9.8, 11.3).  Not on the socketpair, whose messages stop at SEQPACKET_MAX."""
GATHER_PARTS = 64
"""Most parts one ``sendmsg`` gathers (a message of more is joined first)."""
MAX_ITEM = 1 << 20
"""Largest item (bytes); a larger one is a MICE fault."""


class Inbox:
    """One receive buffer reused for every message of a socket: ``recv`` of a large buffer allocates (and for
    SEQPACKET_MAX, maps and unmaps) that much per message; this copies out only what arrived."""

    def __init__(self, size: int = SEQPACKET_MAX) -> None:
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)

    def recv(self, sock: socket.socket) -> bytes:
        """The next message (b"" at end of file); raises what ``recv_into`` raises."""
        n = sock.recv_into(self.buf)
        return self.view[:n].tobytes()

    def recv_view(self, sock: socket.socket) -> memoryview:
        """:meth:`recv` without the copy out: a view of the buffer, good until the next receive."""
        return self.view[: sock.recv_into(self.buf)]


class Batcher:
    """Packs records into socketpair messages of at most BATCH_BYTES.

    DONE records (:meth:`done`) are held as bare lineages and packed in one call when anything else is added or
    the batch is flushed, so a stage that yields nothing (a sink) costs a list append per item."""

    def __init__(self, sock: socket.socket, link: Any = None) -> None:
        self.sock = sock
        self.link = link
        """The shared-memory hand-over (:class:`pxproto.node.shmring.Link`) the batches go through (None: ``sock``)."""
        self.parts: list[Bytes] = []
        self.size = 0
        self.dones: list[int] = []

    def done(self, lineage: int) -> None:
        """A DONE record for ``lineage`` (after the OUT records already added, before any added later)."""
        self.dones.append(lineage)
        if len(self.dones) >= DONES_MAX:
            self._pack_dones()

    def done_all(self, lineages: list[int]) -> None:
        """:meth:`done` for each of ``lineages`` (a batch stage's call that yielded nothing), in one go."""
        self.dones.extend(lineages)
        if len(self.dones) >= DONES_MAX:
            self._pack_dones()

    def _pack_dones(self) -> None:
        dones = self.dones
        self.dones = []
        for i in range(0, len(dones), DONES_MAX):
            self.add_packed(pack_dones(DONE, dones if len(dones) <= DONES_MAX else dones[i : i + DONES_MAX]))

    def add_packed(self, msg: bytes) -> None:
        """Records packed already (at most BATCH_BYTES of them: :func:`pack_dones`, a compiled loop's), after
        everything added before."""
        if self.dones:
            self._pack_dones()
        if self.parts and self.size + len(msg) > BATCH_BYTES:
            self.flush_parts()
        self.parts.append(msg)
        self.size += len(msg)

    def add(self, kind: int, lineage: int, data: bytes = b"") -> None:
        if self.dones:
            self._pack_dones()
        if self.size + REC.size + len(data) > BATCH_BYTES and self.parts:
            self.flush()
        self.parts.append(REC.pack(kind, lineage, len(data)))
        self.parts.append(data)
        self.size += REC.size + len(data)

    def add_run(self, kind: int, first: int, items: Sequence[Bytes], start: int = 0) -> None:
        """Records for ``items[start:]`` with lineages ``first``, ``first + 1``..., packed a message's worth at a
        time in one call (:func:`pack_run`); nothing is added when an item is bad (TypeError/ValueError)."""
        if self.dones:
            self._pack_dones()
        chunks: list[tuple[Bytes, ...]] = []
        sizes: list[int] = []
        i, room = start, BATCH_BYTES - self.size
        while i < len(items):
            one = items[i]
            if type(one) is bytes and len(one) >= GATHER_BYTES:  # its header, then the item itself: no copy
                if len(one) > MAX_ITEM:
                    raise ValueError("too long")
                chunks.append((REC.pack(kind, first + i - start, len(one)), one))
                sizes.append(REC.size + len(one))
                i += 1
            else:
                msg, n = pack_run(kind, first + i - start, items, i, room if room > REC.size else BATCH_BYTES, MAX_ITEM)
                chunks.append((msg,))
                sizes.append(len(msg))
                i += n
            room = BATCH_BYTES
        limit = LARGE_BATCH_BYTES if self.link is not None else BATCH_BYTES
        for parts, size in zip(chunks, sizes, strict=True):
            if self.parts and self.size + size > (limit if len(parts) == 2 else BATCH_BYTES):  # (2: header, item)
                self.flush()
            self.parts.extend(parts)
            self.size += size

    def flush(self) -> None:
        if self.dones:
            self._pack_dones()
        self.flush_parts()

    def flush_parts(self) -> None:
        """Send the parts as one message: a large one gathered by ``sendmsg``, a small one joined (a copy costs
        less than a long gather list there)."""
        parts = self.parts
        if not parts:
            return
        if self.link is not None:  # into the shared ring: gathered there, whatever the size (no join, no syscall)
            self.link.send(parts[0] if len(parts) == 1 else parts)
        elif len(parts) == 1:
            self.sock.sendall(parts[0])
        elif self.size >= GATHER_BYTES and len(parts) <= GATHER_PARTS:
            sent = self.sock.sendmsg(parts)
            if sent != self.size:  # (a SOCK_SEQPACKET message goes whole or not at all)
                raise OSError(errno.EMSGSIZE, f"MICE record batch: {sent} of {self.size} bytes sent")
        else:
            self.sock.sendall(b"".join(parts))
        parts.clear()
        self.size = 0
