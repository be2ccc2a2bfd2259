"""Finding O1: without a key, made-up announces and heartbeats must not grow the pool without bound."""

from __future__ import annotations

import pytest

from pxproto.dime.liveness import DimeDiscovered, DimeReborn, Pool, PoolLimits
from pxproto.orch.core import OrchConfig, Orchestrator
from pxproto.wire.codes import DIME_ALL, DimeState, DiscoveryOp
from pxproto.wire.frame import DimeInfo, Discovery, Heartbeat

HB = Heartbeat(1, DimeState.FREE, 100)


def mac(i: int) -> bytes:
    return bytes([2, 0xEE]) + i.to_bytes(4, "big")


def test_heartbeats_from_made_up_dimes_are_refused_past_the_limits_and_counted() -> None:
    p = Pool(limits=PoolLimits(max_servers=3, max_dimes_per_server=4, max_dimes=10))
    for d in range(6):  # one server: 4 taken, 2 refused
        p.heartbeat(mac(0), d, HB, 0.0)
    assert len(p.servers[mac(0)].dimes) == 4
    assert p.refused["max_dimes_per_server"] == 2
    for s in range(1, 10):
        for d in range(4):
            p.heartbeat(mac(s), d, HB, 0.0)
    assert len(p.servers) == 3 and len(p) == 10
    assert p.refused["max_dimes"] == 2 and p.refused["max_servers"] == 7 * 4
    assert p.heartbeat(mac(0), DIME_ALL, HB, 0.0) is None and p.refused["dime_all"] == 1
    assert (mac(0), DIME_ALL) not in p.dimes and p.counters["refused"] == 2 + 2 + 7 * 4 + 1
    # A DIME already in the pool is still heard.
    heard = p.heartbeat(mac(0), 0, Heartbeat(2, DimeState.FREE, 100), 0.1)
    assert heard is not None and [type(e) for e in heard.events] == [DimeReborn]


def test_announces_are_bounded_too() -> None:
    p = Pool(limits=PoolLimits(max_servers=2, max_dimes_per_server=3, max_dimes=100))
    for s in range(5):
        infos = tuple(DimeInfo(d, d, DimeState.FREE, 8, 8, 1) for d in range(5))
        got = p.announce(mac(s), Discovery(DiscoveryOp.ANNOUNCE, dimes=infos), 0.0)
        new = [e for e in got.events if isinstance(e, DimeDiscovered)] if got is not None else []
        assert len(new) == (3 if s < 2 else 0)
    assert len(p.servers) == 2 and len(p) == 6
    assert p.refused == {"max_dimes_per_server": 4, "max_servers": 3}


def test_the_orchestrator_counts_refused_heartbeats_and_sends_nothing_for_them() -> None:
    core = Orchestrator(mac(99), OrchConfig(limits=PoolLimits(max_dimes=2)))
    outs = [core.heartbeat(mac(1), d, HB, 0.0) for d in range(5)]
    assert len(core.pool) == 2 and outs[2:] == [None, None, None]
    assert core.counters["refused_heartbeats"] == 3


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PoolLimits(max_dimes=0)
