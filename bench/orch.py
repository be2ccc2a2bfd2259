"""pxorch bench: heartbeat ingest at scale, discovery of 1,000 DIMEs, detection and repair over repeated kills.

    python bench/orch.py                 # all three tables (about a minute)
    python bench/orch.py --kills 100     # more kills
    python bench/orch.py --demo 3        # also run the real demo (pxkernel processes) 3 times

Everything runs on one core, in this process.  Detection and repair times come
from the simulated cluster (pxproto.sim: control frames encoded, decoded
and delayed on a SimNet; 50 ms heartbeats), and, with --demo, from real runs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

from pxproto.dime.endpoint import Address, frame_to  # noqa: E402
from pxproto.dime.liveness import Pool  # noqa: E402
from pxproto.dime.simlink import SimLink, SimNet  # noqa: E402
from pxproto.orch.core import OrchConfig, Orchestrator, PackageRef  # noqa: E402
from pxproto.orch.events import DimeDead, RepairDone, ServiceDeployed  # noqa: E402
from pxproto.orch.service import parse_service  # noqa: E402
from pxproto.sim import DEMO_SERVICE, ORCH_MAC, SimCluster, SimServer, server_mac  # noqa: E402
from pxproto.wire.codes import DIME_ALL, DimeState  # noqa: E402
from pxproto.wire.frame import BROADCAST, Heartbeat  # noqa: E402

try:
    from pxproto.fastpath.wirec import decode as fast_decode
    from pxproto.fastpath.wirec import encode as fast_encode
except ImportError:  # pragma: no cover
    fast_decode = fast_encode = None
from pxproto.wire.codec import decode as ref_decode  # noqa: E402
from pxproto.wire.codec import encode as ref_encode  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def heartbeat_ingest(n_dimes: int = 10_000, seconds: float = 2.0) -> list[tuple[str, float]]:
    """Heartbeats per second of CPU through the core, 10,000 DIMEs at 10 Hz (simulated clock)."""
    macs = [server_mac(i // 4) for i in range(n_dimes)]
    hb = Heartbeat(1, DimeState.FREE, 100)
    rows: list[tuple[str, float]] = []
    rounds = int(seconds * 10)

    def run(name: str, feed: object) -> None:
        core = Orchestrator(ORCH_MAC)
        t0 = time.perf_counter()
        feed(core, rounds)  # type: ignore[operator]
        dt = time.perf_counter() - t0
        rows.append((name, rounds * n_dimes / dt))
        assert len(core.pool) == n_dimes and core.counters["suspicions"] == 0

    def decoded(core: Orchestrator, rounds: int) -> None:
        for r in range(rounds):
            base = r * 0.1
            for i in range(n_dimes):
                core.heartbeat(macs[i], i % 4, hb, base + i * 1e-5)
            core.handle_timer(base + 0.099)

    run("core.heartbeat(), decoded frames", decoded)
    if fast_decode is not None:
        raws = [
            fast_encode(frame_to(Address(macs[i], i % 4), Address(BROADCAST, DIME_ALL), hb)) for i in range(n_dimes)
        ]

        def compiled(core: Orchestrator, rounds: int) -> None:
            for r in range(rounds):
                base = r * 0.1
                for i, raw in enumerate(raws):
                    f = fast_decode(raw)
                    core.heartbeat(f.src_mac, f.src_dime, f.body, base + i * 1e-5)
                core.handle_timer(base + 0.099)

        run("compiled decode + core.heartbeat()", compiled)
    raw0 = ref_encode(frame_to(Address(macs[0], 0), Address(BROADCAST, DIME_ALL), hb))
    t0 = time.perf_counter()
    for _ in range(300):
        ref_decode(raw0)
    rows.append(("reference decode alone (Construct)", 300 / (time.perf_counter() - t0)))
    pool = Pool(Address(ORCH_MAC))
    t0 = time.perf_counter()
    for r in range(rounds):
        for i in range(n_dimes):
            pool.heartbeat(macs[i], i % 4, hb, r * 0.1 + i * 1e-5)
        pool.handle_timer(r * 0.1 + 0.099)
    rows.append(("the pool alone (dime.liveness.Pool)", rounds * n_dimes / (time.perf_counter() - t0)))
    return rows


def discovery(n_dimes: int = 1000, per_server: int = 4) -> tuple[float, float, int]:
    """Wall seconds (and simulated seconds) from a probe to every DIME in the pool."""
    net = SimNet(lambda s, d: SimLink(1, delay=0.0002, jitter=0.0002))
    core = Orchestrator(ORCH_MAC)
    net.add(ORCH_MAC, core)
    for i in range(n_dimes // per_server):
        s = SimServer(server_mac(i), per_server, None, period=60.0, start=100.0)
        net.add(s.mac, s)
    t0 = time.perf_counter()
    net.emit(ORCH_MAC, core.probe(0.0))
    net.run(10.0, stop=lambda: len(core.pool) >= n_dimes)
    return time.perf_counter() - t0, net.now, len(core.pool)


def kills(n: int, seed: int = 5) -> dict[str, list[float] | int]:
    """Repeated kills of random replicas on a simulated 3 x 4 cluster with 50 ms heartbeats."""
    rng = random.Random(seed)
    spec = parse_service(DEMO_SERVICE)
    c = SimCluster(items=10_000_000, config=OrchConfig.from_regulator(spec.regulator), source_rate=1000.0, seed=seed)
    c.emit(c.orch.probe(0.0))
    c.run(0.2)
    c.emit(c.orch.deploy(spec, PackageRef(b"\x00" * 32, 1), c.net.now))
    assert c.run_until(lambda: bool(c.orch.log.of(ServiceDeployed)), 5.0)
    detect: list[float] = []
    repair: list[float] = []
    resume: list[float] = []
    resume_source: list[float] = []
    for _ in range(n):
        c.run(rng.uniform(0.2, 0.4))
        reps = c.orch.replicas(spec.name)
        stage = rng.choice(["source", "parse", "transform", "sink"])
        victim = rng.choice(reps[stage])
        before = len(c.orch.log.of(RepairDone))
        kill_t = c.net.now
        c.kill_dime(victim)
        ok = c.run_until(lambda b=before: len(c.orch.log.of(RepairDone)) > b, 5.0)  # type: ignore[misc]
        assert ok, "a repair did not finish"
        dead = [e for e in c.orch.log.of(DimeDead) if e.key == victim][-1]
        done = c.orch.log.of(RepairDone)[-1]
        detect.append(dead.t - kill_t)
        repair.append(done.t - kill_t)
        n_before = len(c.plane.receive_times)
        c.run_until(lambda nb=n_before: len(c.plane.receive_times) > nb + 5, 2.0)  # type: ignore[misc]
        after = [t for t in c.plane.receive_times[n_before - 50 :] if t >= done.t]
        (resume_source if stage == "source" else resume).append((after[0] if after else c.net.now) - kill_t)
        c.restart_dime(victim)
    top = max(c.plane.collected) if c.plane.collected else -1
    missing = sum(1 for i in range(top + 1) if i not in c.plane.collected)
    fns = [c.plane.stages[k] for k in sorted(c.plane.stages) if c.plane.stages[k] is not None]
    wrong = 0
    for i, v in c.plane.collected.items():
        x: int | None = i
        for fn in fns:
            x = fn(x) if x is not None else None  # type: ignore[misc]
        wrong += x != v
    return {
        "detect": detect,
        "repair": repair,
        "resume": resume,
        "resume_source": resume_source,
        "missing": missing,
        "wrong": wrong,
        "duplicates": c.plane.duplicates,
        "collected": len(c.plane.collected),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--demo", type=int, default=0, help="also run the real demo this many times")
    args = ap.parse_args()

    load = os.getloadavg()
    print(f"host: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (rates follow it)")
    print("\nheartbeat ingest, 10,000 DIMEs at 10 Hz (target: 100,000 heartbeats/s on one core)")
    print(f"{'path':<40}{'heartbeats/s':>14}{'vs target':>11}")
    for name, rate in heartbeat_ingest():
        print(f"{name:<40}{rate:>14,.0f}{rate / 100_000:>10.2f}x")

    wall, sim, n = discovery()
    print("\ndiscovery of 1,000 simulated DIMEs (250 servers x 4) on a SimNet (target: < 1 s)")
    print(f"{'DIMEs found':<28}{n:>8}\n{'wall seconds':<28}{wall:>8.3f}\n{'simulated seconds':<28}{sim:>8.4f}")

    r = kills(args.kills)
    print(f"\n{args.kills} kills of random replicas, 50 ms heartbeats, simulated 3 x 4 cluster")
    print(f"{'':<34}{'median ms':>10}{'p99 ms':>9}{'target':>10}{'  anchors'}")
    anchors = "k8s 40-50 s (+300 s eviction), memberlist 4-6 s, Ray 20-55 s"
    for key, label, target in (
        ("detect", "detection (kill -> confirmed)", "150"),
        ("repair", "repair (kill -> replacement wired)", "500"),
        ("resume", "kill -> sink receiving after repair", "500"),
        ("resume_source", "  same, when the source was killed", "500"),
    ):
        xs = r[key]
        assert isinstance(xs, list)
        if not xs:
            continue
        print(
            f"{label:<34}{statistics.median(xs) * 1e3:>10.0f}{pct(xs, 99) * 1e3:>9.0f}{'<= ' + target:>10}  {anchors}"
        )
        anchors = ""
    print(
        f"items collected {r['collected']}, missing {r['missing']}, wrong {r['wrong']}, recorded again by a later"
        f" sink {r['duplicates']} (a replacement source resumes at its stage's first unfinished item)"
    )

    if args.demo:
        from pxproto.orch.demo import Demo

        det, rep, gaps, exact = [], [], [], 0
        for i in range(args.demo):
            res = Demo(Path(f"/tmp/pxorch-bench-demo-{i}"), quiet=True).run()
            exact += res.ok
            if not res.ok:
                print(f"  demo run {i} not exact: lines {res.distinct}/{res.lines}, lost {res.lost}, duplicated"
                      f" {res.duplicated}, wrong {res.wrong}, reborn {res.reborn}, load {os.getloadavg()[0]:.1f}"
                      f" {'; '.join(res.notes)}")  # fmt: skip
            if res.detection is not None:
                det.append(res.detection)
            if res.repair is not None:
                rep.append(res.repair)
            if res.sink_gap is not None:
                gaps.append(res.sink_gap)
        print(f"\nreal demo (pxkernel processes over pxswitch), {args.demo} runs, {exact} exact")
        for label, xs in (("detection", det), ("repair", rep), ("sink's longest pause", gaps)):
            if xs:
                print(f"{label:<34}{statistics.median(xs) * 1e3:>10.0f}{max(xs) * 1e3:>9.0f} (max)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
