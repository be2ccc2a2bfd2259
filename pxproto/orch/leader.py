"""Leadership among several orchestrators: an etcd lease and election, fencing, and takeover.

:class:`Elector` is the election with the clock passed in: every orchestrator holds a lease and tries to
create the leader key bound to it; the one that creates it leads, and the key's create revision is its
**leader epoch** (a new leader always has a higher one).  The leader refreshes its lease every quarter TTL
and counts itself leader only until ``0.8 * TTL`` after the last refresh it *sent* that etcd confirmed: etcd
expires the lease no sooner than a full TTL after it received that refresh, so a leader cut off from etcd
stops commanding before any successor can be elected.

:class:`Leadership` runs an :class:`Elector` beside a :class:`~pxproto.orch.driver.Driver`: a follower's
driver is muted (it hears every heartbeat, so its liveness view is warm, and sends nothing); a leader's core
stamps every request with LEADER_EPOCH (DIMEs refuse older ones) and its plan goes to the store
(:class:`~pxproto.orch.store.PlanWriter`, each batch fenced by the same epoch).  On taking over, the new
leader rebuilds its core from the stored plan, keeps its warm pool, redeploys nothing that runs, asks each
restored replica for its USAGE (reconciliation: one that does not answer OK is replaced), and replaces
those whose DIME died meanwhile, once each.  While leading, it writes the plan ahead of every command that
changes placement or wiring, so a successor finishes its work rather than repeating it.

A follower does not wait for the lease when it has proof that the leader's process ended: it watches the
leader key (and campaigns as soon as etcd deletes it), and holds a TCP connection to the leader
(:mod:`pxproto.orch.peer`); when that closes, it revokes the dead leader's lease (:meth:`Elector.depose`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from pxproto.dime.endpoint import Output
from pxproto.dime.liveness import Health
from pxproto.dime.signaling import Requester
from pxproto.orch.core import Orchestrator
from pxproto.orch.deployment import Deployment, End, Link, PackageRef, Replica, RState
from pxproto.orch.driver import Driver
from pxproto.orch.events import ReplicaRunning
from pxproto.orch.peer import PeerLink
from pxproto.orch.store import PREFIX, Fence, Holder, Kv, KvError, PlanWriter, Watch, plan_of, spec_from_record
from pxproto.wire.codes import Command, DimeState, Op, TlvType
from pxproto.wire.frame import Signaling, Tlv

LEADER_KEY = PREFIX + "leader"
PLAN_COMMANDS = frozenset({Command.LOAD, Command.START, Command.STOP, Command.CONNECT, Command.DISCONNECT})
"""Commands a leader sends only once the plan that calls for them is in the store (write-ahead)."""
SAFETY = 0.8
"""A leader counts itself leader until this fraction of the TTL after its last confirmed refresh."""


class Elector:
    """One orchestrator's side of the election."""

    def __init__(self, kv: Kv, name: str, ttl: int = 1, key: str = LEADER_KEY, value: bytes | None = None,
                 watch: bool = True) -> None:  # fmt: skip
        self.kv = kv
        self.watching = watch
        self.name = name
        self.ttl = ttl
        self.key = key
        self.value = name.encode() if value is None else value
        """What the leader key holds while this one leads (its name, and where followers connect to it)."""
        self.lease: int | None = None
        self.granted_ttl = ttl
        self.epoch: int | None = None
        """The leader epoch while this one leads (the leader key's create revision)."""
        self.seen_epoch = 0
        """The newest leader epoch seen (ours or another's)."""
        self.confirmed = 0.0
        """When the last refresh etcd confirmed was sent."""
        self.errors = 0
        self.leader: Holder | None = None
        """The leader key as a follower last read it (the leader's epoch, lease and value)."""
        self.wake = threading.Event()
        """Set (from the watch's thread) when the leader key is deleted: campaign now, not at the next poll."""
        self.deposed = 0
        self._watch: Watch | None = None

    def leads(self, now: float) -> bool:
        return self.epoch is not None and now < self.confirmed + SAFETY * self.granted_ttl

    def step(self, now: float) -> None:
        """Refresh the lease, and campaign when not leading.  Call every quarter TTL or so."""
        try:
            if self.lease is not None:
                left = self.kv.keepalive(self.lease)
                if left > 0:
                    self.confirmed = now
                    self.granted_ttl = min(self.granted_ttl, left) if self.epoch is not None else left
                else:
                    self.lease = None
                    self.epoch = None
            if self.epoch is not None and not self.leads(now):
                self.epoch = None
            if self.epoch is None:
                if self.lease is None:
                    self.lease = self.kv.grant(self.ttl)
                    self.confirmed = now
                    self.granted_ttl = self.ttl
                created, rev = self.kv.create(self.key, self.value, self.lease)
                self.seen_epoch = max(self.seen_epoch, rev)
                if created:
                    self.epoch = rev
                    self.leader = None
                elif self.leader is None or self.leader.revision != rev:
                    self.leader = self.kv.holder(self.key)
                    if self.leader is None:
                        self.wake.set()  # gone between the two requests: campaign again at once
            if self.watching and (self._watch is None or not self._watch.alive):
                self._watch = self.kv.watch(self.key, self.wake.set)
        except KvError:
            self.errors += 1
            if self.epoch is not None and not self.leads(now):
                self.epoch = None

    def depose(self) -> bool:
        """Revoke the lease of the leader last read (a follower with proof that its process is gone): the
        leader key goes at once, and the next :meth:`step` campaigns.  False when there was none to revoke."""
        held, self.leader = self.leader, None
        if held is None or held.lease == 0:
            return False
        try:
            self.kv.revoke(held.lease)
        except KvError:
            pass  # already gone (its TTL ran out, or another follower revoked it first)
        self.deposed += 1
        self.wake.set()
        return True

    def resign(self) -> None:
        """Give leadership up now (a clean stop): revoking the lease deletes the leader key at once."""
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self.lease is not None:
            try:
                self.kv.revoke(self.lease)
            except KvError:
                pass
        self.lease = None
        self.epoch = None


