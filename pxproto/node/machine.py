"""One DIME's FCAPS machine, sans I/O: frames and a ``now`` in, frames, MICE batches and timers out.

Everything a DIME decides lives here and in the two modules it composes:
:mod:`pxproto.node.fcaps` (the 20 command handlers, one table) and
:mod:`pxproto.node.channels` (data channels, the item flow, the MICE's queue).
The machine authenticates and dispatches signaling, keeps the counters and
thresholds, raises faults, and decides when heartbeats go and what they carry.

It opens no socket, forks nothing and reads no clock: the driver
(:mod:`pxproto.node.dime` for a real DIME process, :mod:`pxproto.sim` for the
orchestrator's simulation) passes ``now``, feeds frames (:meth:`DimeMachine.on_frame`),
MICE output (:meth:`DimeMachine.mice_message`) and timers (:meth:`DimeMachine.handle_timer`),
and sends what :meth:`DimeMachine.take_outbox` returns, each frame with its route.
What only the host can do (fork a MICE, read CPU time, fetch a package, bump the
epoch on disk) goes through the small :class:`Host` interface.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

from pxproto.dime.channel import ChannelBroken, MessageReceived, WireOutput
from pxproto.dime.endpoint import BROADCAST_ADDRESS, Address, Output, frame_to
from pxproto.dime.heartbeat import HeartbeatEmitter
from pxproto.dime.keys import AccessList, KeyRing
from pxproto.dime.signaling import Requester, Responder, RetransmitPolicy, text_tlv
from pxproto.errors import ProtocolError
from pxproto.fastpath import decode, encode  # compiled when built, else the twin: same answers
from pxproto.node import fastrx
from pxproto.node.beat import HeartbeatSender
from pxproto.node.channels import CLEAR_ONLY, DATA_MIN, ChannelPlane
from pxproto.node.memory import MemoryAccount
from pxproto.package import Manifest, Stage
from pxproto.signing import VerifyKeys
from pxproto.wire.codes import DIME_ALL, Command, CounterId, DimeState, FaultCode, FrameClass, Op, Status, TlvType
from pxproto.wire.frame import Data, Frame, Sealed, Signaling, Tlv

_FRAMES_RX, _BYTES_RX = CounterId.FRAMES_RX, CounterId.BYTES_RX  # (counted for every frame)
_FRAMES_TX, _BYTES_TX = CounterId.FRAMES_TX, CounterId.BYTES_TX

BEAT_COLLECT = 0.002
"""Seconds after an armed heartbeat's deadline at which the loop collects it (and arms the next)."""
BEAT_ARM_LEAD = 0.02
"""With no beat armed, the loop builds and arms the next this long (at most half a period) before it is due."""
BEAT_ARM_MIN = 0.001
"""An armed heartbeat needs at least this much time before its deadline; else the loop sends it."""

Route = Literal["relay", "direct", "beat"]
"""How the driver sends a frame: ``relay`` through the server; ``direct`` straight on the wire when the
DIME has it (else the relay, counting WIRE_FALLBACK); ``beat`` a heartbeat on the wire (an error counts
TX_DROPPED). Without a wire of its own the machine only says ``relay``."""


@dataclass
class Loaded:
    """What LOAD prepared: the stage START will run."""

    service: int
    stage: int
    name: str
    path: Path
    spec: Stage


@dataclass
class Mice:
    """The running MICE as the machine sees it (the driver owns its process and socket)."""

    pid: int
    service: int
    stage: int
    name: str
    baseline: int = 0
    """Its memory before it ran a stage (READY record), bytes."""
    eof: bool = False
    fault: tuple[int, str] | None = None
    pending_tx: deque[Any] = field(default_factory=deque)
    """Record batches for the MICE, waiting for the driver to send them (bytes, or a list of parts: feed_mice)."""


