"""The DIME pool and its failure detector: one machine, sans I/O.

:class:`Pool` is what the orchestrator knows of every server and DIME.  It is
fed discovery announces (answers to its probes, or gratuitous ones) and
heartbeats, and it sends probes and PINGs; it reports what it learns as the
events of :mod:`pxproto.dime.liveness_events` and answers "which DIME is free
for this stage" (:meth:`Pool.allocate`).  Its record of each DIME and server
is in :mod:`pxproto.dime.liveness_views`.

Liveness is a deadline per DIME: its last heartbeat plus a timeout that the
:class:`Liveness` policy computes, either ``missed`` heartbeat periods or
phi-accrual (the silence after which the probability of one more heartbeat
still coming falls below 10^-phi, with intervals taken as normal with a
running mean and variance).  A heartbeat only moves ``last_seen``; deadlines
live in a lazy heap that re-arms an entry when it comes due early, so the
cost per heartbeat is a dict look-up and a few stores, whatever the pool size
(bench/liveness.py measures it against the eager design this replaced).

A DIME silent past its deadline is *suspected* and sent a direct PING (the
``ping`` policy's retries); an answer with the same epoch, or any heartbeat
meanwhile, clears it; no answer confirms the death, and an answer with a newer
epoch is a rebirth.  A driver that knows it was itself stalled (a timer handled
late: its process was not running) says so to :meth:`Pool.handle_timer`: the
silences it measured are forgiven once, and a PING round that ends then gets
one more round, so a busy host does not repair healthy DIMEs.

A slow host is learnt from the DIMEs: while live DIMEs have recently cleared
suspicions (``SLOW_MEMORY``), a round ending sooner than twice the slowest such
clear after its suspicion is followed by another (``confirm_cap`` at most), so
a loaded host does not repair DIMEs slow to answer; a quiet one has no clears.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque

from pxproto.dime.endpoint import BROADCAST_ADDRESS, Address, Event, Output, earliest, frame_to
from pxproto.dime.liveness_events import (
    DimeDead,
    DimeDiscovered,
    DimeKey,
    DimeReborn,
    DimeSuspected,
    DimeUpdated,
    ServerDiscovered,
    SuspicionCleared,
    ZombieHeartbeat,
)
from pxproto.dime.liveness_policy import Health, Liveness, PoolLimits
from pxproto.dime.liveness_views import DimeView, ServerView
from pxproto.dime.signaling import Requester, RequestTimedOut, ResponseReceived, RetransmitPolicy
from pxproto.wire.codes import DIME_ALL, STATE_ANY, Command, DimeState, DiscoveryOp, TlvType
from pxproto.wire.frame import Discovery, Frame, Heartbeat, Signaling, Tlv

ID_SPACE = 1 << 32
EWMA = 0.125
"""Weight of the newest interval in the phi detector's running mean and variance."""
SLOW_MEMORY = 10.0
"""Seconds a cleared suspicion counts as evidence of a slow host (see the module docstring)."""
PING_REASON = "no heartbeat, no answer to PING"