def _dime(text: str) -> tuple[bytes, int]:
    mac, _, dime = text.rpartition("/")
    return bytes.fromhex(mac.replace(":", "")), int(dime)


def restore(core: Orchestrator, plan: dict[str, str], now: float) -> tuple[Output, dict[str, int]]:
    """Rebuild ``core``'s services from a stored plan without redeploying what runs; returns what to send
    (USAGE queries, repairs) and counts (replicas restored, replaced because their DIME died meanwhile)."""
    out = Output()
    stats = {"services": 0, "replicas": 0, "links": 0, "dead": 0}
    for v in core.pool.dimes.values():
        v.assigned = None
    reps: dict[tuple[str, str], Replica] = {}
    dead: list[Replica] = []
    doubtful: list[Replica] = []
    """Replicas on DIMEs this orchestrator, while following, judged silent: it could not PING them then (a
    follower sends nothing), so it PINGs them now and replaces only those that do not answer."""
    for k, raw in sorted(plan.items()):
        if not k.startswith("service/"):
            continue
        d = json.loads(raw)
        name = k.split("/", 1)[1]
        spec = spec_from_record(d["spec"])
        digest, size, sig = d["package"]
        svc = Deployment(spec, PackageRef(bytes.fromhex(digest), int(size), bytes.fromhex(sig)), now, dict(d["want"]))
        svc.deployed = True
        core.services[name] = svc
        stats["services"] += 1
    for k, raw in sorted(plan.items()):
        parts = k.split("/")
        if parts[0] == "resume" and parts[1] in core.services:
            core.services[parts[1]].resume[parts[2]] = int(json.loads(raw))
        if parts[0] != "placement" or parts[1] not in core.services:
            continue
        svc = core.services[parts[1]]
        d = json.loads(raw)
        key = _dime(f"{parts[3]}/{parts[4]}")
        rep = Replica(svc, svc.spec.stage(parts[2]), key, "restored", now, first=int(d.get("first", 0)))
        rep.state = RState.RUNNING if d.get("running") else RState.PLACED
        rep.announced = rep.state is RState.RUNNING and "repair_of" not in d
        if "repair_of" in d:
            rep.repair_of, rep.repair_t0 = _dime(d["repair_of"][0]), float(d["repair_of"][1])
        svc.replicas.append(rep)
        reps[(parts[1], f"{parts[3]}/{parts[4]}")] = rep
        stats["replicas"] += 1
        view = core.pool.get(key)
        if (view is not None and rep.state is RState.PLACED and view.state is DimeState.BUSY
                and view.service == svc.spec.id and view.stage == rep.stage.index):  # fmt: skip
            rep.state = RState.RUNNING  # the predecessor's START got there: it runs (and is announced once wired)
            stats["started"] = stats.get("started", 0) + 1
        if view is None:
            dead.append(rep)
        elif view.health is Health.ALIVE:
            view.assigned = rep
        else:
            doubtful.append(rep)
    top = 0
    for k, raw in sorted(plan.items()):
        parts = k.split("/")
        if parts[0] != "link" or parts[1] not in core.services:
            continue
        up_key, down_key, wired = json.loads(raw)
        up, down = reps.get((parts[1], up_key)), reps.get((parts[1], down_key))
        if up is None or down is None:
            continue
        end = End.DONE if wired else End.NONE
        channel = int(parts[2])
        core.services[parts[1]].links.append(Link(channel, up, down, end, end))
        core._channels_used.add(channel)
        top = max(top, channel)
        stats["links"] += 1
    core._next_channel = top + 1
    for rep in dead:
        stats["dead"] += 1
        core._lost(rep, now, out)
    for rep in doubtful:
        params = [Tlv(TlvType.ECHO, b"orch")]
        core._request(rep.key, Command.PING, params, now, out, _confirmed(core, rep, stats), core.config.confirm)
    for svc in core.services.values():
        for rep in [r for r in svc.replicas if r.state is RState.RUNNING and r not in doubtful]:
            core._request(rep.key, Command.USAGE, [], now, out, _reconciled(core, rep))
    if core.services:
        core._arm_tick(now)
    out.timer = core.get_timer()
    return out, stats