class Host(Protocol):
    """What the machine asks of whoever runs it."""

    def log(self, text: str) -> None: ...

    def next_epoch(self) -> int:
        """The next epoch of this DIME (kept across restarts)."""
        ...

    def fetch(self, digest: bytes, size: int, sig: bytes, key: VerifyKeys | None) -> tuple[Path, Manifest]:
        """The package LOAD names, verified and unpacked (raises :class:`pxproto.package.PackageError`)."""
        ...

    def start_mice(self, loaded: Loaded, first: int, epoch: int, limit: int) -> int:
        """Start the loaded stage's MICE (a source from item ``first``); its pid."""
        ...

    def stop_mice(self, m: Mice) -> None:
        """Stop the MICE and wait (briefly) for it to end."""
        ...

    def relimit(self, m: Mice, chunks: int) -> None: ...

    def cpu_ns(self, m: Mice | None) -> tuple[int, int]:
        """CPU time of (the DIME itself, its MICE), nanoseconds."""
        ...

    def mice_mem_chunks(self, m: Mice) -> int | None:
        """Chunks the MICE uses now (None: unknown)."""
        ...

    # The orchestrator's simulation models the data plane: these tell it what the machine decided.
    def wired(self, channel: int, output: bool, peer: Address, now: float) -> None: ...

    def unwired(self, channel: int, output: bool, now: float) -> int:
        """Outputs the host's own data plane queued again (added to REPLAYED)."""
        ...

    def channels_cleared(self) -> None: ...

    def queues(self) -> tuple[int, int] | None:
        """(items waiting for the MICE, outputs waiting) when the host's data plane holds them."""
        ...

    def source_resume(self) -> int | None: ...


class OwnChannels:
    """The data-plane hooks of a :class:`Host` whose machine's own channels carry the data: nothing to do."""

    def wired(self, channel: int, output: bool, peer: Address, now: float) -> None:
        pass

    def unwired(self, channel: int, output: bool, now: float) -> int:
        return 0

    def channels_cleared(self) -> None:
        pass

    def queues(self) -> tuple[int, int] | None:
        return None

    def source_resume(self) -> int | None:
        return None


class UnmeteredMice(OwnChannels):
    """Host hooks for a MICE with no process to meter (sans-I/O drivers: tests, benches): no limit to set,
    no CPU or memory to read."""

    def relimit(self, m: Mice, chunks: int) -> None:
        pass

    def cpu_ns(self, m: Mice | None) -> tuple[int, int]:
        return 0, 0

    def mice_mem_chunks(self, m: Mice) -> int | None:
        return None


WINDOW_BYTES = 160 << 10
"""Bytes a channel may have unacknowledged by default: what a default socket buffer (212 KiB) holds; a DIME on a UDP
wire takes what its socket holds instead, up to 4 MiB (:func:`pxproto.node.dime.wire_credit`)."""


