"""More threads for the AF_PACKET fast loop: each AF_PACKET port's data frames spread over one socket per
thread with PACKET_FANOUT.

Every worker thread runs a :class:`~pxproto.switch._afpacket.FastLoop` of its own (its own receive and
transmit rings on every AF_PACKET port) that shares the switch's compiled table; the kernel's send path,
most of a forwarded frame's cost, runs with the GIL released, so the threads forward side by side (on
two cores, or with two shares of one).  The port's sockets form a fanout group of type
``PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_ROLLOVER``: a flow stays on the main loop's socket until that
ring is three quarters full, then spills over to a worker's, so frames of one flow keep their order
except while the switch is overloaded.  Control frames stay on the main loop's control socket.  What a
worker cannot finish (the slow path, a refused control frame, a failed port) goes to the main thread
through :meth:`Workers.take`.  Not with a mirror: the mirror keeps the main loop's order.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

from pxproto.switch.sched import set_slice

SOL_PACKET = 263
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_ROLLOVER = 0x1000
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000
FANOUT_TYPE = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_ROLLOVER


def join_fanout(sock: socket.socket, group: int | None = None) -> int:
    """Put a bound packet socket in fanout group ``group`` (None: a new group with an id of the kernel's); the id."""
    flags = FANOUT_TYPE | (PACKET_FANOUT_FLAG_UNIQUEID if group is None else 0)
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (group or 0) | (flags << 16))
    return int(sock.getsockopt(SOL_PACKET, PACKET_FANOUT)) & 0xFFFF


class Workers:
    """``count`` threads beside the main loop, each forwarding a share of every AF_PACKET port's data."""

    def __init__(self, count: int, make_loop: Callable[[], Any], notify: Callable[[], None], slice_us: int) -> None:
        self.loops = [make_loop() for _ in range(count)]
        """The workers' FastLoops: kept across restarts, so their counters last as long as the switch."""
        self.notify = notify
        self.slice_us = slice_us
        self.results: queue.SimpleQueue[tuple[int, list[bytes], list[Any], list[int]]] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.lanes: dict[int, list[Any]] = {}
        self.errors: list[str] = []
        self._stop = False
        self._wake: tuple[socket.socket, socket.socket] | None = None

    def start(self, ports: dict[int, tuple[Any, str, int, bool, bool]], others_up: bool) -> None:
        """Open a lane on each port, {pid: (AfPacketPort, name, longest frame, up, backlog)}, for each worker,
        and start the threads."""
        self._stop = False
        self._wake = socket.socketpair()
        for loop in self.loops:
            for pid, (port, name, maxlen, up, backlog) in ports.items():
                lane = port.open_lane()
                self.lanes.setdefault(pid, []).append(lane)
                loop.set_port(pid, lane.sock.fileno(), -1, lane.ring, name, lane.tx)
                loop.set_limits(pid, maxlen, port.vnet)
                loop.set_state(pid, up, backlog)
            loop.set_others_up(others_up)
        for i, loop in enumerate(self.loops):
            t = threading.Thread(target=self._run, args=(loop,), name=f"pxswitch-worker-{i + 1}", daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        """Stop the threads and close their lanes (the loops keep their counters)."""
        self._stop = True
        if self._wake is not None:
            self._wake[1].send(b"x")  # never read: readable for every worker until the pair closes
        for t in self.threads:
            t.join()
        self.threads = []
        for pid, lanes in self.lanes.items():
            for loop in self.loops:
                loop.clear_port(pid)
            for lane in lanes:
                lane.close()
        self.lanes = {}
        if self._wake is not None:
            for s in self._wake:
                s.close()
            self._wake = None

    def _run(self, loop: Any) -> None:
        assert self._wake is not None
        wake = self._wake[0].fileno()
        if self.slice_us:
            set_slice(self.slice_us)  # (per thread)
        while not self._stop:
            try:
                out = loop.run([wake], 0.5)
            except OSError as exc:
                self.errors.append(f"{threading.current_thread().name}: {exc.strerror}")
                self.notify()
                return
            for r in out:
                self.results.put(r)
            if out:
                self.notify()

    def take(self) -> list[tuple[int, list[bytes], list[Any], list[int]]]:
        """What the workers left for the main thread since the last call."""
        out = []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out

    def set_state(self, pid: int, up: bool, backlog: bool) -> None:
        if pid in self.lanes:
            for loop in self.loops:
                loop.set_state(pid, up, backlog)

    def set_others_up(self, v: bool) -> None:
        for loop in self.loops:
            loop.set_others_up(v)
