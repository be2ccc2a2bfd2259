"""The DIME <-> MICE hand-over in shared memory: the record batches of :mod:`pxproto.node.mice` (same messages, same
boundaries) go through two single-producer/single-consumer rings (``pxproto.node._shmring``), one per direction, in
memfds the DIME makes (and touches, so their pages are charged to it) before it forks the MICE; an eventfd each way
carries the wake-ups, and a socketpair beside them only end of file (a side's death).

A side about to wait sets its ring's flag and looks again before it blocks; the other side wakes it only when it
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
import select as io_select
import socket
from typing import Any

from pxproto.fastpath import select

_ring = select.compiled("pxproto.node._shmring")
COMPILED = _ring is not None
HEADER_BYTES: int = _ring.HEADER if _ring is not None else 0
"""Bytes of a ring's header at the start of its mapping (its messages follow)."""

MAX_MESSAGE = (1 << 20) + 128 * 1024
"""The longest message a ring must take: a MICE's largest item (mice.MAX_ITEM, 1 MiB) with its record header, after a
record batch's worth (mice.BATCH_BYTES) of others (a hand-over's last item may cross the batch's limit)."""
RING_BYTES = 2 * (MAX_MESSAGE + 64) + 4096
"""Each ring's mapping (2.25 MiB): a message always fits in half of it (a wrap may skip up to the other half)."""
SOFT_BYTES = 256 * 1024
"""Record batches (mice.BATCH_BYTES) wrap past this much of a ring, so its working set stays in cache (the rest of
the ring serves messages over half of it: large items)."""


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
    """One side's hand-over: ``tx`` the ring it writes, ``rx`` the ring it reads, ``wake_out`` the eventfd that
    wakes the other side, ``wake_in`` the one that wakes this side, ``sock`` its end of the socketpair (end of file
    only: nothing is ever sent on it).

    An eventfd write is a counter increment, where a wake byte on the socket was a buffer allocated, queued and
    read back: the same wake-up for less work on both sides.  The socket stays for what an eventfd cannot say:
    that the other side is gone (it closed its end, or died)."""

    def __init__(self, sock: socket.socket, tx: Any, rx: Any, wake_out: int, wake_in: int) -> None:
        self.sock = sock
        self.tx = tx
        self.rx = rx
        self.wake_out = wake_out
        self.wake_in = wake_in
        self.eof = False
        """The other side closed its end (it is gone)."""
        self._poll: Any = None

    @classmethod
    def pair(cls, size: int = RING_BYTES, soft: int = SOFT_BYTES) -> tuple[Link, Link]:
        """The DIME's link and the MICE's (both ends in this process: the DIME forks, and each side :meth:`drop` s
        the other's link and keeps its own)."""
        down, up = new_ring_memory(size, "pxmice-in"), new_ring_memory(size, "pxmice-out")
        d_rx, d_tx = ring(up, True, soft), ring(down, True, soft)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # The DIME reads its wakes without blocking (its loop waits in epoll), the MICE blocks on its own; each
        # eventfd is read by one side only, so its flags suit its reader.  Each link owns its descriptors (dup).
        to_dime = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        to_mice = os.eventfd(0, os.EFD_CLOEXEC)
        dime = cls(a, d_tx, d_rx, to_mice, to_dime)
        mice = cls(b, ring(up, False, soft), ring(down, False, soft), os.dup(to_dime), os.dup(to_mice))
        return dime, mice

    def fds(self) -> tuple[int, int]:
        """What to wait on for this side: its wake eventfd and its socket (readable at the other side's end)."""
        return self.wake_in, self.sock.fileno()

    def drop(self) -> None:
        """Close this side's socket and eventfds, leaving the rings mapped (after the fork, each process drops the
        other side's link)."""
        self.sock.close()
        for fd in (self.wake_out, self.wake_in):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.wake_out = self.wake_in = -1

    def close(self) -> None:
        """End this side: close the socket (the other side's end of file), wake the other side so a waiting one
        sees it, close the eventfds and let go of the rings (a mapping lives on while a view of it does)."""
        self.sock.close()
        self.wake()
        self.drop()
        for r in (self.tx, self.rx):
            r.close()
            with contextlib.suppress(BufferError):
                r.mem.close()

    def wake(self) -> None:
        """Wake the other side (the counter only adds up: wakes it has not read yet are one)."""
        if self.wake_out >= 0:
            with contextlib.suppress(OSError):
                os.eventfd_write(self.wake_out, 1)

    def alive(self) -> bool:
        """Whether the other side still holds its end (one look at the socket, without blocking)."""
        if not self.eof:
            try:
                got = self.sock.recv(1, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                got = b""
            self.eof = not got
        return not self.eof

    def drain_wakes(self) -> bool:
        """Read the wakes waiting (without blocking); when there was none, the socket was what woke the caller (or
        nothing did): look at it.  False at end of file."""
        try:
            os.eventfd_read(self.wake_in)
        except OSError:  # (none waiting: BlockingIOError)
            return self.alive()
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
        """Block until woken, or until the other side's end of file (BrokenPipeError).  Both are waited for at once:
        a wake that came with the last messages was read with them, so an end of file cannot count on a wake of its
        own."""
        if self._poll is None:
            self._poll = io_select.poll()
            self._poll.register(self.wake_in, io_select.POLLIN)
            self._poll.register(self.sock, io_select.POLLIN)
        while True:
            ready = [fd for fd, _ in self._poll.poll()]
            if self.wake_in in ready:
                os.eventfd_read(self.wake_in)
                return
            if ready and not self.alive():
                raise BrokenPipeError("the other side closed the hand-over")

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