def credit_for(mtu: int, window: int = WINDOW_BYTES) -> int:
    """Credit, in fragments, for a wire's MTU and ``window`` bytes unacknowledged: 16..256 (4 when 16 pass it)."""
    return max(min(16, max(4, window // mtu)), min(256, window // mtu))


@dataclass
class MachineConfig:
    local: Address
    mem_chunks: int = 64
    heartbeat_ms: int = 100
    keys: dict[int, bytes] = field(default_factory=dict)
    verify_keys: dict[int, bytes] = field(default_factory=dict)
    """Ed25519 public keys package signatures are checked with (none: LOAD refused unless ``insecure``)."""
    insecure: bool = False
    """Started ``--insecure`` (no cluster key): packages are run unsigned."""
    mtu: int = 1500
    encrypt: tuple[int, ...] = ()
    """Frame classes (FrameClass values) this DIME sends encrypted (``pxkernel --encrypt``); needs a key."""
    has_wire: bool = False
    """Whether the DIME sends on the wire itself (then the server gets a copy of each heartbeat)."""
    has_store: bool = False
    """Whether the kernel was given a central store (LOAD needs one)."""
    leader_fence: Callable[[int], int] | None = None
    """The server-wide leader fence: raise it to the given LEADER_EPOCH if newer, return what it was before
    (:func:`pxproto.node.state.raise_leader_fence`); None: this DIME's own memory only."""


class DimeMachine:
    """The FCAPS machine of one DIME."""

    def __init__(self, cfg: MachineConfig, host: Host) -> None:
        self.cfg = cfg
        self.host = host
        self.local = cfg.local
        self.mac = cfg.local.mac
        self.epoch = host.next_epoch()
        self.state = DimeState.BOOTING
        self.keyring = KeyRing(dict(cfg.keys), epoch=self.epoch, encrypt=cfg.encrypt)
        self.acl = AccessList()
        self.mem = MemoryAccount(limit=cfg.mem_chunks)
        self.hb = HeartbeatEmitter(self.local, self.epoch, period=cfg.heartbeat_ms / 1000, state=DimeState.BOOTING)
        self.hb.stop()  # the first one goes as soon as the driver runs the timers
        self.armed: tuple[float, bytes] | None = None
        """The next heartbeat (deadline, signed bytes) armed on the sender thread."""
        self.beater: HeartbeatSender | None = None
        self.retransmit_ms = 50
        self.credit_window = credit_for(cfg.mtu)
        self.log_level = 1
        self.counters: Counter[int] = Counter()
        self.reasons: Counter[str] = Counter()
        self.thresholds: dict[int, int] = {}
        self.raised: set[int] = set()
        self.loaded: Loaded | None = None
        self.mice: Mice | None = None
        self.manager: Address | None = None
        self.leader_epoch = 0
        """The highest LEADER_EPOCH any request carried: requests from an older leader are refused (fencing)."""
        self.running = True
        self.outbox: list[tuple[bytes, Route]] = []
        self.plane = ChannelPlane(self)
        from pxproto.node.fcaps import HANDLERS

        self.responder = Responder(self.local, {c: partial(h, self) for c, h in HANDLERS.items()}, cache_ttl=30.0)
        self.requester = Requester(self.local, RetransmitPolicy(retries=4), first_req_id=self.epoch << 16)
        self.cpu_mark: tuple[float, int] = (0.0, 0)
        self.cpu_permille = 0
        self.now = 0.0
        """The time of the frame or timer being handled (handlers read it)."""

    def start(self, now: float) -> None:
        """The driver runs: the DIME is free, its first heartbeat due at once."""
        self.state = DimeState.FREE
        self.now = now
        self.cpu_mark = (now, self.cpu_ns())

    # ------------------------------------------------------------------ transmit

    def send_raw(self, raw: bytes, route: Route = "relay") -> None:
        if route != "beat":
            self.counters[CounterId.FRAMES_TX] += 1
            self.counters[CounterId.BYTES_TX] += len(raw)
        if route == "direct" and (not self.cfg.has_wire or raw[:6] == self.mac):
            route = "relay"
        self.outbox.append((raw, route))

    def take_outbox(self) -> list[tuple[bytes, Route]]:
        out, self.outbox = self.outbox, []
        return out

    def tx(self, frames: Iterable[Frame]) -> None:
        for f in frames:
            # Signaling and heartbeats are signed; data frames are not (their fragments fill the MTU);
            # the classes of --encrypt are sealed instead (the AEAD mode, pxproto.wire.aead).
            data = isinstance(f.body, Data)
            raw = self.keyring.protect(encode(f), f.cls)
            self.send_raw(raw, "direct" if data else "relay")

    def out(self, out: Output | WireOutput) -> None:
        """Send what a machine put out (``*_wire`` DATA frames as they are, or sealed), take its events."""
        if not isinstance(out, WireOutput):
            self.tx(out.frames)
        elif out.frames and self.keyring.enabled and FrameClass.DATA in self.keyring.encrypt:
            for raw in out.frames:
                self.send_raw(self.keyring.seal_raw(raw), "direct")
        elif out.frames:  # send_raw(raw, "direct") of each, counted once for the lot
            self.counters[_FRAMES_TX] += len(out.frames)
            self.counters[_BYTES_TX] += sum([len(raw) for raw in out.frames])
            mac, wire = self.mac, self.cfg.has_wire
            self.outbox += [(raw, "direct" if wire and raw[:6] != mac else "relay") for raw in out.frames]
        for ev in out.events:
            if isinstance(ev, MessageReceived):
                self.plane.message(ev)
            elif isinstance(ev, ChannelBroken):
                self.fault(FaultCode.CHANNEL_BROKEN, f"channel {ev.channel}: dime {ev.peer.dime} stopped answering")
                if ev.channel in self.plane.outputs:  # what it had not delivered goes to the other outputs now
                    self.plane.requeue(ev.channel)
                    self.plane.pump(self.now)

    # ------------------------------------------------------------------ receive

    def on_frame(self, raw: bytes, now: float) -> None:
        self.now = now
        c = self.counters
        c[_FRAMES_RX] += 1
        c[_BYTES_RX] += len(raw)
        if raw[12:14] == self.plane.data_type and len(raw) >= DATA_MIN and not raw[15] & CLEAR_ONLY:
            self.plane.data_wire(raw, now)  # clear DATA: to its channel end as bytes, read in C (no Frame)
            return
        if not self.keyring.enabled and (self.acl.entries == {} or self.acl.allows(raw[6:12], Command.PING)):
            reply = fastrx.ping_reply(raw, self.epoch)  # a ping: answered in C, no Frame built
            if reply is not None:
                self.send_raw(reply)
                return
        try:
            frame = decode(raw)
        except ProtocolError as exc:
            self.counters[CounterId.REJECTED_MALFORMED] += 1
            self.reasons[f"malformed:{exc.field}"] += 1
            return
        opened = isinstance(frame.body, Sealed)
        if opened:  # the AEAD mode: opened (tag and replay window) before anything reads the body
            got = self.keyring.open_frame(frame, raw, now, decode)
            if isinstance(got, str):
                cid = CounterId.REJECTED_REPLAY if got in ("replayed", "late") else CounterId.REJECTED_AUTH
                self.counters[cid] += 1
                self.reasons[f"auth:{got}"] += 1
                return
            frame, raw = got
        body = frame.body
        if isinstance(body, Data):
            self.plane.data(frame, body, now)
        elif isinstance(body, Signaling):
            self._signaling(frame, raw, body, now, opened)
        else:
            self.reasons["ignored_class"] += 1

    def on_frame_guarded(self, raw: bytes, now: float) -> None:
        """Handle one frame; a frame must never end the DIME, so an unexpected error is counted and logged."""
        try:
            self.on_frame(raw, now)
        except Exception as exc:  # the last resort at the frame boundary; each is a bug to fix
            import traceback

            self.counters[CounterId.FRAME_BUGS] += 1
            self.reasons[f"bug:{type(exc).__name__}"] += 1
            self.log(f"bug: frame {raw[:54].hex()}... raised {exc!r}\n{traceback.format_exc()}")

    def _signaling(self, frame: Frame, raw: bytes, body: Signaling, now: float, opened: bool = False) -> None:
        if self.keyring.enabled and not opened:
            if frame.auth is None:
                self.counters[CounterId.REJECTED_UNAUTHENTICATED] += 1
                return
            why = self.keyring.check(
                raw, frame.src_mac, frame.src_dime, frame.auth.key_id, frame.auth.counter, frame.padding, now
            )
            if why is not None:
                cid = CounterId.REJECTED_REPLAY if why in ("replayed", "late") else CounterId.REJECTED_AUTH
                self.counters[cid] += 1
                self.reasons[f"auth:{why}"] += 1
                return
        if body.op is Op.RESPONSE:
            self.out(self.requester.receive(frame, now))
            return
        if not self.acl.allows(frame.src_mac, body.cmd):
            self.counters[CounterId.REJECTED_ACL] += 1
            reply = Signaling(body.cmd, Op.RESPONSE, body.req_id, Status.DENIED, (text_tlv("access list"),))
            src = Address(frame.src_mac, frame.src_dime, frame.src_thread)
            self.tx([frame_to(Address(self.mac, self.local.dime, frame.dst_thread), src, reply)])
            return
        fence = body.param(TlvType.LEADER_EPOCH)
        if isinstance(fence, int):
            if fence > self.leader_epoch and self.cfg.leader_fence is not None:
                # Newer than this DIME knows: the server's fence (its other DIMEs, this DIME's former lives)
                # may know newer still; it is raised to this one when this one is the newest.
                self.leader_epoch = max(self.leader_epoch, self.cfg.leader_fence(fence))
            if fence < self.leader_epoch:
                self._fenced(frame, body, "stale leader epoch")
                return
            self.leader_epoch = fence
        life = body.param(TlvType.EPOCH)
        if isinstance(life, int) and life != self.epoch:
            # Meant for another life of this DIME: a command retransmitted past its restart (the orchestrator had
            # not seen the death yet) must not wire, load or start anything in this one.
            self._fenced(frame, body, f"addressed to epoch {life}, this is epoch {self.epoch}")
            return
        self.out(self.responder.receive(frame, now))

    def _fenced(self, frame: Frame, body: Signaling, why: str) -> None:
        """Refuse a fenced request: DENIED, with this DIME's epoch."""
        self.counters[CounterId.REJECTED_FENCED] += 1
        params = (text_tlv(why), Tlv(TlvType.EPOCH, self.epoch))
        reply = Signaling(body.cmd, Op.RESPONSE, body.req_id, Status.DENIED, params)
        src = Address(frame.src_mac, frame.src_dime, frame.src_thread)
        self.tx([frame_to(Address(self.mac, self.local.dime, frame.dst_thread), src, reply)])

    # ------------------------------------------------------------------ the MICE

    def start_mice(self, first: int = 0) -> None:
        assert self.loaded is not None
        ld = self.loaded
        limit = self.mem.limit
        pid = self.host.start_mice(ld, first, self.epoch, limit)
        self.mice = Mice(pid, ld.service, ld.stage, ld.name)  # baseline comes in its READY record
        self.plane.mice_started(first)
        self.state = DimeState.BUSY
        self.log(f"MICE {ld.name} started (pid {pid}, limit {limit} chunks)")

    def stop_mice(self, why: str) -> None:
        if self.mice is None:
            return
        self.host.stop_mice(self.mice)
        self.mice_gone(why)

    def mice_gone(self, why: str) -> None:
        m = self.mice
        assert m is not None
        self.mice = None
        back = self.mem.mice_exited(self.now)
        self.log(f"MICE {m.name} ended ({why}); {back} chunks returned, {self.mem.used} in use of {self.mem.limit}")
        self.plane.mice_gone()
        if self.state is DimeState.BUSY:
            self.state = DimeState.FREE

    def mice_exited(self, code: int, text: str, now: float) -> None:
        """The MICE's process ended (``code`` a FaultCode when it failed, else 0)."""
        self.now = now
        self.mice_gone(text or "exited")
        if code:
            self.state = DimeState.FREE
            self.fault(FaultCode(code), text)

    def mice_message(self, msg: bytes | memoryview, now: float) -> None:
        """One record batch the MICE sent (a view is read before this returns)."""
        self.now = now
        self.plane.mice_records(msg, now)

    def mice_batch_done(self, now: float) -> None:
        """The driver read what the MICE had: send what is now sendable, feed it more."""
        self.plane.pump(now)
        self.plane.feed_mice(now)

    def set_limit(self, chunks: int) -> None:
        self.mem.limit = chunks
        if self.mice is not None:
            self.host.relimit(self.mice, chunks)

    # ------------------------------------------------------------------ faults and thresholds

    def fault(self, code: FaultCode, text: str) -> None:
        self.counters[CounterId.FAULTS] += 1
        self.log(f"FAULT {code.name}: {text}")
        dest = self.manager or BROADCAST_ADDRESS
        policy = None if dest.dime != DIME_ALL else RetransmitPolicy(retries=0)
        tlvs = [Tlv(TlvType.FAULT_CODE, int(code)), text_tlv(text)]
        self.out(self.requester.request(dest, Command.FAULT_REPORT, tlvs, now=self.now, policy=policy)[1])

    def counter(self, cid: int) -> int:
        if cid == CounterId.QUEUE_DEPTH:
            q = self.host.queues()
            return sum(q) if q is not None else len(self.plane.mice_queue) + self.plane.flow.queued
        if cid == CounterId.MEM_USED_CHUNKS:
            return self.mem.used
        if cid == CounterId.MEM_PEAK_CHUNKS:
            return self.mem.peak
        if cid == CounterId.MEM_RETURNED_CHUNKS:
            return self.mem.returned
        if cid == CounterId.CPU_NS:
            return self.cpu_ns()
        if cid == CounterId.HEARTBEAT_LATE_MAX_US:  # a peak: reading it starts a new one
            return self.counters.pop(cid, 0)
        if cid == CounterId.DIME_CPU_NS:
            return self.host.cpu_ns(None)[0]
        if cid == CounterId.DUPLICATES:
            return self.plane.flow.duplicates
        if cid == CounterId.RETAINED:
            return len(self.plane.flow.retained)
        if cid == CounterId.SOURCE_RESUME:
            v = self.host.source_resume()
            return v if v is not None else self.plane.flow.source_resume(self.plane.source_first)
        return self.counters[cid]

    def _check_thresholds(self) -> None:
        for cid, limit in self.thresholds.items():
            value = self.counter(cid)
            if value >= limit and cid not in self.raised:
                self.raised.add(cid)
                self.fault(FaultCode.OVERLOAD, f"counter {CounterId(cid).name} = {value} >= threshold {limit}")
            elif value < limit:
                self.raised.discard(cid)

    # ------------------------------------------------------------------ heartbeat and accounting

    def cpu_ns(self) -> int:
        own, mice = self.host.cpu_ns(self.mice)
        return own + mice

    def _sample_load(self, now: float) -> None:
        """Refresh the accounting a heartbeat carries (CPU, memory, queues, rates)."""
        t0, c0 = self.cpu_mark
        c1 = self.cpu_ns()
        if now > t0:
            self.cpu_permille = max(0, min(1000, int((c1 - c0) / ((now - t0) * 1e9) * 1000)))
        period = now - t0
        self.cpu_mark = (now, c1)
        if self.mice is not None:
            used = self.host.mice_mem_chunks(self.mice)
            if used is not None:
                self.mem.sample(now, used)
        p = self.plane
        if p.lat_n:
            self.counters[CounterId.LATENCY_US] = int(p.lat_sum / p.lat_n * 1e6)
            p.lat_sum, p.lat_n = 0.0, 0
        self.counters[CounterId.ITEMS_PER_S] = int(p.done_n / period) if period > 0 else 0
        p.done_n = 0
        rx, tx = self.host.queues() or (len(p.mice_queue), p.flow.queued)
        ld = self.loaded
        self.hb.update(
            state=self.state,
            cpu_permille=self.cpu_permille,
            stage=ld.stage if ld else 0,
            mem_used=self.mem.used,
            mem_limit=self.mem.limit,
            rx_queue=min(rx, 0xFFFFFFFF),
            tx_queue=min(tx, 0xFFFFFFFF),
            service=ld.service if ld else 0,
        )

    def heartbeat_timer(self) -> float:
        """When heartbeat work is next due: collect an armed beat after its deadline, or send one."""
        if self.armed is not None:
            return self.armed[0] + BEAT_COLLECT
        due = self.hb.get_timer()
        if due is None:
            return 0.0  # stopped: a first beat is due at once
        return due - min(BEAT_ARM_LEAD, self.hb.period / 2) if self.beater is not None else due

    def _late(self, seconds: float) -> None:
        late = int(seconds * 1e6)
        self.counters[CounterId.HEARTBEAT_LATE_MAX_US] = max(self.counters[CounterId.HEARTBEAT_LATE_MAX_US], late)

    def heartbeat(self, now: float) -> None:
        """Heartbeat work due at ``now``: see what the sender thread did with the armed beat, arm the next.

        Each beat is built and signed one period ahead and armed on the real-time sender
        (:mod:`pxproto.node.beat`), which sends it on time however busy this core is; the machine
        only collects it afterwards (and has it sent itself if the sender could not).
        """
        self.now = now
        if self.armed is not None:
            at, raw = self.armed
            self.armed = None
            sent, when = self.beater.take() if self.beater is not None else (False, 0.0)
            if not sent:
                self._send_heartbeat(raw)
                self.counters[CounterId.HEARTBEATS_BY_LOOP] += 1
                when = now
            self._late(when - at)
            if self.cfg.has_wire:
                self.send_raw(raw)  # the server's copy, for its discovery table (it does not forward it)
        due = self.hb.get_timer()
        self._sample_load(now)
        if self.beater is not None and due is not None and due > now + BEAT_ARM_MIN:
            frame = self.hb.handle_timer(due).frames[0]  # the beat due then, built now
            self.armed = (due, self._sign(frame))
            self.beater.arm(self.armed[1], due)
        else:  # no sender thread, or late already: send it now
            if due is not None:
                self._late(now - due)
            for f in (self.hb.start(now) if due is None else self.hb.handle_timer(now)).frames:
                self.counters[CounterId.HEARTBEATS_BY_LOOP] += 1
                raw = self._sign(f)
                self._send_heartbeat(raw)
                if self.cfg.has_wire:
                    self.send_raw(raw)
        self._check_thresholds()

    def _sign(self, frame: Frame) -> bytes:
        return self.keyring.protect(encode(frame), frame.cls)

    def _send_heartbeat(self, raw: bytes) -> None:
        """A heartbeat on the wire itself when the DIME has it (the relay could delay it), else via the server."""
        self.send_raw(raw, "beat" if self.cfg.has_wire else "relay")

    def cancel_beat(self) -> None:
        """Take back an armed heartbeat (RESET: the next one carries the new epoch)."""
        if self.armed is not None and self.beater is not None:
            self.beater.take()
        self.armed = None

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        timers = [self.heartbeat_timer(), self.responder.get_timer(), self.requester.get_timer()]
        timers += self.plane.timers()
        return min((t for t in timers if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self.now = now
        if self.heartbeat_timer() <= now:
            self.heartbeat(now)
        t = self.responder.get_timer()
        if t is not None and t <= now:
            self.out(self.responder.handle_timer(now))
        t = self.requester.get_timer()
        if t is not None and t <= now:
            self.out(self.requester.handle_timer(now))
        self.plane.handle_timer(now)

    def log(self, text: str) -> None:
        self.host.log(text)
