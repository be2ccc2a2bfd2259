"""The orchestrator, sans I/O: frames and ``now`` in; frames, events and the next timer out.

:class:`Orchestrator` keeps the pool (:mod:`pxproto.dime.liveness`), deploys
services (:mod:`pxproto.orch.service`), scales them by command and by policy,
and repairs them.  Its drivers (the CLI daemon, the demo, the tests' simulated
network) only move frames and call :meth:`Orchestrator.handle_timer` when
:meth:`Orchestrator.get_timer` comes due.

How a service is run -- replicas, links, and the rules by which the
orchestrator reconciles them -- is :mod:`pxproto.orch.reconcile`; the records
it keeps are :mod:`pxproto.orch.deployment`.

Failure detection is the pool's (:mod:`pxproto.dime.liveness`); the orchestrator
acts on its events.  A DIME silent past its liveness timeout is *suspected* and
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
from typing import Any

from pxproto.dime.endpoint import Address, Output, earliest
from pxproto.dime.liveness import Health, Pool
from pxproto.dime.signaling import (
    Requester,
    RequestReceived,
    RequestTimedOut,
    Responder,
    ResponseReceived,
)
from pxproto.orch.deployment import CHANNEL_SPACE, Deployment, Done, End, Link, OrchConfig, PackageRef, Replica, RState
from pxproto.orch.events import (
    DimeDead,
    DimeDiscovered,
    DimeKey,
    DimeReborn,
    DimeSuspected,
    EventLog,
    FaultReported,
    ServerDead,
    ServerDiscovered,
    StageScaled,
    SuspicionCleared,
    ZombieHeartbeat,
)
from pxproto.orch.reconcile import Reconciler
from pxproto.orch.service import ServiceSpec
from pxproto.wire.codes import (
    DIME_ALL,
    STATE_ANY,
    Command,
    CounterId,
    DiscoveryOp,
    FaultCode,
    Op,
    Status,
    TlvType,
)
from pxproto.wire.frame import Discovery, Frame, Heartbeat, Signaling, Tlv

CHANNEL_TEXT = re.compile(r"channel (\d+)")
"""How a kernel's CHANNEL_BROKEN fault names the channel (its TEXT)."""
LIVENESS_COUNTERS = {DimeSuspected: "suspicions", SuspicionCleared: "false_suspicions"}
"""The orchestrator's counters of the pool's events."""

__all__ = ["Deployment", "End", "Link", "OrchConfig", "Orchestrator", "PackageRef", "RState", "Replica"]


