"""The DIME <-> MICE hand-over in shared memory: the record batches of :mod:`pxproto.node.mice` (same messages, same
boundaries) go through two single-producer/single-consumer rings (``pxproto.node._shmring``), one per direction, in
memfds the DIME makes (and touches, so their pages are charged to it) before it forks the MICE; the socketpair beside
them carries only one-byte wake-ups and end of file (a side's death).

A side about to wait sets its ring's flag and looks again before it blocks; the other side sends a wake only when it
finds the flag set (see the compiled module for the ordering).  A full ring is backpressure as a full socket was:
:meth:`Link.try_send` says so (the DIME keeps the message, as on EAGAIN), :meth:`Link.send` waits for room (the MICE,
as a blocking send did).

The rings need the compiled module: without it (``PXPROTO_PURE=1``, or not built) :func:`available` is False and the
DIME hands over on the SOCK_SEQPACKET socketpair itself, as before (the pure build's path).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
from typing import Any

from pxproto.fastpath import select

_ring = select.compiled("pxproto.node._shmring")
COMPILED = _ring is not None
HEADER_BYTES: int = _ring.HEADER if _ring is not None else 0
"""Bytes of a ring's header at the start of its mapping (its messages follow)."""

MAX_MESSAGE = (1 << 20) + 64 * 1024
"""The longest message a ring must take: a MICE's largest item (mice.MAX_ITEM, 1 MiB) with its record header, after a
record batch's worth (mice.BATCH_BYTES) of others (a hand-over's last item may cross the batch's limit)."""
RING_BYTES = 2 * (MAX_MESSAGE + 64) + 4096
"""Each ring's mapping (2.13 MiB): a message always fits in half of it (a wrap may skip up to the other half)."""
SOFT_BYTES = 256 * 1024
"""Record batches (mice.BATCH_BYTES) wrap past this much of a ring, so its working set stays in cache (the rest of
the ring serves messages over half of it: large items)."""
WAKE = b"\x00"


OFF_ENV = "PXPROTO_MICE_SHM"
"""``PXPROTO_MICE_SHM=0``: DIMEs hand over on the socketpair even when the ring is built (for A/B measurements)."""


def available() -> bool:
    """Whether the hand-over can go through shared rings (the compiled ring is built and ``PXPROTO_MICE_SHM`` is not
    0)."""
    return COMPILED and os.environ.get(OFF_ENV, "1") != "0"


def new_ring_memory(size: int = RING_BYTES, name: str = "pxmice-ring") -> mmap.mmap:
    """A shared mapping of a fresh memfd (closed once mapped: the mapping keeps it, and a fork inherits it)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def ring(mem: Any, init: bool = False, soft: int = SOFT_BYTES) -> Any:
    """The compiled ring over ``mem`` (``init``: a fresh one, every page touched; ``soft``: see SOFT_BYTES)."""
    if _ring is None:
        raise RuntimeError("pxproto.node._shmring is not built: no shared-memory hand-over")
    return _ring.Ring(mem, init, soft)


def _size(msg: Any) -> int:
    """Bytes of a message given whole or as a list of parts."""
    return len(msg) if not isinstance(msg, list | tuple) else sum(len(p) for p in msg)


class Link:
    """One side's hand-over: ``tx`` the ring it writes, ``rx`` the ring it reads, ``sock`` its end of the socketpair
    (wakes and end of file only)."""

    def __init__(self, sock: socket.socket, tx: Any, rx: Any) -> None:
        self.sock = sock
        self.tx = tx
        self.rx = rx
        self.eof = False
        """The other side closed its end (it is gone)."""

    @classmethod
    def pair(cls, size: int = RING_BYTES, soft: int = SOFT_BYTES) -> tuple[Link, Link]:
        """The DIME's link and the MICE's (both ends in this process: the DIME forks, each side closes the other's
        socket and keeps its own link)."""
        down, up = new_ring_memory(size, "pxmice-in"), new_ring_memory(size, "pxmice-out")
        d_rx, d_tx = ring(up, True, soft), ring(down, True, soft)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return cls(a, d_tx, d_rx), cls(b, ring(up, False, soft), ring(down, False, soft))

    def close(self) -> None:
        """Close the socket and let go of the rings (a mapping lives on while a view of it does)."""
        self.sock.close()
        for r in (self.tx, self.rx):
            r.close()
            with contextlib.suppress(BufferError):
                r.mem.close()

    def wake(self) -> None:
        """One wake byte (a full socket already holds wakes the other side has not read: enough)."""
        with contextlib.suppress(BlockingIOError, InterruptedError, BrokenPipeError, ConnectionResetError):
            self.sock.send(WAKE, socket.MSG_DONTWAIT)

    def drain_wakes(self) -> bool:
        """Read the wake bytes waiting (without blocking); False at end of file."""
        while not self.eof:
            try:
                got = self.sock.recv(4096, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                got = b""
            if not got:
                self.eof = True
            elif len(got) < 4096:
                break
        return not self.eof

    # ------------------------------------------------------------------ without blocking (the DIME)

    def try_send(self, msg: Any) -> bool:
        """Put one message (bytes-like, or a list of parts) if it fits now; False when the ring is full (the writer's
        flag is then set unless room appeared meanwhile: a wake comes when the reader frees space)."""
        res = self.tx.put(msg)
        if res == _ring.FULL:  # type: ignore[union-attr]
            if not self.tx.writer_sleep(_size(msg)):
                return False
            res = self.tx.put(msg)
            if res == _ring.FULL:  # type: ignore[union-attr]
                return False
        if res == _ring.PUT_WAKE:  # type: ignore[union-attr]
            self.wake()
        return True

    def recv_view(self) -> memoryview | None:
        """A view of the next message (None: none now), good until :meth:`done`; ValueError on a corrupt ring."""
        view: memoryview | None = self.rx.peek()
        return view

    def done(self) -> None:
        """The message :meth:`recv_view` gave is read: free its space (and wake a writer waiting for it)."""
        if self.rx.release():
            self.wake()

    def sleep(self) -> bool:
        """About to wait (poll) for a message: True when one is there already (no wait, the flag is not left set)."""
        return bool(self.rx.reader_sleep())

    def awake(self) -> None:
        self.rx.reader_awake()

    # ------------------------------------------------------------------ blocking (the MICE)

    def _wait(self) -> None:
        """Block until a wake byte (or end of file: BrokenPipeError)."""
        while True:
            try:
                got = self.sock.recv(4096)
            except InterruptedError:
                continue
            if not got:
                self.eof = True
                raise BrokenPipeError("the DIME closed the MICE's hand-over")
            return

    def send(self, msg: Any) -> None:
        """Put one message, waiting for room as long as the ring is full; BrokenPipeError when the reader is gone."""
        tx = self.tx
        full = _ring.FULL  # type: ignore[union-attr]
        res = tx.put(msg)
        if res == full:
            size = _size(msg)
            try:
                while res == full:
                    if not tx.writer_sleep(size):
                        self._wait()
                    res = tx.put(msg)
            finally:
                tx.writer_awake()
        if res == _ring.PUT_WAKE:  # type: ignore[union-attr]
            self.wake()

    def recv(self) -> memoryview | None:
        """The next message, waiting for one (None: the other side is gone and sent nothing more), good until
        :meth:`done`."""
        rx = self.rx
        while True:
            view: memoryview | None = rx.peek()
            if view is not None:
                return view
            if self.eof:
                return None
            if rx.reader_sleep():
                continue
            try:
                self._wait()
            except BrokenPipeError:
                pass  # (what was published before the end is still read)
            finally:
                rx.reader_awake()
