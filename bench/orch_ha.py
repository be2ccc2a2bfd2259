"""pxorch HA bench: how much the plan writes to the store, on a 1,000-DIME simulated cluster.

    python bench/orch_ha.py                      # 250 servers x 4 DIMEs, 6 simulated seconds, 5 DIME kills
    python bench/orch_ha.py --etcd URL           # the same writes into a real etcd (timed)

The leader's plan (pxproto.orch.store.plan_of) is synced every 50 ms of simulated time, as ``pxorch run
--etcd`` does; heartbeats (20,000 a second here) are never written.  The table shows keys written per
simulated second by phase, and the transactions they took.
"""

from __future__ import annotations

import argparse
import time

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

from pxproto.orch.core import OrchConfig, PackageRef  # noqa: E402
from pxproto.orch.events import ServiceDeployed  # noqa: E402
from pxproto.orch.service import parse_service  # noqa: E402
from pxproto.orch.store import EtcdKv, Kv, MemoryKv, PlanWriter, plan_of  # noqa: E402
from pxproto.sim import DEMO_SERVICE, SimCluster  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=250)
    ap.add_argument("--dimes", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--etcd", help="write into this etcd instead of memory")
    args = ap.parse_args()
    spec = parse_service(DEMO_SERVICE)
    c = SimCluster(args.servers, args.dimes, config=OrchConfig.from_regulator(spec.regulator), items=10**9)
    kv: Kv = EtcdKv(args.etcd) if args.etcd else MemoryKv()
    w = PlanWriter(kv, "/pxorch-bench/plan/")
    rows: list[tuple[str, float, int, int, float]] = []

    def phase(name: str, seconds: float, each: object = None) -> None:
        t0, w0, b0, wall = c.net.now, w.writes, w.batches, 0.0
        end = c.net.now + seconds
        while c.net.now < end:
            c.run(0.05)
            if callable(each):
                each()
            t = time.perf_counter()
            w.sync(plan_of(c.orch), c.net.now)
            wall += time.perf_counter() - t
        dt = c.net.now - t0
        rows.append((name, dt, w.writes - w0, w.batches - b0, wall))

    c.emit(c.orch.probe(c.net.now))
    phase("discovery", 1.0)
    c.emit(c.orch.deploy(spec, PackageRef(b"\x11" * 32, 1, b""), c.net.now))
    phase("deploy", 1.0)
    assert c.orch.log.of(ServiceDeployed)
    phase("steady stream", args.seconds / 2)
    kills = [0]
    gap = args.seconds / 2 / max(1, args.kills)
    next_kill = [c.net.now]

    def kill() -> None:
        if kills[0] < args.kills and c.net.now >= next_kill[0]:
            next_kill[0] = c.net.now + gap
            c.kill_dime(c.orch.replicas("demo")["transform"][0])
            kills[0] += 1

    phase(f"stream, {args.kills} DIME kills", args.seconds / 2, kill)
    n = args.servers * args.dimes
    print(f"{n} DIMEs, plan of {len(w.written)} keys, store: {'etcd ' + args.etcd if args.etcd else 'memory'}")
    print(f"{'phase':28} {'sim s':>6} {'keys':>7} {'keys/s':>8} {'txns':>6} {'sync wall ms/s':>15}")
    for name, dt, keys, txns, wall in rows:
        print(f"{name:28} {dt:6.2f} {keys:7d} {keys / dt:8.1f} {txns:6d} {wall * 1e3 / dt:15.1f}")
    print(f"heartbeats received and not written: {c.orch.counters['heartbeats']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
