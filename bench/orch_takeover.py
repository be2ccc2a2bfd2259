"""pxorch HA bench: takeover time over many SIGKILLs of the leading orchestrator, on a real local etcd.

    python bench/orch_takeover.py                # 20 kills per mode, lease TTL 1 s, three orchestrators
    python bench/orch_takeover.py --kills 50 --modes peer

Each orchestrator is a process running :class:`pxproto.orch.leader.Leadership` the way ``pxorch run --etcd``
does (stepped every 50 ms, as the daemon's loop does), on an orchestrator core without a wire: on taking over
it loads the stored plan (a deployed demo service from the simulation: 1 service, 5 replicas, 5 links, 12
DIME epochs) and restores it, sending its fenced USAGE queries to a driver that drops them.  The bench
SIGKILLs the leader at a random moment, and measures from the SIGKILL to the moment a follower has the plan
restored and its first fenced commands out (what ``pxorch demo --ha`` prints as ``takeover``), then starts the
killed one again as a follower and lets it settle before the next kill.

Modes (same etcd, same processes, only the follower's trigger differs):

- ``poll``: the lease alone; followers campaign every quarter TTL (the design before this bench);
- ``watch``: followers also watch the leader key and campaign as soon as etcd deletes it (lease expiry);
- ``peer``: followers also hold a TCP connection to the leader (:mod:`pxproto.orch.peer`); its closing proves
  the process died, and the first follower to see it revokes the dead leader's lease and campaigns.

Printed: takeover median, p90, p99 and max per mode, and each mode's median and p99 as a ratio of ``poll``'s.

Measured (host at load 9 to 19 on 2 cores shared with other jobs, lease TTL 1 s): 30 kills per mode, poll
p50 1247 ms / p99 1470 ms, watch 1139 / 1476 ms, peer 80 / 584 ms; again with 40 kills (seed 2), poll
1217 / 1548 ms, peer 74 / 573 ms.  The lease modes cannot go below the TTL plus etcd's 500 ms expiry sweep;
the peer link's tail is the daemon's 50 ms loop and the loaded host.
"""

from __future__ import annotations

import argparse
import os
import random
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

from pxproto.orch.etcdlocal import LocalEtcd  # noqa: E402
from pxproto.orch.store import EtcdKv, PlanWriter  # noqa: E402

PLAN_PREFIX = "/pxorch/plan/"


class NullDriver:
    """A driver without a wire: what :class:`Leadership` needs of one."""

    def __init__(self) -> None:
        from pxproto.orch.core import Orchestrator

        self.core = Orchestrator(os.urandom(1) + b"\x00\x00\x00\x00\xf0")
        self.muted = True
        self.sent = 0

    def send(self, out: object, even_muted: bool = False) -> None:
        frames = getattr(out, "frames", [])
        if frames and (even_muted or not self.muted):
            self.sent += len(frames)


def worker(url: str, name: str, ttl: int, mode: str) -> int:
    """One orchestrator's election loop; prints ``LEAD <epoch> <monotonic>`` at each takeover."""
    from pxproto.orch.leader import Leadership

    drv = NullDriver()
    ha = Leadership(drv, EtcdKv(url), name, ttl, say=lambda s: None,  # type: ignore[arg-type]
                    peer_host="127.0.0.1" if mode == "peer" else None, watch=mode != "poll")  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("UP", flush=True)
    seen = 0
    while True:
        ha.step(time.monotonic())
        if len(ha.takeovers) > seen:
            seen = len(ha.takeovers)
            print(f"LEAD {ha.elector.epoch} {time.monotonic():.6f} {drv.sent}", flush=True)
        time.sleep(0.05)


def seed_plan(url: str) -> int:
    """A deployed demo service's plan (from the simulation), written where the orchestrators look."""
    from pxproto.orch.core import OrchConfig, PackageRef
    from pxproto.orch.events import ServiceDeployed
    from pxproto.orch.service import parse_service
    from pxproto.orch.store import plan_of
    from pxproto.sim import DEMO_SERVICE, SimCluster

    spec = parse_service(DEMO_SERVICE)
    c = SimCluster(config=OrchConfig.from_regulator(spec.regulator), items=10**6)
    c.emit(c.orch.probe(0.0))
    c.run(0.3)
    c.emit(c.orch.deploy(spec, PackageRef(b"\x11" * 32, 1, b""), c.net.now))
    c.run_until(lambda: bool(c.orch.log.of(ServiceDeployed)), 10.0)
    plan = plan_of(c.orch)
    PlanWriter(EtcdKv(url), PLAN_PREFIX).sync(plan, 0.0)
    return len(plan)


