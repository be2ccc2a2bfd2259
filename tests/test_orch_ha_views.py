"""A follower's view of the pool matches the leader's within one heartbeat period (pxproto.simfleet), and the
event-heap network runs a cluster to the same outcome as the scanning one."""

from __future__ import annotations

from pxproto.orch.core import OrchConfig, PackageRef
from pxproto.orch.events import RepairDone, ServiceDeployed
from pxproto.orch.service import parse_service
from pxproto.sim import DEMO_SERVICE
from pxproto.simfleet import FleetNet, ViewLag, view_of
from pxproto.simha import HaCluster

PKG = PackageRef(b"\x11" * 32, 1234, b"\x22" * 32)
PERIOD = 0.05  # DEMO_SERVICE's heartbeat_ms, and the idle DIMEs' period below


def _cluster(net: type | None = None, **kw: object) -> HaCluster:
    spec = parse_service(DEMO_SERVICE)
    c = HaCluster(3, servers=4, period=PERIOD, config=OrchConfig.from_regulator(spec.regulator), net=net, **kw)  # type: ignore[arg-type]
    assert c.run_until(lambda: c.leader() is not None, 2.0)
    c.run(0.3)
    lead = c.leader()
    assert lead is not None
    lead.send(lead.core.deploy(spec, PKG, c.net.now))
    assert c.run_until(lambda: bool(lead.core.log.of(ServiceDeployed)), 10.0)
    return c


def _sampled(c: HaCluster, lag: ViewLag, seconds: float, changes: list[int]) -> None:
    end = c.net.now + seconds
    while c.net.now < end - 1e-9:
        c.run(0.001)
        lead = c.leader()
        if lead is None:
            continue
        lv = view_of(lead.core)
        if lv != getattr(lag, "_last", None):
            changes[0] += 1
            lag._last = lv  # type: ignore[attr-defined]
        for o in c.orchs:
            if o is not lead and o.mac not in c.net.dead:
                lag.sample(c.net.now, lv, view_of(o.core), o.mac)


def test_followers_views_match_the_leaders_within_one_heartbeat_period() -> None:
    c = _cluster(FleetNet, items=10**6, source_rate=400.0, loss=0.02, seed=3)
    lag, changes = ViewLag(), [0]
    _sampled(c, lag, 0.3, changes)
    for _ in range(2):  # a DIME dies (dead in every view), is repaired, comes back in a new epoch
        lead = c.leader()
        assert lead is not None
        victim = lead.core.replicas("demo")["transform"][0]
        c.kill_dime(victim)
        t0 = c.net.now
        _sampled(c, lag, 0.6, changes)
        assert any(e.dead == victim and e.t >= t0 for o in c.orchs for e in o.core.log.of(RepairDone))
        c.restart_dime(victim)
        _sampled(c, lag, 0.3, changes)
    lead = c.leader()
    assert lead is not None
    c.kill_orch(lead)  # and the leader itself: the new leader's view is the one it kept warm
    _sampled(c, lag, 2.0, changes)
    assert c.leader() not in (None, lead)
    assert changes[0] >= 8, "the leader's view changed (deaths, epochs, states): there was something to follow"
    assert not lag.since, ("still diverged at the end", lag.since)
    assert all(x <= PERIOD for x in lag.lags), sorted(lag.lags)[-5:]


def test_a_deaf_follower_is_seen_to_diverge() -> None:
    c = _cluster(FleetNet, items=10**6)
    lead = c.leader()
    deaf = next(o for o in c.orchs if o is not lead)
    for s in c.servers:  # the follower stops hearing the servers (a broken port)
        c.net.link(s.mac, deaf.mac).drop_if = lambda f: True
    lag, changes = ViewLag(), [0]
    victim = lead.core.replicas("demo")["transform"][0] if lead else None
    assert victim is not None
    c.kill_dime(victim)
    _sampled(c, lag, 1.0, changes)
    c.restart_dime(victim)
    _sampled(c, lag, 0.5, changes)
    assert lag.since or any(x > PERIOD for x in lag.lags)


def test_fleet_net_and_sim_net_reach_the_same_state() -> None:
    a, b = _cluster(None, items=3000), _cluster(FleetNet, items=3000)
    for c in (a, b):
        c.run_until(lambda c=c: len(c.plane.collected) == c.plane.items, 20.0)  # type: ignore[misc]
    la, lb = a.leader(), b.leader()
    assert la is not None and lb is not None
    assert a.plane.collected == b.plane.collected == a.expected()
    assert la.core.counters["heartbeats"] > 0
    assert la.ha.writer.written == lb.ha.writer.written
    assert view_of(la.core) == view_of(lb.core)
