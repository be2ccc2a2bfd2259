"""One DIME process: the thin loop around :class:`pxproto.node.machine.DimeMachine`.

The loop (single thread, ``selectors``) takes frames from the server process
over a SOCK_SEQPACKET socketpair (one frame per message, both ways), and on a
UDP or AF_PACKET wire the data and signaling frames for it from its own wire
socket, where the kernel steers them (:mod:`pxproto.node.steer`, recvmmsg
batches), hands them
and the time to the machine, and sends what the machine puts out: through the
server, or straight on the wire when the server shares its datagram socket.
It owns everything the machine may not touch: the sockets, the MICE's forked
child process (:func:`pxproto.node.mice.run_child`), signals, the real-time
heartbeat sender (:mod:`pxproto.node.beat`) and the clock. However busy or stuck
the MICE is, this loop keeps heartbeating and answering, and the MICE's memory
limit kills the MICE, never the DIME.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pxproto import package
from pxproto.dime.endpoint import Address
from pxproto.fastpath import heap, select
from pxproto.node import beat, fastrx, memcg, mice, shmring, state
from pxproto.node.channels import FLUSH_US
from pxproto.node.machine import WINDOW_BYTES, DimeMachine, MachineConfig, OwnChannels, credit_for
from pxproto.node.micehost import MiceHost, die_with_parent
from pxproto.package import LocalStore, Manifest
from pxproto.signing import VerifyKeys
from pxproto.wire.codes import CHUNK_BYTES, CounterId

DIME_NICE = -5
"""Scheduling priority of a DIME process when permitted (root): its FCAPS loop before ordinary work."""
FRAME_MAX = 65535
GC_GEN0 = 10_000
"""The cyclic GC's first threshold in a DIME process (Python's default is 700): the item flow allocates
containers per item, and at 700 the collections took a tenth of the loop (perf on bench/dime_loop.py); what
the process made before its loop starts is frozen out of every collection."""


TX_SPLIT = 2
"""A credit window's worth of data frames built at once (on an ack, after a wait for credit) goes out half a
window at a time (:meth:`Dime._frame_built`), not all of them after the last is built: the next hops start on the
first frames while the rest are built."""
ACK_SPLIT = 4
"""A burst of frames read at once has its held acks sent, and the items they brought handed to the MICE, every
credit window / ACK_SPLIT frames, not only after the burst: one ack for a burst of a whole window made the
channel stop-and-wait (the sender idle while the sink worked through the burst, and the sink idle after it).
Quarters (4): with a 1 MiB window (16 jumbo fragments) they cost the DIMEs more CPU per item for no more
throughput (bench/channel.py A/B, medians of 4, 1400 B source/sink DIME 3.06/2.95 us/item at 4 against 2.51/2.61
at 2); with the 4 MiB window (64 fragments, acks every 16) they win: two alternated pairs, 1400 B 391k and 400k
items/s at 4 against 326k and 339k at 2 (source DIME 1.24 against 1.61-1.65 us/item), 64 KiB 634 and 667 against
578 and 492 MB/s, 16 B one pair each way (2.01M/2.19M, 2.24M/1.99M)."""
WIRE_WINDOW_MAX = 1 << 22
"""The most a channel on a UDP wire may have unacknowledged (64 fragments of 65,000 bytes).  On one 2-core host
an ack comes back milliseconds after its frame (five processes take turns on the cores), and 1 MiB, 3 ms of the
channel at 350 MB/s, left both DIMEs waiting: bench/channel.py, alternated runs, 1 MiB against 4 MiB:
1400 B 0.57x/0.53x against 0.65x/0.80x pyzmq tcp, 64 KiB 343/373 against 495/605 MB/s, each DIME's CPU per
item lower too (fewer, longer bursts).  The node asks for 8 MiB socket buffers and pxswitch for 4 MiB (8 MiB
of kernel accounting), which hold such a window."""


def wire_credit(mtu: int, rcvbuf: int) -> int:
    """The credit window on a UDP wire whose socket reports ``rcvbuf`` (SO_RCVBUF, twice the data it holds on
    Linux): the default (:func:`pxproto.node.machine.credit_for`) unless that is under 16 fragments (jumbo
    frames); then what the buffer holds, at least the default's 160 KiB and at most WIRE_WINDOW_MAX.  The
    switch's port buffer is taken to be like the node's (one host, one ``net.core.rmem_max``)."""
    default = credit_for(mtu)
    if default >= 16:
        return default
    return credit_for(mtu, min(WIRE_WINDOW_MAX, max(WINDOW_BYTES, rcvbuf // 2)))


def drain(
    sock: socket.socket,
    take: Callable[[bytes, float], None],
    now: float,
    burst: int = 256,
    inbox: mice.Inbox | None = None,
) -> bool:
    """Give ``take`` each frame waiting on a non-blocking socket (``burst`` at most; read through ``inbox`` when
    given, a buffer of at least FRAME_MAX); False when the other end is gone (end of file or a socket error)."""
    for _ in range(burst):
        try:
            raw = inbox.recv(sock) if inbox is not None else sock.recv(FRAME_MAX)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not raw:
            return False
        take(raw, now)
    return True


@dataclass
class DimeConfig:
    """What the server process tells a DIME process (as JSON on its stdin)."""

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
    verify_keys: dict[str, str] | None = None
    insecure: bool = False
    pin: bool = True
    mtu: int = 1500
    flush_us: int = FLUSH_US
    """Longest a data frame less than full waits for more items, microseconds (0: it goes at once)."""
    wire_fd: int = -1
    """The server's datagram wire socket, shared for sending, or this DIME's own steered one (``wire_rx``) (-1:
    send everything through the server)."""
    wire_dest: str = ""
    """The wire socket is unconnected: the raw struct sockaddr (hex) its frames go to with ``sendto``."""
    wire_rx: bool = False
    """The wire socket is this DIME's own (:mod:`pxproto.node.steer`): frames for it arrive there, read here."""
    mice_memory: str = "auto"
    """How a MICE's chunks are enforced: "cgroup", "rlimit" (RLIMIT_AS) or "auto" (a cgroup when one is
    writable); see :mod:`pxproto.node.memory`."""
    encrypt: list[int] | None = None
    """Frame classes sent encrypted (``pxkernel --encrypt``)."""


