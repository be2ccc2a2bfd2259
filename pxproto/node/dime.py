"""One DIME: a process pinned to its core running the FCAPS loop beside its MICE.

The loop (single thread, ``selectors``) takes frames from the server process
over a SOCK_SEQPACKET socketpair (one frame per message, both ways), answers
signaling through :class:`pxproto.dime.signaling.Responder`, broadcasts
heartbeats, and runs the data channels (:mod:`pxproto.dime.channel`) of its
MICE.  The MICE is a forked child process (:func:`pxproto.node.mice.run_child`), so
however busy or stuck it is, this loop keeps heartbeating and answering, and
its memory limit kills the MICE, never the DIME.

Channel ids: CONNECT's CHANNEL must be below 0x8000.  Item data flows on
channel ``c`` from upstream to downstream; completions (batches of u64
lineage ids, see :mod:`pxproto.node.mice`) flow back on ``c | 0x8000``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pxproto import package
from pxproto.dime.channel import ChannelBroken, ChannelReceiver, ChannelSender, MessageReceived
from pxproto.dime.endpoint import BROADCAST_ADDRESS, Address, Output, frame_to
from pxproto.dime.heartbeat import HeartbeatEmitter
from pxproto.dime.keys import AccessList, KeyRing
from pxproto.dime.signaling import (
    Requester,
    RequestReceived,
    Responder,
    RetransmitPolicy,
    text_tlv,
)
from pxproto.errors import ProtocolError
from pxproto.fastpath import decode, encode  # compiled when built, else the twin: same answers
from pxproto.node import beat, fastrx, memory, mice, state
from pxproto.node.flow import Flow, Upstream
from pxproto.package import LocalStore
from pxproto.wire.codes import (
    CHUNK_BYTES,
    DIME_ALL,
    Command,
    CounterId,
    DataFlag,
    DimeState,
    Direction,
    FaultCode,
    Op,
    Param,
    Status,
    TlvType,
)
from pxproto.wire.frame import Data, Frame, Signaling, Tlv

COMPLETION_BIT = 0x8000
MICE_INFLIGHT = 512
"""Items handed to the MICE and not yet DONE, at most."""
PAUSE_INPUT = 4096
"""Items waiting for the MICE above which input channels get no credit."""
OUTQ_LIMIT = 4096
"""Outputs waiting for credit above which the MICE's output is not read."""
COMPLETION_BATCH = 160
CHANNEL_ENDS_MAX = 1024
"""Channel ends (inputs, and the completion return of each output) wired at once, at most."""
BEAT_COLLECT = 0.002
"""Seconds after an armed heartbeat's deadline at which the loop collects it (and arms the next)."""
BEAT_ARM_LEAD = 0.02
"""With no beat armed, the loop builds and arms the next this long (at most half a period) before it is due."""
BEAT_ARM_MIN = 0.001
"""An armed heartbeat needs at least this much time before its deadline; else the loop sends it."""
DIME_NICE = -5
"""Scheduling priority of a DIME process when permitted; its MICE is SCHED_IDLE (nice 19 otherwise)."""
FRAME_MAX = 65535
Tlvs = list[Tlv]


@dataclass
class DimeConfig:
    """What the server process tells a DIME process (as JSON on its command line)."""

    dime: int
    core: int
    mac: str
    fd: int
    state_dir: str
    local_store: str
    store: str | None = None
    mem_chunks: int = 64
    heartbeat_ms: int = 100
    keys: dict[str, str] | None = None
    pin: bool = True
    mtu: int = 1500
    wire_fd: int = -1
    """The server's datagram wire socket, shared for sending (-1: send everything through the server)."""


def _u64(v: Any) -> int:
    return int(v) if isinstance(v, int) else 0


class Mice:
    """A running MICE child, seen from its DIME."""

    def __init__(self, pid: int, sock: socket.socket, baseline: int, service: int, stage: int, name: str) -> None:
        self.pid = pid
        self.sock = sock
        self.baseline = baseline
        self.service = service
        self.stage = stage
        self.name = name
        self.started = time.monotonic()
        self.eof = False
        self.fault: tuple[int, str] | None = None
        self.pending_tx: deque[bytes] = deque()
        self.watched = True
        """Whether the DIME's loop waits on this MICE's output (not while outputs wait for credit)."""
        self.batch: list[bytes] = []
        self.batch_size = 0


