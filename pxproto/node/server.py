"""The server process of pxkernel: the wire, the relay to its DIMEs, discovery, supervision.

It owns the one wire port and moves frames from it to the DIME processes
(one SOCK_SEQPACKET socketpair each); on a datagram wire (UDP, AF_PACKET) a
DIME sends its frames for other servers on the same socket itself (its fd is
inherited), so only heartbeats and frames for this server pass the relay: a DIME-scope frame for this MAC goes to
its DIME by id (looked up at a fixed offset, no decode).  On a UDP or AF_PACKET wire the kernel does that instead
(:mod:`pxproto.node.steer`): each DIME has its own socket on the wire and reads the data and signaling frames for
it there; the relay keeps the rest (and every frame on a stream wire, or when steering is unavailable).
System-scope frames are the server's own (discovery probes, answered for all DIMEs; signaling to
0xffff, where it answers PING).  Frames a DIME sends to a DIME of the same
server are delivered locally (a switch never sends a frame back out of the
port it came in).  Orchestrator fencing is server-wide: a request whose LEADER_EPOCH is older than one
any of its DIMEs accepted (kept in the state directory, so across DIME restarts too) is refused, by the
server at 0xffff and by every DIME (:func:`pxproto.node.state.raise_leader_fence`).
Heartbeats going out update the discovery table.  A DIME
process that dies is started again, with a new epoch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

from pxproto.dime.discovery import DiscoveryResponder
from pxproto.dime.endpoint import Address, frame_to
from pxproto.dime.keys import KeyRing
from pxproto.errors import ProtocolError
from pxproto.fastpath import COMPILED as FASTPATH
from pxproto.fastpath import decode, encode, select
from pxproto.link import Port
from pxproto.node import fastrx, memory, state, steer
from pxproto.node.channels import FLUSH_US
from pxproto.node.counters import SERVER_COUNTER_NAMES, ServerCounterId
from pxproto.node.dime import DimeConfig, drain
from pxproto.wire import ethertypes, spec
from pxproto.wire.codes import DIME_ALL, Capability, Command, DimeState, FrameClass, Op, Status, TlvType
from pxproto.wire.frame import DimeInfo, Frame, Heartbeat, Sealed, Signaling, Tlv

SW_VERSION = 0x00010000
OFF_FLAGS = spec.HEADER_OFFSET + 1
OFF_DST_DIME = spec.HEADER_OFFSET + 8


@dataclass
class ServerConfig:
    mac: bytes
    dimes: int
    cores: list[int]
    mem_chunks: int
    state_dir: str
    local_store: str
    store: str | None
    keys: dict[int, bytes]
    heartbeat_ms: int = 100
    verify_keys: dict[int, bytes] | None = None
    insecure: bool = False
    pin: bool = True
    mice_memory: str = "auto"
    """cgroup, rlimit or auto: how each MICE's chunks are enforced (:mod:`pxproto.node.memory`)."""
    mtu: int = 1500
    """The wire's MTU: data fragments fill it (see :attr:`pxproto.link.Port.mtu`)."""
    encrypt: tuple[int, ...] = ()
    """Frame classes sent encrypted, by the server and its DIMEs (``--encrypt``; the AEAD mode)."""
    flush_us: int = FLUSH_US
    """Longest a data frame less than full waits for more items, microseconds (see ``ChannelPlane.flush_delay``)."""


