"""The orchestrator, sans I/O: frames and ``now`` in; frames, events and the next timer out.

:class:`Orchestrator` keeps the pool (:mod:`pxproto.orch.pool`), deploys
services (:mod:`pxproto.orch.service`), scales them by command and by policy,
and repairs them.  Its drivers (the CLI daemon, the demo, the tests' simulated
network) only move frames and call :meth:`Orchestrator.handle_timer` when
:meth:`Orchestrator.get_timer` comes due.

How a service is run: a *replica* is one stage on one DIME; a *link* is one
data channel from an upstream replica to a downstream one, with its own channel id, so that DISCONNECT (which
names only a channel) removes exactly one wire.  Rather than scripts of
commands, the orchestrator *reconciles*: after every answer, heartbeat change
or timer it compares what each replica and link is with what it should be, and
sends the next command that is missing.  The rules, in order:

1. a stage with fewer live replicas than wanted gets a free DIME from the pool
   (spread across servers); one with more retires its newest replica;
2. a placed replica is loaded: SET_PARAM (heartbeat period), MEM_LIMIT, LOAD;
3. a link's input end is connected on the downstream DIME (CONNECT INPUT) as
   soon as that replica is loaded;
4. a link's output end is connected on the upstream DIME (CONNECT OUTPUT) once
   the downstream replica runs and its input end is connected, so data only
   ever flows into a running MICE;
5. a loaded replica is started (START) once its outputs are wired;
6. a dead replica's links are disconnected at their live ends at once: the
   upstream DIME replays every item the dead one had not acknowledged onto its
   other outputs, so the flow goes on while the replacement loads; the
   replacement gets new links, and lineage ids make the replays exactly-once
   (a DIME hands each lineage to its MICE once; see :mod:`pxproto.node.mice`);
7. a retiring replica (scale-in) is disconnected from upstream, drained (its
   queues reach zero in its heartbeats, or the drain time passes), stopped,
   disconnected downstream, and returned to the pool.

Failure detection: a DIME silent past its liveness timeout is *suspected* and
sent a direct PING, sent ``confirm_tries`` times ``confirm_ms`` apart (5 x 8 ms
by default: at 5% frame loss a round fails with p ~ 1e-5, so a lost heartbeat
followed by lost pings no longer makes a false repair); an answer with the same
epoch, or any heartbeat meanwhile, clears it; silence to the end of the round
(or an answer with a new epoch) confirms it.  A timer handled late (this
process was descheduled: a busy host) judges nothing: the silence is forgiven
once and a PING round gets one more span (``stalls`` counts these).
The replacement of a source starts at its stage's first unfinished item, as
the sources report it (COUNTERS ``SOURCE_RESUME``, polled every tick; START's
VALUE), instead of item 0.
A DIME that comes back with a new epoch is reborn: it returns to the pool.  One
that was declared dead but heartbeats again in the same epoch (it was starved
or cut off, not dead) is sent RESET: it stops its MICE, whose work was given
away, and comes back in a new epoch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pxproto.dime.endpoint import Address, Output, earliest, frame_to
from pxproto.dime.signaling import (
    Requester,
    RequestReceived,
    RequestTimedOut,
    Responder,
    ResponseReceived,
    RetransmitPolicy,
)
from pxproto.orch.events import (
    CommandFailed,
    DimeDead,
    DimeDiscovered,
    DimeKey,
    DimeReborn,
    DimeSuspected,
    EventLog,
    FaultReported,
    OrchEvent,
    PoolExhausted,
    RepairDone,
    RepairStarted,
    ReplicaPlaced,
    ReplicaRunning,
    Rewired,
    ServerDead,
    ServerDiscovered,
    ServiceDeployed,
    StageScaled,
    SuspicionCleared,
)
from pxproto.orch.pool import DimeView, Health, HeartbeatResult, Liveness, Pool, PoolLimits
from pxproto.orch.service import Regulator, ServiceSpec, StageSpec
from pxproto.wire.codes import (
    DIME_ALL,
    STATE_ANY,
    Command,
    CounterId,
    Direction,
    DiscoveryOp,
    FaultCode,
    Op,
    Param,
    Status,
    TlvType,
)
from pxproto.wire.frame import BROADCAST, Discovery, Frame, Heartbeat, Signaling, Tlv

CHANNEL_TEXT = re.compile(r"channel (\d+)")
"""How a kernel's CHANNEL_BROKEN fault names the channel (its TEXT)."""
CHANNEL_SPACE = 0x7FFF
"""Channel ids are 1..0x7fff: the kernel sends completions back on ``channel | 0x8000``."""


class RState(IntEnum):
    """Where a replica is in its life."""

    PLACED = 0
    LOADED = 1
    STARTING = 2
    RUNNING = 3
    RETIRING = 4
    STOPPING = 5
    GONE = 6


class End(IntEnum):
    """One end of a link."""

    NONE = 0
    PENDING = 1
    DONE = 2
    CLOSING = 3
    CLOSED = 4


@dataclass(frozen=True)
class PackageRef:
    """What LOAD names: the package in the central store."""

    digest: bytes
    size: int
    sig: bytes = b""


