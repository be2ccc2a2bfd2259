"""``pxorch demo``: the paper's proof of concept, run for real on this machine, and measured.

Everything it writes goes to one working directory (``workdir``; by default a
fresh ``pxorch-demo-*`` directory under the system's temporary directory, named
on the last line of the output), never into the source tree: the servers'
state and logs, the capture and the timeline picture.

It starts a pxswitch (its mirror writes every frame to ``WORKDIR/demo.pcapng``),
three pxkernel servers of four DIMEs each, and the orchestrator; discovers the
twelve DIMEs; deploys the bundled workflow (source -> parse -> transform x2 ->
sink, counting the words of a bundled corpus, streamed ``passes`` times over,
unthrottled by default: 19,200 lines, where throughput matters); scales the transform out to
three replicas; kills one transform DIME's process mid-stream (SIGKILL); and
shows discovery, deployment, scale-out, detection and repair as they happen.
At the end it checks the sink's records line by line against the known
answer, prints detection time, repair time and items lost or duplicated, and
draws the timeline (``WORKDIR/demo-timeline.png``).

Rootless: every wire is a UDP port of the switch on 127.0.0.1.  With
``netns`` (root): the switch, each server and the orchestrator live in network
namespaces of their own, wired by veth pairs; the switch and the kernels use
AF_PACKET on their veth ends (``afpacket:interface=``, ``--iface``), and the
orchestrator opens its AF_PACKET socket inside its namespace.  The
namespaces are deleted at the end.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pxproto import package
from pxproto.dime.keys import fresh_keys, write_keyfile
from pxproto.link import Port, UdpPort, free_udp_ports
from pxproto.orch import timeline
from pxproto.orch.core import OrchConfig, Orchestrator, PackageRef
from pxproto.orch.driver import Driver, raise_priority
from pxproto.orch.events import (
    DimeDead,
    DimeDiscovered,
    DimeKey,
    DimeReborn,
    OrchEvent,
    RepairDone,
    ServerDiscovered,
    ServiceDeployed,
    key_text,
)
from pxproto.orch.netns import Namespaces, NetnsError
from pxproto.orch.service import ServiceSpec, load_service
from pxproto.orch.sinkread import SinkReader
from pxproto.orch.status import table
from pxproto.procfind import find_dime, stop_all
from pxproto.signing import fresh_signing_key, write_verify_keys
from pxproto.wire import aead

PASSES = 8
"""Times the demo's source streams its 2,400-line corpus by default: 19,200 lines, unthrottled."""
OLD_RATE = 400
"""Lines per second the demo's source was paced at before its stream was unthrottled (the comparison)."""
WORKFLOWS = Path(__file__).parent / "workflows"
SERVICE_FILE = WORKFLOWS / "wordcount.service.toml"
ORCH_MAC = bytes.fromhex("020000000afe")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    """What one demo run measured."""

    ok: bool = False
    lines: int = 0
    distinct: int = 0
    records: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    detection: float | None = None
    repair: float | None = None
    sink_gap: float | None = None
    false_deaths: int = 0
    """DIMEs declared dead that no kill had hit (a busy host, lost frames): each a needless repair."""
    items_per_s: float = 0.0
    """The sink's records per second, first to last record."""
    reborn: bool = False
    capture: str = ""
    picture: str = ""
    notes: list[str] = field(default_factory=list)