class DimeProc:
    def __init__(self, cfg: DimeConfig, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        self.cfg = cfg
        self.sock = sock
        self.proc = proc
        self.info = DimeInfo(cfg.dime, cfg.core, DimeState.BOOTING, cfg.mem_chunks, cfg.mem_chunks, 0)
        self.restarts = 0


class Server:
    def __init__(self, cfg: ServerConfig, wire: Port) -> None:
        self.cfg = cfg
        self.wire = wire
        self.mac = cfg.mac
        self.sel = selectors.DefaultSelector()
        self.dimes: dict[int, DimeProc] = {}
        self.counters: Counter[str] = Counter()
        self.keyring = KeyRing(dict(cfg.keys), epoch=int(time.time()) & 0xFFFFFFFF, encrypt=cfg.encrypt)
        caps = Capability.RLIMIT_MEMORY | Capability.RELIABLE_DATA
        if cfg.keys:
            caps |= Capability.AUTH
        if FASTPATH:
            caps |= Capability.FASTPATH
        self.discovery = DiscoveryResponder(
            Address(self.mac, DIME_ALL, 0), caps=int(caps), sw_version=SW_VERSION, auth=bool(cfg.keys)
        )
        self.booted = False
        self.running = True
        self.batch = select.compiled("pxproto.switch._afpacket")
        """sendmmsg: the frames a wire batch holds for one DIME go to it in one call (None: one send each)."""
        self.relay: dict[int, list[bytes]] = {}
        """Frames for each DIME, waiting for :meth:`flush_relay` (only while a batch is being handled)."""
        self.steered = steer.open_group(wire, self.mac, cfg.dimes) if self.batch is not None else []
        """Each DIME's own wire socket, in DIME order (:mod:`pxproto.node.steer`); [] when everything is relayed.
        Kept open for the server's life: a DIME started again inherits its predecessor's."""

    def flush_relay(self) -> None:
        """Hand each DIME the frames relayed to it since the last flush; what its socket cannot take is lost."""
        for dime, frames in self.relay.items():
            dp = self.dimes.get(dime)
            if dp is None:
                continue
            sent = 0
            assert self.batch is not None
            try:
                while sent < len(frames):
                    n = self.batch.send_batch(dp.sock.fileno(), frames[sent : sent + 64])
                    if n <= 0:
                        break
                    sent += n
            except OSError:
                pass
            self.counters["dime_busy"] += len(frames) - sent
        self.relay.clear()

    # -------------------------------------------------------------- DIME processes

    def spawn(self, dime: int) -> DimeProc:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        c = self.cfg
        dc = DimeConfig(
            dime=dime,
            core=c.cores[dime % len(c.cores)],
            mac=self.mac.hex(),
            fd=theirs.fileno(),
            state_dir=c.state_dir,
            local_store=c.local_store,
            store=c.store,
            mem_chunks=c.mem_chunks,
            heartbeat_ms=c.heartbeat_ms,
            keys={str(k): v.hex() for k, v in c.keys.items()},
            verify_keys={str(k): v.hex() for k, v in (c.verify_keys or {}).items()},
            insecure=c.insecure,
            pin=c.pin,
            mice_memory=c.mice_memory,
            mtu=c.mtu,
            encrypt=[int(x) for x in c.encrypt],
            flush_us=c.flush_us,
            wire_fd=self.wire.fileno() if self.wire.shareable else -1,
        )
        dest = getattr(self.wire, "dest", None)
        if dest is not None:  # an unconnected UDP wire: frames go out with sendto
            dc.wire_dest = dest.hex()
        if self.steered:
            dc.wire_fd, dc.wire_rx = self.steered[dime].fileno(), True
        fds = [theirs.fileno()] + ([dc.wire_fd] if dc.wire_fd >= 0 else [])
        proc = subprocess.Popen(
            [sys.executable, "-m", "pxproto.node.dime", "-", f"dime={dime}", f"mac={dc.mac}"],  # for ps; no keys
            pass_fds=fds,
            start_new_session=False,
            stdin=subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(asdict(dc)).encode())  # the keys: on a pipe, never in argv
        proc.stdin.close()
        theirs.close()
        ours.setblocking(False)
        dp = DimeProc(dc, ours, proc)
        self.dimes[dime] = dp
        self.sel.register(ours, selectors.EVENT_READ, dime)
        return dp

    def _dime_lost(self, dime: int) -> None:
        dp = self.dimes[dime]
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(dp.sock)
        dp.sock.close()
        code = dp.proc.wait()
        if not self.running:
            return
        print(f"pxkernel: dime {dime} process ended (status {code}); starting it again", flush=True)
        restarts = dp.restarts + 1
        time.sleep(min(0.05 * restarts, 1.0))
        if self.steered:  # what the dead DIME left unread goes, as with its socketpair
            self.counters["stale_dropped"] += self._discard(self.steered[dime])
        self.spawn(dime).restarts = restarts

    def _discard(self, sock: socket.socket) -> int:
        """Read and drop every datagram waiting on a DIME's steered socket; how many."""
        n = 0
        assert self.batch is not None
        with contextlib.suppress(OSError):
            while got := self.batch.recv_batch(sock.fileno()):
                n += len(got)
        return n

    # -------------------------------------------------------------- frames

    def _send_wire(self, raw: bytes) -> None:
        self.counters["wire_tx"] += 1
        self.counters["wire_tx_bytes"] += len(raw)
        self.wire.send(raw)

    def _tx_own(self, frames: list[Frame]) -> None:
        for f in frames:
            self._send_wire(self.keyring.protect(encode(f), f.cls))

    def from_wire(self, raw: bytes, now: float) -> None:
        self.counters["wire_rx"] += 1
        self.counters["wire_rx_bytes"] += len(raw)
        dime = fastrx.route(raw, self.mac)
        if dime == fastrx.ROUTE_DROP:
            self.counters["dropped"] += 1  # short, not Parallax, or another server's unicast
            return
        if dime >= 0:  # DIME scope: relay by id, the DIME validates
            dp = self.dimes.get(dime)
            if dp is None:
                self.counters["unknown_dime"] += 1
                return
            if self.batch is not None:
                self.relay.setdefault(dime, []).append(raw)  # sent by flush_relay, after the batch
                return
            try:
                dp.sock.send(raw)
            except OSError:
                self.counters["dime_busy"] += 1
            return
        cls = ethertypes.current().classify(int.from_bytes(raw[12:14], "big"))
        if cls is FrameClass.HEARTBEAT:
            return  # other DIMEs' heartbeats are the orchestrator's business
        try:
            frame = decode(raw)
        except ProtocolError:
            self.counters["malformed"] += 1
            return
        if isinstance(frame.body, Sealed):  # the AEAD mode: opened under the ring (tag, replay window)
            got = self.keyring.open_frame(frame, raw, now, decode)
            if isinstance(got, str):
                self.counters[f"rejected_{got}"] += 1
                return
            frame, raw = got
        elif self.keyring.enabled and not self._verified(frame, raw, now):
            return  # with a cluster key, discovery and signaling must be signed by a holder of it
        if cls is FrameClass.DISCOVERY:
            self._tx_own(self.discovery.receive(frame, now).frames)
        elif cls is FrameClass.SIGNALING:
            self._system_signaling(frame)

    def _verified(self, frame: Frame, raw: bytes, now: float) -> bool:
        """Whether a frame for the server carries a good trailer under the cluster key; counts why not."""
        a = frame.auth
        why = "unauthenticated" if a is None else None
        if a is not None:
            why = self.keyring.check(raw, frame.src_mac, frame.src_dime, a.key_id, a.counter, frame.padding, now)
        if why is not None:
            self.counters[f"rejected_{why}"] += 1
            return False
        return True

    def _system_signaling(self, frame: Frame) -> None:
        body = frame.body
        assert isinstance(body, Signaling)
        if body.op is not Op.REQUEST:
            return
        fence = body.param(TlvType.LEADER_EPOCH)
        if isinstance(fence, int) and state.raise_leader_fence(self.cfg.state_dir, fence) > fence:
            self.counters["rejected_fenced"] += 1  # the server's fence: what any of its DIMEs accepted
            stale = (Tlv(TlvType.TEXT, "stale leader epoch"),)
            reply = Signaling(body.cmd, Op.RESPONSE, body.req_id, Status.DENIED, stale)
            peer = Address(frame.src_mac, frame.src_dime, frame.src_thread)
            self._tx_own([frame_to(Address(self.mac, DIME_ALL, frame.dst_thread), peer, reply)])
            return
        handler = {
            Command.PING: self._sys_ping,
            Command.USAGE: self._sys_usage,
            Command.FAULT_REPORT: self._sys_fault_report,
            Command.COUNTERS: self._sys_counters,
        }.get(body.cmd)
        if handler is None:
            status = Status.UNSUPPORTED
            text = (
                "the server (0xffff) answers PING, USAGE, COUNTERS and FAULT_REPORT; "
                "address a DIME (0..N-1) for the rest"
            )
            params: tuple[Tlv, ...] = (Tlv(TlvType.TEXT, text),)
        else:
            status, params = handler(frame, body)
        reply = Signaling(body.cmd, Op.RESPONSE, body.req_id, status, params)
        peer = Address(frame.src_mac, frame.src_dime, frame.src_thread)
        self._tx_own([frame_to(Address(self.mac, DIME_ALL, frame.dst_thread), peer, reply)])

    def _sys_ping(self, frame: Frame, body: Signaling) -> tuple[Status, tuple[Tlv, ...]]:
        echo = body.param(TlvType.ECHO)
        return Status.OK, (Tlv(TlvType.ECHO, echo if isinstance(echo, bytes) else b""),)

    def _sys_usage(self, frame: Frame, body: Signaling) -> tuple[Status, tuple[Tlv, ...]]:
        """The whole server: CPU of the server and DIME processes, chunks in use, frames and bytes on its wire."""
        t = os.times()
        cpu = int((t.user + t.system) * 1e9) + sum(memory.proc_cpu_ns(dp.proc.pid) for dp in self.dimes.values())
        used = sum(max(0, d.info.mem_total - d.info.mem_free) for d in self.dimes.values())
        c = self.counters
        return Status.OK, (
            Tlv(TlvType.CPU_NS, cpu),
            Tlv(TlvType.MEM_USED, used),
            Tlv(TlvType.FRAMES_RX, c["wire_rx"]),
            Tlv(TlvType.FRAMES_TX, c["wire_tx"]),
            Tlv(TlvType.BYTES_RX, c["wire_rx_bytes"]),
            Tlv(TlvType.BYTES_TX, c["wire_tx_bytes"]),
        )

    def _sys_counters(self, frame: Frame, body: Signaling) -> tuple[Status, tuple[Tlv, ...]]:
        """One of the server's own counters (pxproto.wire.codes.ServerCounterId)."""
        cid = body.param(TlvType.COUNTER_ID)
        cid = cid if isinstance(cid, int) else -1
        if cid not in ServerCounterId._value2member_map_:
            return Status.NOT_FOUND, (Tlv(TlvType.COUNTER_ID, max(cid, 0)), Tlv(TlvType.VALUE, 0))
        value = sum(self.counters[name] for name in SERVER_COUNTER_NAMES[ServerCounterId(cid)])
        if cid == ServerCounterId.DIME_BUSY:
            value += sum(steer.dropped(sock) for sock in self.steered)  # what a DIME's own socket had no room for
        return Status.OK, (Tlv(TlvType.COUNTER_ID, cid), Tlv(TlvType.VALUE, value))

    def _sys_fault_report(self, frame: Frame, body: Signaling) -> tuple[Status, tuple[Tlv, ...]]:
        who = ":".join(f"{b:02x}" for b in frame.src_mac)
        print(f"pxkernel: fault report from {who}/{frame.src_dime}: {body.param(TlvType.TEXT)!s}", flush=True)
        self.counters["fault_reports"] += 1
        return Status.OK, ()

    def from_dime(self, dime: int, raw: bytes, now: float) -> None:
        self.counters["dime_tx"] += 1
        if len(raw) >= spec.BODY_OFFSET:
            cls = ethertypes.current().classify(int.from_bytes(raw[12:14], "big"))
            if cls is FrameClass.HEARTBEAT:
                self._heartbeat_seen(dime, raw, now)
                if self.wire.shareable:
                    return  # the DIME sent it on the wire itself; this is our copy
            if raw[:6] == self.mac:  # to a DIME of this server
                self.from_wire(raw, now)
                return
        self._send_wire(raw)

    def _heartbeat_seen(self, dime: int, raw: bytes, now: float) -> None:
        try:
            f = decode(raw)
        except ProtocolError:
            return
        if isinstance(f.body, Sealed):  # its DIME encrypts heartbeats (--encrypt heartbeat): open our copy
            got = self.keyring.open_frame(f, raw, now, decode)
            if isinstance(got, str):
                self.counters[f"rejected_{got}"] += 1
                return
            f = got[0]
        hb = f.body
        assert isinstance(hb, Heartbeat)
        dp = self.dimes[dime]
        old = dp.info
        dp.info = DimeInfo(dime, dp.cfg.core, hb.state, hb.mem_limit, max(0, hb.mem_limit - hb.mem_used), hb.epoch)
        self.discovery.update(dp.info)
        if not self.booted and all(d.info.epoch for d in self.dimes.values()):
            self.booted = True
            self._tx_own(self.discovery.boot(now).frames)
        elif self.booted and old.epoch != hb.epoch:
            self._tx_own(self.discovery.announce(now).frames)  # a reborn DIME

    # -------------------------------------------------------------- loop

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "running", False))
        print(
            f"pxkernel: server {':'.join(f'{b:02x}' for b in self.mac)} on {self.wire.name}: "
            f"{self.cfg.dimes} DIMEs on cores {sorted(set(self.cfg.cores))}, {self.cfg.mem_chunks} chunks each, "
            f"fastpath {'compiled' if FASTPATH else 'pure'}, auth {'on' if self.keyring.enabled else 'off'}, "
            f"frames for DIMEs {'steered to their sockets' if self.steered else 'relayed'}",
            flush=True,
        )
        for i in range(self.cfg.dimes):
            self.spawn(i)
        self.sel.register(self.wire.fileno(), selectors.EVENT_READ, "wire")
        while self.running:
            timer = self.discovery.get_timer()
            now = time.monotonic()
            timeout = 0.5 if timer is None else max(0.0, min(0.5, timer - now))
            try:
                ready = self.sel.select(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            for key, _ in ready:
                if key.data == "wire":
                    batch = self.wire.recv_batch()
                    if batch is None:
                        print(f"pxkernel: wire {self.wire.name} is gone", file=sys.stderr, flush=True)
                        self.running = False
                        break
                    for raw in batch:
                        self.from_wire(raw, now)
                else:
                    self._drain_dime(int(key.data), now)
                self.flush_relay()
            timer = self.discovery.get_timer()
            if timer is not None and timer <= now:
                self._tx_own(self.discovery.handle_timer(now).frames)
        return self.shutdown()

    def _drain_dime(self, dime: int, now: float) -> None:
        if not drain(self.dimes[dime].sock, functools.partial(self.from_dime, dime), now):
            self._dime_lost(dime)

    def shutdown(self) -> int:
        self.running = False
        for dp in self.dimes.values():
            with contextlib.suppress(ProcessLookupError):
                dp.proc.terminate()
        total = 0
        for dp in self.dimes.values():
            try:
                dp.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                dp.proc.kill()
                dp.proc.wait()
            total += dp.cfg.mem_chunks
        print(
            f"pxkernel: shut down {len(self.dimes)} DIMEs; {total} chunks ({total * 2} MiB) returned to the system",
            flush=True,
        )
        for sock in self.steered:
            sock.close()
        self.wire.close()
        return 0


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))
