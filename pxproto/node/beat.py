"""The heartbeat sender: the compiled real-time thread of ``pxproto.node._beat``, or this pure-Python twin.

``Beater(fd)`` sends one *armed* frame at its deadline: ``arm(frame, at)``
with ``at`` in ``time.monotonic()`` seconds, then ``take()`` -> ``(sent, when)``
says whether it went out and when, and takes it back if it did not (the
caller then sends it itself).  ``realtime`` says whether the sender runs at
SCHED_FIFO.  Set ``PXPROTO_PURE=1`` to force the twin (a Python thread: it
needs the GIL, so it is no better on time than the DIME's own loop).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Protocol

from pxproto.fastpath import select


class HeartbeatSender(Protocol):
    realtime: bool

    def arm(self, frame: bytes, at: float) -> None: ...

    def take(self) -> tuple[bool, float]: ...

    def close(self) -> None: ...


def peer_of(sockaddr: bytes) -> tuple[str, int]:
    """(host, port) of a raw struct sockaddr_in or sockaddr_in6 (as :func:`pxproto.switch.udpsteer.sockaddr` makes)."""
    fam, port = struct.unpack_from("=HH", sockaddr)
    port = socket.ntohs(port)
    if fam == socket.AF_INET and len(sockaddr) >= 8:
        return socket.inet_ntop(fam, sockaddr[4:8]), port
    if fam == socket.AF_INET6 and len(sockaddr) >= 24:
        return socket.inet_ntop(fam, sockaddr[8:24]), port
    raise ValueError(f"heartbeat destination: not an IPv4 or IPv6 sockaddr ({len(sockaddr)} bytes, family {fam})")


class BeaterPy:
    """The twin: a daemon thread waiting on a condition until the armed deadline."""

    realtime = False

    def __init__(self, fd: int, priority: int = 30, dest: bytes = b"") -> None:
        self._sock = socket.socket(fileno=os.dup(fd))
        self._dest = peer_of(dest) if dest else None
        """Where to send on an unconnected socket (``dest``: its raw struct sockaddr; None: the connected peer)."""
        self._cv = threading.Condition()
        self._frame: bytes | None = None
        self._at = 0.0
        self._gen = 0
        self._sent: tuple[bool, float] = (False, 0.0)
        self._stop = False
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="heartbeat-sender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._cv:
            while not self._stop:
                if self._frame is None:
                    self._cv.wait()
                    continue
                wait = self._at - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                frame, gen, self._frame = self._frame, self._gen, None
                try:
                    if self._dest is None:
                        self._sock.send(frame, socket.MSG_DONTWAIT)
                    else:
                        self._sock.sendto(frame, socket.MSG_DONTWAIT, self._dest)
                except OSError:
                    self.errors += 1
                    continue
                if gen == self._gen:
                    self._sent = (True, time.monotonic())

    def arm(self, frame: bytes, at: float) -> None:
        with self._cv:
            self._frame, self._at, self._sent = bytes(frame), at, (False, 0.0)
            self._gen += 1
            self._cv.notify()

    def take(self) -> tuple[bool, float]:
        with self._cv:
            sent, self._sent, self._frame = self._sent, (False, 0.0), None
            self._gen += 1
            self._cv.notify()
            return sent

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=1.0)
        self._sock.close()


_compiled = select.compiled("pxproto.node._beat")
COMPILED = _compiled is not None
Beater: Callable[..., HeartbeatSender] = _compiled.Beater if _compiled is not None else BeaterPy