@dataclass(eq=False)
class Replica:
    """One stage on one DIME."""

    svc: Deployment
    stage: StageSpec
    key: DimeKey
    why: str
    placed_at: float
    state: RState = RState.PLACED
    busy: bool = False
    """A command to it is in flight (load chain, START, STOP)."""
    step: int = 0
    """How far its load chain went."""
    repair_of: DimeKey | None = None
    repair_t0: float = 0.0
    drain_until: float = 0.0
    announced: bool = False
    first: int = 0
    """A source: the item it starts at (START's VALUE): where the source it replaces had finished."""

    @property
    def live(self) -> bool:
        return self.state < RState.RETIRING


@dataclass(eq=False)
class Link:
    """One data channel from an upstream replica to a downstream one."""

    channel: int
    up: Replica
    down: Replica
    out: End = End.NONE
    inp: End = End.NONE


@dataclass(eq=False)
class Deployment:
    """A service being run."""

    spec: ServiceSpec
    package: PackageRef
    started: float
    want: dict[str, int] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    deployed: bool = False
    starved: set[str] = field(default_factory=set)
    above_since: dict[str, float] = field(default_factory=dict)
    below_since: dict[str, float] = field(default_factory=dict)
    last_change: dict[str, float] = field(default_factory=dict)
    resume: dict[str, int] = field(default_factory=dict)
    """A source stage -> the highest first-unfinished item any of its replicas reported (SOURCE_RESUME): every
    item before it is finished, so a new replica of that stage (repair, or any later placement) starts there."""
    polling: set[DimeKey] = field(default_factory=set)
    """Source replicas with a SOURCE_RESUME query in flight."""

    def of(self, stage: str) -> list[Replica]:
        return [r for r in self.replicas if r.stage.name == stage]

    def live(self, stage: str) -> list[Replica]:
        return [r for r in self.replicas if r.stage.name == stage and r.live]


Done = Callable[[bool, Any, float, Output], None]
"""Called with (ok, the response or timeout event, now, output) when a request completes."""


@dataclass
class OrchConfig:
    """Orchestrator-wide settings (a service's regulator sets its own DIMEs' heartbeat period)."""

    liveness: Liveness = field(default_factory=Liveness)
    confirm: RetransmitPolicy = field(default_factory=lambda: RetransmitPolicy(0.008, 1.0, 0.008, 4))
    command: RetransmitPolicy = field(default_factory=lambda: RetransmitPolicy(0.1, 2.0, 0.5, 5))
    poll: RetransmitPolicy = field(default_factory=lambda: RetransmitPolicy(0.05, 1.0, 0.05, 2))
    """Queries of a source's progress (SOURCE_RESUME): the next tick asks again anyway."""
    default_period: float = 0.1
    tick: float = 0.05
    """Regulator period: scaling decisions, waiting allocations, drains."""
    stall: float = 0.03
    """A timer handled this late (seconds) means this process was stalled: its silences are not judged."""
    probe_period: float = 0.0
    """Seconds between discovery probes after the first (0: only when asked)."""
    limits: PoolLimits = field(default_factory=PoolLimits)
    """How many servers and DIMEs the pool takes in (announces and heartbeats past them are refused, counted)."""

    @classmethod
    def from_regulator(cls, r: Regulator, **kw: Any) -> OrchConfig:
        """Settings that follow one service's regulator (liveness and confirmation)."""
        confirm = RetransmitPolicy(r.confirm_ms / 1000, 1.0, r.confirm_ms / 1000, max(0, r.confirm_tries - 1))
        retries = 0
        span = 0.1
        while span < r.command_timeout_ms / 1000 and retries < 30:
            retries += 1
            span += min(0.1 * 2**retries, 0.5)
        command = RetransmitPolicy(0.1, 2.0, 0.5, retries)
        liveness = Liveness(r.detector, r.missed, r.phi)
        return cls(liveness=liveness, confirm=confirm, command=command, tick=min(0.05, r.heartbeat_ms / 1000), **kw)


