"""Orchestrator leadership: the election with the clock passed in, fencing (store and DIMEs), and a takeover
mid-stream in the simulation.  The etcd tests are in test_orch_etcd.py."""

from __future__ import annotations

from pxproto.dime.endpoint import Output
from pxproto.orch.core import OrchConfig, Orchestrator, PackageRef, RState
from pxproto.orch.events import RepairDone, ReplicaPlaced, ServiceDeployed
from pxproto.orch.leader import Elector, restore
from pxproto.orch.service import parse_service
from pxproto.orch.store import Fence, MemoryKv, PlanWriter, plan_of
from pxproto.sim import DEMO_SERVICE, ORCH_MAC, SimCluster
from pxproto.simha import Cuttable
from pxproto.wire.codes import Command, CounterId, Status, TlvType
from pxproto.wire.frame import Frame

PKG = PackageRef(b"\x11" * 32, 1234, b"\x22" * 32)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_one_leads_the_other_follows_and_takes_over_after_the_lease() -> None:
    clock = Clock()
    kv = MemoryKv(clock)
    a, b = Elector(kv, "a", ttl=1), Elector(kv, "b", ttl=1)
    a.step(0.0)
    b.step(0.0)
    assert a.leads(0.0) and not b.leads(0.0)
    first = a.epoch
    assert first is not None and b.seen_epoch == first
    # a dies (no more refreshes): b leads once the lease has expired, with a newer epoch.
    for i in range(1, 12):
        clock.t = i * 0.25
        b.step(clock.t)
    assert b.leads(clock.t) and b.epoch is not None and b.epoch > first


def test_a_leader_cut_off_from_the_store_stops_before_its_successor_starts() -> None:
    clock = Clock()
    kv = MemoryKv(clock)
    pa = Cuttable(kv)
    a, b = Elector(pa, "a", ttl=1), Elector(kv, "b", ttl=1)  # type: ignore[arg-type]
    a.step(0.0)
    b.step(0.0)
    pa.cut = True
    a_stopped = b_started = None
    for i in range(1, 40):
        clock.t = i * 0.05
        a.step(clock.t)
        b.step(clock.t)
        if a_stopped is None and not a.leads(clock.t):
            a_stopped = clock.t
        if b_started is None and b.leads(clock.t):
            b_started = clock.t
    assert a_stopped is not None and b_started is not None
    assert a_stopped <= 0.8 + 1e-9 < b_started, (a_stopped, b_started)


def test_the_store_refuses_a_deposed_leaders_writes() -> None:
    clock = Clock()
    kv = MemoryKv(clock)
    a = Elector(kv, "a", ttl=1)
    a.step(0.0)
    assert a.epoch is not None
    w = PlanWriter(kv)
    assert w.sync({"x": "1"}, 0.0, Fence(a.key, a.epoch))
    clock.t = 2.0  # the lease lapsed; b is elected
    b = Elector(kv, "b", ttl=1)
    b.step(2.0)
    assert b.epoch is not None and b.epoch > a.epoch
    assert not w.sync({"x": "2"}, 2.0, Fence(a.key, a.epoch))
    assert kv.range("/pxorch/plan/x") == {"/pxorch/plan/x": b"1"}


def test_plan_writer_writes_only_what_changed() -> None:
    kv = MemoryKv()
    w = PlanWriter(kv)
    w.sync({"a": "1", "b": "2"}, 0.0)
    w.sync({"a": "1", "b": "2"}, 0.1)
    w.sync({"a": "1", "b": "3"}, 0.2)
    w.sync({"a": "1"}, 0.3)
    assert w.writes == 4 and w.batches == 3
    assert PlanWriter(kv).load() == {"a": "1"}


class Follower:
    """An orchestrator on the SimNet that listens and sends nothing (the driver's mute, in the simulation)."""

    def __init__(self, core: Orchestrator) -> None:
        self.core = core
        self.muted = True

    def _out(self, out: Output) -> Output:
        if self.muted:
            out.frames.clear()
        return out

    def receive(self, frame: Frame, now: float) -> Output:
        return self._out(self.core.receive(frame, now))

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def handle_timer(self, now: float) -> Output:
        return self._out(self.core.handle_timer(now))


def _deployed(items: int = 4000) -> tuple[SimCluster, Follower, MemoryKv]:
    spec = parse_service(DEMO_SERVICE)
    config = OrchConfig.from_regulator(spec.regulator)
    c = SimCluster(config=config, items=items)
    c.orch.leader_epoch = 5
    follower = Follower(Orchestrator(b"\x02\x00\x00\x00\x00\xf1", config))
    c.net.add(follower.core.local.mac, follower)
    c.emit(c.orch.probe(c.net.now))
    c.run(0.2)
    c.emit(c.orch.deploy(spec, PKG, c.net.now))
    assert c.run_until(lambda: bool(c.orch.log.of(ServiceDeployed)), 5.0)
    kv = MemoryKv()
    PlanWriter(kv).sync(plan_of(c.orch), c.net.now)
    return c, follower, kv