def _confirmed(core: Orchestrator, rep: Replica, stats: dict[str, int]) -> Callable[[bool, Any, float, Output], None]:
    def done(ok: bool, ev: Any, t: float, o: Output) -> None:
        v = core.pool.get(rep.key)
        if rep.state is RState.GONE or v is None:
            return
        if ok and ev.param(TlvType.EPOCH) == v.epoch:
            core.pool.confirm_alive(v, t)
            v.assigned = rep
            stats["confirmed"] = stats.get("confirmed", 0) + 1
            return
        stats["dead"] += 1
        core._lost(rep, t, o)

    return done


def _reconciled(core: Orchestrator, rep: Replica) -> Callable[[bool, Any, float, Output], None]:
    def done(ok: bool, ev: Any, t: float, o: Output) -> None:
        if not ok and rep.state is RState.RUNNING:
            core._fault(rep, t, o)

    return done


class Leadership:
    """An :class:`Elector` and a :class:`PlanWriter` beside a driver: mute when following, fenced when leading."""

    def __init__(self, driver: Driver, kv: Kv, name: str, ttl: int = 1, sync_every: float = 0.05,
                 say: Callable[[str], None] | None = None, peer_host: str | None = "127.0.0.1",
                 watch: bool = True, clock: Callable[[], float] | None = None) -> None:  # fmt: skip
        self.driver = driver
        self._clock = clock
        self.peer = None if peer_host is None else PeerLink(peer_host)
        value = {"name": name, "peer": self.peer.address if self.peer else None}
        self.elector = Elector(kv, name, ttl, value=json.dumps(value).encode(), watch=watch)
        self.writer = PlanWriter(kv)
        self.sync_every = sync_every
        self.say = say or (lambda s: print(s, flush=True))
        self.keyring_version = 0
        self._next_step = 0.0
        self._next_sync = 0.0
        self.leading = False
        self.takeovers: list[dict[str, Any]] = []
        self.ahead = 0
        """Plan writes made ahead of a command (write-ahead), rather than on the periodic sync."""
        driver.muted = True
        driver.before_send = self._write_ahead

    def step(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now >= self._next_step or self.elector.wake.is_set():
            self.elector.wake.clear()
            self._next_step = now + self.elector.ttl / 4
            self.elector.step(now)
        if self.peer is not None:
            self._watch_leader(now)
        leads = self.elector.leads(now)
        if leads and not self.leading:
            self._take_over(now)
        elif not leads and self.leading:
            self._step_down(now, "lease lost")
        if self.leading and now >= self._next_sync:
            self._sync(now)

    def _sync(self, now: float) -> bool:
        """Write the plan's changes, fenced; False when nothing could be written."""
        self._next_sync = now + self.sync_every
        fence = Fence(self.elector.key, self.elector.epoch or 0)
        try:
            if not self.writer.sync(plan_of(self.driver.core, self.keyring_version), now, fence):
                self.elector.epoch = None
                self._step_down(now, "fenced out of the store")
                return False
        except KvError:
            return False  # the lease decides: a leader cut off from etcd stops within SAFETY * TTL
        return True

    def _write_ahead(self, out: Output) -> None:
        """Before a command that changes what runs where leaves (or a replica is reported running), the plan
        that says so is in the store: a successor then finishes this leader's work instead of doing it a second
        time elsewhere, and does not report a repair this one already reported.  When the store cannot be
        reached the command goes anyway: the lease stops this leader within ``SAFETY * TTL``."""
        if not self.leading or not (
            any(isinstance(e, ReplicaRunning) for e in out.events)  # a repair's end, reported once
            or any(isinstance(f.body, Signaling) and f.body.op is Op.REQUEST and f.body.cmd in PLAN_COMMANDS
                   for f in out.frames)
        ):  # fmt: skip
            return
        before = self.writer.writes
        self._sync(time.monotonic() if self._clock is None else self._clock())
        self.ahead += self.writer.writes > before

    def _watch_leader(self, now: float) -> None:
        """Serve followers' connections while leading; while following, depose a leader whose process ended."""
        assert self.peer is not None
        if self.elector.epoch is not None:
            self.peer.serve()
            return
        held = self.elector.leader
        self.peer.follow(_peer_of(held))
        if held is not None and self.peer.leader_gone() and self.elector.depose():
            self.say(f"pxorch: the leader (epoch {held.revision}) is gone; its lease revoked")
            self.elector.wake.clear()
            self._next_step = now + self.elector.ttl / 4
            self.elector.step(now)

    def _take_over(self, now: float) -> None:
        t0 = time.monotonic()
        try:
            plan = self.writer.load()
        except KvError:
            self.elector.epoch = None
            return
        old = self.driver.core
        core = Orchestrator(old.local.mac, old.config, old.log)
        core.leader_epoch = self.elector.epoch
        # Request ids from the epoch: a DIME's answer cache must not take a new term's request for an old one.
        core.requester = Requester(core.local, old.config.command, first_req_id=(self.elector.epoch or 0) << 16)
        core.carry_over(old)  # the warm liveness view, kept from the wire while following
        out, stats = restore(core, plan, now)
        self.driver.core = core
        self.driver.muted = False
        self.leading = True
        self.driver.send(out)
        took = time.monotonic() - t0
        rec = {"t": now, "epoch": self.elector.epoch, "restore_ms": took * 1000, **stats}
        self.takeovers.append(rec)
        self.say(f"pxorch: leading (epoch {self.elector.epoch}): restored {stats['services']} services, "
                 f"{stats['replicas']} replicas, {stats['links']} links; {stats['dead']} lost meanwhile, "
                 f"replaced; {took * 1000:.1f} ms")  # fmt: skip

    def _step_down(self, now: float, why: str) -> None:
        self.leading = False
        self.driver.muted = True
        self.driver.core.leader_epoch = None
        self.say(f"pxorch: following ({why})")

    def stop(self) -> None:
        if self.leading:
            self.driver.muted = True
        self.elector.resign()
        if self.peer is not None:
            self.peer.close()


def _peer_of(held: Holder | None) -> str | None:
    """Where the leader listens for followers, from its key's value (None: an older or a plain value)."""
    if held is None:
        return None
    try:
        v = json.loads(held.value)
    except ValueError:
        return None
    peer = v.get("peer") if isinstance(v, dict) else None
    return peer if isinstance(peer, str) else None


__all__ = ["LEADER_KEY", "Elector", "Leadership", "restore"]
