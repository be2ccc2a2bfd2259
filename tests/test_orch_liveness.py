"""The pool's failure detector as pxorch runs it: stalls forgiven once, scale-in deaths, spread repairs, no repair.

Each test here guards a path that a hand-made mutation once got through (issue 12, deliverable 8).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pxproto.dime.endpoint import Address
from pxproto.dime.heartbeat import ping_handler
from pxproto.dime.liveness import SLOW_MEMORY, DimeDead, DimeSuspected, Health, Liveness, Pool, SuspicionCleared
from pxproto.dime.signaling import Responder, RetransmitPolicy
from pxproto.orch.core import OrchConfig, Orchestrator, RState
from pxproto.orch.events import RepairDone, RepairStarted, ReplicaPlaced
from pxproto.sim import DEMO_SERVICE, ORCH_MAC, server_mac
from pxproto.wire.codes import Command, DimeState
from pxproto.wire.frame import Frame, Heartbeat, Signaling
from tests._helpers import deployed as cluster
from tests._helpers import finish

HB = Heartbeat(1, DimeState.FREE, 100)
KEY = (server_mac(0), 1)
PING = RetransmitPolicy(0.01, 1.0, 0.01, 1)
"""Two PINGs 10 ms apart: a round ends 20 ms after the suspicion."""


def watched(at: float = 0.0) -> Pool:
    """A pool that heard one heartbeat (100 ms period, 2 missed: silent allowance 200 ms) at ``at``."""
    p = Pool(Address(ORCH_MAC), Liveness("missed", 2), ping=PING)
    p.heartbeat(*KEY, HB, at)
    return p


def kinds(out: object) -> list[str]:
    return [type(e).__name__ for e in out.events]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ stall and forgive, in the pool


def test_a_stalled_silence_is_forgiven_once_from_the_time_of_the_stall() -> None:
    p = watched()
    assert p.get_timer() == pytest.approx(0.2)
    # The driver was not running until 0.5: the DIME's 0.5 s of silence is not evidence.
    out = p.handle_timer(0.5, stalled=True)
    assert out.events == [] and out.frames == [] and p.counters["forgiven"] == 1
    # Its allowance counts again from the stall, not from its last heartbeat.
    assert p.get_timer() == pytest.approx(0.7)
    assert p.handle_timer(0.69).events == []
    # Stalled again before any heartbeat: forgiven only once per silence, so now it is suspected.
    out = p.handle_timer(0.7, stalled=True)
    assert kinds(out) == ["DimeSuspected"] and p.counters["forgiven"] == 1
    (ping,) = out.frames
    assert isinstance(ping.body, Signaling) and ping.body.cmd is Command.PING


def test_a_heartbeat_after_a_forgiven_silence_earns_a_new_forgiveness() -> None:
    p = watched()
    p.handle_timer(0.5, stalled=True)
    p.heartbeat(*KEY, HB, 0.6)
    assert p.get_timer() == pytest.approx(0.8)
    assert p.handle_timer(1.2, stalled=True).events == [] and p.counters["forgiven"] == 2
    assert p.get_timer() == pytest.approx(1.4)


def test_on_time_silence_is_judged_even_when_forgiven_before() -> None:
    p = watched()
    p.handle_timer(0.5, stalled=True)
    out = p.handle_timer(0.7)
    assert kinds(out) == ["DimeSuspected"]
    (sus,) = out.events
    assert isinstance(sus, DimeSuspected) and sus.silent == pytest.approx(0.7) and sus.epoch == 1


def late_timers(p: Pool, until: Callable[[], object], late: float = 0.05) -> tuple[list[Frame], float]:
    """Handle the pool's timers, each ``late`` seconds late (stalled), until ``until()`` holds: the frames sent
    and the time of the last call."""
    frames: list[Frame] = []
    now = 0.0
    for _ in range(100):
        if until():
            return frames, now
        t = p.get_timer()
        assert t is not None
        now = t + late
        frames += p.handle_timer(now, stalled=True).frames
    raise AssertionError("never")


def test_a_ping_round_ending_in_a_stall_gets_one_more_round_and_no_more() -> None:
    p = watched()
    p.handle_timer(0.2)
    pings = p.counters["pings"]
    # The round (2 PINGs, 10 ms apart) ends while this process is stalled: another round, not a death.
    late_timers(p, lambda: p.counters["pings"] > pings or p.counters["dead"])
    assert p.counters["pings"] == pings + 1 and not p.counters["dead"]
    assert p.dimes[KEY].health is Health.SUSPECT
    # The second round ending in a stall too is judged: dead, with no third round.
    late_timers(p, lambda: p.counters["dead"])
    assert p.counters["dead"] == 1 and p.counters["pings"] == pings + 1
    assert p.dimes[KEY].health is Health.DEAD


def test_a_ping_round_ending_on_time_is_judged_at_once() -> None:
    p = watched()
    p.handle_timer(0.2)
    t = p.get_timer()
    while t is not None and not p.counters["dead"]:
        out = p.handle_timer(t)
        t = p.get_timer()
    (dead,) = [e for e in out.events if isinstance(e, DimeDead)]
    assert dead.t == pytest.approx(0.22) and dead.last_seen == 0.0 and p.counters["pings"] == 1


def test_an_answer_to_the_extra_round_clears_the_suspicion() -> None:
    p = watched()
    p.handle_timer(0.2)
    frames, now = late_timers(p, lambda: p.counters["pings"] > 1)
    resp = Responder(Address(*KEY), {Command.PING: ping_handler(lambda: 1)})
    (answer,) = resp.receive(frames[-1], now + 0.001).frames
    (cleared,) = p.receive(answer, now + 0.002).events
    assert isinstance(cleared, SuspicionCleared) and cleared.by_ping and cleared.key == KEY
    # Alive: a fresh silence allowance from the answer.
    assert p.dimes[KEY].health is Health.ALIVE and p.get_timer() == pytest.approx(now + 0.202)


# ------------------------------------------------------------------ stall, in the orchestrator


@pytest.mark.parametrize(("late", "stalled"), [(0.029, False), (0.031, True)])
def test_the_orchestrator_calls_itself_stalled_past_config_stall(late: float, stalled: bool) -> None:
    core = Orchestrator(ORCH_MAC, OrchConfig(liveness=Liveness("missed", 2), stall=0.03))
    core.heartbeat(*KEY, Heartbeat(1, DimeState.FREE, 50), 0.0)
    due = core.get_timer()
    assert due == pytest.approx(0.1)
    core.handle_timer(due + late)
    assert core.counters["stalls"] == int(stalled)
    assert len(core.log.of(DimeSuspected)) == int(not stalled)
    assert core.pool.counters["forgiven"] == int(stalled)


# ------------------------------------------------------------------ the orchestrator's repairs


def test_a_dime_dying_while_its_replica_retires_is_not_repaired() -> None:
    c, name = cluster(items=3000)
    c.run(0.3)
    c.emit(c.orch.scale(name, "transform", 1, c.net.now))
    svc = c.orch.services[name]
    (retiring,) = [r for r in svc.replicas if r.state is RState.RETIRING]
    keeper = next(r.key for r in svc.live("transform"))
    placed = len(c.orch.log.of(ReplicaPlaced))
    c.kill_dime(retiring.key)
    assert c.run_until(lambda: any(e.key == retiring.key for e in c.orch.log.of(DimeDead)), 1.0)
    c.run(0.5)
    # The scale-in simply completes: no repair, no new replica, the other one keeps the stage.
    assert not c.orch.log.of(RepairStarted) and len(c.orch.log.of(ReplicaPlaced)) == placed
    assert c.orch.replicas(name)["transform"] == [keeper]
    assert retiring not in svc.replicas and all(retiring not in (lk.up, lk.down) for lk in svc.links)
    v = c.orch.pool.dimes[retiring.key]
    assert v.health is Health.DEAD and v.assigned is None
    finish(c)


SPREAD = """
service = { name = "spread", id = 9 }
regulator = { heartbeat_ms = 50 }
stage = [{ name = "source" }, { name = "transform", inputs = ["source"], replicas = 2 }]
"""


def test_a_repaired_replica_goes_to_a_server_without_one_of_its_stage() -> None:
    # Two servers; the transform's two replicas on different ones.  Kill one: its server now has a dead DIME,
    # which alone would send the replacement to the other server, beside the surviving replica.
    c, name = cluster(SPREAD, servers=2, dimes=4, stages={1: None, 2: lambda x: x})
    before = c.orch.replicas(name)["transform"]
    assert len({k[0] for k in before}) == 2
    victim, survivor = before
    c.kill_dime(victim)
    assert c.run_until(lambda: bool(c.orch.log.of(RepairDone)), 2.0)
    (done,) = c.orch.log.of(RepairDone)
    assert done.dead == victim and done.replacement[0] != survivor[0]
    assert {k[0] for k in c.orch.replicas(name)["transform"]} == {server_mac(0), server_mac(1)}


def test_allocate_spreads_a_stage_before_avoiding_servers_with_dead_dimes() -> None:
    p = Pool()
    for s in range(2):
        for d in range(3):
            p.heartbeat(server_mac(s), d, HB, 0.0)
    p.dimes[(server_mac(0), 0)].health = Health.DEAD  # server 0 lost a DIME
    p.dimes[(server_mac(1), 0)].assigned = object()  # server 1 runs one replica of the stage
    v = p.allocate(1, spread_from=[(server_mac(1), 0)])
    assert v is not None and v.key == (server_mac(0), 1)
    w = p.allocate(1)
    assert w is not None and w.key[0] == server_mac(1)


NO_REPAIR = DEMO_SERVICE.replace("confirm_tries = 5\n", 'confirm_tries = 5\nrepair = "none"\n')


def test_repair_none_leaves_a_dead_replica_unreplaced() -> None:
    c, name = cluster(NO_REPAIR, items=100_000)
    c.run(0.3)
    victim = c.orch.replicas(name)["transform"][0]
    placed = len(c.orch.log.of(ReplicaPlaced))
    c.kill_dime(victim)
    assert c.run_until(lambda: any(e.key == victim for e in c.orch.log.of(DimeDead)), 1.0)
    c.run(1.0)  # twenty regulator ticks
    assert not c.orch.log.of(RepairStarted) and not c.orch.log.of(RepairDone)
    assert len(c.orch.log.of(ReplicaPlaced)) == placed
    reps = c.orch.replicas(name)
    assert victim not in reps["transform"] and len(reps["transform"]) == 1
    assert c.orch.counters["repairs"] == 0


def test_a_zombie_is_reported_again_only_after_rearm() -> None:
    p = watched()
    t = p.get_timer()
    while t is not None and not p.counters["dead"]:
        p.handle_timer(t)
        t = p.get_timer()
    first = p.heartbeat(*KEY, HB, 1.0)
    assert first is not None and kinds(first) == ["ZombieHeartbeat"]
    assert p.heartbeat(*KEY, HB, 1.1) is None
    p.rearm_zombie(KEY)  # the driver's RESET did not take: tell it again
    again = p.heartbeat(*KEY, HB, 1.2)
    assert again is not None and kinds(again) == ["ZombieHeartbeat"] and p.counters["zombie"] == 3


def test_the_orchestrator_resets_a_zombie_again_when_its_reset_fails() -> None:
    core = Orchestrator(ORCH_MAC, OrchConfig(liveness=Liveness("missed", 2)))
    core.heartbeat(*KEY, Heartbeat(1, DimeState.FREE, 50), 0.0)
    t = core.get_timer()
    while t is not None and not core.log.of(DimeDead):
        core.handle_timer(t)
        t = core.get_timer()
    resets = []
    for i in range(80):  # a zombie heartbeat every 50 ms for 4 s; nobody answers the RESETs (2.2 s each)
        now = 1.0 + i * 0.05
        while (t := core.get_timer()) is not None and t <= now:
            core.handle_timer(t)
        out = core.heartbeat(*KEY, Heartbeat(1, DimeState.FREE, 50), now)
        resets += [f for f in (out.frames if out else []) if isinstance(f.body, Signaling)]
    assert all(f.body.cmd is Command.RESET for f in resets)  # type: ignore[union-attr]
    assert len(resets) >= 2 and core.counters["zombies_reset"] == len(resets)


# ------------------------------------------------------------------ a slow host: rounds until the slowest clear


KEY2 = (server_mac(1), 1)


def slow_host(clear_after: float) -> Pool:
    """A pool that saw KEY suspected at 0.2 and heard from it ``clear_after`` later (a live, slow DIME), and
    heard KEY2 at 0.3."""
    p = watched()
    p.heartbeat(*KEY2, HB, 0.3)
    p.handle_timer(0.2)
    p.heartbeat(*KEY, HB, 0.2 + clear_after)
    assert p.dimes[KEY].health is Health.ALIVE
    return p


def run_to_death(p: Pool, key: tuple[bytes, int], limit: float = 5.0) -> float:
    t = p.get_timer()
    while t is not None and t < limit:
        for e in p.handle_timer(t).events:
            if isinstance(e, DimeDead) and e.key == key:
                return e.t
        t = p.get_timer()
    raise AssertionError("never dead")


def test_after_a_slow_clear_a_silent_dime_is_waited_for_twice_as_long_then_dead() -> None:
    p = slow_host(0.08)
    assert p.confirm_window(0.3) == pytest.approx(0.16)
    # KEY2 is silent from 0.3: suspected at 0.5; its rounds (20 ms each) go on until 160 ms after that.
    dead = run_to_death(p, KEY2)
    assert 0.5 + 0.16 <= dead <= 0.5 + 0.16 + 0.021
    assert p.counters["slow_rounds"] >= 7


def test_a_slow_dime_heard_within_the_window_is_not_declared_dead() -> None:
    p = slow_host(0.08)
    t = p.get_timer()
    while t is not None and t < 0.6:  # suspected at 0.5; silent past its first round (0.52)
        p.handle_timer(t)
        t = p.get_timer()
    assert p.dimes[KEY2].health is Health.SUSPECT and not p.counters["dead"]
    p.heartbeat(*KEY2, HB, 0.6)
    assert p.dimes[KEY2].health is Health.ALIVE


def test_the_slow_allowance_is_capped_and_forgotten() -> None:
    p = slow_host(1.0)
    assert p.confirm_window(1.3) == pytest.approx(p.confirm_cap)
    assert p.confirm_window(1.2 + SLOW_MEMORY + 0.01) == 0.0
    quiet = slow_host(0.08)
    quiet.confirm_cap = 0.0  # no allowance: one round decides, as on a quiet host
    assert run_to_death(quiet, KEY2) == pytest.approx(0.52)