def test_takeover_mid_stream_redeploys_nothing_and_repairs_once() -> None:
    c, follower, kv = _deployed()
    c.run(0.5)
    assert 0 < len(c.plane.collected) < c.plane.items
    assert len(follower.core.pool) == 12, "the follower's pool is warm from the heartbeats"
    c.net.kill(ORCH_MAC)  # the leader dies mid-stream ...
    victim = c.orch.replicas("demo")["transform"][0]
    c.kill_dime(victim)  # ... and a DIME while nobody leads
    c.run(0.5)
    plan = PlanWriter(kv).load()
    new = Orchestrator(follower.core.local.mac, follower.core.config)
    new.carry_over(follower.core)  # the follower's warm pool, sending through the new leader's requester
    new.leader_epoch = 6
    out, stats = restore(new, plan, c.net.now)
    # The follower could not PING the silent DIME (it sends nothing): the new leader does, then replaces it.
    assert stats == {"services": 1, "replicas": 5, "links": 5, "dead": 0}
    follower.core, follower.muted = new, False
    c.net.emit(new.local.mac, out)
    assert c.run_until(lambda: len(c.plane.collected) == c.plane.items, 20.0), [e.text() for e in new.log][-10:]
    assert c.plane.collected == c.expected() and c.plane.duplicates == 0
    assert stats["dead"] == 1
    placed = new.log.of(ReplicaPlaced)
    assert [p.why for p in placed] == ["repair"], "only the dead replica is placed again"
    assert len(new.log.of(RepairDone)) == 1 and new.counters["repairs"] == 1
    assert all(r.state is RState.RUNNING for r in new.services["demo"].replicas)


def test_a_command_from_an_older_leader_epoch_is_refused() -> None:
    c, follower, _ = _deployed(items=500)
    key = c.orch.replicas("demo")["sink"][0]
    dime = c.server_of(key).dimes[key[1]]
    # The new leader speaks first (a harmless USAGE with epoch 6) ...
    follower.muted = False
    follower.core.leader_epoch = 6
    answers: list[object] = []
    follower.core._ops.clear()
    out = Output()
    follower.core._request(key, Command.USAGE, [], c.net.now, out, lambda ok, ev, t, o: answers.append(ev))
    c.net.emit(follower.core.local.mac, out)
    c.run(0.1)
    assert answers and answers[0].status is Status.OK  # type: ignore[attr-defined]
    # ... then the deposed leader (epoch 5) tries to stop the sink: refused, and the sink runs on.
    late: list[object] = []
    out = Output()
    c.orch._request(key, Command.STOP, [], c.net.now, out, lambda ok, ev, t, o: late.append(ev))
    c.emit(out)
    c.run(0.1)
    assert late and late[0].status is Status.DENIED  # type: ignore[attr-defined]
    assert late[0].param(TlvType.TEXT) == "stale leader epoch"  # type: ignore[attr-defined]
    m = dime.machine
    assert m.counters[CounterId.REJECTED_FENCED] == 1 and m.leader_epoch == 6 and m.mice is not None


class FakeDriver:
    def __init__(self) -> None:
        self.core = Orchestrator(b"\x02\x00\x00\x00\x00\xf2")
        self.muted = False
        self.sent: list[Output] = []

    def send(self, out: Output | None, even_muted: bool = False) -> None:
        if out is not None and (even_muted or not self.muted):
            self.sent.append(out)


def test_a_partitioned_leaders_driver_is_muted_within_its_lease() -> None:
    from pxproto.orch.leader import Leadership

    clock = Clock()
    kv = MemoryKv(clock)
    pa = Cuttable(kv)
    drv = FakeDriver()
    ha = Leadership(drv, pa, "a", ttl=1, say=lambda s: None)  # type: ignore[arg-type]
    assert drv.muted, "a new orchestrator follows until elected"
    ha.step(0.0)
    assert ha.leading and not drv.muted and drv.core.leader_epoch == ha.elector.epoch
    pa.cut = True
    t = 0.0
    while not drv.muted and t < 2.0:
        t += 0.05
        clock.t = t
        ha.step(t)
    assert drv.muted and not ha.leading and drv.core.leader_epoch is None
    assert t <= 0.8 + 1e-9, t