class Dime(MiceHost, OwnChannels):
    """A DIME process: sockets, the MICE process, signals and the clock around its machine (the :class:`Host`)."""

    rx_run = 0
    """Frames read so far in the current burst, since its acks last went (ACK_SPLIT)."""
    tx_run = 0
    """Data frames the machine built since the outbox last went (TX_SPLIT)."""

    def __init__(self, cfg: DimeConfig, sock: socket.socket) -> None:
        self.cfg = cfg
        self.sock = sock
        self.wire = socket.socket(fileno=cfg.wire_fd) if cfg.wire_fd >= 0 else None
        self.wire_dest = bytes.fromhex(cfg.wire_dest) if cfg.wire_dest else None
        """Where wire frames go on an unconnected socket (raw sockaddr; None: its connected peer)."""
        self.wire_peer = beat.peer_of(self.wire_dest) if self.wire_dest else None
        self.batch = select.compiled("pxproto.switch._afpacket")
        """recvmmsg and sendmmsg for the wire's frames (None: one recv and send each)."""
        chan = select.compiled("pxproto.dime._channel")
        self.send_frames: Callable[[int, list, bytes | None], int] | None = None
        """sendmmsg of bytes and TxFrames (a DATA frame's header and a view of its message: no copy), or of bytes
        only (``_afpacket.send_batch``, the compiled channel not built) (None: the wire's frames go one send each)."""
        if self.batch is not None:
            self.send_frames = chan.send_frames if chan is not None else self.batch.send_batch
        self.wire_rx: Any = fastrx.wire_rx() if self.batch is not None and cfg.wire_rx else None
        """The compiled receive loop of the wire socket (None: ``recv_batch`` and a Python call per frame)."""
        self.store = LocalStore(cfg.local_store)
        self.trees: dict[Path, dict[str, bytes]] = {}
        """Each fetched package tree's file digests, checked again before every import."""
        self.sel = selectors.DefaultSelector()
        self.mice_sock: socket.socket | None = None
        self.mice_link: shmring.Link | None = None
        """The MICE's shared-memory hand-over (None: record batches go over ``mice_sock`` itself)."""
        self.inbox = mice.Inbox()
        """The receive buffer of the MICE's record batches (the server's frames are read with ``recv(FRAME_MAX)``:
        no larger than the heap's mapping threshold, it costs less than ``recv_into`` and a copy out)."""
        self.mice_watched = True
        """Whether the loop waits on the MICE's output (not while outputs wait for credit)."""
        self.memcg_base = memcg.own_memory_cgroup() if cfg.mice_memory != "rlimit" else None
        """Where each MICE gets a memory cgroup (None: RLIMIT_AS)."""
        self.mice_cg: memcg.MiceCgroup | None = None
        """The running MICE's cgroup, from fork until it is reaped."""
        self.mice_cg_joined = False
        """Whether the MICE is known to be in ``mice_cg`` (checked once after its READY record)."""
        mc = MachineConfig(
            Address(state.parse_mac(cfg.mac), cfg.dime, 0),
            mem_chunks=cfg.mem_chunks,
            heartbeat_ms=cfg.heartbeat_ms,
            keys={int(k): bytes.fromhex(v) for k, v in (cfg.keys or {}).items()},
            verify_keys={int(k): bytes.fromhex(v) for k, v in (cfg.verify_keys or {}).items()},
            insecure=cfg.insecure,
            mtu=cfg.mtu,
            encrypt=tuple(cfg.encrypt or ()),
            has_wire=self.wire is not None,
            has_store=bool(cfg.store),
            leader_fence=lambda epoch: state.raise_leader_fence(cfg.state_dir, epoch),
        )
        self.m = DimeMachine(mc, self)
        self.m.plane.flush_delay = cfg.flush_us / 1e6
        self.m.plane.iov_frames = chan is not None and self.send_frames is not None and self.wire is not None
        self.m.plane.tx_split = TX_SPLIT
        if self.wire is not None and self.wire.type == socket.SOCK_DGRAM:
            self.m.credit_window = wire_credit(cfg.mtu, self.wire.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    # ------------------------------------------------------------------ the Host the machine asks

    def log(self, text: str) -> None:
        print(f"dime {self.cfg.dime}: {text}", file=sys.stderr, flush=True)

    def next_epoch(self) -> int:
        return state.next_epoch(self.cfg.state_dir, self.cfg.dime)

    def fetch(self, digest: bytes, size: int, sig: bytes, key: VerifyKeys | None) -> tuple[Path, Manifest]:
        assert self.cfg.store is not None
        path, manifest, files = package.fetch_tree(self.cfg.store, self.cfg.local_store, digest, size, sig, key)
        self.trees[path] = files
        return path, manifest

    def _send_out(self) -> None:
        """Send what the machine put out, each frame on its route.

        Frames for the wire go out together with one ``sendmmsg`` per 64 (``pxproto.dime._channel.send_frames``,
        which sends a TxFrame as its header and a view of its message) when it is built; what the socket did not
        take, and every frame when it is not built, goes one ``send`` at a time (a TxFrame joined into bytes),
        falling back to the relay when the wire is full.
        """
        m = self.m
        if not m.outbox:
            return
        box = m.take_outbox()
        send = self.send_frames
        if send is not None and self.wire is not None and (len(box) > 1 or type(box[0][0]) is not bytes):
            direct = [raw for raw, route in box if route != "relay"]
            fd, done = self.wire.fileno(), 0
            try:
                while done < len(direct):
                    n = send(fd, direct[done : done + 64], self.wire_dest)
                    if n <= 0:
                        break
                    done += n
            except OSError:
                pass  # the per-frame path below meets the same error and counts it
            if done == len(box):  # all of them went (the common case: no per-frame walk)
                return
            if done:  # the first ``done`` wire frames went: keep the rest, in order
                rest = []
                for raw, route in box:
                    if route != "relay" and done:
                        done -= 1
                    else:
                        rest.append((raw, route))
                box = rest
        for raw, route in box:
            if type(raw) is not bytes:
                raw = bytes(raw)  # a TxFrame, whole
            if route != "relay" and self.wire is not None:
                try:
                    if self.wire_peer is None:
                        self.wire.send(raw)
                    else:
                        self.wire.sendto(raw, self.wire_peer)
                    continue
                except OSError:  # no room now, or the wire has trouble: the relay takes a data frame
                    if route == "beat":
                        m.counters[CounterId.TX_DROPPED] += 1
                        continue
                    m.counters[CounterId.WIRE_FALLBACK] += 1
            try:
                self.sock.send(raw)
            except BlockingIOError:
                m.counters[CounterId.TX_DROPPED] += 1  # the server is behind: lost, like on a wire
            except OSError:
                m.running = False

    def _flush(self) -> None:
        self._send_out()
        self._send_mice()

    def _frame_built(self, n: int = 1) -> None:
        """The machine built ``n`` data messages: send what it built so far once it is half a window's worth."""
        self.tx_run += n
        if self.tx_run * TX_SPLIT >= self.m.credit_window:
            self.tx_run = 0
            self._send_out()

    def _from_server(self, raw: bytes, now: float) -> None:
        m = self.m
        m.on_frame_guarded(raw, now)
        self.rx_run += 1
        if self.rx_run * ACK_SPLIT >= m.credit_window:  # a long burst: its credit and items go now, not after it
            self.rx_run = 0
            m.plane.flush_acks(now)
        self._flush()

    def _from_wire(self, now: float) -> None:
        """Frames the kernel steered to this DIME's own wire socket (recvmmsg, 64 a call, 256 at most), each into
        the machine as one from the server's relay; with the compiled ``WireRx``, clear DATA fragments of wired
        inputs go from the receive buffer into their channel's reassembly in C, the rest as from the relay."""
        assert self.wire is not None and self.batch is not None
        fd = self.wire.fileno()
        rx = self.wire_rx
        if rx is not None:
            split = -(-self.m.credit_window // ACK_SPLIT)
            for _ in range(4):
                try:
                    got = rx.drain(fd, self, now, split)
                except OSError as exc:  # (as below)
                    self.m.reasons[f"wire_rx:{exc.strerror}"] += 1
                    return
                if got < 64:
                    return
            return
        for _ in range(4):
            try:
                got = self.batch.recv_batch(fd)
            except OSError as exc:  # a pending socket error (the interface went down): reported once, then cleared
                self.m.reasons[f"wire_rx:{exc.strerror}"] += 1
                return
            for raw in got:
                self._from_server(raw, now)
            if len(got) < 64:
                return

    def run(self) -> int:
        m = self.m
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ, "server")
        if self.cfg.wire_rx and self.wire is not None and self.batch is not None:
            self.wire.setblocking(False)
            self.sel.register(self.wire, selectors.EVENT_READ, "wire")
        signal.signal(signal.SIGTERM, lambda *_: setattr(m, "running", False))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        m.start(time.monotonic())
        m.plane.frame_out = self._frame_built
        self.rx_run = self.tx_run = 0
        with contextlib.suppress(OSError):
            if self.wire is not None:
                m.beater = beat.Beater(self.wire.fileno(), dest=self.wire_dest or b"")
            else:
                m.beater = beat.Beater(self.sock.fileno())
        mac = ":".join(f"{b:02x}" for b in m.mac)
        print(
            f"dime {self.cfg.dime}: core {self.cfg.core} pid {os.getpid()} epoch {m.epoch} "
            f"mac {mac} memory {m.mem.limit} chunks ({m.mem.limit * CHUNK_BYTES >> 20} MiB) "
            f"heartbeat {round(m.hb.period * 1000)} ms auth {'on' if m.keyring.enabled else 'off'} "
            f"heartbeat sender {'real-time' if m.beater is not None and m.beater.realtime else 'normal'} ready",
            flush=True,
        )
        while m.running:
            now = time.monotonic()
            due = m.get_timer()
            deadline = now + 1.0 if due is None else due
            if m.mice is not None and (m.mice.pending_tx or m.plane.completions):
                deadline = min(deadline, now + 0.002)
            link = self.mice_link
            ready = link is not None and self.mice_watched and link.sleep()  # set the flag, then look: no lost wake
            if ready:
                deadline = now
            events = self.sel.select(max(0.0, deadline - now))
            if link is not None and not ready:
                link.awake()
            if ready and link is self.mice_link and all(key.data != "mice" for key, _ in events):
                self._mice_readable(time.monotonic(), woken=False)
                self._flush()
            for key, _ in events:
                now = time.monotonic()
                if key.data == "server":
                    if not drain(self.sock, self._from_server, now):  # recv(FRAME_MAX): one copy per frame
                        m.running = False
                    self.rx_run = 0
                    m.plane.flush_acks(now)  # and the MICE gets what the frames brought, in one message
                elif key.data == "wire":
                    self._from_wire(now)
                    self.rx_run = 0
                    m.plane.flush_acks(now)
                elif key.data == "mice" and m.mice is not None:
                    self._mice_readable(now)
                self._flush()
            now = time.monotonic()
            if due is not None and now >= due:  # (a timer armed during the turn is later, or due at the next one)
                m.handle_timer(now)
            m.plane.coalesce_completions(now)
            if m.mice is not None:
                m.plane.feed_mice(now)
                self._mice_watch()
            self._flush()
        if m.beater is not None:
            m.beater.close()
        used = m.mem.mice_used
        m.now = time.monotonic()
        m.stop_mice("shutdown")
        print(
            f"dime {self.cfg.dime}: shut down; returned {m.mem.limit} chunks "
            f"({used} were in use by the MICE, {m.mem.reserved} reserved)",
            flush=True,
        )
        return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pxproto.node.dime -``: run one DIME; the server writes its config (keys too) as JSON on
    stdin, never on the command line, where any local user could read the keys in /proc."""
    args = sys.argv[1:] if argv is None else argv
    cfg = DimeConfig(**json.loads(sys.stdin.read() if args[0] == "-" else args[0]))
    die_with_parent()
    if cfg.pin:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cfg.core})
    with contextlib.suppress(OSError):  # the FCAPS loop before ordinary work (root only; it mostly sleeps)
        os.setpriority(os.PRIO_PROCESS, 0, DIME_NICE)
    sock = socket.socket(fileno=cfg.fd)
    heap.keep_heap()  # frames and record batches of 64 KiB reuse the heap instead of faulting fresh pages in
    gc.freeze()
    gc.set_threshold(GC_GEN0, 10, 10)
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
