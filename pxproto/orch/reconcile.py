"""The reconciler: how the orchestrator runs a service.

A *replica* is one stage on one DIME; a *link* is one data channel from an
upstream replica to a downstream one, with its own channel id, so that
DISCONNECT (which names only a channel) removes exactly one wire.  Rather than scripts of
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
   with ``repair = "none"`` there is no replacement: the stage wants one fewer;
7. a retiring replica (scale-in) is disconnected from upstream, drained (its
   queues reach zero in its heartbeats, or the drain time passes), stopped,
   disconnected downstream, and returned to the pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pxproto.dime.endpoint import Address, Output
from pxproto.dime.liveness import Pool
from pxproto.dime.signaling import (
    Requester,
    RequestTimedOut,
    ResponseReceived,
    RetransmitPolicy,
)
from pxproto.orch.deployment import CHANNEL_SPACE, Deployment, Done, End, Link, Replica, RState
from pxproto.orch.events import (
    CommandFailed,
    DimeKey,
    EventLog,
    OrchEvent,
    PoolExhausted,
    RepairDone,
    RepairStarted,
    ReplicaPlaced,
    ReplicaRunning,
    Rewired,
    ServiceDeployed,
)
from pxproto.orch.service import StageSpec
from pxproto.wire.codes import (
    Command,
    Direction,
    Param,
    Status,
    TlvType,
)
from pxproto.wire.frame import Tlv, connect_params


class Reconciler:
    """The orchestrator's commands to DIMEs and its reconciliation of services (a base of
    :class:`pxproto.orch.core.Orchestrator`, which owns the attributes declared here)."""

    pool: Pool
    log: EventLog
    requester: Requester
    services: dict[str, Deployment]
    _ops: dict[tuple[bytes, int, int], Done]
    _counters: dict[str, int]
    _next_channel: int
    _channels_used: set[int]
    leader_epoch: int | None

    # ------------------------------------------------------------- events and requests

    def _emit(self, event: OrchEvent, out: Output) -> None:
        self.log.add(event)
        out.events.append(event)

    def _request(self, key: DimeKey, cmd: Command, params: list[Tlv], now: float, out: Output, done: Done,
                 policy: RetransmitPolicy | None = None) -> int:  # fmt: skip
        if self.leader_epoch is not None:
            params = [*params, Tlv(TlvType.LEADER_EPOCH, self.leader_epoch)]
        v = self.pool.get(key)
        if v is not None and v.epoch:
            # Addressed to this life of the DIME: should it die and come back (a new epoch) before this request is
            # answered, a retransmission must not act on its next life (a CONNECT there wired a phantom output that
            # took a share of a replacement source's items and never delivered them).
            params = [*params, Tlv(TlvType.EPOCH, v.epoch)]
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
        """A replica's DIME died or faulted: cut its links at their live ends, and replace it (unless the
        regulator says ``repair = "none"``: then the stage runs with one replica fewer)."""
        svc = rep.svc
        was_live = rep.live
        rep.state = RState.GONE
        for link in [lk for lk in svc.links if lk.up is rep or lk.down is rep]:
            self._drop_link(svc, link, rep, now, out)
        svc.replicas.remove(rep)
        if not was_live:
            return
        if svc.spec.regulator.repair == "none":
            # Without this the next tick's reconciliation would place a replacement all the same (as "scale-out").
            svc.want[rep.stage.name] = max(0, svc.want[rep.stage.name] - 1)
            return
        self._counters["repairs"] += 1
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

        def advance() -> None:
            rep.step += 1
            if rep.step == len(chain):
                rep.state = RState.LOADED

        self._move_on(svc, rep, cmd, params, now, out, advance)

    def _move_on(self, svc: Deployment, rep: Replica, cmd: Command, params: list[Tlv], now: float, out: Output,
                 advance: Callable[[], None]) -> None:  # fmt: skip
        """Send a command that moves a replica on: when it succeeds, ``advance`` and reconcile; when it fails,
        give the DIME up (:meth:`_fault`); a replica gone meanwhile is left alone."""

        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            rep.busy = False
            if rep.state is RState.GONE:
                return
            if not ok:
                self._failed(rep.key, ev, t, o)
                self._fault(rep, t, o)
                return
            advance()
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
        def advance() -> None:
            rep.state = RState.RUNNING

        rep.state = RState.STARTING
        params = [Tlv(TlvType.SERVICE_ID, svc.spec.id), Tlv(TlvType.STAGE, rep.stage.index)]
        if rep.first:
            params.append(Tlv(TlvType.VALUE, rep.first))
        self._move_on(svc, rep, Command.START, params, now, out, advance)

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
        params = [*connect_params(link.channel, d, peer[0], peer[1])]
        output = d is Direction.OUTPUT
        if output:
            link.out = End.PENDING
        else:
            link.inp = End.PENDING

        def done(ok: bool, ev: Any, t: float, o: Output) -> None:
            if link not in svc.links:
                # Dropped while this CONNECT was on its way (its other end died): a DISCONNECT sent meanwhile may
                # have come first, so the end this one made is undone now, lest the DIME keep a dead channel.
                if ok and rep.state is not RState.GONE:
                    self._disconnect(svc, rep, link, d, t, o)
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
