"""Simulated servers for testing and measuring the orchestrator, deterministically.

A :class:`SimServer` is one server's kernel as the orchestrator sees it over
the wire: it answers discovery probes, and each of its DIMEs is the node's real
FCAPS machine (:class:`pxproto.node.machine.DimeMachine`): the same command
handlers, counters, thresholds and heartbeat decisions as a DIME process, with
the simulation's clock.  It runs on :class:`~pxproto.dime.simlink.SimNet`, so
every control frame is encoded and decoded, and can be lost, duplicated or
reordered.  This module sits above both the orchestrator and the node: it is the
one place that puts the two together (``pxproto.orch`` imports nothing from the node).

The data plane (:class:`SimPlane`) is a model, not frames: each DIME's machine tells
it (through the :class:`~pxproto.node.machine.Host` interface a :class:`SimDime`
implements) what CONNECT, DISCONNECT, START and STOP decided, and items move between
DIMEs after a delay, with the semantics the orchestrator relies on from the
node kernel (:mod:`pxproto.node.mice`): each item carries a lineage id; a DIME keeps
what it sent on each output channel until the downstream DIME acknowledges it,
and a DIME acknowledges an input only when the output made from it has been
acknowledged downstream in turn (or at once when it made none); DISCONNECT of an output
channel puts that channel's unacknowledged items back at the head of the
DIME's output queue; outputs are balanced round-robin over the connected
channels.  A sink stage (one of ``sinks``) keeps its results, like a kernel
sink in its server's local store: :attr:`SimPlane.collected` is the union of
every sink's results by lineage id, and a result recorded twice (by two sink
DIMEs, after a sink died) is counted in ``duplicates``.
A source reports its first unfinished item (COUNTERS SOURCE_RESUME, the
kernel's counter) and a replacement starts where START's VALUE says.
"""

from __future__ import annotations

import heapq
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pxproto.dime.endpoint import Address, Output, earliest, frame_to
from pxproto.fastpath import decode, encode
from pxproto.node.machine import DimeMachine, Loaded, MachineConfig, Mice, UnmeteredMice
from pxproto.package import Manifest, Stage
from pxproto.signing import VerifyKeys
from pxproto.wire.codes import DIME_ALL, Command, DimeState, DiscoveryOp, Op, TlvType
from pxproto.wire.frame import BROADCAST, DimeInfo, Discovery, Frame, Signaling

Item = tuple[int, int]
"""(lineage id, value)."""
StageFn = Callable[[int], int | None]
"""A stage: one value in, one value out (or None: the item is consumed, e.g. filtered)."""


