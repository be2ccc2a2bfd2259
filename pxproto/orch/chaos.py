"""``pxorch chaos``: the demo's workflow on real processes, under frame loss, through many kills.

The same cluster as ``pxorch demo`` (a pxswitch and three pxkernel servers of four DIMEs), with frames
dropped at random on every hop, both directions, signaling and data alike.  With ``netns`` (root) each
server lives in a network namespace of its own, wired by veth pairs (AF_PACKET at both ends), and
``tc netem`` drops frames on every veth end.  The source streams the corpus many times over at a steady
rate; meanwhile the run kills, one after the other, a DIME of each
stage kind (source, parse, transform, sink: SIGKILL to the DIME's process) and whole servers (SIGKILL to
the pxkernel process: its DIMEs and MICE die with it; it is started again on the same state directory a
moment later, as an operator's supervisor would).  After each kill it waits for the orchestrator's
repair, lets the data flow a little, and kills again.

Then it waits -- for as long as lines keep arriving, not up to a deadline that would excuse a loss (it
gives up only after 60 s without a new line) -- until the sink holds every line, and checks the sink's
records line by line (by item id: every line number once, with its known result).  Exactly once here
means: every line has one lineage and one result; a replacement sink on another server that commits a
lineage its dead predecessor had already committed writes the same record (the sink's commit is keyed
by lineage, an idempotent record), and the reader keeps it once (``absorbed``).

Rootless (the default) it runs on the UDP wire with a lossy relay (:mod:`pxproto.testing.lossy`) in front
of every switch port instead: the same loss, for kernels without ``sch_netem`` (or users without root).
"""

from __future__ import annotations

import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pxproto.link import Port, UdpPort, free_udp_ports
from pxproto.orch.core import Orchestrator
from pxproto.orch.demo import Demo, DemoError, Result, attempt, dime_pid, whole
from pxproto.orch.driver import Driver
from pxproto.orch.events import DimeDead, DimeKey, DimeReborn, key_text
from pxproto.orch.service import ServiceSpec
from pxproto.procfind import parent_pid

KINDS = ("source", "parse", "transform", "sink", "server")
"""What a kill hits: a DIME running one of the workflow's stages, or a whole server."""
TOLERANT = {"heartbeat_ms": 100, "missed": 4, "confirm_ms": 60, "confirm_tries": 4}
"""The default detector: slow enough that a busy shared host and lost frames make no false deaths."""


@dataclass
class Kill:
    """One kill and what the orchestrator made of it."""

    kind: str
    t: float
    victims: list[DimeKey]
    """The DIMEs that held the workflow's replicas and died (one, or a server's)."""
    hit: list[DimeKey]
    """Every DIME the kill took down (a server's all, replicas or not)."""
    midstream: bool
    """Whether the sink still lacked lines when it happened."""
    detection: float | None = None
    repair: float | None = None
    """Kill to the service whole again: every victim replaced, every replica running and wired (seconds)."""


@dataclass
class ChaosResult(Result):
    kills: list[Kill] = field(default_factory=list)
    loss: float = 0.0
    seconds: float = 0.0
    mem_peak: tuple[int, int] = (0, 0)
    """The highest (chunks used, chunk limit) any DIME reported in a heartbeat, by share of its limit."""
    mem_over: int = 0
    """Heartbeats seen (sampled every half second) reporting more chunks used than the DIME's limit."""


