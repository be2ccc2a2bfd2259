"""A thousand simulated DIMEs in seconds, not hours: an event-heap SimNet, and orchestrators' views compared.

:class:`~pxproto.dime.simlink.SimNet` scans every machine's timer and every link's queue at each step and
decodes a broadcast once per machine on the segment, so a heartbeat costs O(machines) and a cluster of N
DIMEs costs O(N^2) per simulated second (250 servers did not finish a simulated second in five minutes).
:class:`FleetNet` runs the same machines (the real DIME machines, orchestrator cores, ``Leadership``) on one
heap of timers and arrivals, with the compiled codec (every frame is still encoded and decoded), and
delivers a server's broadcasts (heartbeats, announces) only to the machines that are not servers, since a
server ignores them.  A machine's timer is read again only after it ran, after a frame was emitted for it
from outside a step (a command the test sent), or when :meth:`FleetNet.touch` says so (a DIME restarted);
the data plane, which every server's DIMEs wake, is read again whenever its wake time moved.

:func:`view_of` is an orchestrator's view of its pool as ``pxorch status`` shows it (each DIME's state,
epoch and whether it is judged dead), and :class:`ViewLag` measures how long a follower's view differs
from the leader's, DIME by DIME.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from pxproto.dime.endpoint import Output
from pxproto.dime.liveness import Health
from pxproto.dime.simlink import Machine, SimLink, SimNet
from pxproto.fastpath import decode, encode
from pxproto.orch.core import Orchestrator
from pxproto.sim import SimPlane, SimServer
from pxproto.wire.frame import BROADCAST

_TIMER, _ARRIVAL = 0, 1


class FleetNet(SimNet):
    """A :class:`SimNet` on one event heap (see the module docstring); same links, loss and delays."""

    def __init__(self, link: Callable[[bytes, bytes], SimLink] | None = None, start: float = 0.0) -> None:
        super().__init__(link, start)
        self._heap: list[tuple[float, int, int, bytes, bytes]] = []
        """(when, order, timer or arrival, the machine's MAC, the frame's bytes for an arrival)."""
        self._due: dict[bytes, float | None] = {}
        self._n = 0
        self._ears: list[bytes] = []
        """Machines that hear a server's broadcasts: every one but the servers."""
        self._planes: dict[bytes, SimPlane] = {}
        self._plane_wake: dict[bytes, float | None] = {}
        self._stepping = False

    def add(self, mac: bytes, machine: Machine) -> None:
        super().add(mac, machine)
        if isinstance(machine, SimPlane):
            self._planes[mac] = machine
        if not isinstance(machine, SimServer) and mac not in self._ears:
            self._ears.append(mac)
        self.touch(mac)

    def touch(self, mac: bytes) -> None:
        """Read ``mac``'s timer again (its machine changed from outside the network, e.g. a DIME restarted)."""
        m = self.machines.get(mac)
        t = None if m is None or mac in self.dead else m.get_timer()
        self._due[mac] = t
        if t is not None:
            self._n += 1
            heapq.heappush(self._heap, (t, self._n, _TIMER, mac, b""))
        if mac in self._planes:
            self._plane_wake[mac] = self._planes[mac]._wake_at

    def emit(self, mac: bytes, out: Output) -> Output:
        if mac in self.dead:
            return out
        self.events.extend((self.now, mac, e) for e in out.events)
        for frame in out.frames:
            if frame.dst_mac != BROADCAST:
                dests = [frame.dst_mac]
            elif isinstance(self.machines.get(mac), SimServer):
                dests = [m for m in self._ears if m != mac]
            else:
                dests = [m for m in self.machines if m != mac]
            if self.broadcast_to is not None and frame.dst_mac == BROADCAST:
                dests = [m for m in dests if m in self.broadcast_to]
            raw = encode(frame)
            for dst in dests:
                link = self.link(mac, dst)
                link.send_encoded(frame, raw, self.now)  # the link's loss, copies and delays decide
                while link._queue:  # moved at once onto the one heap: a link never holds a frame here
                    t, _, r = heapq.heappop(link._queue)
                    self._n += 1
                    heapq.heappush(self._heap, (t, self._n, _ARRIVAL, dst, r))
        if not self._stepping:
            self.touch(mac)  # a command sent from outside a step (a deployment) armed the sender's timers
        return out

    def _top(self) -> tuple[float, int, int, bytes, bytes] | None:
        while self._heap:
            ev = self._heap[0]
            if ev[2] == _TIMER and (ev[3] in self.dead or self._due.get(ev[3]) != ev[0]):
                heapq.heappop(self._heap)  # superseded by a newer reading of that machine's timer
                continue
            return ev
        return None

    def next_time(self) -> float | None:
        ev = self._top()
        return None if ev is None else ev[0]

    def step(self, until: float) -> bool:
        ev = self._top()
        if ev is None or ev[0] > until:
            return False
        heapq.heappop(self._heap)
        t, _, kind, mac, raw = ev
        self.now = max(self.now, t)
        m = self.machines.get(mac)
        if m is None or mac in self.dead:
            return True
        self._stepping = True
        try:
            if kind == _ARRIVAL:
                frame = decode(raw)
                if self.on_deliver is not None:
                    self.on_deliver(mac, frame)
                self.emit(mac, m.receive(frame, self.now))
            else:
                self._due[mac] = None
                self.emit(mac, m.handle_timer(self.now))
        finally:
            self._stepping = False
        self.touch(mac)
        for pm, plane in self._planes.items():
            if pm != mac and plane._wake_at != self._plane_wake.get(pm):
                self.touch(pm)
        return True


ViewRow = tuple[int, int, bool]
"""(state, epoch, judged dead) of one DIME."""


def view_of(core: Orchestrator) -> dict[tuple[bytes, int], ViewRow]:
    """An orchestrator's pool as ``pxorch status`` shows it: each DIME's state, epoch, and whether it is dead."""
    return {k: (int(v.state), v.epoch, v.health is Health.DEAD) for k, v in core.pool.dimes.items()}


class ViewLag:
    """How long a follower's view differs from the leader's, per DIME: the length of each divergence.

    :meth:`sample` both views often (every few milliseconds); a divergence begins at the first sample where a
    DIME's row differs between them (or is in one view only) and ends at the first where they agree again.
    """

    def __init__(self) -> None:
        self.since: dict[tuple[object, tuple[bytes, int]], float] = {}
        """(follower, DIME) -> when their views of that DIME began to differ."""
        self.lags: list[float] = []
        """Durations of the divergences that ended, in seconds."""
        self.samples = 0

    def sample(self, now: float, leader: dict[tuple[bytes, int], ViewRow],
               follower: dict[tuple[bytes, int], ViewRow], who: object = 0) -> None:  # fmt: skip
        """Compare follower ``who``'s view with the leader's at ``now``."""
        self.samples += 1
        for k in leader.keys() | follower.keys():
            same = leader.get(k) == follower.get(k)
            if not same and (who, k) not in self.since:
                self.since[(who, k)] = now
            elif same and (who, k) in self.since:
                self.lags.append(now - self.since.pop((who, k)))

    def open(self, now: float) -> list[float]:
        """Divergences not ended yet, with how long each has lasted."""
        return [now - t for t in self.since.values()]


def percentile(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` (nearest rank); 0 for none."""
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def stats(xs: list[float]) -> dict[str, Any]:
    return {"n": len(xs), "p50": percentile(xs, 0.5), "p99": percentile(xs, 0.99), "max": max(xs, default=0.0)}


__all__ = ["FleetNet", "ViewLag", "percentile", "stats", "view_of"]