@dataclass(eq=False)
class SimDime(UnmeteredMice):
    """One simulated DIME: the real FCAPS machine, and its MICE's queues in the data plane model.

    It is the machine's :class:`~pxproto.node.machine.Host`: a MICE "runs" by being marked running
    in the model, and the model learns the channels CONNECT and DISCONNECT wire.
    """

    server: SimServer
    dime: int
    initial_period: float = 0.1
    alive: bool = True
    boot_at: float = 0.0
    """When the machine starts (its first heartbeat)."""
    booted: bool = False
    service: int = 0
    stage: int = -1
    running: bool = False
    outputs: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    """Output channel -> peer (mac, dime)."""
    rr: int = 0
    inbox: deque[tuple[tuple[bytes, int], int, Item]] = field(default_factory=deque)
    """(sender, channel, item) waiting to be processed."""
    outbox: deque[Item] = field(default_factory=deque)
    unacked: dict[int, dict[int, Item]] = field(default_factory=dict)
    """Output channel -> items sent on it that downstream has not acknowledged."""
    seen: set[int] = field(default_factory=set)
    """Lineages handed to the MICE already: a copy is acknowledged and dropped (the kernel's rule)."""
    pending: dict[int, tuple[tuple[bytes, int], int]] = field(default_factory=dict)
    """Lineage -> (sender, channel) of an input whose output is not yet acknowledged downstream."""
    busy_until: float = 0.0
    next_source: int = 0
    epochs: int = 0
    load_name: str = ""
    """MICE_NAME of the LOAD being answered (the simulated store has every stage LOAD asks for)."""
    machine: DimeMachine = field(init=False)

    def __post_init__(self) -> None:
        self.machine = self._machine()

    def _machine(self) -> DimeMachine:
        cfg = MachineConfig(
            Address(self.server.mac, self.dime, 0),
            mem_chunks=self.server.mem_chunks,
            heartbeat_ms=round(self.initial_period * 1000),
            has_store=True,
            insecure=True,  # no real package is fetched or run here: LOAD needs no verification key
            leader_fence=self.server.raise_fence,
        )
        return DimeMachine(cfg, self)

    @property
    def key(self) -> tuple[bytes, int]:
        return (self.server.mac, self.dime)

    @property
    def period(self) -> float:
        return self.machine.hb.period

    @property
    def epoch(self) -> int:
        return self.machine.epoch

    @property
    def state(self) -> DimeState:
        return self.machine.state

    def reset(self) -> None:
        """The model forgets the MICE's queues and channels."""
        self.running = False
        self.outputs.clear()
        self.inbox.clear()
        self.outbox.clear()
        self.unacked.clear()
        self.pending.clear()
        self.seen.clear()
        self.next_source = 0

    # ------------------------------------------------------------- the Host the machine asks

    def log(self, text: str) -> None:
        self.server.logs.append((self.dime, text))

    def next_epoch(self) -> int:
        self.epochs += 1
        return self.epochs

    def fetch(self, digest: bytes, size: int, sig: bytes, key: VerifyKeys | None) -> tuple[Path, Manifest]:
        return Path("."), _AnyStage(self.load_name, "1", ())

    def start_mice(self, loaded: Loaded, first: int, epoch: int, limit: int) -> int:
        now = self.machine.now
        self.stage, self.service = loaded.stage, loaded.service
        self.running = True
        self.busy_until = now
        self.next_source = first
        if self.server.plane is not None:
            self.server.plane.wake(now)
        return 100_000 + self.dime

    def stop_mice(self, m: Mice) -> None:
        self.running = False
        self.inbox.clear()
        self.outbox.clear()
        self.unacked = {ch: {} for ch in self.outputs}
        self.pending.clear()
        self.seen.clear()
        self.next_source = 0

    def wired(self, channel: int, output: bool, peer: Address, now: float) -> None:
        if output:
            self.outputs[channel] = (peer.mac, peer.dime)
            self.unacked.setdefault(channel, {})
            if self.server.plane is not None:
                self.server.plane.wake(now)

    def unwired(self, channel: int, output: bool, now: float) -> int:
        if not output or channel not in self.outputs:
            return 0
        self.outputs.pop(channel, None)
        back = self.unacked.pop(channel, {})
        self.outbox.extendleft(reversed(sorted(back.values())))
        if self.server.plane is not None:
            self.server.plane.counters["replayed"] += len(back)
            self.server.plane.wake(now)
        return len(back)

    def channels_cleared(self) -> None:
        self.reset()

    def queues(self) -> tuple[int, int] | None:
        return len(self.inbox), len(self.outbox)

    def source_resume(self) -> int | None:
        held = [lin for items in self.unacked.values() for lin in items] + [lin for lin, _ in self.outbox]
        return min(held, default=self.next_source)


@dataclass(frozen=True)
class _AnyStage(Manifest):
    """The simulated central store's package: every stage index holds the stage LOAD names (``name``)."""

    def stage(self, index: int) -> Stage:
        return Stage(index, self.name, "sim:stage", memory_chunks=0)


