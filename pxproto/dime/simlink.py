"""A simulated network for testing the DIME state machines deterministically.

Every frame is encoded to bytes and decoded again on arrival (so what crosses
the link is what the wire can carry), and a seeded random generator decides
which frames are lost, duplicated or delayed past later ones.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from pxproto.dime.endpoint import Event, Output, earliest
from pxproto.wire.codec import decode, encode
from pxproto.wire.frame import BROADCAST, Frame


class SimLink:
    """One direction of a lossy wire: ``send`` frames in, ``deliver`` them out when due."""

    def __init__(
        self,
        seed: int = 0,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.001,
        jitter: float = 0.0,
        reorder_delay: float = 0.005,
        drop_if: Callable[[Frame], bool] | None = None,
    ) -> None:
        for name, p in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} probability {p} is not in [0, 1]")
        self.rng = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.delay = delay
        self.jitter = jitter
        self.reorder_delay = reorder_delay
        self.drop_if = drop_if
        """Frames for which this returns True are lost, whatever the dice say."""
        self._queue: list[tuple[float, int, bytes]] = []
        self._n = 0
        self.counters: Counter[str] = Counter()
        """Frames sent, lost, duplicated, delayed out of order, delivered."""

    def _arrival(self, now: float) -> float:
        t = now + self.delay + self.rng.uniform(0.0, self.jitter)
        if self.reorder and self.rng.random() < self.reorder:
            self.counters["reordered"] += 1
            t += self.reorder_delay
        return t

    def send(self, frames: Iterable[Frame], now: float) -> None:
        for frame in frames:
            self.send_encoded(frame, encode(frame), now)

    def send_encoded(self, frame: Frame, raw: bytes, now: float) -> None:
        """Send a frame already encoded as ``raw`` (a broadcast is encoded once for all links)."""
        self.counters["sent"] += 1
        if (self.drop_if is not None and self.drop_if(frame)) or self.rng.random() < self.loss:
            self.counters["lost"] += 1
            return
        copies = 2 if self.duplicate and self.rng.random() < self.duplicate else 1
        self.counters["duplicated"] += copies - 1
        for _ in range(copies):
            self._n += 1
            heapq.heappush(self._queue, (self._arrival(now), self._n, raw))

    def next_delivery(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def deliver(self, now: float) -> list[Frame]:
        """Every frame due by ``now``, in arrival order."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            _, _, raw = heapq.heappop(self._queue)
            out.append(decode(raw))
        self.counters["delivered"] += len(out)
        return out

    def __len__(self) -> int:
        return len(self._queue)


class Machine(Protocol):
    """What :class:`SimNet` drives: any of the DIME state machines, or a composite of them."""

    def receive(self, frame: Frame, now: float) -> Output: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> Output: ...


class SimNet:
    """Machines on one simulated segment, one :class:`SimLink` per ordered pair of MACs.

    Frames go to the machine whose MAC is their destination, or to every other
    machine when broadcast.  Time jumps from one timer or arrival to the next.
    """

    def __init__(self, link: Callable[[bytes, bytes], SimLink] | None = None, start: float = 0.0) -> None:
        self.now = start
        self.machines: dict[bytes, Machine] = {}
        self._link_factory = link or (lambda src, dst: SimLink())
        self.links: dict[tuple[bytes, bytes], SimLink] = {}
        self.events: list[tuple[float, bytes, Event]] = []
        """Every event any machine reported: (time, its MAC, event)."""
        self.on_deliver: Callable[[bytes, Frame], None] | None = None
        """Called with (destination MAC, frame) before each delivery."""
        self.dead: set[bytes] = set()
        self.broadcast_to: set[bytes] | None = None
        """The MACs that hear broadcasts (None: every machine)."""

    def add(self, mac: bytes, machine: Machine) -> None:
        self.machines[mac] = machine
        self.dead.discard(mac)

    def kill(self, mac: bytes) -> None:
        """The machine stops: it sends nothing more and frames to it are lost."""
        self.dead.add(mac)

    def link(self, src: bytes, dst: bytes) -> SimLink:
        key = (src, dst)
        if key not in self.links:
            self.links[key] = self._link_factory(src, dst)
        return self.links[key]

    def emit(self, mac: bytes, out: Output) -> Output:
        """Put a machine's output on the wire and record its events; returns ``out``."""
        if mac in self.dead:
            return out
        self.events.extend((self.now, mac, e) for e in out.events)
        for frame in out.frames:
            if frame.dst_mac == BROADCAST:
                dests = [m for m in self.machines if m != mac and (self.broadcast_to is None or m in self.broadcast_to)]
            else:
                dests = [frame.dst_mac]
            raw = encode(frame)
            for dst in dests:
                self.link(mac, dst).send_encoded(frame, raw, self.now)
        return out

    def next_time(self) -> float | None:
        times = [m.get_timer() for mac, m in self.machines.items() if mac not in self.dead]
        times += [link.next_delivery() for link in self.links.values()]
        return earliest(*times)

    def step(self, until: float) -> bool:
        """Advance to the next arrival or timer if it is due by ``until``; False if none is."""
        t = self.next_time()
        if t is None or t > until:
            return False
        self.now = max(self.now, t)
        for (_, dst), link in list(self.links.items()):
            for frame in link.deliver(self.now):
                if dst in self.dead or dst not in self.machines:
                    continue
                if self.on_deliver is not None:
                    self.on_deliver(dst, frame)
                self.emit(dst, self.machines[dst].receive(frame, self.now))
        for mac, m in list(self.machines.items()):
            timer = m.get_timer()
            if mac not in self.dead and timer is not None and timer <= self.now:
                self.emit(mac, m.handle_timer(self.now))
        return True

    def run(self, until: float, stop: Callable[[], bool] | None = None, max_steps: int = 10_000_000) -> int:
        """Step until ``until`` (then set the clock to it), ``stop()`` is true, or nothing is left to do."""
        steps = 0
        while steps < max_steps and not (stop is not None and stop()) and self.step(until):
            steps += 1
        if not (stop is not None and stop()):
            self.now = max(self.now, until)
        return steps

    def events_of(self, kind: type[Event]) -> list[Event]:
        return [e for _, _, e in self.events if isinstance(e, kind)]