class Dime:
    """The FCAPS loop of one DIME."""

    def __init__(self, cfg: DimeConfig, sock: socket.socket) -> None:
        self.cfg = cfg
        self.sock = sock
        self.wire = socket.socket(fileno=cfg.wire_fd) if cfg.wire_fd >= 0 else None
        self.mac = state.parse_mac(cfg.mac)
        self.local = Address(self.mac, cfg.dime, 0)
        self.epoch = state.next_epoch(cfg.state_dir, cfg.dime)
        self.state = DimeState.BOOTING
        self.keyring = KeyRing({int(k): bytes.fromhex(v) for k, v in (cfg.keys or {}).items()}, epoch=self.epoch)
        self.acl = AccessList()
        self.mem = memory.MemoryAccount(limit=cfg.mem_chunks)
        self.hb = HeartbeatEmitter(self.local, self.epoch, period=cfg.heartbeat_ms / 1000, state=DimeState.BOOTING)
        self.hb.stop()  # the loop sends the first one as soon as it runs
        self.armed: tuple[float, bytes] | None = None
        """The next heartbeat (deadline, signed bytes) armed on the sender thread."""
        self.beater: beat.HeartbeatSender | None = None
        self.retransmit_ms = 50
        self.credit_window = 256
        self.completions_since = 0.0
        self.log_level = 1
        self.counters: Counter[int] = Counter()
        self.reasons: Counter[str] = Counter()
        self.thresholds: dict[int, int] = {}
        self.raised: set[int] = set()
        self.store = LocalStore(cfg.local_store)
        self.loaded: tuple[int, int, str, Path, package.Stage] | None = None
        self.mice: Mice | None = None
        self.flow = Flow()
        self.source_first = 0
        """The item a source was started at (START's VALUE)."""
        self.mice_queue: deque[tuple[int, bytes]] = deque()
        self.mice_inflight = 0
        self.handed_at: dict[int, float] = {}
        self.lat_sum = 0.0
        self.lat_n = 0
        self.done_n = 0
        self.senders: dict[tuple[int, bytes, int], ChannelSender] = {}
        self.receivers: dict[tuple[int, bytes, int], ChannelReceiver] = {}
        self.inputs: set[tuple[int, bytes, int]] = set()
        """(channel, peer MAC, peer DIME) that CONNECT wired as inputs (and each output's completion return):
        the only senders whose DATA this DIME takes."""
        self.outputs: dict[int, tuple[int, bytes, int]] = {}
        self._rr = 0
        self.completions: dict[Upstream, list[int]] = {}
        self.acks_held: dict[tuple[int, bytes, int], Frame] = {}
        """The latest ack of each input channel, sent once the frames read together are handled."""
        self.manager: Address | None = None
        self.running = True
        self.sel = selectors.DefaultSelector()
        self.responder = Responder(self.local, self._handlers(), cache_ttl=30.0)
        self.requester = Requester(self.local, RetransmitPolicy(retries=4), first_req_id=self.epoch << 16)
        self.cpu_mark = (time.monotonic(), self._cpu_ns())
        self.cpu_permille = 0
        self.started = time.monotonic()

    # ------------------------------------------------------------------ transmit

    def _send_raw(self, raw: bytes, direct: bool = False) -> None:
        """Send a frame: straight on the wire when ``direct`` and possible, else through the server."""
        self.counters[CounterId.FRAMES_TX] += 1
        self.counters[CounterId.BYTES_TX] += len(raw)
        if direct and self.wire is not None and raw[:6] != self.mac:
            try:
                self.wire.send(raw)
                return
            except OSError:  # no room now, or the wire has trouble: the relay takes it
                self.counters[CounterId.WIRE_FALLBACK] += 1
        try:
            self.sock.send(raw)
        except BlockingIOError:
            self.counters[CounterId.TX_DROPPED] += 1  # the server is behind: lost, like on a wire
        except OSError:
            self.running = False

    def _tx(self, frames: Iterable[Frame]) -> None:
        for f in frames:
            raw = encode(f)
            # Signaling and heartbeats are signed; data frames are not (their fragments fill the MTU).
            data = isinstance(f.body, Data)
            if self.keyring.enabled and not data:
                raw = self.keyring.sign_raw(raw)
            self._send_raw(raw, direct=data)

    def _out(self, out: Output) -> None:
        if out.frames:
            self._tx(out.frames)
        for ev in out.events:
            if isinstance(ev, MessageReceived):
                self._message(ev)
            elif isinstance(ev, ChannelBroken):
                self._fault(FaultCode.CHANNEL_BROKEN, f"channel {ev.channel}: dime {ev.peer.dime} stopped answering")
            elif isinstance(ev, RequestReceived):  # a command answered later
                pass

    # ------------------------------------------------------------------ receive

    def on_frame(self, raw: bytes, now: float) -> None:
        self.counters[CounterId.FRAMES_RX] += 1
        self.counters[CounterId.BYTES_RX] += len(raw)
        if not self.keyring.enabled and (self.acl.entries == {} or self.acl.allows(raw[6:12], Command.PING)):
            reply = fastrx.ping_reply(raw, self.epoch)  # a ping: answered in C, no Frame built
            if reply is not None:
                self._send_raw(reply)
                return
        try:
            frame = decode(raw)
        except ProtocolError as exc:
            self.counters[CounterId.REJECTED_MALFORMED] += 1
            self.reasons[f"malformed:{exc.field}"] += 1
            return
        body = frame.body
        if isinstance(body, Data):
            self._data(frame, body, now)
        elif isinstance(body, Signaling):
            self._signaling(frame, raw, body, now)
        else:
            self.reasons["ignored_class"] += 1

    def on_frame_guarded(self, raw: bytes, now: float) -> None:
        """Handle one frame; a frame must never end the DIME, so an unexpected error is counted and logged."""
        try:
            self.on_frame(raw, now)
        except Exception as exc:  # the last resort at the frame boundary; each is a bug to fix
            self.counters[CounterId.FRAME_BUGS] += 1
            self.reasons[f"bug:{type(exc).__name__}"] += 1
            self.log(f"bug: frame {raw[:54].hex()}... raised {exc!r}\n{traceback.format_exc()}")

    def _signaling(self, frame: Frame, raw: bytes, body: Signaling, now: float) -> None:
        if self.keyring.enabled:
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
            self._out(self.requester.receive(frame, now))
            return
        if not self.acl.allows(frame.src_mac, body.cmd):
            self.counters[CounterId.REJECTED_ACL] += 1
            reply = Signaling(body.cmd, Op.RESPONSE, body.req_id, Status.DENIED, (text_tlv("access list"),))
            self._tx([frame_to(Address(self.mac, self.cfg.dime, frame.dst_thread), _source(frame), reply)])
            return
        self._now = now
        self._out(self.responder.receive(frame, now))

    # ------------------------------------------------------------------ handlers

    def _handlers(self) -> dict[Command, Callable[[RequestReceived], tuple[Status, Tlvs] | None]]:
        return {
            Command.PING: self.h_ping,
            Command.FAULT_REPORT: self.h_fault_report,
            Command.RESET: self.h_reset,
            Command.GET_PARAM: self.h_get_param,
            Command.SET_PARAM: self.h_set_param,
            Command.MEM_ALLOC: self.h_mem_alloc,
            Command.MEM_FREE: self.h_mem_free,
            Command.MEM_LIMIT: self.h_mem_limit,
            Command.LOAD: self.h_load,
            Command.START: self.h_start,
            Command.STOP: self.h_stop,
            Command.CONNECT: self.h_connect,
            Command.DISCONNECT: self.h_disconnect,
            Command.USAGE: self.h_usage,
            Command.COUNTERS: self.h_counters,
            Command.SET_THRESHOLD: self.h_set_threshold,
            Command.KEY_INSTALL: self.h_key_install,
            Command.KEY_ROTATE: self.h_key_rotate,
            Command.ACL_SET: self.h_acl_set,
            Command.ACL_GET: self.h_acl_get,
        }

    def h_ping(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        echo = r.param(TlvType.ECHO)
        return Status.OK, [Tlv(TlvType.ECHO, echo if isinstance(echo, bytes) else b""), Tlv(TlvType.EPOCH, self.epoch)]

    def h_fault_report(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        self.log(f"fault report from {_mac(r.peer.mac)}/{r.peer.dime}: {r.param(TlvType.TEXT)!s}")
        return Status.OK, []

    def h_reset(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        self.stop_mice("reset")
        self._clear_channels()
        self.loaded = None
        self.mem.reserved = 0
        self.acl = AccessList()
        self.epoch = state.next_epoch(self.cfg.state_dir, self.cfg.dime)
        self.keyring.epoch, self.keyring.sent = self.epoch, 0
        self.state = DimeState.FREE
        self.hb.epoch, self.hb.sent = self.epoch, 0
        self._cancel_beat()
        self.hb.stop()  # a heartbeat of the new epoch at once
        return Status.OK, [Tlv(TlvType.EPOCH, self.epoch)]

    def _param_value(self, pid: int) -> int:
        return {
            Param.HEARTBEAT_PERIOD_MS: round(self.hb.period * 1000),
            Param.MEM_LIMIT_CHUNKS: self.mem.limit,
            Param.RETRANSMIT_MS: self.retransmit_ms,
            Param.CREDIT_WINDOW: self.credit_window,
            Param.LOG_LEVEL: self.log_level,
        }[Param(pid)]

    def h_get_param(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        pid = _u64(r.param(TlvType.PARAM_ID))
        return Status.OK, [Tlv(TlvType.PARAM_ID, pid), Tlv(TlvType.VALUE, self._param_value(pid))]

    def h_set_param(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        pid = Param(_u64(r.param(TlvType.PARAM_ID)))
        value = _u64(r.param(TlvType.VALUE))
        bounds = {
            Param.HEARTBEAT_PERIOD_MS: (1, 0xFFFF),
            Param.MEM_LIMIT_CHUNKS: (0, 1 << 20),
            Param.RETRANSMIT_MS: (1, 60_000),
            Param.CREDIT_WINDOW: (1, 0xFFFF),
            Param.LOG_LEVEL: (0, 5),
        }[pid]
        if not bounds[0] <= value <= bounds[1]:
            return Status.BAD_PARAM, [text_tlv(f"{pid.name} must be in {bounds[0]}..{bounds[1]}, not {value}")]
        if pid is Param.HEARTBEAT_PERIOD_MS:
            self._cancel_beat()  # the armed one keeps the old schedule: send on the new one
            self.hb.set_period(value / 1000, time.monotonic())
        elif pid is Param.MEM_LIMIT_CHUNKS:
            self._set_limit(value)
        elif pid is Param.RETRANSMIT_MS:
            self.retransmit_ms = value
        elif pid is Param.CREDIT_WINDOW:
            self.credit_window = value
        else:
            self.log_level = value
        return Status.OK, [Tlv(TlvType.PARAM_ID, int(pid)), Tlv(TlvType.VALUE, value)]

    def _set_limit(self, chunks: int) -> None:
        self.mem.limit = chunks
        if self.mice is not None:
            with contextlib.suppress(OSError):
                memory.relimit(self.mice.pid, self.mice.baseline, chunks)

    def _mem_reply(self) -> Tlvs:
        return [Tlv(TlvType.MEM_CHUNKS, self.mem.reserved), Tlv(TlvType.MEM_USED, self.mem.used)]

    def h_mem_alloc(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        n = _u64(r.param(TlvType.MEM_CHUNKS))
        if self.mem.reserved + n > self.mem.limit:
            return Status.NO_MEMORY, [*self._mem_reply(), text_tlv(f"{n} more chunks pass the limit {self.mem.limit}")]
        self.mem.reserved += n
        return Status.OK, self._mem_reply()

    def h_mem_free(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        n = _u64(r.param(TlvType.MEM_CHUNKS))
        if n > self.mem.reserved:
            return Status.BAD_PARAM, [*self._mem_reply(), text_tlv(f"only {self.mem.reserved} chunks are reserved")]
        self.mem.reserved -= n
        return Status.OK, self._mem_reply()

    def h_mem_limit(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        n = _u64(r.param(TlvType.MEM_CHUNKS))
        if n < self.mem.reserved:
            return Status.BAD_PARAM, [text_tlv(f"{self.mem.reserved} chunks are reserved, the limit cannot go below")]
        self._set_limit(n)
        return Status.OK, [Tlv(TlvType.MEM_CHUNKS, n)]

    def h_load(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        service, stage = _u64(r.param(TlvType.SERVICE_ID)), _u64(r.param(TlvType.STAGE))
        ids = [Tlv(TlvType.SERVICE_ID, service), Tlv(TlvType.STAGE, stage)]
        if self.mice is not None:
            return Status.BUSY, [*ids, text_tlv(f"MICE {self.mice.name} is running; STOP it first")]
        if not self.cfg.store:
            return Status.UNSUPPORTED, [*ids, text_tlv("this kernel has no --store")]
        dig, size, sig = r.param(TlvType.PACKAGE_DIGEST), r.param(TlvType.PACKAGE_SIZE), r.param(TlvType.PACKAGE_SIG)
        name = str(r.param(TlvType.MICE_NAME))
        try:
            assert isinstance(dig, bytes) and isinstance(sig, bytes)
            path, manifest = package.fetch(
                self.cfg.store, self.cfg.local_store, dig, _u64(size), sig, self.keyring.active_key()
            )
            st = manifest.stage(stage)
        except package.PackageError as exc:
            self.counters[CounterId.REJECTED_AUTH] += "SIG" in str(exc)
            return Status.DENIED if "SIG" in str(exc) else Status.NOT_FOUND, [*ids, text_tlv(str(exc))]
        if st.name != name:
            return Status.BAD_PARAM, [*ids, text_tlv(f"stage {stage} is {st.name!r}, not {name!r}")]
        if st.memory_chunks > self.mem.limit:
            return Status.NO_MEMORY, [*ids, text_tlv(f"stage needs {st.memory_chunks} chunks, limit {self.mem.limit}")]
        self.loaded = (service, stage, name, path, st)
        self.manager = r.peer
        self.log(f"loaded service {service} stage {stage} ({name}) from {dig.hex()[:12]}")
        return Status.OK, ids

    def h_start(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        service, stage = _u64(r.param(TlvType.SERVICE_ID)), _u64(r.param(TlvType.STAGE))
        if self.loaded is None or self.loaded[:2] != (service, stage):
            return Status.NOT_FOUND, [text_tlv(f"service {service} stage {stage} is not loaded")]
        if self.mice is not None:
            return Status.BUSY, [text_tlv(f"MICE {self.mice.name} is running")]
        self.manager = r.peer
        self.start_mice(_u64(r.param(TlvType.VALUE)))  # a replacement source: the item to resume from
        return Status.OK, [Tlv(TlvType.EPOCH, self.epoch)]

    def h_stop(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        service, stage = _u64(r.param(TlvType.SERVICE_ID)), _u64(r.param(TlvType.STAGE))
        if self.mice is None or (self.mice.service, self.mice.stage) != (service, stage):
            return Status.NOT_FOUND, [Tlv(TlvType.CPU_NS, 0), text_tlv("that MICE is not running")]
        cpu = self._mice_cpu_ns(self.mice.pid)
        self.stop_mice("stop")
        return Status.OK, [Tlv(TlvType.CPU_NS, cpu)]

    def h_connect(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        ch = _u64(r.param(TlvType.CHANNEL))
        if ch >= COMPLETION_BIT:
            return Status.BAD_PARAM, [Tlv(TlvType.CHANNEL, ch), text_tlv("channel ids are below 0x8000")]
        peer_mac = r.param(TlvType.PEER_MAC)
        assert isinstance(peer_mac, bytes)
        key = (ch, peer_mac, _u64(r.param(TlvType.PEER_DIME)))
        if key[2] == DIME_ALL:
            return Status.BAD_PARAM, [Tlv(TlvType.CHANNEL, ch), text_tlv("the peer must be a DIME, not 0xffff")]
        now = time.monotonic()
        output = _u64(r.param(TlvType.DIRECTION)) == Direction.OUTPUT
        end = (ch | COMPLETION_BIT, *key[1:]) if output else key
        if output and ch in self.outputs:
            self._unwire(ch)
        if end not in self.inputs and len(self.inputs) >= CHANNEL_ENDS_MAX:
            return Status.NO_MEMORY, [Tlv(TlvType.CHANNEL, ch), text_tlv(f"{CHANNEL_ENDS_MAX} channel ends wired")]
        self.inputs.add(end)
        self.receivers.pop(end, None)  # (re)wired: a fresh receiver
        if output:
            peer = Address(peer_mac, key[2], _u64(r.param(TlvType.PEER_THREAD)))
            self.senders[key] = self._sender(peer, ch)
            self.outputs[ch] = key
            self._pump(now)
        return Status.OK, [Tlv(TlvType.CHANNEL, ch)]

    def _sender(self, peer: Address, ch: int) -> ChannelSender:
        return ChannelSender(self.local, peer, ch, mtu=self.cfg.mtu, auth=False, initial_credit=self.credit_window)

    def _unwire(self, ch: int) -> None:
        old = self.outputs.pop(ch, None)
        if old is not None:
            self.senders.pop(old, None)
            # Its completions are not needed any more: every output it had not completed is queued again.
            back = (ch | COMPLETION_BIT, *old[1:])
            self.inputs.discard(back)
            self.receivers.pop(back, None)
            n = self.flow.requeue(ch)
            self.counters[CounterId.REPLAYED] += n

    def h_disconnect(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        ch = _u64(r.param(TlvType.CHANNEL))
        if _u64(r.param(TlvType.DIRECTION)) == Direction.OUTPUT:
            if ch not in self.outputs:
                return Status.NOT_FOUND, [Tlv(TlvType.CHANNEL, ch)]
            self._unwire(ch)
            self._pump(time.monotonic())
        else:
            gone = [k for k in self.inputs if k[0] == ch]
            if not gone:
                return Status.NOT_FOUND, [Tlv(TlvType.CHANNEL, ch)]
            for k in gone:
                self.inputs.discard(k)
                self.receivers.pop(k, None)
        return Status.OK, [Tlv(TlvType.CHANNEL, ch)]

    def h_usage(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        c = self.counters
        return Status.OK, [
            Tlv(TlvType.CPU_NS, self._cpu_ns()),
            Tlv(TlvType.MEM_USED, self.mem.used),
            Tlv(TlvType.FRAMES_RX, c[CounterId.FRAMES_RX]),
            Tlv(TlvType.FRAMES_TX, c[CounterId.FRAMES_TX]),
            Tlv(TlvType.BYTES_RX, c[CounterId.BYTES_RX]),
            Tlv(TlvType.BYTES_TX, c[CounterId.BYTES_TX]),
        ]

    def counter(self, cid: int) -> int:
        if cid == CounterId.QUEUE_DEPTH:
            return len(self.mice_queue) + len(self.flow.queue)
        if cid == CounterId.MEM_USED_CHUNKS:
            return self.mem.used
        if cid == CounterId.MEM_PEAK_CHUNKS:
            return self.mem.peak
        if cid == CounterId.MEM_RETURNED_CHUNKS:
            return self.mem.returned
        if cid == CounterId.CPU_NS:
            return self._cpu_ns()
        if cid == CounterId.HEARTBEAT_LATE_MAX_US:  # a peak: reading it starts a new one
            return self.counters.pop(cid, 0)
        if cid == CounterId.DIME_CPU_NS:
            t = os.times()
            return int((t.user + t.system) * 1e9)
        if cid == CounterId.DUPLICATES:
            return self.flow.duplicates
        if cid == CounterId.RETAINED:
            return len(self.flow.retained)
        if cid == CounterId.SOURCE_RESUME:
            return self.flow.source_resume(self.source_first)
        return self.counters[cid]

    def h_counters(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        cid = _u64(r.param(TlvType.COUNTER_ID))
        if cid not in CounterId._value2member_map_:
            return Status.NOT_FOUND, [Tlv(TlvType.COUNTER_ID, cid), Tlv(TlvType.VALUE, 0)]
        return Status.OK, [Tlv(TlvType.COUNTER_ID, cid), Tlv(TlvType.VALUE, self.counter(cid))]

    def h_set_threshold(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        cid = _u64(r.param(TlvType.COUNTER_ID))
        if cid not in CounterId._value2member_map_:
            return Status.NOT_FOUND, [Tlv(TlvType.COUNTER_ID, cid)]
        value = _u64(r.param(TlvType.THRESHOLD))
        if value:
            self.thresholds[cid] = value
        else:
            self.thresholds.pop(cid, None)
        self.raised.discard(cid)
        return Status.OK, [Tlv(TlvType.COUNTER_ID, cid)]

    def h_key_install(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        kid, key = _u64(r.param(TlvType.KEY_ID)), r.param(TlvType.KEY)
        if not isinstance(key, bytes) or len(key) < 16 or kid == 0:
            return Status.BAD_PARAM, [Tlv(TlvType.KEY_ID, kid), text_tlv("a key id 1..65535 and 16+ key bytes")]
        try:
            self.keyring.install(kid, key)
        except ValueError as exc:  # a retired key id cannot come back
            return Status.BAD_PARAM, [Tlv(TlvType.KEY_ID, kid), text_tlv(str(exc))]
        return Status.OK, [Tlv(TlvType.KEY_ID, kid)]

    def h_key_rotate(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        kid = _u64(r.param(TlvType.KEY_ID))
        now = time.monotonic()
        if not self.keyring.has(kid, now):
            return Status.NOT_FOUND, [Tlv(TlvType.KEY_ID, kid)]
        self.keyring.rotate(kid, now)
        return Status.OK, [Tlv(TlvType.KEY_ID, kid)]

    def h_acl_set(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        raw = r.param(TlvType.ACL)
        self.acl.set_raw(raw if isinstance(raw, bytes) else b"")
        return Status.OK, []

    def h_acl_get(self, r: RequestReceived) -> tuple[Status, Tlvs]:
        return Status.OK, [Tlv(TlvType.ACL, self.acl.raw())]

    # ------------------------------------------------------------------ faults

    def _fault(self, code: FaultCode, text: str) -> None:
        self.counters[CounterId.FAULTS] += 1
        self.log(f"FAULT {code.name}: {text}")
        dest = self.manager or BROADCAST_ADDRESS
        policy = None if dest.dime != DIME_ALL else RetransmitPolicy(retries=0)
        _, out = self.requester.request(
            dest,
            Command.FAULT_REPORT,
            [Tlv(TlvType.FAULT_CODE, int(code)), text_tlv(text)],
            now=time.monotonic(),
            policy=policy,
        )
        self._out(out)

    # ------------------------------------------------------------------ the MICE

    def start_mice(self, first: int = 0) -> None:
        assert self.loaded is not None
        service, stage, name, path, st = self.loaded
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (parent, child):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        ctx = mice.Context(service, stage, name, self.cfg.dime, self.epoch, dict(st.params), self.store, first=first)
        self.source_first = first
        limit = self.mem.limit
        pid = os.fork()
        if pid == 0:  # the MICE child
            code = 1
            try:
                parent.close()
                self.sock.close()
                if self.wire is not None:
                    self.wire.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                die_with_parent()
                os.nice(19)  # the FCAPS loop on the same core comes first
                with contextlib.suppress(OSError, AttributeError):  # and more so: run only when the core is idle
                    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                baseline = memory.limit_self(limit)
                child.send(mice.REC.pack(mice.READY, baseline, 0))
                code = mice.run_child(child, str(path), st.entry, ctx)
            finally:
                os._exit(code)
        child.close()
        parent.setblocking(False)
        self.mice = Mice(pid, parent, 0, service, stage, name)  # baseline comes in its READY record
        self.flow = Flow()
        self.sel.register(parent, selectors.EVENT_READ, "mice")
        self.state = DimeState.BUSY
        self.log(f"MICE {name} started (pid {pid}, limit {limit} chunks)")

    def stop_mice(self, why: str) -> None:
        m = self.mice
        if m is None:
            return
        with contextlib.suppress(OSError):
            m.sock.send(mice.REC.pack(mice.STOP, 0, 0))
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(m.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.005)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(m.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(m.pid, 0)
        self._mice_gone(why)

    def _mice_gone(self, why: str) -> None:
        m = self.mice
        assert m is not None
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(m.sock)
        m.sock.close()
        self.mice = None
        back = self.mem.mice_exited(time.monotonic())
        self.log(f"MICE {m.name} ended ({why}); {back} chunks returned, {self.mem.used} in use of {self.mem.limit}")
        self.mice_queue.clear()
        self.mice_inflight = 0
        self.handed_at.clear()
        if self.state is DimeState.BUSY:
            self.state = DimeState.FREE

    def _reap(self) -> None:
        """The MICE closed its socket: collect its exit and report a fault if it failed."""
        m = self.mice
        assert m is not None
        try:
            _, status = os.waitpid(m.pid, 0)
        except ChildProcessError:
            status = 0
        code, text = m.fault or (0, "")
        if not code and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            code, text = int(FaultCode.MICE_CRASHED), f"MICE {m.name} killed by signal {sig}"
        elif not code and os.WEXITSTATUS(status):
            code, text = int(FaultCode.MICE_CRASHED), f"MICE {m.name} exited with status {os.WEXITSTATUS(status)}"
        self._mice_gone(text or "exited")
        if code:
            self.state = DimeState.FREE
            self._fault(FaultCode(code), text)

    def _mice_readable(self, now: float) -> None:
        m = self.mice
        assert m is not None
        for _ in range(64):
            if len(self.flow.queue) > OUTQ_LIMIT:
                # Outputs wait for credit: stop watching the MICE (the socket stays readable, and a
                # level-triggered wait would spin) until the queue is down to half (_mice_watch).
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(m.sock)
                m.watched = False
                break
            try:
                msg = m.sock.recv(mice.SEQPACKET_MAX)
            except BlockingIOError:
                break
            except OSError:
                msg = b""
            if not msg:
                self._reap()
                return
            self.counters[CounterId.MICE_MESSAGES] += 1
            try:
                recs = list(mice.records(msg))
            except ValueError as exc:
                m.fault = (int(FaultCode.MICE_CRASHED), f"MICE {m.name} sent a bad batch: {exc}")
                continue
            for kind, lineage, data in recs:
                if kind == mice.OUT:
                    self.counters[CounterId.ITEMS_OUT] += 1
                    self.flow.produced(lineage, data)
                elif kind == mice.DONE:
                    self.mice_inflight = max(0, self.mice_inflight - 1)
                    t0 = self.handed_at.pop(lineage, None)
                    if t0 is not None:
                        self.lat_sum += now - t0
                        self.lat_n += 1
                    self.done_n += 1
                    for up in self.flow.done(lineage):
                        self.completions.setdefault(up, []).append(lineage)
                elif kind == mice.EOF:
                    m.eof = True
                elif kind == mice.READY:
                    m.baseline = lineage
                elif kind == mice.FAULT:
                    m.fault = (lineage, data.decode("utf-8", "replace"))
        self._pump(now)
        self._feed_mice(now)

    def _mice_watch(self) -> None:
        """Watch the MICE's output again once the queue held back by credit is down to half."""
        m = self.mice
        if m is not None and not m.watched and len(self.flow.queue) <= OUTQ_LIMIT // 2:
            self.sel.register(m.sock, selectors.EVENT_READ, "mice")
            m.watched = True

    def _feed_mice(self, now: float) -> None:
        m = self.mice
        if m is None:
            return
        parts: list[bytes] = []
        size = 0
        n = 0
        queue, pack, rec = self.mice_queue, mice.REC.pack, mice.REC.size
        room = min(MICE_INFLIGHT - self.mice_inflight, len(queue))
        while n < room and size < mice.BATCH_BYTES:
            lineage, data = queue.popleft()
            parts.append(pack(mice.ITEM, lineage, len(data)))
            parts.append(data)
            size += rec + len(data)
            n += 1
            if n == 1:
                self.handed_at[lineage] = now  # latency is sampled: the first item of each batch
        self.mice_inflight += n
        self.counters[CounterId.ITEMS_IN] += n
        if parts:
            m.pending_tx.append(b"".join(parts))
        while m.pending_tx:
            try:
                m.sock.send(m.pending_tx[0])
            except BlockingIOError:
                break
            except OSError:
                m.pending_tx.clear()
                break
            m.pending_tx.popleft()
        paused = len(self.mice_queue) > PAUSE_INPUT
        for k, rx in self.receivers.items():
            if k[0] < COMPLETION_BIT and rx.paused != paused:
                if paused:
                    rx.pause()
                else:
                    self._out(rx.resume(now))

    # ------------------------------------------------------------------ data channels

    def _data(self, frame: Frame, body: Data, now: float) -> None:
        key = (body.channel, frame.src_mac, frame.src_dime)
        tx = self.senders.get(key)
        if tx is not None:
            if body.flags & DataFlag.ACK and body.frag_count == 0:
                self._out(tx.receive(frame, now))
                self._pump(now)
            else:
                self.reasons["data_on_output"] += 1
            return
        rx = self.receivers.get(key)
        if rx is None:
            # DATA is not signed: take it only from a sender CONNECT wired, so no one else can make this DIME
            # hold state (and a DIME id such as 0xffff, which no channel can have, never gets this far).
            if key not in self.inputs or frame.src_dime == DIME_ALL:
                self.counters[CounterId.REJECTED_DATA] += 1
                self.reasons["data:from_dime_all" if frame.src_dime == DIME_ALL else "data:not_wired"] += 1
                return
            peer = Address(frame.src_mac, frame.src_dime, frame.src_thread)
            rx = self.receivers[key] = ChannelReceiver(
                self.local, peer, body.channel, window=self.credit_window, ack_every=32, ack_delay=0.002
            )
        self._rx_key = key
        out = rx.receive(frame, now)
        if out.frames:
            out.frames = self._hold_acks(key, out.frames)
        self._out(out)
        self._feed_mice(now)

    _rx_key: tuple[int, bytes, int] = (0, b"", 0)

    def _hold_acks(self, key: tuple[int, bytes, int], frames: list[Frame]) -> list[Frame]:
        """Keep back a receiver's advancing acks until the frames read in one go are done (they are cumulative).

        The last ack of a batch says all the earlier ones say, with the credit as it is now; a repeated
        position (a duplicate ack, the sender's loss signal) is never merged away.
        """
        rest = []
        for f in frames:
            b = f.body
            if isinstance(b, Data) and b.flags & DataFlag.ACK and b.frag_count == 0:
                held = self.acks_held.get(key)
                if held is not None:
                    hb = held.body
                    if isinstance(hb, Data) and (hb.msg_id, hb.ack) == (b.msg_id, b.ack):
                        rest.append(held)  # a duplicate: both go
                    else:
                        self.counters[CounterId.ACKS_MERGED] += 1
                self.acks_held[key] = f
            else:
                rest.append(f)
        return rest

    def _flush_acks(self) -> None:
        if self.acks_held:
            held = list(self.acks_held.values())
            self.acks_held.clear()
            self._tx(held)

    def _message(self, ev: MessageReceived) -> None:
        key = self._rx_key
        if ev.channel >= COMPLETION_BIT:
            self._completions_in(ev.channel & ~COMPLETION_BIT, ev.payload)
            return
        try:
            items = mice.unpack_items(ev.payload)
        except ValueError as exc:
            self.reasons["bad_item"] += 1
            self.log(f"channel {ev.channel} message {ev.msg_id}: {exc}")
            return
        flow, queue, completions = self.flow, self.mice_queue, self.completions
        for lineage, item in items:
            verdict = flow.arrive(lineage, key)
            if verdict == "new":
                if self.mice is None:  # no MICE: forget it so a later copy is taken
                    flow.forget(lineage)
                    self.reasons["no_mice"] += 1
                    continue
                queue.append((lineage, item))
            elif verdict == "done":
                completions.setdefault(key, []).append(lineage)

    def _completions_in(self, ch: int, payload: bytes) -> None:
        n = len(payload) // 8
        for (lineage,) in struct.iter_unpack("!Q", payload[: n * 8]):
            parent, ups = self.flow.downstream_completed(lineage)
            if parent is not None and ups:
                for up in ups:
                    self.completions.setdefault(up, []).append(parent)

    def _pump(self, now: float) -> None:
        """Send queued outputs on output channels with credit (round robin)."""
        q = self.flow.queue
        if not q or not self.outputs:
            return
        live = [self.senders[k] for k in self.outputs.values() if not self.senders[k].broken]
        if not live:
            return
        n = len(live)
        retained = self.flow.retained
        rec = mice.ITEM_REC.size
        while q:
            for i in range(n):
                tx = live[(self._rr + i) % n]
                if tx.credit_left > 0:
                    break
            else:
                return
            self._rr = (self._rr + i + 1) % n
            # As many waiting items as fit one fragment share one message (one frame).
            room = tx.frag_size - len(mice.BATCH_MARK)
            batch: list[tuple[int, bytes]] = []
            size = 0
            while q:
                out = retained.get(q[0])
                if out is None:
                    q.popleft()
                    continue
                need = rec + len(out.data)
                if batch and size + need > room:
                    break
                batch.append((q.popleft(), out.data))
                size += need
            if not batch:
                return
            _, o = tx.send(mice.pack_items(batch), now)
            self.counters[CounterId.ITEM_FRAMES_TX] += 1
            for lineage, _ in batch:
                self.flow.sent(lineage, tx.channel)
            self._out(o)

    def _flush_completions(self, now: float) -> None:
        for up, lineages in list(self.completions.items()):
            if not lineages:
                continue
            ch, mac, dime = up
            key = (ch | COMPLETION_BIT, mac, dime)
            tx = self.senders.get(key)
            if tx is None:
                tx = self.senders[key] = self._sender(Address(mac, dime, 0), ch | COMPLETION_BIT)
            if tx.broken:
                self.completions.pop(up)
                continue
            while lineages:
                chunk, lineages[:] = lineages[:COMPLETION_BATCH], lineages[COMPLETION_BATCH:]
                _, o = tx.send(struct.pack(f"!{len(chunk)}Q", *chunk), now)
                self._out(o)

    def _clear_channels(self) -> None:
        self.acks_held.clear()
        self.inputs.clear()
        self.senders.clear()
        self.receivers.clear()
        self.outputs.clear()
        self.completions.clear()
        self.flow = Flow()

    # ------------------------------------------------------------------ heartbeat and accounting

    def _cpu_ns(self) -> int:
        t = os.times()
        own = int((t.user + t.system) * 1e9)
        if self.mice is not None:
            own += self._mice_cpu_ns(self.mice.pid)
        return own

    @staticmethod
    def _mice_cpu_ns(pid: int) -> int:
        return memory.proc_cpu_ns(pid)

    def _sample_load(self, now: float) -> None:
        """Refresh the accounting a heartbeat carries (CPU, memory, queues, rates)."""
        t0, c0 = self.cpu_mark
        c1 = self._cpu_ns()
        if now > t0:
            self.cpu_permille = max(0, min(1000, int((c1 - c0) / ((now - t0) * 1e9) * 1000)))
        period = now - t0
        self.cpu_mark = (now, c1)
        if self.mice is not None:
            st = memory.proc_status(self.mice.pid)
            self.mem.sample(now, memory.chunks_of(st.get("VmData", self.mice.baseline) - self.mice.baseline))
        if self.lat_n:
            self.counters[CounterId.LATENCY_US] = int(self.lat_sum / self.lat_n * 1e6)
            self.lat_sum, self.lat_n = 0.0, 0
        self.counters[CounterId.ITEMS_PER_S] = int(self.done_n / period) if period > 0 else 0
        self.done_n = 0
        loaded = self.loaded
        self.hb.update(
            state=self.state,
            cpu_permille=self.cpu_permille,
            stage=loaded[1] if loaded else 0,
            mem_used=self.mem.used,
            mem_limit=self.mem.limit,
            rx_queue=min(len(self.mice_queue), 0xFFFFFFFF),
            tx_queue=min(len(self.flow.queue), 0xFFFFFFFF),
            service=loaded[0] if loaded else 0,
        )

    def _heartbeat_timer(self) -> float:
        """When the loop next has heartbeat work: collect an armed beat after its deadline, or send one."""
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

        Each beat is built and signed one period ahead and armed on :class:`pxproto.node.beat.Beater`,
        whose real-time thread sends it on time however busy this core is; the loop only
        collects it afterwards (and sends it itself if the sender could not).
        """
        if self.armed is not None:
            at, raw = self.armed
            self.armed = None
            sent, when = self.beater.take() if self.beater is not None else (False, 0.0)
            if not sent:
                self._send_heartbeat(raw)
                self.counters[CounterId.HEARTBEATS_BY_LOOP] += 1
                when = now
            self._late(when - at)
            if self.wire is not None:
                self._send_raw(raw)  # the server's copy, for its discovery table (it does not forward it)
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
                if self.wire is not None:
                    self._send_raw(raw)
        self._check_thresholds()

    def _sign(self, frame: Frame) -> bytes:
        raw = encode(frame)
        return self.keyring.sign_raw(raw) if self.keyring.enabled else raw

    def _send_heartbeat(self, raw: bytes) -> None:
        """A heartbeat on the wire itself when the DIME has it (the relay could delay it), else via the server."""
        if self.wire is None:
            self._send_raw(raw)
            return
        try:
            self.wire.send(raw)
        except OSError:
            self.counters[CounterId.TX_DROPPED] += 1

    def _cancel_beat(self) -> None:
        """Take back an armed heartbeat (RESET: the next one carries the new epoch)."""
        if self.armed is not None and self.beater is not None:
            self.beater.take()
        self.armed = None

    def _check_thresholds(self) -> None:
        for cid, limit in self.thresholds.items():
            value = self.counter(cid)
            if value >= limit and cid not in self.raised:
                self.raised.add(cid)
                self._fault(FaultCode.OVERLOAD, f"counter {CounterId(cid).name} = {value} >= threshold {limit}")
            elif value < limit:
                self.raised.discard(cid)

    # ------------------------------------------------------------------ loop

    def _timers(self) -> Iterable[float | None]:
        yield self._heartbeat_timer()
        yield self.responder.get_timer()
        yield self.requester.get_timer()
        for tx in self.senders.values():
            yield tx.get_timer()
        for rx in self.receivers.values():
            yield rx.get_timer()

    def _run_timers(self, now: float) -> None:
        if self._heartbeat_timer() <= now:
            self.heartbeat(now)
        t = self.responder.get_timer()
        if t is not None and t <= now:
            self._out(self.responder.handle_timer(now))
        t = self.requester.get_timer()
        if t is not None and t <= now:
            self._out(self.requester.handle_timer(now))
        for tx in list(self.senders.values()):
            t = tx.get_timer()
            if t is not None and t <= now:
                self._out(tx.handle_timer(now))
        for key, rx in list(self.receivers.items()):
            t = rx.get_timer()
            if t is not None and t <= now:
                self._rx_key = key
                self._out(rx.handle_timer(now))

    def run(self) -> int:
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ, "server")
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.state = DimeState.FREE
        with contextlib.suppress(OSError):
            self.beater = beat.Beater(self.wire.fileno() if self.wire is not None else self.sock.fileno())
        print(
            f"dime {self.cfg.dime}: core {self.cfg.core} pid {os.getpid()} epoch {self.epoch} "
            f"mac {_mac(self.mac)} memory {self.mem.limit} chunks ({self.mem.limit * CHUNK_BYTES >> 20} MiB) "
            f"heartbeat {round(self.hb.period * 1000)} ms auth {'on' if self.keyring.enabled else 'off'} "
            f"heartbeat sender {'real-time' if self.beater is not None and self.beater.realtime else 'normal'} ready",
            flush=True,
        )
        while self.running:
            now = time.monotonic()
            deadline = min((t for t in self._timers() if t is not None), default=now + 1.0)
            if self.mice is not None and (self.mice.pending_tx or self.completions):
                deadline = min(deadline, now + 0.002)
            timeout = max(0.0, deadline - now)
            for key, _ in self.sel.select(timeout):
                now = time.monotonic()
                if key.data == "server":
                    for _ in range(256):
                        try:
                            raw = self.sock.recv(FRAME_MAX)
                        except BlockingIOError:
                            break
                        except OSError:
                            raw = b""
                        if not raw:
                            self.running = False
                            break
                        self.on_frame_guarded(raw, now)
                    self._flush_acks()
                elif key.data == "mice" and self.mice is not None:
                    self._mice_readable(now)
            now = time.monotonic()
            self._run_timers(now)
            if self.completions:
                # Coalesce: one completion message per COMPLETION_BATCH lineages or per 2 ms.
                if not self.completions_since:
                    self.completions_since = now
                if now - self.completions_since >= 0.002 or any(
                    len(v) >= COMPLETION_BATCH for v in self.completions.values()
                ):
                    self._flush_completions(now)
                    self.completions_since = 0.0
            if self.mice is not None:
                self._feed_mice(now)
                self._mice_watch()
        if self.beater is not None:
            self.beater.close()
        used = self.mem.mice_used
        self.stop_mice("shutdown")
        print(
            f"dime {self.cfg.dime}: shut down; returned {self.mem.limit} chunks "
            f"({used} were in use by the MICE, {self.mem.reserved} reserved)",
            flush=True,
        )
        return 0

    def log(self, text: str) -> None:
        print(f"dime {self.cfg.dime}: {text}", file=sys.stderr, flush=True)


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (no orphaned DIME or MICE)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _source(frame: Frame) -> Address:
    return Address(frame.src_mac, frame.src_dime, frame.src_thread)


def _mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def main(argv: list[str] | None = None) -> int:
    """``python -m pxproto.node.dime CONFIG_JSON``: run one DIME (the server process starts these)."""
    args = sys.argv[1:] if argv is None else argv
    cfg = DimeConfig(**json.loads(args[0]))
    die_with_parent()
    if cfg.pin:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cfg.core})
    with contextlib.suppress(OSError):  # the FCAPS loop before ordinary work (root only; it mostly sleeps)
        os.setpriority(os.PRIO_PROCESS, 0, DIME_NICE)
    sock = socket.socket(fileno=cfg.fd)
    prof_dir = os.environ.get("PXKERNEL_PROFILE")
    if prof_dir:  # developer aid: cProfile each DIME, stats to PXKERNEL_PROFILE/dime-N-PID.prof
        import cProfile

        prof = cProfile.Profile()
        code = prof.runcall(Dime(cfg, sock).run)
        prof.dump_stats(os.path.join(prof_dir, f"dime-{cfg.dime}-{os.getpid()}.prof"))
        return int(code)
    return Dime(cfg, sock).run()


if __name__ == "__main__":
    sys.exit(main())