class Orchestrator(Reconciler):
    """Discovery, the pool, deployment, scaling and repair: the state machine."""

    def __init__(self, mac: bytes, config: OrchConfig | None = None, log: EventLog | None = None) -> None:
        self.config = config or OrchConfig()
        self.local = Address(mac, DIME_ALL, 0)
        self.requester = Requester(self.local, self.config.command)
        c = self.config
        self.pool = Pool(
            self.local, c.liveness, default_period=c.default_period, limits=c.limits, ping=c.confirm,
            requester=self.requester,
        )  # fmt: skip
        """Discovery, heartbeats and failure detection (:mod:`pxproto.dime.liveness`); its PINGs go out
        through this orchestrator's requester."""
        self.responder = Responder(self.local)
        self.log = log or EventLog()
        self.services: dict[str, Deployment] = {}
        self._ops: dict[tuple[bytes, int, int], Done] = {}
        self._next_channel = 1
        self._channels_used: set[int] = set()
        self._next_tick: float | None = None
        self._next_probe: float | None = None
        self.leader_epoch: int | None = None
        """When set (an elected leader, :mod:`pxproto.orch.leader`), every request carries it as LEADER_EPOCH."""
        self._counters: dict[str, int] = dict.fromkeys(
            ("suspicions", "false_suspicions", "deaths", "repairs", "zombies_reset", "stalls"), 0
        )

    # ------------------------------------------------------------- the machine interface

    def carry_over(self, old: Orchestrator) -> None:
        """Take a predecessor's liveness view and counters (a follower that becomes leader keeps them warm)."""
        self.pool = old.pool
        self.pool.requester = self.requester  # its PINGs go out (and time out) through this core from now on
        self._counters = old._counters

    @property
    def counters(self) -> dict[str, int]:
        """What came in and what the orchestrator did about it (heartbeats, suspicions, deaths, repairs...)."""
        pool = self.pool.counters
        return {
            "heartbeats": pool["heartbeats"],
            "stale_heartbeats": pool["late_epoch"],
            "refused_heartbeats": pool["refused"],
            "announces": pool["announces"],
            **self._counters,
        }

    def receive(self, frame: Frame, now: float) -> Output:
        """Take one frame from the signaling network (data frames are the driver's)."""
        out = Output()
        body = frame.body
        if isinstance(body, Heartbeat):
            self._consume(self.pool.heartbeat(frame.src_mac, frame.src_dime, body, now), now, out)
        elif isinstance(body, Signaling):
            if body.op is Op.RESPONSE:
                self._consume(self.pool.take(self.requester.receive(frame, now), now), now, out)
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
                self._consume(self.pool.announce(frame.src_mac, body, now), now, out)
        out.timer = self.get_timer()
        return out

    def heartbeat(self, mac: bytes, dime: int, hb: Heartbeat, now: float) -> Output | None:
        """The hot path: one heartbeat already decoded.  Returns None when nothing came of it."""
        got = self.pool.heartbeat(mac, dime, hb, now)
        if got is None:
            return None
        out = Output()
        self._consume(got, now, out)
        out.timer = self.get_timer()
        return out

    def get_timer(self) -> float | None:
        return earliest(self.pool.get_timer(), self._next_tick, self._next_probe, self.responder.get_timer())

    def handle_timer(self, now: float) -> Output:
        out = Output()
        due = self.get_timer()
        # Called far past its time, this process was not running (a busy host): a silence it measured is its
        # own, so this once the pool raises no suspicion and judges no PING round; each gets one more span.
        stalled = due is not None and now - due > self.config.stall
        if stalled:
            self._counters["stalls"] += 1
        self._consume(self.pool.handle_timer(now, stalled), now, out)
        self.responder.handle_timer(now)
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
        _, out = self.pool.probe(now, state_filter)
        self._next_probe = now + self.config.probe_period if self.config.probe_period > 0 else None
        out.timer = self.get_timer()
        return out

    # ------------------------------------------------------------- the pool's events

    def _consume(self, got: Output | None, now: float, out: Output) -> None:
        """Act on what the pool (and the requester behind it) reported, in order."""
        if got is None:
            return
        out.frames.extend(got.frames)
        wake = False
        for ev in got.events:
            if isinstance(ev, ResponseReceived | RequestTimedOut):
                self._complete(ev, now, out)
            elif isinstance(ev, DimeDead):
                self._dead(ev, now, out)
            elif isinstance(ev, DimeReborn):
                self._reborn(ev, now, out)
                wake = True
            elif isinstance(ev, ZombieHeartbeat):
                self._reset_zombie(ev.key, now, out)
            elif isinstance(ev, ServerDiscovered | DimeDiscovered | DimeSuspected | SuspicionCleared):
                counter = LIVENESS_COUNTERS.get(type(ev))
                if counter:
                    self._counters[counter] += 1
                self._emit(ev, out)
                wake = wake or isinstance(ev, DimeDiscovered)
        if wake:
            self._wake(now, out)

    def _dead(self, ev: DimeDead, now: float, out: Output) -> None:
        v = self.pool.dimes[ev.key]
        self._counters["deaths"] += 1
        self._emit(ev, out)
        server = self.pool.servers[v.mac]
        if all(d.health is Health.DEAD for d in server.dimes.values() if d is not v):
            self._emit(ServerDead(now, v.mac), out)
        rep = v.assigned
        v.assigned = None
        if isinstance(rep, Replica) and rep.state is not RState.GONE:
            self._lost(rep, now, out)

    def _reborn(self, ev: DimeReborn, now: float, out: Output) -> None:
        """A DIME restarted: if its death was not known, it is one now (its replica is repaired elsewhere);
        then it is free again."""
        v = self.pool.dimes[ev.key]
        if not ev.was_dead:
            # The pool already counts it alive; while its replica is replaced it is no candidate (the old life
            # is dead, the new one joins after).
            v.health = Health.DEAD
            why = f"restarted (epoch {ev.old_epoch} -> {ev.epoch})"
            self._dead(DimeDead(now, ev.key, ev.old_epoch, v.last_seen, why), now, out)
            v.health = Health.ALIVE
        v.assigned = None
        v.faulted = False
        self._emit(ev, out)

    def _reset_zombie(self, key: DimeKey, now: float, out: Output) -> None:
        """A DIME declared dead still heartbeats in that epoch: its work was given away, so RESET it (it stops
        its MICE and comes back in a new epoch, which returns it to the pool)."""
        self._counters["zombies_reset"] += 1

        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            self.pool.rearm_zombie(key)  # if it still speaks in the dead epoch, RESET it again

        self._request(key, Command.RESET, [], now, out, done)

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
            if peer is not None:
                self._consume(self.pool.suspect(peer, now), now, out)
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
