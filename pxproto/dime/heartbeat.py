"""Heartbeats: a DIME's sign of life, and the failure detector that watches them.

A :class:`HeartbeatEmitter` broadcasts a DIME's heartbeat every period (100 ms
by default, changeable at run time) with its epoch, state and load.  The epoch
grows on every restart (:func:`next_epoch`, :meth:`HeartbeatEmitter.restart`),
and the header's ``seq`` counts heartbeats within an epoch, so a watcher can
tell a reborn DIME from a late or reordered frame.

A :class:`FailureDetector` watches every DIME it hears.  When one stays silent
too long -- a number of missed periods (:class:`MissedHeartbeats`) or a
phi-accrual suspicion level (:class:`PhiAccrual`) -- it is *suspected*, and a
direct signaling PING decides: an answer clears the suspicion, no answer after
the ping's retries declares it dead.  So one lost heartbeat never triggers a
repair, and a dead DIME is found within the silence bound plus the ping's span.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from statistics import NormalDist

from pxproto.dime.endpoint import BROADCAST_ADDRESS, Address, Event, Output, earliest, frame_to, source
from pxproto.dime.signaling import (
    Handler,
    Requester,
    RequestReceived,
    RequestTimedOut,
    ResponseReceived,
    RetransmitPolicy,
)
from pxproto.wire.codes import Command, DimeState, Status, TlvType
from pxproto.wire.frame import Frame, Heartbeat, Signaling, Tlv

EPOCH_SPACE = 1 << 32
PERIOD_MS_MAX = 0xFFFF


def next_epoch(previous: int | None) -> int:
    """The epoch for a (re)start after ``previous`` (None on a first boot); the driver persists it."""
    nxt = 1 if previous is None else previous + 1
    if nxt >= EPOCH_SPACE:
        raise OverflowError("the 32-bit epoch is exhausted")
    return nxt


def period_ms(period: float) -> int:
    ms = round(period * 1000)
    if not 1 <= ms <= PERIOD_MS_MAX:
        raise ValueError(f"a heartbeat period of {period} s is not within 1..{PERIOD_MS_MAX} ms")
    return ms


class HeartbeatEmitter:
    """Broadcasts one DIME's heartbeats."""

    def __init__(self, local: Address, epoch: int, *, period: float = 0.1, state: DimeState = DimeState.FREE) -> None:
        self.local = local
        self.epoch = epoch
        self.period = period
        self._period_ms = period_ms(period)
        self.load = Heartbeat(epoch, state, self._period_ms)
        """The body of the next heartbeat: change it with :meth:`update`."""
        self.sent = 0
        """Heartbeats sent in this epoch (the header's seq)."""
        self._deadline: float | None = None

    def update(self, **fields: int) -> None:
        """Set state or load fields for the next heartbeats (``state=``, ``cpu_permille=``, ``rx_queue=``...)."""
        for name, value in fields.items():
            if name in ("epoch", "period_ms") or not hasattr(self.load, name):
                raise AttributeError(f"a heartbeat has no settable field {name!r}")
            setattr(self.load, name, DimeState(value) if name == "state" else value)

    def _beat(self, now: float) -> Output:
        self.sent += 1
        body = replace(self.load, epoch=self.epoch, period_ms=self._period_ms)
        frame = frame_to(self.local, BROADCAST_ADDRESS, body)
        frame.seq = self.sent
        return Output(frames=[frame], timer=self._deadline)

    def start(self, now: float) -> Output:
        """Send the first heartbeat now and the next one period later."""
        self._deadline = now + self.period
        return self._beat(now)

    def stop(self) -> None:
        self._deadline = None

    def restart(self, now: float) -> Output:
        """A new life: the next epoch, the count from 1, a heartbeat at once."""
        self.epoch = next_epoch(self.epoch)
        self.sent = 0
        return self.start(now)

    def set_period(self, period: float, now: float) -> Output:
        """Change the period at run time; the next heartbeat is due one new period after the last one."""
        self._period_ms = period_ms(period)
        if self._deadline is not None:
            last = self._deadline - self.period
            self._deadline = max(last + period, now)
        self.period = period
        return Output(timer=self._deadline)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> Output:
        if self._deadline is None or now < self._deadline:
            return Output(timer=self._deadline)
        # Keep to the schedule; if the driver was late by whole periods, skip them rather than burst.
        missed = math.floor((now - self._deadline) / self.period)
        self._deadline += (missed + 1) * self.period
        while self._deadline <= now:  # the division can round down by one period (finding F1)
            self._deadline += self.period
        return self._beat(now)

    def receive(self, frame: Frame, now: float) -> Output:
        """An emitter takes no frames (present so it can be driven like the other machines)."""
        return Output(timer=self._deadline)