class Orchs:
    def __init__(self, url: str, n: int, ttl: int, mode: str) -> None:
        self.url, self.ttl, self.mode = url, ttl, mode
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.sel = selectors.DefaultSelector()
        self.leads: list[tuple[int, int, float]] = []
        """(orchestrator, epoch, when) for each LEAD line."""
        for i in range(n):
            self.start(i)

    def start(self, i: int) -> None:
        p = subprocess.Popen([sys.executable, __file__, "--worker", self.url, f"o{i}", str(self.ttl), self.mode,
                              "--allow-pure"],  # the parent checked what it measures
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)  # fmt: skip
        assert p.stdout is not None
        if p.stdout.readline().strip() != "UP":
            raise RuntimeError(f"worker o{i} did not start")
        self.procs[i] = p
        self.sel.register(p.stdout, selectors.EVENT_READ, i)

    def pump(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            line = key.fileobj.readline()  # type: ignore[union-attr]
            if not line:
                self.sel.unregister(key.fileobj)
                continue
            parts = line.split()
            if parts and parts[0] == "LEAD":
                self.leads.append((int(key.data), int(parts[1]), float(parts[2])))

    def leader(self) -> int | None:
        """The orchestrator whose LEAD line is the newest (it leads unless it was killed since)."""
        return self.leads[-1][0] if self.leads else None

    def kill(self, i: int) -> float:
        p = self.procs.pop(i)
        assert p.stdout is not None
        self.sel.unregister(p.stdout)
        t = time.monotonic()
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        return t

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
            p.wait()


def run_mode(url: str, mode: str, kills: int, ttl: int, rng: random.Random) -> list[float]:
    o = Orchs(url, 3, ttl, mode)
    out: list[float] = []
    try:
        end = time.monotonic() + 10
        while o.leader() is None and time.monotonic() < end:
            o.pump(0.1)
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 0.3 + ttl))  # a random phase of the leader's lease refresh
            o.pump(0)
            old = o.leader()
            assert old is not None
            n = len(o.leads)
            t_kill = o.kill(old)
            end = time.monotonic() + 10 * ttl
            while len(o.leads) == n and time.monotonic() < end:
                o.pump(0.05)
            if len(o.leads) == n:
                raise RuntimeError(f"{mode}: no takeover within {10 * ttl} s")
            out.append(o.leads[-1][2] - t_kill)
            o.start(old)
    finally:
        o.stop()
    return out


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--ttl", type=int, default=1, help="lease TTL, seconds (etcd's smallest is 1)")
    ap.add_argument("--modes", default="poll,watch,peer")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="etcd-takeover-") as wd:
        etcd = LocalEtcd(Path(wd) / "etcd")
        etcd.start()
        try:
            keys = seed_plan(etcd.url)
            print(f"{args.kills} leader SIGKILLs per mode, 3 orchestrators, lease TTL {args.ttl} s, plan of {keys} "
                  f"keys, etcd {etcd.url}")  # fmt: skip
            results = {m: run_mode(etcd.url, m, args.kills, args.ttl, rng) for m in args.modes.split(",")}
        finally:
            etcd.stop()
    base = results.get("poll")
    head = ["p50 ms", "p90 ms", "p99 ms", "max ms", "p50/poll", "p99/poll"]
    print(f"{'mode':8} {'kills':>5} " + " ".join(f"{h:>9}" for h in head))
    for m, xs in results.items():
        r50 = f"{pct(xs, 0.5) / pct(base, 0.5):9.2f}" if base else f"{'-':>9}"
        r99 = f"{pct(xs, 0.99) / pct(base, 0.99):9.2f}" if base else f"{'-':>9}"
        ms = " ".join(f"{v * 1e3:9.0f}" for v in (pct(xs, 0.5), pct(xs, 0.9), pct(xs, 0.99), max(xs)))
        print(f"{m:8} {len(xs):5d} {ms} {r50} {r99}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