class SimServer:
    """One server of simulated DIMEs, driven by a SimNet (it is a ``Machine``)."""

    def __init__(self, mac: bytes, n: int, plane: SimPlane | None = None, *, period: float = 0.1,
                 mem_chunks: int = 16, start: float = 0.0, phase: float = 0.0) -> None:  # fmt: skip
        self.mac = mac
        self.plane = plane
        self.mem_chunks = mem_chunks
        self.logs: list[tuple[int, str]] = []
        self.leader_fence = 0
        """The newest LEADER_EPOCH any of its DIMEs accepted (a kernel keeps it in its state directory)."""
        self.dimes = {d: SimDime(self, d, initial_period=period, boot_at=start + phase) for d in range(n)}
        if plane is not None:
            for dm in self.dimes.values():
                plane.dimes[dm.key] = dm
        self.counters: Counter[str] = Counter()
        self.pending: list[Frame] = []
        self.booted = False

    def raise_fence(self, epoch: int) -> int:
        """:func:`pxproto.node.state.raise_leader_fence`, in memory."""
        before, self.leader_fence = self.leader_fence, max(self.leader_fence, epoch)
        return before

    def boot(self) -> Output:
        """The gratuitous announce a kernel sends when it starts."""
        self.booted = True
        return Output(frames=[self._announce(DiscoveryOp.GRATUITOUS, 0)], timer=self.get_timer())

    def _announce(self, op: DiscoveryOp, probe_id: int) -> Frame:
        infos = tuple(
            DimeInfo(d.dime, d.dime, d.machine.state, d.machine.mem.limit, d.machine.mem.free, d.epoch)
            for d in self.dimes.values()
            if d.alive
        )
        body = Discovery(op, probe_id=probe_id, dimes=infos)
        return frame_to(Address(self.mac, DIME_ALL, 0), Address(BROADCAST, DIME_ALL, 0), body)

    # ------------------------------------------------------------- machine

    def receive(self, frame: Frame, now: float) -> Output:
        out = Output()
        body = frame.body
        if isinstance(body, Discovery) and body.op is DiscoveryOp.PROBE:
            reply = self._announce(DiscoveryOp.ANNOUNCE, body.probe_id)
            reply.dst_mac = frame.src_mac
            out.frames.append(reply)
        elif isinstance(body, Signaling):
            d = self.dimes.get(frame.dst_dime)
            if d is not None and d.alive and d.booted:
                if body.op is Op.REQUEST:
                    self.counters[body.cmd.name] += 1
                    if body.cmd is Command.LOAD:
                        d.load_name = str(body.param(TlvType.MICE_NAME))
                d.machine.on_frame(encode(frame), now)
                d.machine.plane.flush_acks()
                self._drain(d, out)
        out.timer = self.get_timer()
        return out

    @staticmethod
    def _drain(d: SimDime, out: Output) -> None:
        for raw, _route in d.machine.take_outbox():
            out.frames.append(decode(raw))

    def get_timer(self) -> float | None:
        return min(
            (t for d in self.dimes.values() if d.alive for t in [d.machine.get_timer() if d.booted else d.boot_at]
             if t is not None),
            default=None,
        )  # fmt: skip

    def handle_timer(self, now: float) -> Output:
        out = Output()
        for d in self.dimes.values():
            if not d.alive:
                continue
            if not d.booted:
                if d.boot_at > now:
                    continue
                d.booted = True
                d.machine.start(now)
            t = d.machine.get_timer()
            if t is not None and t <= now:
                d.machine.handle_timer(now)
                self._drain(d, out)
        out.timer = self.get_timer()
        return out

    # ------------------------------------------------------------- faults

    def kill(self, dime: int) -> None:
        """The DIME's process dies: no heartbeats, no answers, its queues are lost."""
        d = self.dimes[dime]
        d.alive = False
        d.reset()

    def restart(self, dime: int, now: float) -> None:
        """The kernel starts the DIME again, with a new epoch, free."""
        d = self.dimes[dime]
        d.reset()
        d.stage, d.service = -1, 0
        d.alive = True
        d.machine = d._machine()
        d.booted = False
        d.boot_at = now


