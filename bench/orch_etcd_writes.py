"""pxorch HA bench: what the orchestrators write to a real etcd for 1,000 DIMEs, at two heartbeat rates, and
how far a follower's view trails the leader's.

    python bench/orch_etcd_writes.py                       # 250 servers x 4 DIMEs, heartbeat 100 ms then 10 ms
    python bench/orch_etcd_writes.py --periods 50,5 --orchs 3

Per heartbeat period, a fresh local etcd (one member) and a simulated cluster on :class:`pxproto.simfleet.
FleetNet`: the real DIME machines (heartbeats at the period, and the regulator's ``heartbeat_ms`` on deployed
DIMEs), ``--orchs`` orchestrator cores each driven by the real :class:`~pxproto.orch.leader.Leadership` (the
election, the fenced plan writes, stepped every 50 ms of simulated time) on one :class:`~pxproto.orch.store.
EtcdKv`.  The simulation runs 10 to 80 times slower than the wall clock that etcd's leases run on, so the
bench also refreshes each lease every 2 s of wall time (TTL 30 s; a keepalive is no write), and counts the
leader epochs seen (1: no re-election disturbed the figures).  Phases: election and discovery, the demo
service's deployment, a steady stream, then the stream with DIME kills (a transform replica killed,
repaired, the previous victim restarted in a new epoch).

Table 1, per phase: heartbeats the leader took per simulated second; keys the leaders wrote (client
count) per second; what etcd itself counted (``etcd_mvcc_put_total`` + ``etcd_mvcc_delete_total``, and
``etcd_mvcc_txn_total``, from its ``/metrics``; etcd 3.4 counts a transaction there only when it holds more
than one operation: a lone resume point's put is not one, a failed campaign's compare-and-read is).  Heartbeats are
never written: multiplying the heartbeat rate by 10 leaves the writes where they were (the ratio column).

Table 2: each divergence between a follower's view of a DIME (state, epoch, judged dead; what ``pxorch
status`` shows) and the leader's, sampled every millisecond: p50, p99 and max of its length, and p99 in
heartbeat periods (the target: within one).

Measured (defaults; load ~25 on 2 cores; 1 leader epoch per run), keys written per simulated second at a
100 ms and a 10 ms heartbeat (10,000 and 100,000 heartbeats a second): election and discovery 500.5 and
500.5 (the 1,000 DIMEs' epochs, once), deployment 22.0 and 22.0, steady stream 1.0 and 1.0 (the source's
resume point), stream with 4 DIME kills 22.5 and 22.5; etcd's own put+delete counts match within 0.5/s,
every puts/base ratio 1.00.  Views: 7,000 samples per rate, no divergence seen (the simulated wire delivers
a heartbeat to both orchestrators within 0.5 ms, under the 1 ms sampling).  An earlier run without the
wall-clock lease refresh re-elected at the 10 ms rate: then etcd counted 6.5 puts/s in the steady stream
(the election's) and one 440 ms divergence appeared.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

from pxproto.orch.core import OrchConfig, PackageRef  # noqa: E402
from pxproto.orch.etcdlocal import LocalEtcd  # noqa: E402
from pxproto.orch.events import RepairDone, ServiceDeployed  # noqa: E402
from pxproto.orch.service import parse_service  # noqa: E402
from pxproto.orch.store import PLAN_PREFIX, EtcdKv  # noqa: E402
from pxproto.sim import DEMO_SERVICE  # noqa: E402
from pxproto.simfleet import FleetNet, ViewLag, percentile, view_of  # noqa: E402
from pxproto.simha import HaCluster  # noqa: E402

Row = dict[str, float]


def run(url: str, args: argparse.Namespace, period: float) -> tuple[list[tuple[str, Row]], ViewLag, Counter[str]]:
    text = DEMO_SERVICE.replace("heartbeat_ms = 50", f"heartbeat_ms = {round(period * 1000)}")
    spec = parse_service(text)
    kv = EtcdKv(url, timeout=2.0)
    c = HaCluster(args.orchs, ttl=30, kv=kv, net=FleetNet, servers=args.servers, dimes=args.dimes, period=period,
                  config=OrchConfig.from_regulator(spec.regulator), items=10**9, source_rate=200.0)  # fmt: skip
    lag = ViewLag()
    every = min(period / 5, 0.001)
    rows: list[tuple[str, Row]] = []
    refresh = [0.0]
    epochs: set[int | None] = set()

    def hb() -> int:
        lead = c.leader()
        return 0 if lead is None else int(lead.core.counters["heartbeats"])

    def phase(name: str, seconds: float, each: object = None) -> None:
        m0, t0, h0, wall = kv.metrics(), c.net.now, hb(), time.perf_counter()
        w0 = sum(o.ha.writer.writes for o in c.orchs)
        end = c.net.now + seconds
        while c.net.now < end - 1e-9:
            c.run(every)
            if time.monotonic() >= refresh[0]:  # the leases run on the wall clock, the simulation far slower
                refresh[0] = time.monotonic() + 2.0
                for o in c.orchs:
                    if o.ha.elector.lease is not None:
                        kv.keepalive(o.ha.elector.lease)
            epochs.update(o.ha.elector.epoch for o in c.orchs if o.ha.leading)
            lead = c.leader()
            if lead is not None:
                lv = view_of(lead.core)
                for o in c.orchs:
                    if o is not lead:
                        lag.sample(c.net.now, lv, view_of(o.core), o.mac)
            if callable(each):
                each()
        m1, dt = kv.metrics(), c.net.now - t0
        rows.append((name, {
            "sim": dt, "hb": (hb() - h0) / dt, "keys": (sum(o.ha.writer.writes for o in c.orchs) - w0) / dt,
            "puts": (m1["etcd_mvcc_put_total"] + m1["etcd_mvcc_delete_total"] - m0["etcd_mvcc_put_total"]
                     - m0["etcd_mvcc_delete_total"]) / dt,
            "txns": (m1["etcd_mvcc_txn_total"] - m0["etcd_mvcc_txn_total"]) / dt,
            "wall": time.perf_counter() - wall,
        }))  # fmt: skip

    phase("election, discovery", 2.0)
    lead = c.leader()
    assert lead is not None, "no leader elected"
    lead.send(lead.core.deploy(spec, PackageRef(b"\x11" * 32, 1, b""), c.net.now))
    phase("deployment", 1.0)
    assert lead.core.log.of(ServiceDeployed), "the service was not deployed"
    phase("steady stream", args.seconds)
    state: dict[str, object] = {"n": 0, "next": c.net.now, "victim": None}
    gap = args.seconds / max(1, args.kills)

    def kill() -> None:
        if state["n"] >= args.kills or c.net.now < state["next"]:  # type: ignore[operator]
            return
        cur = c.leader()
        assert cur is not None
        if state["victim"] is not None:
            c.restart_dime(state["victim"])  # type: ignore[arg-type]
        victim = cur.core.replicas("demo")["transform"][0]
        c.kill_dime(victim)
        state.update(n=int(state["n"]) + 1, next=c.net.now + gap, victim=victim)  # type: ignore[call-overload]

    phase(f"stream, {args.kills} DIME kills", args.seconds, kill)
    lead = c.leader()
    assert lead is not None
    repairs = len(lead.core.log.of(RepairDone))
    kinds = Counter(k[len(PLAN_PREFIX) :].split("/", 1)[0] for k in kv.range(PLAN_PREFIX))
    kinds["(repairs done)"] = repairs
    kinds["(leader epochs)"] = len(epochs)
    for o in c.orchs:
        o.ha.stop()
    return rows, lag, kinds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=250)
    ap.add_argument("--dimes", type=int, default=4)
    ap.add_argument("--orchs", type=int, default=2, help="orchestrators: one leads, the others follow")
    ap.add_argument("--periods", default="100,10", help="heartbeat periods to compare, ms")
    ap.add_argument("--seconds", type=float, default=2.0, help="simulated seconds of each stream phase")
    ap.add_argument("--kills", type=int, default=4)
    args = ap.parse_args()
    periods = [int(p) / 1000 for p in args.periods.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="etcd-writes-") as wd:
        for p in periods:
            etcd = LocalEtcd(Path(wd) / f"etcd{round(p * 1000)}")
            etcd.start()
            try:
                results[p] = run(etcd.url, args, p)
            finally:
                etcd.stop()
    n = args.servers * args.dimes
    base = periods[0]
    print(f"{n} DIMEs, {args.orchs} orchestrators, real etcd (one member per run); per simulated second:")
    head = f"{'hb ms':>5} {'phase':22} {'sim s':>5} {'heartbeats/s':>12} {'keys/s':>7} {'etcd puts/s':>11} "
    print(head + f"{'txns>1op/s':>11} {'puts/base':>9} {'wall s':>6}")
    for p, (rows, _, _) in results.items():
        for (name, r), (_, b) in zip(rows, results[base][0], strict=True):
            ratio = r["puts"] / b["puts"] if b["puts"] else float("nan")
            print(f"{p * 1e3:5.0f} {name:22} {r['sim']:5.2f} {r['hb']:12.0f} {r['keys']:7.1f} {r['puts']:11.1f} "
                  f"{r['txns']:11.1f} {ratio:9.2f} {r['wall']:6.1f}")  # fmt: skip
    for p, (_, _, kinds) in results.items():
        print(f"hb {p * 1e3:.0f} ms: keys in etcd by kind: {dict(sorted(kinds.items()))}")
    print()
    print("a follower's view (state, epoch, dead) of each DIME against the leader's: divergences and their length")
    print(f"{'hb ms':>5} {'samples':>8} {'diverged':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'p99/period':>10} "
          f"{'open':>4}")  # fmt: skip
    for p, (_, lag, _) in results.items():
        xs = lag.lags
        print(f"{p * 1e3:5.0f} {lag.samples:8d} {len(xs):8d} {percentile(xs, 0.5) * 1e3:7.1f} "
              f"{percentile(xs, 0.99) * 1e3:7.1f} {max(xs, default=0.0) * 1e3:7.1f} "
              f"{percentile(xs, 0.99) / p:10.2f} {len(lag.since):4d}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