# ------------------------------------------------------------ failure detector


@dataclass(frozen=True, slots=True)
class MissedHeartbeats:
    """Suspect a DIME after this many periods (its own announced period) without a heartbeat."""

    count: float = 3.0


@dataclass(frozen=True, slots=True)
class PhiAccrual:
    """Suspect a DIME when phi, -log10 of the chance that a heartbeat is still to come, passes ``threshold``.

    Inter-arrival times are modelled as a normal distribution over the last
    ``window`` intervals (Hayashibara et al., 2004), seeded with the announced period.
    """

    threshold: float = 8.0
    window: int = 100
    min_std_ratio: float = 0.1
    """The standard deviation is at least this fraction of the mean interval."""
    acceptable_pause: float = 0.0
    """Seconds added to the mean, for pauses that are known to happen."""


Policy = MissedHeartbeats | PhiAccrual


class Liveness(Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class DimeJoined(Event):
    """The first heartbeat from a DIME."""

    address: Address
    """Its server's MAC and its DIME id."""
    epoch: int
    """Its epoch."""


@dataclass(frozen=True, slots=True)
class DimeSuspected(Event):
    """A DIME has been silent too long; a PING has been sent to it."""

    address: Address
    """The DIME."""
    epoch: int
    """The epoch it was last heard in."""
    silent_for: float
    """Seconds since its last heartbeat."""


@dataclass(frozen=True, slots=True)
class SuspicionCleared(Event):
    """A suspected DIME answered (a heartbeat or the ping): it is alive."""

    address: Address
    """The DIME."""
    by_ping: bool
    """The ping answered, rather than a heartbeat arriving."""


@dataclass(frozen=True, slots=True)
class DimeDead(Event):
    """A suspected DIME did not answer the ping either: repair it."""

    address: Address
    """The DIME."""
    epoch: int
    """The epoch that died."""
    last_heard: float
    """When its last heartbeat arrived."""


@dataclass(frozen=True, slots=True)
class DimeReborn(Event):
    """A DIME came back with a newer epoch: it restarted (return it to the pool)."""

    address: Address
    """The DIME."""
    old_epoch: int
    """The epoch the detector knew."""
    new_epoch: int
    """The epoch it has now."""
    was_dead: bool
    """The old epoch had been declared dead."""


@dataclass(frozen=True, slots=True)
class ZombieHeartbeat(Event):
    """A heartbeat in an epoch already declared dead (a partition healed?): reported once per epoch."""

    address: Address
    """The DIME."""
    epoch: int
    """The dead epoch it still speaks in."""


@dataclass(slots=True)
class Watched:
    """What the detector knows of one DIME."""

    address: Address
    epoch: int
    last: Heartbeat
    """Its latest heartbeat (state and load)."""
    last_arrival: float
    seq: int
    liveness: Liveness = Liveness.ALIVE
    intervals: deque[float] = field(default_factory=deque)
    deadline: float | None = None
    version: int = 0
    ping: int | None = None
    zombie_reported: bool = False


class FailureDetector:
    """Watches heartbeats; suspects, pings, and declares DIMEs dead.

    It sends its pings through ``requester`` (its own if none is given).  Feed
    it every heartbeat frame and the signaling responses for that requester;
    events about other requests come out unchanged.
    """

    def __init__(
        self,
        local: Address,
        policy: Policy | None = None,
        *,
        ping: RetransmitPolicy | None = None,
        requester: Requester | None = None,
    ) -> None:
        self.local = local
        self.policy: Policy = policy or MissedHeartbeats()
        self.ping_policy = ping or RetransmitPolicy(initial=0.02, factor=1.5, max_interval=0.05, retries=2)
        self.requester = requester or Requester(local)
        self.watched: dict[tuple[bytes, int], Watched] = {}
        self._pings: dict[tuple[bytes, int, int], Watched] = {}
        self._heap: list[tuple[float, int, tuple[bytes, int]]] = []
        self.counters: Counter[str] = Counter()
        """Heartbeats taken, late or reordered ones ignored, suspicions, deaths, pings."""
        if isinstance(self.policy, PhiAccrual):
            self._z = NormalDist().inv_cdf(1.0 - 10.0 ** (-self.policy.threshold))

    def status(self, address: Address) -> Watched | None:
        return self.watched.get(address.peer)

    def forget(self, address: Address) -> None:
        w = self.watched.pop(address.peer, None)
        if w is not None:
            self._cancel_ping(w)

    # -- the suspicion model
    def _mean_std(self, w: Watched) -> tuple[float, float]:
        period = w.last.period_ms / 1000
        xs = list(w.intervals) or [period]
        mean = sum(xs) / len(xs)
        var = sum((x - mean) ** 2 for x in xs) / len(xs)
        ratio = self.policy.min_std_ratio if isinstance(self.policy, PhiAccrual) else 0.0
        return mean, max(math.sqrt(var), ratio * mean)

    def phi(self, address: Address, now: float) -> float:
        """The phi-accrual suspicion level of a DIME at ``now`` (whatever the policy)."""
        w = self.watched[address.peer]
        mean, std = self._mean_std(w)
        if isinstance(self.policy, PhiAccrual):
            mean += self.policy.acceptable_pause
        std = std or 1e-9
        p_later = 0.5 * math.erfc((now - w.last_arrival - mean) / (std * math.sqrt(2)))
        return -math.log10(p_later) if p_later > 0 else math.inf

    def _silence_allowed(self, w: Watched) -> float:
        if isinstance(self.policy, MissedHeartbeats):
            return self.policy.count * w.last.period_ms / 1000
        mean, std = self._mean_std(w)
        return mean + self.policy.acceptable_pause + std * self._z

    def _arm(self, w: Watched, deadline: float | None) -> None:
        w.version += 1
        w.deadline = deadline
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, w.version, w.address.peer))

    # -- input
    def receive(self, frame: Frame, now: float) -> Output:
        """Take a heartbeat, or a signaling response for the requester."""
        body = frame.body
        if isinstance(body, Heartbeat):
            return self.on_heartbeat(source(frame), body, now, frame.seq)
        if isinstance(body, Signaling):
            return self._filter(self.requester.receive(frame, now), now)
        self.counters["ignored"] += 1
        return Output(timer=self.get_timer())

    def on_heartbeat(self, address: Address, hb: Heartbeat, now: float, seq: int = 0) -> Output:
        """Take one heartbeat (already decoded) from ``address`` arriving at ``now``."""
        out = Output()
        self.counters["heartbeats"] += 1
        key = address.peer
        w = self.watched.get(key)
        if w is None:
            w = self.watched[key] = Watched(Address(address.mac, address.dime), hb.epoch, hb, now, seq)
            out.events.append(DimeJoined(w.address, hb.epoch))
            self._arm(w, now + self._silence_allowed(w))
        elif hb.epoch < w.epoch:
            self.counters["late_epoch"] += 1
        elif hb.epoch > w.epoch:
            out.events.append(DimeReborn(w.address, w.epoch, hb.epoch, w.liveness is Liveness.DEAD))
            self._new_life(w, hb, now, seq)
        elif w.liveness is Liveness.DEAD:
            self.counters["zombie"] += 1
            if not w.zombie_reported:
                w.zombie_reported = True
                out.events.append(ZombieHeartbeat(w.address, w.epoch))
        elif seq and seq <= w.seq:
            self.counters["reordered"] += 1
        else:
            if now > w.last_arrival:
                w.intervals.append(now - w.last_arrival)
                window = self.policy.window if isinstance(self.policy, PhiAccrual) else 16
                while len(w.intervals) > window:
                    w.intervals.popleft()
            w.last, w.last_arrival, w.seq = hb, now, seq
            if w.liveness is Liveness.SUSPECT:
                self._cancel_ping(w)
                w.liveness = Liveness.ALIVE
                out.events.append(SuspicionCleared(w.address, by_ping=False))
            self._arm(w, now + self._silence_allowed(w))
        out.timer = self.get_timer()
        return out

    def _new_life(self, w: Watched, hb: Heartbeat, now: float, seq: int) -> None:
        self._cancel_ping(w)
        w.epoch, w.last, w.last_arrival, w.seq = hb.epoch, hb, now, seq
        w.liveness, w.zombie_reported = Liveness.ALIVE, False
        w.intervals.clear()
        self._arm(w, now + self._silence_allowed(w))

    def _cancel_ping(self, w: Watched) -> None:
        if w.ping is not None:
            self.requester.cancel(w.address, w.ping)
            self._pings.pop((*w.address.peer, w.ping), None)
            w.ping = None

    # -- pings
    def _filter(self, out: Output, now: float) -> Output:
        """Turn the requester's events about our pings into liveness events; pass the others on."""
        events, out.events = out.events, []
        for e in events:
            if isinstance(e, ResponseReceived | RequestTimedOut):
                w = self._pings.pop((e.peer.mac, e.peer.dime, e.req_id), None)
                if w is not None:
                    w.ping = None
                    self._ping_result(w, e, now, out)
                    continue
            out.events.append(e)
        out.timer = self.get_timer()
        return out

    def _ping_result(self, w: Watched, e: ResponseReceived | RequestTimedOut, now: float, out: Output) -> None:
        mine = out.events
        if isinstance(e, RequestTimedOut):
            w.liveness = Liveness.DEAD
            self._arm(w, None)
            self.counters["dead"] += 1
            mine.append(DimeDead(w.address, w.epoch, w.last_arrival))
        else:
            epoch = e.param(TlvType.EPOCH)
            if isinstance(epoch, int) and epoch > w.epoch:
                mine.append(DimeReborn(w.address, w.epoch, epoch, False))
                w.epoch, w.liveness, w.seq = epoch, Liveness.ALIVE, 0
                w.intervals.clear()
            else:
                w.liveness = Liveness.ALIVE
                mine.append(SuspicionCleared(w.address, by_ping=True))
            # Alive: give it a fresh silence allowance from now.
            w.last_arrival = now
            self._arm(w, now + self._silence_allowed(w))

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            _, version, key = heap[0]
            w = self.watched.get(key)
            if w is not None and w.version == version:
                break
            heapq.heappop(heap)
        own = heap[0][0] if heap else None
        return earliest(own, self.requester.get_timer())

    def handle_timer(self, now: float) -> Output:
        """Suspect the DIMEs whose silence ran out (and ping them); run the pings' retransmissions."""
        out = Output()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, version, key = heapq.heappop(heap)
            w = self.watched.get(key)
            if w is None or w.version != version or w.liveness is not Liveness.ALIVE:
                continue
            w.liveness = Liveness.SUSPECT
            w.deadline = None
            self.counters["suspected"] += 1
            out.events.append(DimeSuspected(w.address, w.epoch, now - w.last_arrival))
            echo = Tlv(TlvType.ECHO, w.epoch.to_bytes(4, "big"))
            req_id, sent = self.requester.request(w.address, Command.PING, [echo], now=now, policy=self.ping_policy)
            w.ping = req_id
            self._pings[(*w.address.peer, req_id)] = w
            self.counters["pings"] += 1
            out.merge(sent)
        out.merge(self._filter(self.requester.handle_timer(now), now))
        out.timer = self.get_timer()
        return out


def ping_handler(epoch: Callable[[], int]) -> Handler:
    """A :class:`~pxproto.dime.signaling.Responder` handler for PING: echo, and the DIME's current epoch."""

    def answer(req: RequestReceived) -> tuple[Status, list[Tlv]]:
        echo = req.param(TlvType.ECHO)
        return Status.OK, [Tlv(TlvType.ECHO, echo if isinstance(echo, bytes) else b""), Tlv(TlvType.EPOCH, epoch())]

    return answer
