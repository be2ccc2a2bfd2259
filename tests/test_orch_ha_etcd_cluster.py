"""Three real etcd members: the etcd leader member SIGKILLed mid-stream, later started again, then the new etcd
leader killed too; the orchestrators (simulated cluster paced to the wall clock, real etcd as their store)
keep repairing DIMEs killed meanwhile, exactly once each, and the answer stays exact."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.orch.core import OrchConfig, PackageRef
from pxproto.orch.etcdlocal import LocalEtcdCluster, etcd_binary
from pxproto.orch.events import RepairDone, ServiceDeployed
from pxproto.orch.service import parse_service
from pxproto.orch.store import EtcdKv
from pxproto.sim import DEMO_SERVICE
from pxproto.simfleet import FleetNet
from pxproto.simha import HaCluster

pytestmark = pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (apt-get install etcd-server)")
PKG = PackageRef(b"\x11" * 32, 1234, b"\x22" * 32)


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[LocalEtcdCluster]:
    c = LocalEtcdCluster(tmp_path / "etcd", 3)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _kill_and_repair(c: HaCluster, victims: list[tuple[tuple[bytes, int], float]]) -> None:
    lead = c.leader()
    assert lead is not None, "no orchestrator leads"
    victim = lead.core.replicas("demo")["transform"][0]
    c.kill_dime(victim)
    t0 = c.net.now
    victims.append((victim, t0))
    end = t0 + 8.0
    while not any(e.dead == victim and e.t >= t0 for o in c.orchs for e in o.core.log.of(RepairDone)):
        assert c.net.now < end, ("no repair of", victim, [s for o in c.orchs for s in o.said][-6:])
        c.run_paced(0.05)
    c.run_paced(0.2)
    c.restart_dime(victim)


@pytest.mark.slow
def test_self_repair_goes_on_through_etcd_leader_kills_and_a_member_restart(etcd3: LocalEtcdCluster) -> None:
    spec = parse_service(DEMO_SERVICE)
    kv = EtcdKv(etcd3.urls, timeout=0.5)
    c = HaCluster(3, ttl=2, kv=kv, peer=True, net=FleetNet, servers=4, config=OrchConfig.from_regulator(spec.regulator),
                  items=6000, source_rate=400.0)  # fmt: skip
    victims: list[tuple[tuple[bytes, int], float]] = []
    try:
        end = c.net.now + 10
        while c.leader() is None:
            assert c.net.now < end, "no orchestrator elected"
            c.run_paced(0.05)
        c.run_paced(0.3)
        lead = c.leader()
        assert lead is not None
        lead.send(lead.core.deploy(spec, PKG, c.net.now))
        end = c.net.now + 10
        while not lead.core.log.of(ServiceDeployed):
            assert c.net.now < end, "not deployed"
            c.run_paced(0.05)
        c.run_paced(0.5)
        _kill_and_repair(c, victims)  # all three members up

        first = etcd3.leader()
        assert first is not None, "no etcd leader"
        etcd3.members[first].stop(signal.SIGKILL)  # mid-stream: the raft group elects another member
        _kill_and_repair(c, victims)
        lead = c.leader()
        assert lead is not None
        c.kill_orch(lead)  # an orchestrator takeover on two members of three
        end = c.net.now + 10
        while c.leader() in (None, lead):
            assert c.net.now < end, "no takeover"
            c.run_paced(0.05)
        _kill_and_repair(c, victims)

        etcd3.members[first].start()  # the killed member comes back with its data and catches up
        _kill_and_repair(c, victims)
        second = etcd3.leader()
        assert second is not None
        etcd3.members[second].stop(signal.SIGKILL)
        _kill_and_repair(c, victims)

        end = c.net.now + 30
        while len(c.plane.collected) < c.plane.items:
            assert c.net.now < end, f"{len(c.plane.collected)} of {c.plane.items} items"
            c.run_paced(0.1)
        assert c.plane.collected == c.expected(), "every item through every stage"
        assert c.plane.duplicates == 0
        for key, t in victims:  # each killed DIME replaced once and reported once, across every takeover
            done = [e for o in c.orchs for e in o.core.log.of(RepairDone) if e.dead == key and e.t >= t]
            done = [e for e in done if e.t <= min([t2 for k2, t2 in victims if k2 == key and t2 > t], default=1e9)]
            assert len(done) == 1, ("repaired or reported other than once", key, t, done)
        assert sum(o.ha.writer.writes for o in c.orchs) > 0
    finally:
        c.stop()