class Chaos(Demo):
    """One chaos run; :meth:`run` returns a :class:`ChaosResult`."""

    def __init__(self, *, kills: int = 30, loss: float = 2.0, rate: int = 250, passes: int | None = None,
                 seed: int = 1, netns: bool = False, gap: tuple[float, float] = (0.4, 1.6),
                 regulator: dict[str, Any] | None = None, work_us: int = 100, plan: list[str] | None = None,
                 **kw: Any) -> None:  # fmt: skip
        if plan is not None and not set(plan) <= set(KINDS):
            raise ValueError(f"chaos plan {plan}: each kill is one of {', '.join(KINDS)}")
        if passes is None:  # a stream that outlasts the kills (about 2.5 s each)
            passes = max(1, math.ceil(rate * kills * 2.5 / 2400))
        super().__init__(rate=rate, passes=passes, netns=netns, kill=False, regulator=regulator or dict(TOLERANT),
                         work_us=work_us, **kw)  # fmt: skip
        self.n_kills = kills
        self.plan = plan
        """The kinds to kill, in this order (default: every kind in turn, shuffled each round)."""
        self.loss = loss
        self.seed = seed
        self.rng = random.Random(seed)
        self.gap = gap
        self.mirror = self.draw = False  # minutes of traffic: no capture, no picture
        self.seen = 0
        self._next_read = 0.0
        self._res = ChaosResult()
        self._core: Orchestrator | None = None

    def new_result(self) -> ChaosResult:
        return ChaosResult()

    # ------------------------------------------------------------- the cluster, with loss

    def _start(self, capture: Path, store: Path, keyfile: Path) -> Port:
        if self.netns is None:
            return self._start_lossy(capture, store, keyfile)
        wire = super()._start(capture, store, keyfile)
        if self.loss > 0:
            net = self.netns
            ends = [(ns, end) for ns, end in zip(net.server_ns, net.server_ends, strict=True)]
            ends += [(net.switch_ns, end) for end in net.switch_ends] + [(net.orch_ns, net.orch_end)]
            for ns, end in ends:
                r = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", end, "root", "netem",
                                    "loss", f"{self.loss}%"], capture_output=True, text=True, check=False)  # fmt: skip
                if r.returncode != 0:
                    raise DemoError(f"tc netem on {end} in {ns}: {r.stderr.strip()} (needs root and sch_netem;"
                                    " without them run rootless: lossy UDP relays)")  # fmt: skip
            self.say(f"tc netem: {self.loss}% loss on each of {len(ends)} veth ends (every hop, both directions)")
        return wire

    def _start_lossy(self, capture: Path, store: Path, keyfile: Path) -> Port:
        """The rootless wire with a lossy relay (:mod:`pxproto.testing.lossy`) in front of every switch port."""
        n = self.servers + 1
        ports = free_udp_ports(2 * n)
        switch, near = ports[:n], ports[n:]
        self.start_switch(switch, capture)
        cmd = [sys.executable, "-m", "pxproto.testing.lossy", "--loss", str(self.loss), "--seed", str(self.seed)]
        cmd += [f"{a}:{b}" for a, b in zip(near, switch, strict=True)]
        log = open(self.wd / "lossy.log", "wb")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(0.3)
        for i in range(self.servers):
            self.start_kernel(i, near[i], store, keyfile)
        self.say(f"pxswitch on {n} UDP ports, each behind a relay dropping {self.loss}% of datagrams both ways;"
                 f" {self.servers} pxkernel servers of {self.dimes} DIMEs each")  # fmt: skip
        return UdpPort("127.0.0.1", near[-1])

    # ------------------------------------------------------------- the run

    def _progress(self) -> None:
        now = time.monotonic()
        if now >= self._next_read:
            self._next_read = now + 0.5
            self.seen = self.lines_seen()
            res, core = self._res, self._core
            # memory stays within each DIME's chunk limit
            for v in core.pool.dimes.values() if core is not None else ():
                if v.mem_limit:
                    res.mem_over += v.mem_used > v.mem_limit
                    used, limit = res.mem_peak
                    if not limit or v.mem_used * limit > used * v.mem_limit:
                        res.mem_peak = (v.mem_used, v.mem_limit)

    def _run(self, res: Result, core: Orchestrator, drv: Driver, spec: ServiceSpec, store: Path,
             answer: dict[str, Any], expected: dict[int, bytes]) -> None:  # fmt: skip
        assert isinstance(res, ChaosResult)
        self._res, self._core = res, core
        res.loss = self.loss
        t_begin = time.monotonic()
        self._discover(core, drv)
        self._deploy(core, drv, spec, store)
        total = answer["lines"]
        self.section(f"chaos: {self.n_kills} kills, {total} lines at {self.rate}/s, {self.loss}% loss per hop")
        plan: list[str] = list(self.plan or ())
        while len(plan) < self.n_kills:
            rnd = list(KINDS)
            self.rng.shuffle(rnd)
            plan += rnd
        for n, kind in enumerate(plan[: self.n_kills]):
            drv.run_until(lambda: False, self.rng.uniform(*self.gap), self._progress)
            k = self._kill_one(core, drv, spec.name, kind)
            if k is None:
                continue
            res.kills.append(k)
            self._await_repair(core, drv, spec.name, k, res)
            rep = f"{k.repair * 1e3:.0f} ms" if k.repair is not None else "NOT REPAIRED"
            self.say(f"kill {n + 1}/{self.n_kills} ({kind}): {len(k.victims)} replica(s) repaired in {rep};"
                     f" sink {self.seen}/{total}")  # fmt: skip
        self.section("waiting for every line")
        self._next_read = 0.0
        last = (-1, time.monotonic())

        def stalled() -> bool:  # no new line for 60 s: nothing more is coming
            nonlocal last
            if self.seen != last[0]:
                last = (self.seen, time.monotonic())
            return time.monotonic() - last[1] > 60

        drv.run_until(lambda: self.seen >= total or stalled(), 1e9, self._progress)
        drv.run_until(lambda: False, 1.0)  # late duplicates, if any, would show up now
        res.seconds = time.monotonic() - t_begin
        self.section("result")
        self._measure(res, core, {"killed": None, "note_false": False}, expected, answer)
        self._summary(res, core)

    def _kill_one(self, core: Orchestrator, drv: Driver, service: str, kind: str) -> Kill | None:
        reps = core.replicas(service)
        midstream = self.seen < self.lines_total
        if kind != "server":
            if not reps[kind]:
                return None
            victim = self.rng.choice(reps[kind])
            pid = dime_pid(*victim)
            if pid is None:
                self.say(f"no process for DIME {key_text(victim)}: kill skipped")
                return None
            os.kill(pid, signal.SIGKILL)
            self.say(f"KILL DIME {key_text(victim)} ({kind}), pid {pid}")
            return Kill(kind, time.monotonic(), [victim], [victim], midstream)
        hosts = Counter(key[0] for keys in reps.values() for key in keys)
        most = max(hosts.values())
        mac = self.rng.choice(sorted(m for m, c in hosts.items() if c == most))
        index = self._server_index(mac)
        if index is None:
            self.say(f"no pxkernel process for server {mac.hex(':')}: kill skipped")
            return None
        proc, how = self.kernels[index]
        victims = [key for keys in reps.values() for key in keys if key[0] == mac]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t = time.monotonic()
        self.say(f"KILL server {mac.hex(':')} (pxkernel pid {proc.pid}; {len(victims)} replicas on it)")
        # An operator's supervisor starts it again, sooner or later (sometimes before its death is confirmed).
        drv.run_until(lambda: False, self.rng.uniform(0.0, 1.5), self._progress)
        self.procs.remove(proc)
        self.start_kernel(index, *how)
        return Kill("server", t, victims, [(mac, d) for d in range(self.dimes)], midstream)

    def _server_index(self, mac: bytes) -> int | None:
        """Which of this run's pxkernel processes is the server ``mac`` (the parent of its DIME 0)."""
        pid = next(filter(None, (dime_pid(mac, d) for d in range(self.dimes))), None)
        if pid is None:
            return None
        ppid = parent_pid(pid)
        return next((i for i, (p, _) in self.kernels.items() if p.pid == ppid), None)

    def _await_repair(self, core: Orchestrator, drv: Driver, service: str, k: Kill, res: ChaosResult) -> None:
        """Wait until the orchestrator knows every victim dead and the service is whole again (:func:`whole`)."""

        def known() -> bool:
            dead = {e.key for e in core.log.of(DimeDead) if e.t >= k.t}
            return all(v in dead for v in k.victims)

        if not drv.run_until(lambda: known() and whole(core, service, k.victims, k.t), 60.0, self._progress):
            res.notes.append(f"{k.kind} kill at {k.t - self.t0:.1f} s: the service not whole again within 60 s")
        else:
            k.repair = time.monotonic() - k.t
        dead = [e.t for e in core.log.of(DimeDead) if e.key in k.victims and e.t >= k.t]
        k.detection = min(dead) - k.t if dead else None
        if k.kind == "server":  # its DIMEs back in the pool before the next kill (new epochs)
            mac = k.hit[0][0]
            drv.run_until(lambda: self._back(core, mac, k.t), 30.0, self._progress)

    def _back(self, core: Orchestrator, mac: bytes, t: float) -> bool:
        reborn = {e.key for e in core.log.of(DimeReborn) if e.t >= t and e.key[0] == mac}
        return len(reborn) >= self.dimes

    @property
    def lines_total(self) -> int:
        return 2400 * self.passes

    def _summary(self, res: ChaosResult, core: Orchestrator) -> None:
        # A death is explained by a kill if it is the first of that DIME's deaths after a kill that hit it.
        deaths = core.log.of(DimeDead)
        explained = set()
        for k in res.kills:
            for key in k.hit:
                first = next((i for i, e in enumerate(deaths) if e.key == key and e.t >= k.t), None)
                if first is not None:
                    explained.add(first)
        res.false_deaths = len(deaths) - len(explained)
        kinds = Counter(k.kind for k in res.kills)
        self.say("kills: " + ", ".join(f"{kinds[k]} {k}" for k in KINDS) + f" ({len(res.kills)} in all,"
                 f" {sum(k.midstream for k in res.kills)} mid-stream)")  # fmt: skip
        for name, xs in (("detection", [k.detection for k in res.kills]), ("repair", [k.repair for k in res.kills])):
            got = [x for x in xs if x is not None]
            if got:
                self.say(f"{name}: median {statistics.median(got) * 1e3:.0f} ms, max {max(got) * 1e3:.0f} ms"
                         f" ({len(got)} of {len(xs)})")  # fmt: skip
        self.say(f"DIMEs declared dead with no kill: {res.false_deaths}; run {res.seconds:.0f} s")
        self.say(f"memory: peak {res.mem_peak[0]} of {res.mem_peak[1]} chunks in a DIME's heartbeat;"
                 f" {res.mem_over} over the limit")  # fmt: skip
        if res.mem_over:
            res.ok = False
        unrepaired = sum(1 for k in res.kills if k.repair is None)
        if unrepaired:
            res.ok = False
            self.say(f"{unrepaired} kill(s) not repaired")
        self.say("CHAOS EXACT" if res.ok else "CHAOS NOT EXACT")


def run(**kw: Any) -> ChaosResult:
    """One chaos run (keyword arguments: :class:`Chaos`'s); raises :class:`DemoError` if it cannot start."""
    c = Chaos(**kw)
    res = c.run()
    assert isinstance(res, ChaosResult)
    return res


def main(workdir: Path | None = None, **kw: Any) -> int:
    c = Chaos(workdir=workdir, **kw)
    res = attempt(c, "chaos")
    if res is None:
        return 1
    for n in res.notes:
        print(f"note: {n}")
    print(f"workdir: {c.wd}")
    return 0 if res.ok else 1


__all__ = ["KINDS", "Chaos", "ChaosResult", "Kill", "main", "run"]