class SimPlane:
    """The simulated data plane of every SimServer (also a ``Machine``: it has timers, takes no frames)."""

    def __init__(self, stages: dict[int, StageFn | None], items: int, *, source_rate: float = 1000.0,
                 cost: float = 0.0005, delay: float = 0.0005, sinks: set[int] | None = None) -> None:  # fmt: skip
        self.stages = stages
        """Stage index -> function of a value to output values; None for the source."""
        self.items = items
        self.source_rate = source_rate
        self.cost = cost
        self.stage_cost: dict[int, float] = {}
        """Per-stage processing time, overriding ``cost``."""
        self.delay = delay
        self.sinks = sinks if sinks is not None else {max(stages)}
        self.dimes: dict[tuple[bytes, int], SimDime] = {}
        self.collected: dict[int, int] = {}
        self.duplicates = 0
        self.collect_times: list[float] = []
        """When each new lineage reached a sink."""
        self.receive_times: list[float] = []
        """When a sink took any item (copies included)."""
        self._flight: list[tuple[float, int, tuple[bytes, int], tuple[bytes, int], int, Item]] = []
        self._n = 0
        self.counters: Counter[str] = Counter()
        self._wake_at: float | None = 0.0

    def wake(self, now: float) -> None:
        self._wake_at = now if self._wake_at is None else min(self._wake_at, now)

    def receive(self, frame: Frame, now: float) -> Output:
        return Output()

    def get_timer(self) -> float | None:
        t = self._wake_at
        if self._flight:
            t = earliest(t, self._flight[0][0])
        for d in self.dimes.values():
            if d.alive and d.running and (d.inbox or (d.outbox and d.outputs) or self._source_due(d)):
                t = earliest(t, d.busy_until)
        return t

    def _source_due(self, d: SimDime) -> bool:
        return self.stages.get(d.stage, 0) is None and d.next_source < self.items and len(d.outbox) < 64

    def handle_timer(self, now: float) -> Output:
        self._wake_at = None
        while self._flight and self._flight[0][0] <= now:
            _, _, src, dst, ch, item = heapq.heappop(self._flight)
            self._arrive(src, dst, ch, item, now)
        for d in list(self.dimes.values()):
            if not (d.alive and d.running) or d.busy_until > now:
                continue
            fn = self.stages.get(d.stage, 0)
            if fn is None and self._source_due(d):
                d.outbox.append((d.next_source, d.next_source))
                d.next_source += 1
                d.busy_until = now + 1.0 / self.source_rate
            elif fn is not None and fn != 0 and d.inbox:
                sender, ch, (lineage, value) = d.inbox.popleft()
                if lineage in d.seen:  # a replayed copy: this DIME still holds what it made of the first
                    self.counters["dropped_copies"] += 1
                    self._ack(sender, ch, lineage)
                    continue
                d.seen.add(lineage)
                result = fn(value)  # type: ignore[operator]
                if d.stage in self.sinks:
                    if result is not None:
                        self._collect(lineage, result, now)
                    self._ack(sender, ch, lineage)
                elif result is None:
                    self._ack(sender, ch, lineage)
                else:
                    d.pending[lineage] = (sender, ch)
                    d.outbox.append((lineage, result))
                d.busy_until = now + self.stage_cost.get(d.stage, self.cost)
            self._send(d, now)
        return Output(timer=self.get_timer())

    def _send(self, d: SimDime, now: float) -> None:
        chans = sorted(d.outputs)
        while d.outbox and chans:
            item = d.outbox.popleft()
            ch = chans[d.rr % len(chans)]
            d.rr += 1
            d.unacked.setdefault(ch, {})[item[0]] = item
            self._n += 1
            heapq.heappush(self._flight, (now + self.delay, self._n, d.key, d.outputs[ch], ch, item))

    def _collect(self, lineage: int, value: int, now: float) -> None:
        self.receive_times.append(now)
        if lineage in self.collected:
            self.duplicates += 1
        else:
            self.collected[lineage] = value
            self.collect_times.append(now)

    def _ack(self, key: tuple[bytes, int], ch: int, lineage: int) -> None:
        """``key``'s item ``lineage`` on channel ``ch`` is safe downstream; pass the acknowledgement up."""
        while True:
            d = self.dimes.get(key)
            if d is None or not d.alive:
                return
            if d.unacked.get(ch, {}).pop(lineage, None) is None:
                return
            up = d.pending.pop(lineage, None)
            if up is None:
                return
            key, ch = up

    def _arrive(self, src: tuple[bytes, int], dst: tuple[bytes, int], ch: int, item: Item, now: float) -> None:
        d = self.dimes.get(dst)
        if d is None or not d.alive or not d.running:
            self.counters["lost_in_flight"] += 1  # stays unacknowledged upstream: replayed on DISCONNECT
            return
        d.inbox.append((src, ch, item))


