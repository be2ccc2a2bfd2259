"""The pool: every server and DIME the orchestrator knows, their state, load and liveness.

Fed by discovery announces and heartbeats (:meth:`Pool.announce`,
:meth:`Pool.heartbeat`), it answers "which DIME is free for this stage"
(:meth:`Pool.allocate`) and "whose heartbeats stopped" (:meth:`Pool.expired`).

Liveness is a deadline per DIME: its last heartbeat plus a timeout that the
:class:`Liveness` policy computes, either ``missed`` heartbeat periods or
phi-accrual (the silence after which the probability of one more heartbeat
still coming falls below 10^-phi, with intervals taken as normal with a
running mean and variance).  A heartbeat only moves ``last_seen``; deadlines
live in a lazy heap that re-arms an entry when it comes due early, so the
cost per heartbeat is a dict look-up and a few stores, whatever the pool size.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum

from pxproto.orch.events import DimeKey
from pxproto.wire.codes import DIME_ALL, DimeState
from pxproto.wire.frame import Discovery, Heartbeat


class Health(IntEnum):
    """What the orchestrator believes about a DIME."""

    ALIVE = 0
    SUSPECT = 1
    """Heartbeats stopped; a direct PING is out."""
    DEAD = 2
    """Confirmed dead; it may come back with a new epoch."""


@dataclass(frozen=True, slots=True)
class Liveness:
    """How long a silence makes a DIME suspect."""

    detector: str = "missed"
    """``missed`` (count of heartbeat periods) or ``phi`` (phi-accrual)."""
    missed: float = 2.0
    """Suspect after this many heartbeat periods without one (``missed``)."""
    phi: float = 8.0
    """Suspect when phi reaches this (``phi``)."""
    min_std: float = 0.1
    """Phi: the interval's standard deviation is at least this fraction of the mean (so a perfectly regular
    sender is not suspected after a few ms of jitter)."""
    floor: float = 0.010
    """No timeout is shorter than this (seconds)."""

    def __post_init__(self) -> None:
        if self.detector not in ("missed", "phi"):
            raise ValueError(f"detector {self.detector!r}: missed or phi")
        if self.missed <= 0 or self.phi <= 0:
            raise ValueError("missed and phi must be positive")

    def timeout(self, mean: float, var: float) -> float:
        """Seconds of silence after the last heartbeat before suspicion."""
        if self.detector == "missed":
            return max(self.floor, self.missed * mean)
        std = max(math.sqrt(var), self.min_std * mean)
        # P(interval > t) = 10^-phi under N(mean, std): t = mean + z * std.
        return max(self.floor, mean + _z_of_phi(self.phi) * std)


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """How much the pool takes in: without a cluster key anyone can announce or beat for made-up DIMEs."""

    max_servers: int = 4096
    max_dimes_per_server: int = 1024
    max_dimes: int = 16384
    """DIMEs in the pool in all; past any limit a new server or DIME is refused and counted by reason."""

    def __post_init__(self) -> None:
        if min(self.max_servers, self.max_dimes_per_server, self.max_dimes) < 1:
            raise ValueError("pool limits must be at least 1")


def _z_of_phi(phi: float) -> float:
    """The normal quantile z with upper tail 10^-phi (bisection on erfc; called rarely, cached by callers)."""
    target = 10.0**-phi
    lo, hi = 0.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(mid / math.sqrt(2)) > target:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(slots=True, eq=False)
class DimeView:
    """One DIME as the orchestrator sees it."""

    mac: bytes
    dime: int
    core: int = 0
    state: DimeState = DimeState.FREE
    """What the DIME last reported."""
    epoch: int = 0
    prev_epoch: int = 0
    """The epoch before the last change (what a NEW or EPOCH heartbeat replaced)."""
    mem_total: int = 0
    """Chunks it may be given."""
    mem_free: int = 0
    mem_used: int = 0
    mem_limit: int = 0
    cpu_permille: int = 0
    rx_queue: int = 0
    tx_queue: int = 0
    stage: int = 0
    service: int = 0
    period: float = 0.1
    """Heartbeat period it reports (seconds)."""
    last_seen: float = 0.0
    first_seen: float = 0.0
    beats: int = 0
    health: Health = Health.ALIVE
    timeout: float = 0.2
    """Current silence allowance (seconds)."""
    mean: float = 0.1
    """Running mean of heartbeat intervals (phi)."""
    var: float = 0.0
    """Running variance of heartbeat intervals (phi)."""
    armed: bool = False
    """A deadline for it is in the heap."""
    assigned: object | None = None
    """The replica the orchestrator placed on it, if any."""
    faulted: bool = False
    """Reported a fault; not allocated again until reborn."""
    forgiven: float = float("-inf")
    """When a silence of it was last forgiven (the orchestrator itself had stalled): its timeout counts from then."""

    @property
    def key(self) -> DimeKey:
        return (self.mac, self.dime)


@dataclass(slots=True)
class ServerView:
    """One server (one kernel, one MAC) and its DIMEs."""

    mac: bytes
    caps: int = 0
    sw_version: int = 0
    dimes: dict[int, DimeView] = field(default_factory=dict)
    dead: bool = False

    def alive_dimes(self) -> int:
        return sum(1 for d in self.dimes.values() if d.health is not Health.DEAD)


class HeartbeatResult(IntEnum):
    """What one heartbeat told the pool."""

    SAME = 0
    NEW = 1
    """A DIME never seen before."""
    EPOCH = 2
    """A known DIME with a new epoch: it restarted."""
    REVIVED = 3
    """A suspected DIME is heard again with its old epoch."""
    STALE = 4
    """An older epoch than the one known: a late frame, ignored."""
    ZOMBIE = 5
    """The epoch already declared dead speaks again (the DIME was only starved or cut off)."""
    REFUSED = 6
    """A DIME new to the pool that it has no room for (:class:`PoolLimits`), or with id 0xffff: not taken."""


EWMA = 0.125


class Pool:
    """Servers and DIMEs, liveness deadlines, and allocation."""

    def __init__(
        self, liveness: Liveness | None = None, default_period: float = 0.1, limits: PoolLimits | None = None
    ) -> None:
        self.liveness = liveness or Liveness()
        self.default_period = default_period
        self.limits = limits or PoolLimits()
        self.refused: Counter[str] = Counter()
        """New servers and DIMEs not taken, by reason (dime_all, max_servers, max_dimes_per_server, max_dimes)."""
        self.servers: dict[bytes, ServerView] = {}
        self.dimes: dict[DimeKey, DimeView] = {}
        self._heap: list[tuple[float, DimeKey]] = []

    def __len__(self) -> int:
        return len(self.dimes)

    def get(self, key: DimeKey) -> DimeView | None:
        return self.dimes.get(key)

    # ------------------------------------------------------------- input

    def _refuse(self, mac: bytes, dime: int) -> bool:
        """Whether a new DIME (mac, dime) must be refused (counted by reason)."""
        lim = self.limits
        server = self.servers.get(mac)
        if dime == DIME_ALL:
            why = "dime_all"
        elif server is None and len(self.servers) >= lim.max_servers:
            why = "max_servers"
        elif server is not None and len(server.dimes) >= lim.max_dimes_per_server:
            why = "max_dimes_per_server"
        elif len(self.dimes) >= lim.max_dimes:
            why = "max_dimes"
        else:
            return False
        self.refused[why] += 1
        return True

    def _add(self, mac: bytes, dime: int, now: float) -> DimeView:
        server = self.servers.get(mac)
        if server is None:
            server = self.servers[mac] = ServerView(mac)
        server.dead = False
        v = DimeView(mac, dime, last_seen=now, first_seen=now, period=self.default_period, mean=self.default_period)
        v.timeout = self.liveness.timeout(v.mean, v.var)
        server.dimes[dime] = v
        self.dimes[(mac, dime)] = v
        return v

    def announce(self, mac: bytes, disc: Discovery, now: float) -> tuple[list[DimeView], list[DimeView]]:
        """Take a discovery announce; return (DIMEs new to the pool, DIMEs with a new epoch)."""
        new: list[DimeView] = []
        reborn: list[DimeView] = []
        server = self.servers.get(mac)
        if server is None:
            if len(self.servers) >= self.limits.max_servers:
                self.refused["max_servers"] += 1
                return new, reborn
            server = self.servers[mac] = ServerView(mac)
        server.caps = disc.caps
        server.sw_version = disc.sw_version
        for info in disc.dimes:
            v = server.dimes.get(info.dime)
            if v is None:
                if self._refuse(mac, info.dime):
                    continue
                v = self._add(mac, info.dime, now)
                new.append(v)
            elif info.epoch > v.epoch:
                reborn.append(v)
            elif info.epoch < v.epoch:
                continue
            v.core = info.core
            v.state = info.state
            v.mem_total = info.mem_total
            v.mem_free = info.mem_free
            v.epoch = info.epoch
            if v.health is not Health.DEAD or info.epoch > 0:
                self._seen(v, now)
        return new, reborn

    def heartbeat(self, mac: bytes, dime: int, hb: Heartbeat, now: float) -> tuple[DimeView | None, HeartbeatResult]:
        """Take one heartbeat: the hot path.  The view is None only when the result is REFUSED."""
        v = self.dimes.get((mac, dime))
        result = HeartbeatResult.SAME
        if v is None:
            if self._refuse(mac, dime):
                return None, HeartbeatResult.REFUSED
            v = self._add(mac, dime, now)
            v.mem_total = v.mem_free = hb.mem_limit
            result = HeartbeatResult.NEW
        elif hb.epoch != v.epoch:
            if hb.epoch < v.epoch:
                return v, HeartbeatResult.STALE
            result = HeartbeatResult.EPOCH
        elif v.health is not Health.ALIVE:
            if v.health is Health.DEAD:
                return v, HeartbeatResult.ZOMBIE
            result = HeartbeatResult.REVIVED
        v.prev_epoch = v.epoch
        v.epoch = hb.epoch
        v.state = hb.state
        v.cpu_permille = hb.cpu_permille
        v.stage = hb.stage
        v.service = hb.service
        v.mem_used = hb.mem_used
        v.mem_limit = hb.mem_limit
        v.rx_queue = hb.rx_queue
        v.tx_queue = hb.tx_queue
        period = hb.period_ms / 1000.0 if hb.period_ms else self.default_period
        if period != v.period:
            v.period = period
            v.mean = period
            v.var = 0.0
            v.timeout = self.liveness.timeout(v.mean, v.var)
        elif self.liveness.detector == "phi" and v.beats:
            gap = now - v.last_seen
            d = gap - v.mean
            v.mean += EWMA * d
            v.var = (1 - EWMA) * (v.var + EWMA * d * d)
            v.timeout = self.liveness.timeout(v.mean, v.var)
        v.beats += 1
        v.last_seen = now
        if not v.armed:
            v.armed = True
            heapq.heappush(self._heap, (now + v.timeout, (mac, dime)))
        return v, result

    def _seen(self, v: DimeView, now: float) -> None:
        v.last_seen = now
        if not v.armed:
            v.armed = True
            heapq.heappush(self._heap, (now + v.timeout, v.key))

    def set_health(self, v: DimeView, health: Health, now: float) -> None:
        v.health = health
        if health is Health.ALIVE:
            self._seen(v, now)
        server = self.servers[v.mac]
        if health is Health.DEAD:
            server.dead = server.alive_dimes() == 0
        else:
            server.dead = False

    def rebirth(self, v: DimeView, epoch: int, now: float) -> None:
        """A DIME restarted: forget its old assignment and faults; it is free again."""
        v.epoch = epoch
        v.assigned = None
        v.faulted = False
        v.beats = 0
        self.set_health(v, Health.ALIVE, now)

    # ------------------------------------------------------------- liveness

    def get_timer(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def expired(self, now: float) -> list[DimeView]:
        """DIMEs alive until now whose silence passed their timeout (each reported once)."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            v = self.dimes[key]
            due = max(v.last_seen, v.forgiven) + v.timeout
            if v.health is not Health.ALIVE:
                v.armed = False
            elif due > now:
                heapq.heappush(heap, (due, key))
            else:
                v.armed = False
                out.append(v)
        return out

    def forgive(self, v: DimeView, now: float) -> bool:
        """Restart an expired DIME's timeout from ``now`` (once per silence: not again before a heartbeat)."""
        if v.forgiven >= v.last_seen:
            return False
        v.forgiven = now
        v.armed = True
        heapq.heappush(self._heap, (now + v.timeout, v.key))
        return True

    # ------------------------------------------------------------- allocation

    def available(self, v: DimeView, chunks: int) -> bool:
        return (
            v.health is Health.ALIVE
            and v.state is DimeState.FREE
            and v.assigned is None
            and not v.faulted
            and not self.servers[v.mac].dead
            and (v.mem_total == 0 or v.mem_total >= chunks)
        )

    def allocate(self, chunks: int, spread_from: list[DimeKey] | None = None) -> DimeView | None:
        """A free DIME with room for ``chunks``; prefer servers that host the fewest of ``spread_from``
        (the stage's other replicas), then servers with no dead DIME (a server losing DIMEs may be going
        down), then the least busy server, then the lowest DIME id."""
        spread: dict[bytes, int] = {}
        for k in spread_from or ():
            spread[k[0]] = spread.get(k[0], 0) + 1
        best: DimeView | None = None
        best_rank: tuple[int, int, int, bytes, int] | None = None
        for server in self.servers.values():
            if server.dead:
                continue
            busy = sum(1 for d in server.dimes.values() if d.assigned is not None)
            dead = sum(1 for d in server.dimes.values() if d.health is not Health.ALIVE)
            for v in server.dimes.values():
                if not self.available(v, chunks):
                    continue
                rank = (spread.get(server.mac, 0), dead, busy, server.mac, v.dime)
                if best_rank is None or rank < best_rank:
                    best, best_rank = v, rank
        return best

    def counts(self) -> dict[str, int]:
        """DIMEs by what the pool can do with them: free, busy (assigned), suspect, dead, faulted."""
        c = dict.fromkeys(("free", "busy", "suspect", "dead", "faulted"), 0)
        for v in self.dimes.values():
            if v.health is Health.DEAD:
                c["dead"] += 1
            elif v.health is Health.SUSPECT:
                c["suspect"] += 1
            elif v.faulted:
                c["faulted"] += 1
            elif v.assigned is not None or v.state is not DimeState.FREE:
                c["busy"] += 1
            else:
                c["free"] += 1
        return c