class Demo:
    """One run of the demo; :meth:`run` returns a :class:`Result`."""

    def __init__(self, out_dir: Path | None = None, *, servers: int = 3, dimes: int = 4, rate: int = 0,
                 quiet: bool = False, kill: bool = True, scale_to: int = 3, workdir: Path | None = None,
                 regulator: dict[str, Any] | None = None, netns: bool = False,
                 kill_stage: str = "transform", passes: int = PASSES, work_us: int | None = None,
                 encrypt: str = "") -> None:  # fmt: skip
        self.wd = choose_workdir(workdir)
        self.key = fresh_keys()[1]
        """This run's cluster key: random, written 0600 to the work dir, never reused."""
        self.signer = fresh_signing_key()
        """This run's package signing key (the orchestrator's; the kernels get only its public half)."""
        """The servers' state and logs; the capture and the timeline too unless ``out_dir`` says otherwise."""
        self.out_dir = out_dir or self.wd
        self.servers = servers
        self.dimes = dimes
        self.rate = rate
        """Source lines per second (0, the default: unthrottled); written into the package's source params."""
        self.passes = passes
        """Times the source streams its corpus (the line numbers go on counting): a workload of any size."""
        self.work_us = work_us
        """Override of the transform's busy work per line (microseconds)."""
        self.quiet = quiet
        self.kill_enabled = kill
        self.kill_stage = kill_stage
        """Which stage's DIME is killed (a source's replacement resumes at its first unfinished line)."""
        self.scale_to = scale_to
        self.netns = Namespaces() if netns else None
        self.regulator = regulator or {}
        """Overrides of the bundled service file's [regulator] (e.g. a slower heartbeat on a loaded host)."""
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kernels: dict[int, tuple[subprocess.Popen[bytes], tuple[int | str, Path, Path, str | None]]] = {}
        """Server index -> its pxkernel process and how it was started (to start it again)."""
        self.mirror = True
        """Whether the switch mirrors every frame to the capture."""
        self.draw = True
        """Whether the run draws its timeline picture."""
        self.encrypt = aead.parse_classes(encrypt)
        """Frame classes the kernels and the orchestrator send encrypted (``pxorch demo --encrypt``)."""
        self.kernel_args: list[str] = ["--encrypt", encrypt] if self.encrypt else []
        """Extra pxkernel options (the bare-metal demo's --mtu, --encrypt)."""
        self.extra_dimes = 0
        """DIMEs beyond the pxkernel servers' to wait for at discovery (a bare-metal server's)."""
        self.t0 = time.monotonic()
        self.phase = ""
        self.kill_t: float | None = None
        self.absorbed = 0
        """Sink records committed on two servers for one lineage (a repaired sink's replay), kept once."""
        self.sink = SinkReader(self.wd, servers, "wordcount/results")
        self.env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def new_result(self) -> Result:
        return Result()

    # ------------------------------------------------------------- output

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.2f} s] {text}", flush=True)

    def section(self, title: str) -> None:
        self.phase = title
        if not self.quiet:
            print(f"\n== {title} ==", flush=True)

    def on_event(self, ev: OrchEvent) -> None:
        if isinstance(ev, DimeDiscovered | ServerDiscovered) and self.phase != "discovery":
            return
        self.say(ev.text())

    # ------------------------------------------------------------- processes

    def start_switch(self, ports: list[int] | list[str], capture: Path, netns: str | None = None) -> None:
        """The switch on UDP ports of 127.0.0.1 (ints) or on named ports (``afpacket:interface=...``)."""
        args = [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(self.wd / "switch.sock")]
        if self.mirror:
            args += ["--mirror", str(capture)]
        if netns:
            args = ["ip", "netns", "exec", netns, *args]
        for p in ports:
            args += ["--port", p if isinstance(p, str) else f"udp:local=127.0.0.1:{p}"]
        log = open(self.wd / "switch.log", "wb")
        self.procs.append(subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def start_kernel(self, i: int, port: int | str, store: Path, keyfile: Path, netns: str | None = None) -> None:
        """A pxkernel server on a UDP port of the switch (int) or, in ``netns``, on an interface (str)."""
        wire = ["--port", f"udp:127.0.0.1:{port}"] if isinstance(port, int) else ["--iface", port]
        cmd = [sys.executable, "-m", "pxproto.node.cli", *wire, "--dimes", str(self.dimes)]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        cmd += ["--memory-chunks", "16", "--store", str(store), "--state-dir", str(self.wd / f"server{i}")]
        cmd += [
            "--key",
            str(keyfile),
            "--verify-key",
            str(keyfile.with_name("verify.pub")),
            "--heartbeat-ms",
            str(self.regulator.get("heartbeat_ms", 50)),
        ]
        cmd += self.kernel_args
        log = open(self.wd / f"server{i}.log", "ab")
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.kernels[i] = (proc, (port, store, keyfile, netns))

    def stop_all(self) -> None:
        stop_all(self.procs[::-1])  # the servers before the switch they send through

    def logs(self) -> str:
        parts = []
        for f in sorted(self.wd.glob("*.log")):
            parts.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    # ------------------------------------------------------------- the sink's records

    def sink_records(self) -> list[tuple[int, float, bytes]]:
        """The sink's committed records on every server: one per lineage (the earliest), a keyed table
        (:mod:`pxproto.orch.sinkread`; ``self.absorbed`` counts copies committed again on another server)."""
        recs = self.sink.records()
        self.absorbed = self.sink.absorbed
        return recs

    def lines_seen(self) -> int:
        """How many lineages the sink holds now (reads only what was committed since the last call)."""
        return self.sink.update()

    # ------------------------------------------------------------- the run

    def run(self) -> Result:
        res = self.new_result()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        capture = self.out_dir / "demo.pcapng"
        spec = load_service(SERVICE_FILE)
        if self.regulator:
            spec = dataclasses.replace(spec, regulator=dataclasses.replace(spec.regulator, **self.regulator))
        assert spec.package is not None
        pkg = self._package(spec.package)
        spec = dataclasses.replace(spec, package=pkg)
        answer = json.loads((pkg / "answer.json").read_text())
        answer = {k: v * self.passes for k, v in answer.items()}
        expected = expected_results(spec, self.passes)
        store, keyfile = self.wd / "central", self.wd / "cluster.key"
        store.mkdir(exist_ok=True)
        for f in (keyfile, self.wd / "verify.pub"):
            f.unlink(missing_ok=True)
        write_keyfile(keyfile, {1: self.key})
        write_verify_keys(self.wd / "verify.pub", [self.signer])
        self.section("start")
        # The orchestrator and the switch (started from here, so it inherits this) run ahead of the DIMEs.
        if not raise_priority():
            self.say("could not raise the orchestrator's priority (no CAP_SYS_NICE): a busy host may look like faults")
        try:
            wire = self._start(capture, store, keyfile)
        except BaseException:
            self.stop_all()
            if self.netns is not None:
                self.netns.delete()
            raise
        mac = getattr(wire, "mac", None) or ORCH_MAC
        core = Orchestrator(mac, OrchConfig.from_regulator(spec.regulator))
        drv = Driver(core, wire, {1: self.key}, self.on_event, record_heartbeats=True, encrypt=self.encrypt)
        try:
            self._run(res, core, drv, spec, store, answer, expected)
        finally:
            drv.wire.close()
            self.stop_all()
            if self.netns is not None:
                self.netns.delete()
        res.capture = str(capture) if self.mirror else ""
        if not self.draw:
            return res
        try:
            res.picture = str(self._picture(core, drv, res))
        except ImportError as exc:
            res.notes.append(f"no timeline picture: {exc} (pip install matplotlib)")
        return res

    def _package(self, src: Path) -> Path:
        """The bundled package with this run's rate, passes and work in its manifest."""
        return package_copy(src, self.wd / "package", self.rate, self.passes, self.work_us)

    def _start(self, capture: Path, store: Path, keyfile: Path) -> Port:
        """The switch and the servers; returns the orchestrator's wire."""
        wire: Port
        if self.netns is not None:
            net = self.netns
            try:
                net.create(self.servers)
            except NetnsError as exc:
                raise DemoError(str(exc)) from None
            self.start_switch([f"afpacket:interface={w}" for w in net.switch_ends], capture, net.switch_ns)
            time.sleep(0.3)
            for i in range(self.servers):
                self.start_kernel(i, net.server_ends[i], store, keyfile, net.server_ns[i])
            wire = net.orchestrator_wire()
            self.say(
                f"pxswitch in namespace {net.switch_ns} on {len(net.switch_ends)} veth ports (AF_PACKET);"
                f" {self.servers} pxkernel servers of {self.dimes} DIMEs, each in its own namespace"
            )
        else:
            ports = free_udp_ports(self.servers + 1)
            self.start_switch(ports, capture)
            time.sleep(0.3)
            for i in range(self.servers):
                self.start_kernel(i, ports[i], store, keyfile)
            wire = UdpPort("127.0.0.1", ports[-1])
            self.say(f"pxswitch on {len(ports)} UDP ports; {self.servers} pxkernel servers of {self.dimes} DIMEs each")
        return wire

    def _discover(self, core: Orchestrator, drv: Driver) -> None:
        """Probe until every DIME of every server is up and free."""
        want = self.servers * self.dimes + self.extra_dimes
        self.section("discovery")
        self.t_probe = time.monotonic()

        def booted() -> bool:
            return sum(1 for v in core.pool.dimes.values() if v.epoch and v.state.name == "FREE") >= want

        next_probe = 0.0

        def probe() -> None:
            nonlocal next_probe
            if time.monotonic() >= next_probe:
                next_probe = time.monotonic() + 1.0
                drv.send(core.probe(time.monotonic()))

        if not drv.run_until(booted, 60.0, probe):
            raise DemoError(f"only {len(core.pool)} of {want} DIMEs came up\n{self.logs()}")
        self.say(f"pool: {len(core.pool.servers)} servers, {len(core.pool)} DIMEs, {core.pool.counts()}")

    def _deploy(self, core: Orchestrator, drv: Driver, spec: ServiceSpec, store: Path) -> None:
        """Pack, sign and store the package; deploy the service and wait until it runs."""
        self.section("deployment")
        stages_dir = spec.package
        assert stages_dir is not None
        archive = package.pack(stages_dir)
        digest = package.store_put(store, archive)
        ref = PackageRef(digest, len(archive), package.sign(archive, self.signer))
        self.say(f"package {spec.name}: {len(archive)} bytes, sha256 {digest.hex()[:16]}..., signed; in the store")
        drv.send(core.deploy(spec, ref, time.monotonic()))
        if not drv.run_until(lambda: bool(core.log.of(ServiceDeployed)), 30.0):
            raise DemoError(f"the service did not deploy\n{self.logs()}")
        if not self.quiet:
            print(table(core.status(time.monotonic())))

    def _run(self, res: Result, core: Orchestrator, drv: Driver, spec: ServiceSpec, store: Path,
             answer: dict[str, Any], expected: dict[int, bytes]) -> None:  # fmt: skip
        self._discover(core, drv)
        self._deploy(core, drv, spec, store)

        self.section("streaming, scale-out, a DIME killed mid-stream")
        total = answer["lines"]
        state: dict[str, Any] = {"scaled": False, "killed": None, "seen": 0, "next_read": 0.0, "last_print": 0.0}

        def tick() -> None:
            now = time.monotonic()
            if now < state["next_read"]:
                return
            state["next_read"] = now + 0.2
            seen = self.lines_seen()
            state["seen"] = seen
            if now - state["last_print"] >= 1.0:
                state["last_print"] = now
                self.say(f"sink: {seen}/{total} lines")
            if not state["scaled"] and seen >= total * 0.2:
                state["scaled"] = True
                drv.send(core.scale(spec.name, "transform", self.scale_to, now))
            if self.kill_enabled and state["killed"] is None and seen >= total * 0.45:
                self._kill(core, spec.name, res, state)

        limit = (total / self.rate * 3 if self.rate > 0 else total / 1000) + 30
        drv.run_until(lambda: state["seen"] >= total and self._settled(core, state), limit, tick)
        drv.run_until(lambda: False, 0.5, tick)  # late duplicates, if any, would show up now
        self.section("result")
        self._measure(res, core, state, expected, answer)
        if not self.quiet:
            print(table(core.status(time.monotonic())))

    def _kill(self, core: Orchestrator, service: str, res: Result, state: dict[str, Any]) -> None:
        victim = core.replicas(service)[self.kill_stage][0]
        pid = dime_pid(victim[0], victim[1])
        if pid is None:
            res.notes.append(f"could not find the process of DIME {key_text(victim)}")
            state["killed"] = (victim, None)
            return
        os.kill(pid, signal.SIGKILL)
        self.kill_t = time.monotonic()
        state["killed"] = (victim, self.kill_t)
        self.say(f"KILL: SIGKILL to pid {pid}, DIME {key_text(victim)} ({self.kill_stage})")

    def _settled(self, core: Orchestrator, state: dict[str, Any]) -> bool:
        if not self.kill_enabled or state["killed"] is None:
            return not self.kill_enabled
        victim, kill_t = state["killed"]
        if kill_t is None:
            return True
        dead = any(e.key == victim and e.t >= kill_t for e in core.log.of(DimeDead))
        reborn = any(e.key == victim and e.t >= kill_t for e in core.log.of(DimeReborn))
        if dead and whole(core, next(iter(core.services)), [victim], kill_t):
            state.setdefault("whole_t", time.monotonic())
        return dead and reborn and "whole_t" in state

    def _measure(self, res: Result, core: Orchestrator, state: dict[str, Any], expected: dict[int, bytes],
                 answer: dict[str, Any]) -> None:  # fmt: skip
        recs = self.sink_records()
        by_line: dict[int, list[bytes]] = {}
        lineages: dict[int, int] = {}
        for lin, _, payload in recs:
            lineages[lin] = lineages.get(lin, 0) + 1
            no = int(payload.split(b"\t", 1)[0])
            by_line.setdefault(no, []).append(payload)
        res.records = len(recs)
        res.lines = answer["lines"]
        res.distinct = len(by_line)
        res.lost = sum(1 for no in expected if no not in by_line)
        res.duplicated = sum(len(v) - 1 for v in by_line.values())
        res.wrong = sum(1 for no, v in by_line.items() if expected.get(no) != v[0])
        words = sum(int(v[0].split(b"\t")[1]) for v in by_line.values())
        crcs = sum(int(v[0].split(b"\t")[2]) for v in by_line.values())
        exact = words == answer["words"] and crcs == answer["checksum_sum"]
        res.ok = res.lost == 0 and res.duplicated == 0 and res.wrong == 0 and exact
        self.say(f"sink records: {res.records}; distinct lines: {res.distinct}/{res.lines}")
        self.say(f"words {words} (answer {answer['words']}), checksum sum {crcs} (answer {answer['checksum_sum']})")
        self.say(f"items lost: {res.lost}, duplicated: {res.duplicated}, wrong: {res.wrong}")
        if self.absorbed:
            self.say(f"sink: {self.absorbed} replayed record(s) committed again on another server, kept once")
        times = sorted(t for _, t, _ in recs)
        if len(times) > 1 and times[-1] > times[0]:
            res.items_per_s = (len(times) - 1) / (times[-1] - times[0])
            if self.rate > 0:
                source = f"source {self.rate} lines/s"
            else:
                x = res.items_per_s / OLD_RATE
                source = f"source unthrottled; {x:.0f}x the {OLD_RATE} lines/s it was once paced at"
            self.say(f"sink: {res.items_per_s:,.0f} items/s, first to last record ({source})")
        killed = state["killed"]
        if killed is None or killed[1] is None:
            res.false_deaths = len(core.log.of(DimeDead))
        else:
            victim, kill_t = killed
            # After the kill only: a busy host may have had the same DIME declared dead (and reset) before.
            dead = [e for e in core.log.of(DimeDead) if e.key == victim and e.t >= kill_t]
            done = [e for e in core.log.of(RepairDone) if e.dead == victim and e.t >= kill_t]
            res.false_deaths = sum(1 for e in core.log.of(DimeDead) if e.t < kill_t or e.key != victim)
            res.reborn = any(e.key == victim for e in core.log.of(DimeReborn))
            if dead:
                res.detection = dead[0].t - kill_t
                self.say(f"detection: {res.detection * 1e3:.0f} ms from the kill to the confirmed death")
            if done:
                res.repair = done[0].t - kill_t
                self.say(f"repair: {res.repair * 1e3:.0f} ms from the kill to the replacement running and wired")
            elif "whole_t" in state:  # its replacement died before it ran, and was replaced in turn
                res.repair = state["whole_t"] - kill_t
                self.say(f"repair: {res.repair * 1e3:.0f} ms from the kill to the service whole again"
                         " (a replacement was replaced in turn)")  # fmt: skip
            times = sorted(t for _, t, _ in recs if kill_t - 0.5 <= t <= kill_t + 3.0)
            gaps = [(b - a, a) for a, b in itertools.pairwise(times) if b >= kill_t]
            if gaps:
                res.sink_gap = max(gaps)[0]
                self.say(f"sink: longest pause in its records around the kill: {res.sink_gap * 1e3:.0f} ms")
            self.say(f"killed DIME reborn (new epoch) and back in the pool: {'yes' if res.reborn else 'no'}")
        if res.false_deaths and state.get("note_false", True):
            res.notes.append(f"{res.false_deaths} DIME(s) declared dead without being killed (a busy host); RESET")
        self.say("ANSWER EXACT" if res.ok else "ANSWER NOT EXACT")

    def _picture(self, core: Orchestrator, drv: Driver, res: Result) -> Path:
        path = self.out_dir / "demo-timeline.png"
        timeline.draw(
            path,
            self.t0,
            drv.heartbeats or [],
            list(core.log),
            self.sink_records(),
            self.kill_t,
            items_per_s=res.items_per_s,
        )
        return path


def whole(core: Orchestrator, service: str, victims: list[DimeKey], since: float) -> bool:
    """Whether ``service`` is whole again after ``victims`` died at ``since``: every stage has the replicas it
    wants, all running and wired, and none of the victims' replicas is left.  A replacement may itself die
    before it runs (a false death on a loaded host) and be replaced in turn: then this holds when the last
    replacement runs, where a RepairDone naming a victim never comes."""
    svc = core.services[service]
    for st in svc.spec.stages:
        reps = svc.live(st.name)
        if len(reps) < svc.want[st.name] or not all(r.announced for r in reps):
            return False
    # (a victim reborn may serve again: only the replicas placed before the kill count)
    return not any(r.key in victims and r.placed_at <= since for r in svc.replicas)


class DemoError(RuntimeError):
    """The demo could not run (processes did not come up); the message carries their logs."""


def expected_results(spec: ServiceSpec, passes: int = 1) -> dict[int, bytes]:
    """Each line's transform output, computed here with the package's own stage functions (``passes`` times
    through the corpus, line numbers counting on)."""
    assert spec.package is not None
    import importlib.util

    loc = spec.package / "stages.py"
    mod_spec = importlib.util.spec_from_file_location("pxorch_demo_stages", loc)
    assert mod_spec is not None and mod_spec.loader is not None
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    out = {}

    class Ctx:
        params: ClassVar[dict[str, Any]] = {"work_us": 0}

    lines = (spec.package / "corpus.txt").read_text("utf-8").splitlines()
    for i in range(len(lines) * passes):
        parsed = next(mod.parse(f"{i}\t{lines[i % len(lines)]}".encode(), Ctx()))
        out[i] = next(mod.transform(parsed, Ctx()))
    return out


def package_copy(src: Path, dst: Path, rate: int, passes: int, work_us: int | None) -> Path:
    """A copy of a package directory with the source's rate and passes (and the transform's work) in its
    manifest; the same inputs give the same files, so :func:`pxproto.package.pack` gives the same archive."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    man = dst / "service.toml"
    text = man.read_text()
    text = re.sub(r"rate = \d+", f"rate = {rate}, passes = {passes}", text, count=1)
    if work_us is not None:
        text = re.sub(r"work_us = \d+", f"work_us = {work_us}", text, count=1)
    man.write_text(text)
    return dst


def dime_pid(mac: bytes, dime: int) -> int | None:
    """The pid of the pxkernel DIME process for (mac, dime), found in /proc."""
    return find_dime(mac, dime)


WORKDIR_PREFIX = "pxorch-demo-"


def choose_workdir(workdir: Path | None) -> Path:
    """``workdir`` (created if missing), or a fresh ``pxorch-demo-*`` directory in the system's temporary
    directory: a run never writes into the source tree, and two runs never share state."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def attempt(demo: Demo, command: str) -> Result | None:
    """Run ``demo``; if it cannot (a :class:`DemoError`), say why and where its logs are, and return None."""
    try:
        return demo.run()
    except DemoError as exc:
        print(f"pxorch {command}: {exc}", file=sys.stderr)
        print(f"workdir: {demo.wd} (logs)", file=sys.stderr)
        return None


def main(out_dir: str | None = None, workdir: Path | None = None, demo_class: type[Demo] | None = None,
         **kw: Any) -> int:  # fmt: skip
    demo = (demo_class or Demo)(Path(out_dir) if out_dir else None, workdir=workdir, **kw)
    res = attempt(demo, "demo")
    if res is None:
        return 1
    print()
    print(f"capture: {res.capture}")
    if res.picture:
        print(f"timeline: {res.picture}")
    for n in res.notes:
        print(f"note: {n}")
    print(f"workdir: {demo.wd}")
    return 0 if res.ok else 1


__all__ = ["Demo", "DemoError", "Result", "attempt", "choose_workdir", "main"]