class Pool:
    """Servers and DIMEs from announces and heartbeats; liveness deadlines, PINGs, and allocation.

    It sends its probes and PINGs as ``local`` through ``requester`` (its own if
    none is given).  Feed it every heartbeat and announce, and the signaling
    responses for that requester (:meth:`receive`, or :meth:`take` for a shared
    requester's output): events about other requests come out unchanged.
    """

    def __init__(
        self,
        local: Address | None = None,
        liveness: Liveness | None = None,
        *,
        default_period: float = 0.1,
        limits: PoolLimits | None = None,
        ping: RetransmitPolicy | None = None,
        requester: Requester | None = None,
        probe_repeats: int = 1,
        probe_interval: float = 0.1,
        first_probe_id: int = 1,
        confirm_cap: float = 0.25,
    ) -> None:
        self.local = local or Address(bytes(6), DIME_ALL, 0)
        self.liveness = liveness or Liveness()
        self.default_period = default_period
        self.limits = limits or PoolLimits()
        self.ping_policy = ping or RetransmitPolicy(0.008, 1.0, 0.008, 4)
        self.requester = requester or Requester(self.local)
        self.refused: Counter[str] = Counter()
        """New servers and DIMEs not taken, by reason (dime_all, max_servers, max_dimes_per_server, max_dimes)."""
        self.counters: Counter[str] = Counter()
        """Heartbeats, announces and probes taken; late epochs, reordered and zombie heartbeats; suspicions,
        pings, deaths, forgiven silences; frames that were none of these."""
        self.servers: dict[bytes, ServerView] = {}
        self.dimes: dict[DimeKey, DimeView] = {}
        self._heap: list[tuple[float, DimeKey]] = []
        self._pings: dict[tuple[bytes, int, int], DimeView] = {}
        self._stalled = False
        self.confirm_cap = confirm_cap  # longest a suspicion is confirmed for on a slow host; 0: one round
        self._clears: deque[tuple[float, float]] = deque(maxlen=64)  # (when, how long after its suspicion)
        self.probe_repeats = probe_repeats
        self.probe_interval = probe_interval
        self._next_probe_id = first_probe_id % ID_SPACE or 1
        self._probe: tuple[Frame, int] | None = None  # the probe being repeated, sends left
        self._probe_due: float | None = None

    def __len__(self) -> int:
        return len(self.dimes)

    def get(self, key: DimeKey) -> DimeView | None:
        return self.dimes.get(key)

    # ------------------------------------------------------------- input

    def receive(self, frame: Frame, now: float) -> Output:
        """Take a heartbeat, an announce, or a signaling response for the requester."""
        body = frame.body
        out: Output | None
        if isinstance(body, Heartbeat):
            out = self.heartbeat(frame.src_mac, frame.src_dime, body, now, frame.seq)
        elif isinstance(body, Discovery) and body.op is not DiscoveryOp.PROBE:
            out = self.announce(frame.src_mac, body, now)
        elif isinstance(body, Signaling):
            out = self.take(self.requester.receive(frame, now), now)
        else:
            self.counters["not_announce" if isinstance(body, Discovery) else "ignored"] += 1
            out = None
        out = out or Output()
        out.timer = self.get_timer()
        return out

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

    def announce(self, mac: bytes, disc: Discovery, now: float) -> Output | None:
        """Take a discovery announce; None when nothing came of it."""
        self.counters["announces"] += 1
        out = Output()
        server = self.servers.get(mac)
        if server is None:
            if len(self.servers) >= self.limits.max_servers:
                self.refused["max_servers"] += 1
                return None
            server = self.servers[mac] = ServerView(mac)
            out.events.append(ServerDiscovered(now, mac, len(disc.dimes)))
        server.caps = disc.caps
        server.sw_version = disc.sw_version
        for info in disc.dimes:
            v = server.dimes.get(info.dime)
            old = v.info if v is not None else None
            if v is None:
                if self._refuse(mac, info.dime):
                    continue
                v = self._add(mac, info.dime, now)
                out.events.append(DimeDiscovered(now, v.key, info.epoch))
            elif info.epoch < v.epoch:
                self.counters["late_epoch"] += 1
                continue
            v.core, v.state, v.mem_total, v.mem_free = info.core, info.state, info.mem_total, info.mem_free
            old_epoch, v.epoch = v.epoch, info.epoch
            if v.health is not Health.DEAD or info.epoch > 0:
                self._seen(v, now)
            if old is not None and info.epoch > old_epoch:
                out.events.append(DimeReborn(now, v.key, old_epoch, info.epoch, v.health is Health.DEAD))
                self._new_life(v, now)
            elif old is not None and info != old:
                out.events.append(DimeUpdated(now, v.key, old, info))
        return out if out.events else None

    def heartbeat(self, mac: bytes, dime: int, hb: Heartbeat, now: float, seq: int = 0) -> Output | None:
        """Take one heartbeat (already decoded): the hot path.  None when nothing came of it (the usual case,
        and a refused, late or reordered heartbeat: counted)."""
        self.counters["heartbeats"] += 1
        v = self.dimes.get((mac, dime))
        out: Output | None = None
        reborn = revived = False
        if v is None:
            if self._refuse(mac, dime):
                self.counters["refused"] += 1
                return None
            v = self._add(mac, dime, now)
            v.mem_total = v.mem_free = hb.mem_limit
            out = Output()
            if len(self.servers[mac].dimes) == 1:
                out.events.append(ServerDiscovered(now, mac, 0))
            out.events.append(DimeDiscovered(now, v.key, hb.epoch))
        elif hb.epoch != v.epoch:
            if hb.epoch < v.epoch:
                self.counters["late_epoch"] += 1
                return None
            out = Output(events=[DimeReborn(now, v.key, v.epoch, hb.epoch, v.health is Health.DEAD)])
            reborn = True
        elif v.health is not Health.ALIVE:
            if v.health is Health.DEAD:
                self.counters["zombie"] += 1
                if v.zombie_reported:
                    return None
                v.zombie_reported = True
                return Output(events=[ZombieHeartbeat(now, v.key, v.epoch)])
            out = Output(events=[SuspicionCleared(now, v.key, False)])
            revived = True
        elif seq and seq <= v.seq:
            self.counters["reordered"] += 1
            return None
        v.epoch = hb.epoch
        v.seq = seq
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
        elif v.beats and self.liveness.detector == "phi":
            d = now - v.last_seen - v.mean
            v.mean += EWMA * d
            v.var = (1 - EWMA) * (v.var + EWMA * d * d)
            v.timeout = self.liveness.timeout(v.mean, v.var)
        v.beats += 1
        v.last_seen = now
        if reborn:
            self._new_life(v, now)
        elif revived:
            self._cancel_ping(v)
            self._cleared(v, now)
            self._set_health(v, Health.ALIVE, now)
        elif not v.armed:
            v.armed = True
            heapq.heappush(self._heap, (now + v.timeout, (mac, dime)))
        return out

    def _seen(self, v: DimeView, now: float) -> None:
        v.last_seen = now
        if not v.armed:
            v.armed = True
            heapq.heappush(self._heap, (now + v.timeout, v.key))

    def _set_health(self, v: DimeView, health: Health, now: float) -> None:
        v.health = health
        if health is Health.ALIVE:
            self._seen(v, now)
        server = self.servers[v.mac]
        server.dead = health is Health.DEAD and server.alive_dimes() == 0

    def confirm_alive(self, v: DimeView, now: float) -> None:
        """An answer from this DIME in its known epoch (a new leader's PING): alive, its timeout restarted."""
        self._set_health(v, Health.ALIVE, now)

    def _new_life(self, v: DimeView, now: float) -> None:
        """A DIME restarted (its epoch is already the new one): alive, its old PING forgotten (the driver
        clears its own marks, ``assigned`` and ``faulted``, when it takes the DimeReborn)."""
        self._cancel_ping(v)
        v.beats = 0
        v.zombie_reported = False
        self._set_health(v, Health.ALIVE, now)

    def rearm_zombie(self, key: DimeKey) -> None:
        """Report the next heartbeat of this dead epoch again (the driver's RESET of it did not take)."""
        v = self.dimes.get(key)
        if v is not None:
            v.zombie_reported = False

    # ------------------------------------------------------------- probes

    def probe(self, now: float, state_filter: int = STATE_ANY) -> tuple[int, Output]:
        """Broadcast a probe (repeated ``probe_repeats`` times in all); return its id."""
        probe_id = self._next_probe_id
        self._next_probe_id = (probe_id + 1) % ID_SPACE or 1
        body = Discovery(DiscoveryOp.PROBE, probe_id, state_filter=state_filter)
        frame = frame_to(self.local, BROADCAST_ADDRESS, body)
        left = self.probe_repeats - 1
        self._probe = (frame, left) if left > 0 else None
        self._probe_due = now + self.probe_interval if left > 0 else None
        self.counters["probes"] += 1
        return probe_id, Output(frames=[frame], timer=self.get_timer())

    def _repeat_probe(self, now: float, out: Output) -> None:
        if self._probe is None or self._probe_due is None or now < self._probe_due:
            return
        frame, left = self._probe
        left -= 1
        self._probe = (frame, left) if left > 0 else None
        self._probe_due = now + self.probe_interval if left > 0 else None
        self.counters["probes"] += 1
        out.frames.append(frame)

    # ------------------------------------------------------------- liveness

    def _refresh(self) -> None:
        """Move early heap entries to their DIME's real deadline, so the top is exact."""
        heap = self._heap
        while heap:
            t, key = heap[0]
            v = self.dimes[key]
            due = v.last_seen + v.timeout
            if v.health is not Health.ALIVE:
                heapq.heappop(heap)
                v.armed = False
            elif due > t:
                heapq.heapreplace(heap, (due, key))
            else:
                return

    def get_timer(self) -> float | None:
        self._refresh()
        own = self._heap[0][0] if self._heap else None
        return earliest(own, self.requester.get_timer(), self._probe_due)

    def handle_timer(self, now: float, stalled: bool = False) -> Output:
        """Run PING retransmissions and timeouts, suspect the DIMEs whose silence ran out (and PING them), and
        repeat the probe.  ``stalled``: the driver was not running until now, so the silences it measured are
        its own: each is forgiven once, and a PING round ending now gets one more."""
        out = Output()
        self._stalled = stalled
        self.take(self.requester.handle_timer(now), now, out)
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            v = self.dimes[key]
            due = v.last_seen + v.timeout
            if v.health is not Health.ALIVE:
                v.armed = False
            elif due > now:
                heapq.heappush(heap, (due, key))
            else:
                v.armed = False
                if stalled and self.forgive(v, now):
                    continue
                self._suspect(v, now, out)
        self._stalled = False
        self._repeat_probe(now, out)
        out.timer = self.get_timer()
        return out

    def forgive(self, v: DimeView, now: float) -> bool:
        """Restart an expired DIME's timeout from ``now`` (once per silence: not again before a heartbeat)."""
        if v.forgiven >= v.last_seen:
            return False
        self.counters["forgiven"] += 1
        v.forgiven = now
        v.armed = True
        heapq.heappush(self._heap, (now + v.timeout, v.key))
        return True

    def phi(self, key: DimeKey, now: float) -> float:
        """The phi-accrual suspicion level of a DIME at ``now`` (whatever the detector)."""
        v = self.dimes[key]
        std = self.liveness.std(v.mean, v.var) or 1e-9
        p_later = 0.5 * math.erfc((now - v.last_seen - v.mean) / (std * math.sqrt(2)))
        return -math.log10(p_later) if p_later > 0 else math.inf

    def suspect(self, key: DimeKey, now: float) -> Output:
        """Check a DIME now rather than at its deadline (a peer reported it stopped answering): PING it."""
        out = Output()
        v = self.dimes.get(key)
        if v is not None and v.health is Health.ALIVE:
            self._suspect(v, now, out)
        out.timer = self.get_timer()
        return out

    def _cleared(self, v: DimeView, now: float) -> None:
        self._clears.append((now, now - v.suspected_at))

    def confirm_window(self, now: float) -> float:
        """How long after its suspicion a silent DIME is waited for (see the module docstring)."""
        slow = max((d for t, d in self._clears if now - t <= SLOW_MEMORY), default=0.0)
        return min(self.confirm_cap, 2 * slow)

    def _suspect(self, v: DimeView, now: float, out: Output) -> None:
        v.suspected_at = now
        self._set_health(v, Health.SUSPECT, now)
        self.counters["suspected"] += 1
        out.events.append(DimeSuspected(now, v.key, v.epoch, now - v.last_seen))
        self._ping(v, now, out, again=True)

    def _ping(self, v: DimeView, now: float, out: Output, again: bool) -> None:
        echo = Tlv(TlvType.ECHO, v.epoch.to_bytes(4, "big"))
        req_id, sent = self.requester.request(v.address, Command.PING, [echo], now=now, policy=self.ping_policy)
        v.ping, v.again = req_id, again
        self._pings[(v.mac, v.dime, req_id)] = v
        self.counters["pings"] += 1
        out.merge(sent)

    def _cancel_ping(self, v: DimeView) -> None:
        if v.ping is not None:
            self.requester.cancel(v.address, v.ping)
            self._pings.pop((v.mac, v.dime, v.ping), None)
            v.ping = None

    def take(self, got: Output, now: float, out: Output | None = None) -> Output:
        """Turn the requester's events about our PINGs into liveness events; pass the others on, in order."""
        out = out if out is not None else Output()
        out.frames.extend(got.frames)
        for e in got.events:
            if isinstance(e, ResponseReceived | RequestTimedOut):
                v = self._pings.pop((e.peer.mac, e.peer.dime, e.req_id), None)
                if v is not None:
                    v.ping = None
                    self._ping_result(v, e, now, out)
                    continue
            out.events.append(e)
        return out

    def _ping_result(self, v: DimeView, e: ResponseReceived | RequestTimedOut, now: float, out: Output) -> None:
        if v.health is not Health.SUSPECT:
            return
        if isinstance(e, RequestTimedOut):
            if v.again and self._stalled:
                self._ping(v, now, out, again=False)
                return
            if now - v.suspected_at < self.confirm_window(now):  # a slow host: one more round
                self.counters["slow_rounds"] += 1
                self._ping(v, now, out, again=v.again)
                return
            self._set_health(v, Health.DEAD, now)
            self.counters["dead"] += 1
            out.events.append(DimeDead(now, v.key, v.epoch, v.last_seen, PING_REASON))
            return
        answer = e.param(TlvType.EPOCH)
        if isinstance(answer, int) and answer > v.epoch:
            out.events.append(DimeReborn(now, v.key, v.epoch, answer, False))
            v.epoch, v.seq = answer, 0
            self._new_life(v, now)
        else:
            out.events.append(SuspicionCleared(now, v.key, True))
            self._cleared(v, now)
            self._set_health(v, Health.ALIVE, now)

    # ------------------------------------------------------------- allocation and queries

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

    def in_state(self, state: DimeState | None = None) -> list[DimeView]:
        """Every DIME (in a given reported state), by server then DIME id."""
        return [
            d
            for _, s in sorted(self.servers.items())
            for _, d in sorted(s.dimes.items())
            if state is None or d.state == state
        ]

    def free(self, min_mem_chunks: int = 0) -> list[DimeView]:
        """Free DIMEs with at least this many free memory chunks, most free memory first."""
        found = [d for d in self.in_state(DimeState.FREE) if d.mem_free >= min_mem_chunks]
        return sorted(found, key=lambda d: -d.mem_free)

    def set_state(self, key: DimeKey, state: DimeState) -> None:
        """Mark a DIME's state (allocated, say) until it reports otherwise."""
        v = self.dimes.get(key)
        if v is None:
            raise KeyError(f"no DIME {key[1]} on server {key[0].hex(':')} in the pool")
        v.state = state

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


__all__ = [
    "DimeDead", "DimeDiscovered", "DimeKey", "DimeReborn", "DimeSuspected", "DimeUpdated", "DimeView", "Event",
    "Health", "Liveness", "Pool", "PoolLimits", "ServerDiscovered", "ServerView", "SuspicionCleared",
    "ZombieHeartbeat",
]  # fmt: skip