class Orchestrator:
    """Discovery, the pool, deployment, scaling and repair: the state machine."""

    def __init__(self, mac: bytes, config: OrchConfig | None = None, log: EventLog | None = None) -> None:
        self.config = config or OrchConfig()
        self.local = Address(mac, DIME_ALL, 0)
        self.pool = Pool(self.config.liveness, self.config.default_period, self.config.limits)
        self.requester = Requester(self.local, self.config.command)
        self.responder = Responder(self.local)
        self.log = log or EventLog()
        self.services: dict[str, Deployment] = {}
        self._ops: dict[tuple[bytes, int, int], Done] = {}
        self._pings: dict[DimeKey, int] = {}
        self._resetting: set[DimeKey] = set()
        self._next_channel = 1
        self._channels_used: set[int] = set()
        self._probe_id = 0
        self._next_tick: float | None = None
        self._next_probe: float | None = None
        self._stalled = False
        self.leader_epoch: int | None = None
        """When set (an elected leader, :mod:`pxproto.orch.leader`), every request carries it as LEADER_EPOCH."""
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "heartbeats",
                "stale_heartbeats",
                "refused_heartbeats",
                "announces",
                "suspicions",
                "false_suspicions",
                "deaths",
                "repairs",
                "zombies_reset",
                "stalls",
            ),
            0,
        )

    # ------------------------------------------------------------- events and requests

    def _emit(self, event: OrchEvent, out: Output) -> None:
        self.log.add(event)
        out.events.append(event)

    def _request(self, key: DimeKey, cmd: Command, params: list[Tlv], now: float, out: Output, done: Done,
                 policy: RetransmitPolicy | None = None) -> int:  # fmt: skip
        if self.leader_epoch is not None:
            params = [*params, Tlv(TlvType.LEADER_EPOCH, self.leader_epoch)]
        req_id, o = self.requester.request(Address(key[0], key[1], 0), cmd, params, now=now, policy=policy)
        self._ops[(key[0], key[1], req_id)] = done
        out.merge(o)
        return req_id

    def _complete(self, ev: ResponseReceived | RequestTimedOut, now: float, out: Output) -> None:
        done = self._ops.pop((ev.peer.mac, ev.peer.dime, ev.req_id), None)
        if done is None:
            return
        ok = isinstance(ev, ResponseReceived) and ev.status is Status.OK
        done(ok, ev, now, out)

    def _failed(self, key: DimeKey, ev: Any, now: float, out: Output) -> None:
        detail = ev.param(TlvType.TEXT) if isinstance(ev, ResponseReceived) else None
        self._emit(CommandFailed(now, key, ev.cmd.name, ev.status.name, str(detail or "")), out)

    # ------------------------------------------------------------- the machine interface

    def receive(self, frame: Frame, now: float) -> Output:
        """Take one frame from the signaling network (data frames are the driver's)."""
        out = Output()
        body = frame.body
        if isinstance(body, Heartbeat):
            self._heartbeat(frame.src_mac, frame.src_dime, body, now, out)
        elif isinstance(body, Signaling):
            if body.op is Op.RESPONSE:
                r = self.requester.receive(frame, now)
                out.frames.extend(r.frames)
                for ev in r.events:
                    if isinstance(ev, ResponseReceived):
                        self._complete(ev, now, out)
            else:
                r = self.responder.receive(frame, now)
                out.frames.extend(r.frames)
                for ev in r.events:
                    if isinstance(ev, RequestReceived):
                        status = Status.UNSUPPORTED
                        if ev.cmd is Command.FAULT_REPORT:
                            status = Status.OK
                            self._fault_report(ev, now, out)
                        out.merge(self.responder.respond(ev, status, (), now=now))
        elif isinstance(body, Discovery):
            if body.op is not DiscoveryOp.PROBE:
                self._announce(frame.src_mac, body, now, out)
        out.timer = self.get_timer()
        return out

    def heartbeat(self, mac: bytes, dime: int, hb: Heartbeat, now: float) -> Output | None:
        """The hot path: one heartbeat already decoded.  Returns None when nothing came of it."""
        v, result = self.pool.heartbeat(mac, dime, hb, now)
        self.counters["heartbeats"] += 1
        if result is HeartbeatResult.SAME:
            return None
        if v is None:
            self.counters["refused_heartbeats"] += 1
            return None
        out = Output()
        self._on_heartbeat_change(v, result, hb, now, out)
        out.timer = self.get_timer()
        return out

    def _heartbeat(self, mac: bytes, dime: int, hb: Heartbeat, now: float, out: Output) -> None:
        v, result = self.pool.heartbeat(mac, dime, hb, now)
        self.counters["heartbeats"] += 1
        if v is None:
            self.counters["refused_heartbeats"] += 1
        elif result is not HeartbeatResult.SAME:
            self._on_heartbeat_change(v, result, hb, now, out)

    def _on_heartbeat_change(self, v: DimeView, result: HeartbeatResult, hb: Heartbeat, now: float,
                             out: Output) -> None:  # fmt: skip
        if result is HeartbeatResult.STALE:
            self.counters["stale_heartbeats"] += 1
        elif result is HeartbeatResult.ZOMBIE:
            self._reset_zombie(v, now, out)
        elif result is HeartbeatResult.NEW:
            if len(self.pool.servers[v.mac].dimes) == 1:
                self._emit(ServerDiscovered(now, v.mac, 0), out)
            self._emit(DimeDiscovered(now, v.key, v.epoch), out)
            self._wake(now, out)
        elif result is HeartbeatResult.REVIVED:
            self._clear_suspicion(v, now, out)
        elif result is HeartbeatResult.EPOCH:
            self._new_epoch(v, hb.epoch, now, out, v.prev_epoch)

    def _announce(self, mac: bytes, disc: Discovery, now: float, out: Output) -> None:
        self.counters["announces"] += 1
        known = mac in self.pool.servers
        old = {k: self.pool.dimes[k].epoch for k in self.pool.dimes if k[0] == mac}
        new, reborn = self.pool.announce(mac, disc, now)
        if not known:
            self._emit(ServerDiscovered(now, mac, len(disc.dimes)), out)
        for v in new:
            self._emit(DimeDiscovered(now, v.key, v.epoch), out)
        for v in reborn:
            self._reborn(v, old[v.key], v.epoch, now, out)
        if new or reborn:
            self._wake(now, out)

    def get_timer(self) -> float | None:
        return earliest(
            self.pool.get_timer(),
            self.requester.get_timer(),
            self._next_tick,
            self._next_probe,
            self.responder.get_timer(),
        )

    def handle_timer(self, now: float) -> Output:
        out = Output()
        due = self.get_timer()
        # Called far past its time, this process was not running (a busy host): a silence it measured is its
        # own, so this once no suspicion is raised and no PING round is judged; each gets one more span.
        self._stalled = due is not None and now - due > self.config.stall
        if self._stalled:
            self.counters["stalls"] += 1
        r = self.requester.handle_timer(now)
        out.frames.extend(r.frames)
        for ev in r.events:
            if isinstance(ev, RequestTimedOut):
                self._complete(ev, now, out)
        self.responder.handle_timer(now)
        for v in self.pool.expired(now):
            if self._stalled and self.pool.forgive(v, now):
                continue
            self._suspect(v, now, out)
        self._stalled = False
        if self._next_tick is not None and now >= self._next_tick:
            self._next_tick = None
            self._tick(now, out)
        if self._next_probe is not None and now >= self._next_probe:
            out.merge(self.probe(now))
        out.timer = self.get_timer()
        return out

    # ------------------------------------------------------------- discovery

    def probe(self, now: float, state_filter: int = STATE_ANY) -> Output:
        """Broadcast a discovery probe; every server answers with its DIMEs."""
        self._probe_id = (self._probe_id + 1) & 0xFFFFFFFF
        body = Discovery(DiscoveryOp.PROBE, probe_id=self._probe_id, state_filter=state_filter)
        frame = frame_to(self.local, Address(BROADCAST, DIME_ALL, 0), body)
        self._next_probe = now + self.config.probe_period if self.config.probe_period > 0 else None
        return Output(frames=[frame], timer=self.get_timer())

    # ------------------------------------------------------------- failure detection

    def _suspect(self, v: DimeView, now: float, out: Output) -> None:
        self.pool.set_health(v, Health.SUSPECT, now)
        self.counters["suspicions"] += 1
        self._emit(DimeSuspected(now, v.key, now - v.last_seen), out)
        self._confirm(v, now, out, again=True)

    def _confirm(self, v: DimeView, now: float, out: Output, again: bool) -> None:
        """PING a suspect; no answer and no heartbeat by the policy's span confirms the death, unless this
        process was itself stalled meanwhile (then one more round: ``again``)."""
        epoch = v.epoch

        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            self._pings.pop(v.key, None)
            if v.health is not Health.SUSPECT:
                return
            if isinstance(ev, ResponseReceived):
                answer = ev.param(TlvType.EPOCH)
                if isinstance(answer, int) and answer != epoch:
                    self._new_epoch(v, answer, t, o)
                    return
                self._clear_suspicion(v, t, o)
                return
            if again and self._stalled:
                self._confirm(v, t, o, again=False)
                return
            self._dead(v, "no heartbeat, no answer to PING", t, o)

        req_id = self._request(v.key, Command.PING, [Tlv(TlvType.ECHO, b"orch")], now, out, done, self.config.confirm)
        self._pings[v.key] = req_id

    def _clear_suspicion(self, v: DimeView, now: float, out: Output) -> None:
        req_id = self._pings.pop(v.key, None)
        if req_id is not None:
            self.requester.cancel(Address(v.mac, v.dime, 0), req_id)
            self._ops.pop((v.mac, v.dime, req_id), None)
        self.counters["false_suspicions"] += 1
        self.pool.set_health(v, Health.ALIVE, now)
        self._emit(SuspicionCleared(now, v.key), out)

    def _dead(self, v: DimeView, reason: str, now: float, out: Output) -> None:
        if v.health is Health.DEAD:
            return
        self.counters["deaths"] += 1
        self.pool.set_health(v, Health.DEAD, now)
        self._emit(DimeDead(now, v.key, v.last_seen, reason), out)
        if self.pool.servers[v.mac].dead:
            self._emit(ServerDead(now, v.mac), out)
        rep = v.assigned
        v.assigned = None
        if isinstance(rep, Replica) and rep.state is not RState.GONE:
            self._lost(rep, now, out)

    def _new_epoch(self, v: DimeView, epoch: int, now: float, out: Output, old: int | None = None) -> None:
        old = v.epoch if old is None else old
        if v.health is not Health.DEAD:
            self._dead(v, f"restarted (epoch {old} -> {epoch})", now, out)
        self._reborn(v, old, epoch, now, out)

    def _reborn(self, v: DimeView, old: int, epoch: int, now: float, out: Output) -> None:
        if v.assigned is not None or v.health is not Health.DEAD:
            self._dead(v, f"restarted (epoch {old} -> {epoch})", now, out)
        self.pool.rebirth(v, epoch, now)
        self._emit(DimeReborn(now, v.key, old, epoch), out)
        self._wake(now, out)

    def _reset_zombie(self, v: DimeView, now: float, out: Output) -> None:
        """A DIME declared dead still heartbeats in that epoch: its work was given away, so RESET it (it stops
        its MICE and comes back in a new epoch, which returns it to the pool)."""
        if v.key in self._resetting:
            return
        self._resetting.add(v.key)
        self.counters["zombies_reset"] += 1

        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            self._resetting.discard(v.key)

        self._request(v.key, Command.RESET, [], now, out, done)

    def _fault_report(self, req: RequestReceived, now: float, out: Output) -> None:
        v = self.pool.get(req.peer.peer)
        code = req.param(TlvType.FAULT_CODE)
        name = FaultCode(code).name if isinstance(code, int) and code in FaultCode._value2member_map_ else str(code)
        text = str(req.param(TlvType.TEXT) or "")
        self._emit(FaultReported(now, req.peer.peer, name, text), out)
        if code == FaultCode.CHANNEL_BROKEN:
            # The reporter is well; the DIME at the channel's other end stopped answering: check it now rather
            # than at its next missed heartbeat (a PING round; heartbeats or an answer clear it).
            m = CHANNEL_TEXT.match(text)
            peer = self._link_peer(req.peer.peer, int(m.group(1)) & CHANNEL_SPACE) if m else None
            pv = self.pool.get(peer) if peer is not None else None
            if pv is not None and pv.health is Health.ALIVE:
                self._suspect(pv, now, out)
            return
        if v is not None and isinstance(v.assigned, Replica) and code != FaultCode.OVERLOAD:
            self._fault(v.assigned, now, out)

    def _link_peer(self, key: DimeKey, channel: int) -> DimeKey | None:
        for svc in self.services.values():
            for lk in svc.links:
                if lk.channel == channel and key in (lk.up.key, lk.down.key):
                    return lk.down.key if lk.up.key == key else lk.up.key
        return None

    # ------------------------------------------------------------- services

    def deploy(self, spec: ServiceSpec, package: PackageRef, now: float) -> Output:
        """Deploy a service: allocate, load, wire, start (see the module docstring)."""
        if spec.name in self.services:
            raise ValueError(f"service {spec.name} is already deployed")
        svc = Deployment(spec, package, now, {s.name: s.replicas for s in spec.stages})
        self.services[spec.name] = svc
        out = Output()
        self._reconcile(svc, now, out)
        self._arm_tick(now)
        out.timer = self.get_timer()
        return out

    def scale(self, service: str, stage: str, replicas: int, now: float, why: str = "command") -> Output:
        """Set a stage's replica count; the orchestrator adds or retires replicas to match."""
        svc = self.services.get(service)
        if svc is None:
            raise KeyError(f"no service {service!r}")
        spec = svc.spec.stage(stage)
        if not 1 <= replicas <= 64:
            raise ValueError(f"replicas {replicas}: 1..64")
        out = Output()
        before = svc.want[spec.name]
        if replicas != before:
            svc.want[spec.name] = replicas
            svc.last_change[spec.name] = now
            self._emit(StageScaled(now, service, stage, before, replicas, why), out)
            self._reconcile(svc, now, out)
        out.timer = self.get_timer()
        return out

    def _arm_tick(self, now: float) -> None:
        if self._next_tick is None:
            self._next_tick = now + self.config.tick

    def _tick(self, now: float, out: Output) -> None:
        for svc in self.services.values():
            self._regulate(svc, now, out)
            self._reconcile(svc, now, out)
            self._poll_sources(svc, now, out)
        if self.services:
            self._arm_tick(now)

    def _poll_sources(self, svc: Deployment, now: float, out: Output) -> None:
        """Ask each running source how far the workflow has finished its items (kept here, central storage,
        so that a replacement can resume there after the source's DIME is gone)."""
        for rep in svc.replicas:
            if rep.stage.inputs or rep.state is not RState.RUNNING or rep.key in svc.polling:
                continue
            svc.polling.add(rep.key)

            def done(ok: bool, ev: Any, t: float, o: Output, rep: Replica = rep) -> None:
                svc.polling.discard(rep.key)
                value = ev.param(TlvType.VALUE) if ok else None
                if isinstance(value, int) and rep.state is RState.RUNNING:
                    svc.resume[rep.stage.name] = max(value, svc.resume.get(rep.stage.name, 0))

            params = [Tlv(TlvType.COUNTER_ID, int(CounterId.SOURCE_RESUME))]
            self._request(rep.key, Command.COUNTERS, params, now, out, done, self.config.poll)

    def _wake(self, now: float, out: Output) -> None:
        for svc in self.services.values():
            if svc.starved:
                self._reconcile(svc, now, out)

    def _regulate(self, svc: Deployment, now: float, out: Output) -> None:
        for st in svc.spec.stages:
            p = st.scale
            if p is None:
                continue
            running = [r for r in svc.live(st.name) if r.state is RState.RUNNING]
            if not running or len(running) != len(svc.live(st.name)):
                svc.above_since.pop(st.name, None)
                svc.below_since.pop(st.name, None)
                continue
            views = [self.pool.dimes[r.key] for r in running]
            if p.metric == "queue":
                metric = sum(v.rx_queue for v in views) / len(views)
            else:
                metric = sum(v.cpu_permille for v in views) / len(views)
            want = svc.want[st.name]
            if now - svc.last_change.get(st.name, -1e18) < p.cooldown_s:
                continue
            if metric > p.out_above and want < p.max:
                since = svc.above_since.setdefault(st.name, now)
                if now - since >= p.for_s:
                    why = f"{p.metric} {metric:.0f} > {p.out_above:g} for {now - since:.2f} s"
                    out.merge(self.scale(svc.spec.name, st.name, want + 1, now, why))
                    svc.above_since.pop(st.name, None)
            else:
                svc.above_since.pop(st.name, None)
            if metric < p.in_below and want > p.min:
                since = svc.below_since.setdefault(st.name, now)
                if now - since >= p.for_s:
                    why = f"{p.metric} {metric:.0f} < {p.in_below:g} for {now - since:.2f} s"
                    out.merge(self.scale(svc.spec.name, st.name, want - 1, now, why))
                    svc.below_since.pop(st.name, None)
            else:
                svc.below_since.pop(st.name, None)

    # ------------------------------------------------------------- the reconciler

    def _channel(self) -> int:
        for _ in range(CHANNEL_SPACE):
            c = self._next_channel
            self._next_channel = self._next_channel % CHANNEL_SPACE + 1
            if c not in self._channels_used:
                self._channels_used.add(c)
                return c
        raise RuntimeError("every data channel id is in use")

    def _place(self, svc: Deployment, st: StageSpec, why: str, now: float, out: Output) -> Replica | None:
        others = [r.key for r in svc.live(st.name)]
        v = self.pool.allocate(st.memory_chunks, others)
        if v is None:
            if st.name not in svc.starved:
                svc.starved.add(st.name)
                self._emit(PoolExhausted(now, svc.spec.name, st.name, st.memory_chunks), out)
            return None
        svc.starved.discard(st.name)
        rep = Replica(svc, st, v.key, why, now)
        if not st.inputs:
            # A source starts where its stage had finished (not from item 0): what the workflow completed is not
            # made again, and what it had not is (lineage ids make the overlap exactly-once).
            rep.first = svc.resume.get(st.name, 0)
        v.assigned = rep
        svc.replicas.append(rep)
        for up_name in st.inputs:
            for up in svc.live(up_name):
                svc.links.append(Link(self._channel(), up, rep))
        for down_st in svc.spec.downstream(st.name):
            for down in svc.live(down_st.name):
                svc.links.append(Link(self._channel(), rep, down))
        self._emit(ReplicaPlaced(now, svc.spec.name, st.name, v.key, why), out)
        return rep

    def _lost(self, rep: Replica, now: float, out: Output) -> None:
        """A replica's DIME died or faulted: cut its links at their live ends, and replace it."""
        svc = rep.svc
        was_live = rep.live
        rep.state = RState.GONE
        for link in [lk for lk in svc.links if lk.up is rep or lk.down is rep]:
            self._drop_link(svc, link, rep, now, out)
        svc.replicas.remove(rep)
        if not was_live or svc.spec.regulator.repair == "none":
            return
        self.counters["repairs"] += 1
        self._emit(RepairStarted(now, svc.spec.name, rep.stage.name, rep.key), out)
        new = self._place(svc, rep.stage, "repair", now, out)
        if new is not None:
            new.repair_of = rep.key
            new.repair_t0 = now
        self._reconcile(svc, now, out)

    def _drop_link(self, svc: Deployment, link: Link, dead: Replica, now: float, out: Output) -> None:
        svc.links.remove(link)
        self._channels_used.discard(link.channel)
        if link.up is not dead and link.out in (End.PENDING, End.DONE) and link.up.state is not RState.GONE:
            self._disconnect(svc, link.up, link, Direction.OUTPUT, now, out)
        if link.down is not dead and link.inp in (End.PENDING, End.DONE) and link.down.state is not RState.GONE:
            self._disconnect(svc, link.down, link, Direction.INPUT, now, out)

    def _disconnect(self, svc: Deployment, rep: Replica, link: Link, d: Direction, now: float, out: Output) -> None:
        if d is Direction.OUTPUT:
            self._emit(Rewired(now, svc.spec.name, rep.key, link.down.key, link.channel, False), out)

        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            # NOT_FOUND: the DIME had no such channel (an input end is made when data first arrives).
            if not ok and rep.state is not RState.GONE and ev.status is not Status.NOT_FOUND:
                self._failed(rep.key, ev, t, o)

        params = [Tlv(TlvType.CHANNEL, link.channel), Tlv(TlvType.DIRECTION, int(d))]
        self._request(rep.key, Command.DISCONNECT, params, now, out, done)

    def _reconcile(self, svc: Deployment, now: float, out: Output) -> None:
        # 1. replica counts
        for st in svc.spec.topo_order():
            live = svc.live(st.name)
            want = svc.want[st.name]
            for _ in range(want - len(live)):
                why = "deploy" if not svc.deployed else "scale-out"
                if self._place(svc, st, why, now, out) is None:
                    break
            extra = len(live) - want
            if extra > 0:
                for rep in sorted(live, key=lambda r: (r.state is RState.RUNNING, r.placed_at))[:extra]:
                    self._retire(svc, rep, now, out)
        for rep in list(svc.replicas):
            if rep.state is RState.GONE or rep.busy:
                continue
            if rep.state is RState.PLACED:
                self._load_step(svc, rep, now, out)
            elif rep.state is RState.LOADED and self._outputs_ready(svc, rep):
                self._start(svc, rep, now, out)
            elif rep.state is RState.RETIRING:
                self._retire_step(svc, rep, now, out)
        for link in list(svc.links):
            if link in svc.links:
                self._wire(svc, link, now, out)
        for rep in svc.replicas:
            if rep.state is RState.RUNNING and not rep.announced and self._inputs_wired(svc, rep):
                rep.announced = True
                self._emit(ReplicaRunning(now, svc.spec.name, rep.stage.name, rep.key, rep.why), out)
                if rep.repair_of is not None:
                    self._emit(
                        RepairDone(now, svc.spec.name, rep.stage.name, rep.repair_of, rep.key, now - rep.repair_t0), out
                    )
        if not svc.deployed and self._complete_service(svc):
            svc.deployed = True
            self._emit(ServiceDeployed(now, svc.spec.name, len(svc.replicas)), out)

    def _complete_service(self, svc: Deployment) -> bool:
        for st in svc.spec.stages:
            reps = svc.live(st.name)
            if len(reps) < svc.want[st.name] or any(r.state is not RState.RUNNING for r in reps):
                return False
        return all(lk.out is End.DONE and lk.inp is End.DONE for lk in svc.links)

    def _outputs_ready(self, svc: Deployment, rep: Replica) -> bool:
        outs = [lk for lk in svc.links if lk.up is rep]
        if any(lk.out is End.PENDING for lk in outs):
            return False
        wants_output = bool(svc.spec.downstream(rep.stage.name))
        return not wants_output or any(lk.out is End.DONE for lk in outs)

    def _inputs_wired(self, svc: Deployment, rep: Replica) -> bool:
        ins = [lk for lk in svc.links if lk.down is rep and lk.up.state is RState.RUNNING]
        return all(lk.out is End.DONE for lk in ins)

    def _load_step(self, svc: Deployment, rep: Replica, now: float, out: Output) -> None:
        st, reg, pkg = rep.stage, svc.spec.regulator, svc.package
        chain: list[tuple[Command, list[Tlv]]] = [
            (
                Command.SET_PARAM,
                [Tlv(TlvType.PARAM_ID, int(Param.HEARTBEAT_PERIOD_MS)), Tlv(TlvType.VALUE, reg.heartbeat_ms)],
            ),
            (Command.MEM_LIMIT, [Tlv(TlvType.MEM_CHUNKS, st.memory_chunks)]),
            (
                Command.LOAD,
                [
                    Tlv(TlvType.SERVICE_ID, svc.spec.id),
                    Tlv(TlvType.STAGE, st.index),
                    Tlv(TlvType.MICE_NAME, st.mice),
                    Tlv(TlvType.PACKAGE_DIGEST, pkg.digest),
                    Tlv(TlvType.PACKAGE_SIZE, pkg.size),
                    Tlv(TlvType.PACKAGE_SIG, pkg.sig),
                ],
            ),
        ]
        cmd, params = chain[rep.step]

        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            rep.busy = False
            if rep.state is RState.GONE:
                return
            if not ok:
                self._failed(rep.key, ev, t, o)
                self._fault(rep, t, o)
                return
            rep.step += 1
            if rep.step == len(chain):
                rep.state = RState.LOADED
            self._reconcile(svc, t, o)

        rep.busy = True
        self._request(rep.key, cmd, params, now, out, done)

    def _fault(self, rep: Replica, now: float, out: Output) -> None:
        """A command to a live-looking DIME failed: do not use that DIME again until it restarts."""
        v = self.pool.get(rep.key)
        if v is not None:
            v.faulted = True
            v.assigned = None
        self._lost(rep, now, out)

    def _start(self, svc: Deployment, rep: Replica, now: float, out: Output) -> None:
        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            rep.busy = False
            if rep.state is RState.GONE:
                return
            if not ok:
                self._failed(rep.key, ev, t, o)
                self._fault(rep, t, o)
                return
            rep.state = RState.RUNNING
            self._reconcile(svc, t, o)

        rep.busy = True
        rep.state = RState.STARTING
        params = [Tlv(TlvType.SERVICE_ID, svc.spec.id), Tlv(TlvType.STAGE, rep.stage.index)]
        if rep.first:
            params.append(Tlv(TlvType.VALUE, rep.first))
        self._request(rep.key, Command.START, params, now, out, done)

    def _wire(self, svc: Deployment, link: Link, now: float, out: Output) -> None:
        up, down = link.up, link.down
        if link.inp is End.NONE and RState.LOADED <= down.state <= RState.RUNNING:
            self._connect(svc, link, down, Direction.INPUT, up.key, now, out)
        if (
            link.out is End.NONE
            and link.inp is End.DONE
            and up.state in (RState.LOADED, RState.STARTING, RState.RUNNING)
            and down.state is RState.RUNNING
        ):
            self._connect(svc, link, up, Direction.OUTPUT, down.key, now, out)

    def _connect(self, svc: Deployment, link: Link, rep: Replica, d: Direction, peer: DimeKey, now: float,
                 out: Output) -> None:  # fmt: skip
        params = [
            Tlv(TlvType.CHANNEL, link.channel),
            Tlv(TlvType.DIRECTION, int(d)),
            Tlv(TlvType.PEER_MAC, peer[0]),
            Tlv(TlvType.PEER_DIME, peer[1]),
            Tlv(TlvType.PEER_THREAD, 0),
        ]
        output = d is Direction.OUTPUT
        if output:
            link.out = End.PENDING
        else:
            link.inp = End.PENDING

        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            if link not in svc.links:
                return
            if not ok:
                if output:
                    link.out = End.NONE
                else:
                    link.inp = End.NONE
                if rep.state is not RState.GONE:
                    self._failed(rep.key, ev, t, o)
                    self._fault(rep, t, o)
                return
            if output:
                link.out = End.DONE
                self._emit(Rewired(t, svc.spec.name, rep.key, peer, link.channel, True), o)
            else:
                link.inp = End.DONE
            self._reconcile(svc, t, o)

        self._request(rep.key, Command.CONNECT, params, now, out, done)

    # ------------------------------------------------------------- scale-in

    def _retire(self, svc: Deployment, rep: Replica, now: float, out: Output) -> None:
        rep.state = RState.RETIRING
        rep.drain_until = now + svc.spec.regulator.drain_ms / 1000
        for link in [lk for lk in svc.links if lk.down is rep]:
            if link.out in (End.PENDING, End.DONE):
                link.out = End.CLOSING
                self._close_output(svc, link, now, out)
            else:
                link.out = End.CLOSED

    def _close_output(self, svc: Deployment, link: Link, now: float, out: Output) -> None:
        up = link.up
        self._emit(Rewired(now, svc.spec.name, up.key, link.down.key, link.channel, False), out)

        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            link.out = End.CLOSED
            self._reconcile(svc, t, o)

        params = [Tlv(TlvType.CHANNEL, link.channel), Tlv(TlvType.DIRECTION, int(Direction.OUTPUT))]
        self._request(up.key, Command.DISCONNECT, params, now, out, done)

    def _retire_step(self, svc: Deployment, rep: Replica, now: float, out: Output) -> None:
        ins = [lk for lk in svc.links if lk.down is rep]
        if any(lk.out is End.CLOSING for lk in ins):
            return
        v = self.pool.dimes[rep.key]
        drained = v.rx_queue == 0 and v.tx_queue == 0 and v.last_seen > max(rep.placed_at, now - 2 * v.period)
        if not drained and now < rep.drain_until:
            return

        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            rep.busy = False
            rep.state = RState.GONE
            for link in [lk for lk in svc.links if lk.up is rep or lk.down is rep]:
                svc.links.remove(link)
                self._channels_used.discard(link.channel)
                if link.down is not rep and link.inp is End.DONE:
                    self._disconnect(svc, link.down, link, Direction.INPUT, t, o)
            if rep in svc.replicas:
                svc.replicas.remove(rep)
            if v.assigned is rep:
                v.assigned = None
            if not ok:
                v.faulted = True
            self._reconcile(svc, t, o)

        rep.busy = True
        rep.state = RState.STOPPING
        params = [Tlv(TlvType.SERVICE_ID, svc.spec.id), Tlv(TlvType.STAGE, rep.stage.index)]
        self._request(rep.key, Command.STOP, params, now, out, done)

    # ------------------------------------------------------------- the operator's view

    def status(self, now: float) -> list[dict[str, Any]]:
        """One row per DIME: server, DIME, health, reported state, stage, load, heartbeat age, memory."""
        rows = []
        for server in self.pool.servers.values():
            for v in server.dimes.values():
                rep = v.assigned
                stage = f"{rep.svc.spec.name}.{rep.stage.name}" if isinstance(rep, Replica) else "-"
                rows.append(
                    {
                        "server": server.mac.hex(":"),
                        "dime": v.dime,
                        "core": v.core,
                        "health": v.health.name.lower() if not v.faulted else "faulted",
                        "state": v.state.name.lower(),
                        "stage": stage,
                        "replica": rep.state.name.lower() if isinstance(rep, Replica) else "-",
                        "epoch": v.epoch,
                        "cpu": v.cpu_permille / 10.0,
                        "rx_queue": v.rx_queue,
                        "tx_queue": v.tx_queue,
                        "hb_age_ms": (now - v.last_seen) * 1e3,
                        "mem_used": v.mem_used,
                        "mem_limit": v.mem_limit,
                        "mem_total": v.mem_total,
                    }
                )
        return rows

    def replicas(self, service: str) -> dict[str, list[DimeKey]]:
        """The DIMEs running each stage of a service (live replicas only)."""
        svc = self.services[service]
        return {st.name: [r.key for r in svc.live(st.name)] for st in svc.spec.stages}