ORCH_MAC = b"\x02\x00\x00\x00\x00\xfe"
PLANE_MAC = b"\x02\x00\x00\x00\x00\xfd"


def server_mac(i: int) -> bytes:
    return bytes([2, 0, 0, 1, (i >> 8) & 0xFF, i & 0xFF])


class SimCluster:
    """An orchestrator, ``servers`` simulated servers of ``dimes`` DIMEs and a data plane, on one SimNet."""

    def __init__(self, servers: int = 3, dimes: int = 4, *, stages: dict[int, StageFn | None] | None = None,
                 items: int = 1000, period: float = 0.05, loss: float = 0.0, reorder: float = 0.0,
                 duplicate: float = 0.0, seed: int = 1, config: Any = None, cost: float = 0.0005,
                 source_rate: float = 1000.0, net: Callable[..., Any] | None = None) -> None:  # fmt: skip
        from pxproto.dime.simlink import SimLink, SimNet
        from pxproto.orch.core import Orchestrator

        self.loss = loss

        def link(src: bytes, dst: bytes) -> SimLink:
            rng_seed = zlib.crc32(bytes([seed & 0xFF]) + src + dst)
            return SimLink(rng_seed, loss=loss, reorder=reorder, duplicate=duplicate, delay=0.0003, jitter=0.0002)

        self.net: SimNet = (net or SimNet)(link)
        """``net``: another SimNet class (e.g. :class:`pxproto.simfleet.FleetNet` for a thousand DIMEs)."""
        self.plane = SimPlane(stages or DEMO_STAGES, items, cost=cost, source_rate=source_rate)
        self.orch = Orchestrator(ORCH_MAC, config)
        self.net.add(ORCH_MAC, self.orch)
        self.net.add(PLANE_MAC, self.plane)
        self.servers: list[SimServer] = []
        for i in range(servers):
            s = SimServer(server_mac(i), dimes, self.plane, period=period, phase=0.007 * i)
            self.servers.append(s)
            self.net.add(s.mac, s)
            self.net.emit(s.mac, s.boot())

    def run(self, seconds: float) -> None:
        self.net.run(self.net.now + seconds)

    def run_until(self, cond: Callable[[], bool], limit: float) -> bool:
        end = self.net.now + limit
        while not cond():
            if self.net.now >= end:
                return False
            self.net.run(min(end, self.net.now + 0.01))
        return True

    def emit(self, out: Output) -> None:
        self.net.emit(ORCH_MAC, out)

    def server_of(self, key: tuple[bytes, int]) -> SimServer:
        return next(s for s in self.servers if s.mac == key[0])

    def kill_dime(self, key: tuple[bytes, int]) -> None:
        self.server_of(key).kill(key[1])

    def kill_server(self, mac: bytes) -> None:
        s = next(x for x in self.servers if x.mac == mac)
        for d in s.dimes:
            s.kill(d)
        self.net.kill(mac)

    def restart_dime(self, key: tuple[bytes, int]) -> None:
        self.server_of(key).restart(key[1], self.net.now)

    def expected(self) -> dict[int, int]:
        """What the sinks must hold when every item went through every stage once."""
        order = sorted(k for k in self.plane.stages if self.plane.stages[k] is not None)
        out = {}
        for i in range(self.plane.items):
            v: int | None = i
            for k in order:
                fn = self.plane.stages[k]
                assert fn is not None and v is not None
                v = fn(v)
                if v is None:
                    break
            if v is not None:
                out[i] = v
        return out


DEMO_STAGES: dict[int, StageFn | None] = {0: None, 1: lambda v: v * 3, 2: lambda v: v + 7, 3: lambda v: v}
"""source, parse, transform, sink: the demo workflow's shape with arithmetic stages."""

DEMO_SERVICE = """
[service]
name = "demo"
id = 7

[regulator]
heartbeat_ms = 50
missed = 2
confirm_ms = 8
confirm_tries = 5

[[stage]]
name = "source"

[[stage]]
name = "parse"
inputs = ["source"]

[[stage]]
name = "transform"
inputs = ["parse"]
replicas = 2

[[stage]]
name = "sink"
inputs = ["transform"]
"""
