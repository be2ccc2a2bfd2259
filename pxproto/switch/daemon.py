"""The pxswitch event loop: ports, the core, the control socket and signals, in one thread.

The loop polls every port, hands what arrives to :class:`Switch`, pushes the
core's queues out (strict priority is the core's), writes the mirror,
answers ``stats``/``fdb`` on the control socket, reloads ports on SIGHUP and
stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import time
from typing import IO, Any

from pxproto.capture.pcapng import PcapngWriter
from pxproto.fastpath import select
from pxproto.switch.config import ConfigError, PortSpec, SwitchConfig, load_file
from pxproto.switch.core import ETH_OVERHEAD, Switch
from pxproto.switch.kports import KernelPorts
from pxproto.switch.loopstats import add_loops, add_offload_errors
from pxproto.switch.ports import (
    AfPacketPort,
    Port,
    PortGone,
    UdpPort,
    claim_unix_path,
    port_error,
)
from pxproto.switch.portset import log, open_port, reload_ports
from pxproto.switch.sched import set_realtime, set_slice
from pxproto.switch.udpsteer import address
from pxproto.switch.workers import Workers

BATCH = 64
FAST_PORTS = 64
FAST_BATCHES = 16
CHECK_PERIOD = 1.0
MIRROR_BUFFER = 8 << 20
"""Bytes of pcapng blocks the fast loop may hold between two writes of the mirror file."""


class StartError(Exception):
    """The switch cannot start as configured: one line naming the port (or socket) and the reason."""


class Daemon:
    """Runs one switch until asked to stop."""

    def __init__(self, config: SwitchConfig, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.core = Switch(config.policy)
        self.sel = selectors.DefaultSelector()
        self.ports: dict[int, Port] = {}
        self.specs: dict[int, PortSpec] = {}
        self.gone: dict[str, str] = {}
        """Ports that vanished or failed to open, and why."""
        self._fds: dict[int, tuple[int, ...]] = {}
        self._udp_fast: set[int] = set()
        """UDP ports the compiled loop reads and writes (they have a destination)."""
        self._events: dict[int, int] = {}
        self._stop = False
        self._closing = False
        self._reload = False
        self._mirror_file: IO[bytes] | None = None
        self.mirror: PcapngWriter | None = None
        if config.mirror:
            try:
                self._mirror_file = open(config.mirror, "wb")
            except OSError as exc:
                raise StartError(f"mirror {config.mirror}: {port_error(OSError(exc.errno, exc.strerror))}") from None
            self.mirror = PcapngWriter(self._mirror_file, comment="pxswitch mirror")
            self.core.policy.mirror = True
        self.fast: Any = self._fast_loop()
        pol = config.policy
        self.kernel = KernelPorts(pol.validation, bool(config.mirror), pol.fdb_capacity, pol.aging, log)
        self.control: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._check_at = 0.0
        self.workers: Workers | None = None
        if self.fast is not None and config.workers > 1:
            if self.core.policy.mirror:
                log(f"workers {config.workers}: one thread with --mirror (the mirror keeps the loop's order)")
            else:
                self.workers = Workers(config.workers - 1, self._fast_loop, self._notify, config.slice)
        try:
            # A switch that starts is whole: a port that cannot open stops it (a reload only logs).
            # The control path is claimed first (a second switch stops here), and listens once every port
            # is open: a client that gets an answer knows the switch is whole.
            self.control = self._open_control(config.control)
            for spec in config.ports:
                self._add(spec, strict=True)
            self._restart_workers()
            if self.control is not None:
                self.control.listen(8)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------- ports

    def _fast_loop(self) -> Any:
        """The compiled AF_PACKET loop, when it is built and the policy lets it decide frames."""
        pol = self.core.policy
        afpacket = select.compiled("pxproto.switch._afpacket")
        fdb = select.compiled("pxproto.switch._fdb")
        if afpacket is None or fdb is None:
            return None
        VALIDATION, FastLoop, Fdb = afpacket.VALIDATION, afpacket.FastLoop, fdb.Fdb
        if not isinstance(self.core.fdb, Fdb):
            return None
        fast = FastLoop(self.core.fdb)
        fast.validation = VALIDATION[pol.validation]
        fast.malformed_drop = pol.malformed == "drop"
        fast.non_parallax_drop = pol.non_parallax == "drop"
        if pol.mirror:
            fast.set_mirror(MIRROR_BUFFER)
        fast.busy_poll = self.config.busy_poll * 1e-6
        fast.busy_adaptive = self.config.busy_adaptive * 1e-6
        fast.busy_nap = self.config.busy_nap * 1e-6
        return fast

    def _is_fast(self, pid: int) -> bool:
        """The compiled loop reads and writes ``pid``: an AF_PACKET port, or a UDP port with a destination (a
        fixed remote, or the sender it learned: one datagram is one frame, recvmmsg/sendmmsg as on a packet
        socket)."""
        port = self.ports.get(pid)
        return (
            self.fast is not None
            and pid < FAST_PORTS
            and (isinstance(port, AfPacketPort) or (isinstance(port, UdpPort) and pid in self._udp_fast))
        )

    def _udp_to_fast(self, pid: int, port: UdpPort, name: str) -> None:
        """Hand a UDP port to the compiled loop once it has a destination: at once with a fixed remote, after its
        first datagram without one (the loop then follows the sender of the last datagram, as Python did)."""
        if self.fast is None or pid >= FAST_PORTS or pid in self._udp_fast or not port.connected:
            return
        assert port.dest is not None
        self.fast.set_port(pid, port.sock.fileno(), port.ctrl.fileno(), None, name)
        self.fast.set_dest(pid, port.dest, port.follows)
        self._udp_fast.add(pid)
        self._sync(pid)
        try:
            self.kernel.add_udp(
                pid, port, self.specs[pid].get("kernel"), self.core.ports[pid].mtu, self._udp_remote(pid)
            )
        except OSError as exc:
            log(f"port {name}: {exc.strerror}")  # (kernel=true, and the path cannot take it: userspace it is)

    def _udp_remote(self, pid: int) -> tuple[str, int] | None:
        """Where the switch sends UDP port ``pid``'s frames now (the compiled loop may have followed a sender)."""
        port = self.ports.get(pid)
        if not isinstance(port, UdpPort):
            return None
        raw = self.fast.dest(pid)[0] if self.fast is not None and pid in self._udp_fast else b""
        return address(raw) if raw else port.remote

    def _is_afpacket(self, pid: int) -> bool:
        return isinstance(self.ports.get(pid), AfPacketPort) and self._is_fast(pid)

    def _add(self, spec: PortSpec, strict: bool = False, port: Port | None = None, announce: bool = True) -> None:
        """Open ``spec`` (unless ``port`` is it, opened) and give it to the core and the loop; ``strict``: a
        failure is a StartError, else it is logged and the port listed as gone; ``announce``: log that it opened."""
        try:
            if port is None:
                port = open_port(spec, self.core.policy.aging)
        except (OSError, ValueError) as exc:
            why = port_error(exc)
            if strict:
                raise StartError(f"port {spec.name} ({spec.type}): cannot open: {why}") from None
            self.gone[spec.name] = f"cannot open: {why}"
            log(f"port {spec.name} ({spec.type}) cannot open: {why}")
            return
        try:
            pid = self.core.add_port(spec.name, int(spec.get("mtu", port.mtu)), spec.get("max_macs"))
        except ValueError as exc:
            port.close()
            if strict:
                raise StartError(f"port {spec.name} ({spec.type}): {exc}") from None
            self.gone[spec.name] = str(exc)
            log(str(exc))
            return
        self.ports[pid] = port
        self.specs[pid] = spec
        self.gone.pop(spec.name, None)
        self._fds[pid] = ()
        vnet = False
        if isinstance(port, AfPacketPort) and self.workers is None:
            port.split_in_kernel()  # one packet handler per received frame (worker lanes hash in a group instead)
        if isinstance(port, (AfPacketPort, UdpPort)):
            try:
                if isinstance(port, UdpPort):
                    self.kernel.check_udp(port, spec.get("kernel"))  # (it joins once its peer is known)
                else:
                    self.kernel.add(pid, port, spec.get("kernel"), self.core.ports[pid].mtu)
            except OSError as exc:
                self._remove(pid)
                if strict:
                    raise StartError(f"port {spec.name} ({spec.type}): cannot open: {exc.strerror}") from None
                self.gone[spec.name] = f"cannot open: {exc.strerror}"
                log(f"port {spec.name} ({spec.type}) cannot open: {exc.strerror}")
                return
        if self._is_fast(pid):
            if isinstance(port, AfPacketPort):
                self.fast.set_port(pid, port.fd, port.ctrl.fileno(), port.ring, spec.name, port.tx)
                vnet = port.vnet
        if self.fast is not None and pid < FAST_PORTS:  # (the compiled loop also decides what Python reads)
            self.fast.set_limits(pid, self.core.ports[pid].mtu + ETH_OVERHEAD, vnet)
            self.fast.set_name(pid, spec.name)
        self._sync(pid)
        if isinstance(port, UdpPort):  # with a fixed remote: data and steered control sockets, from the start
            self._udp_to_fast(pid, port, spec.name)
        if not strict:  # at start, "running" names them all once every port is open
            self._restart_workers()
            if announce:
                log(f"port {spec.name} ({spec.type}) open")

    def _notify(self) -> None:
        try:
            self._wake_w.send(b"w")
        except OSError:
            pass  # (full: a wake-up is already pending)

    def _restart_workers(self, stop_only: bool = False) -> None:
        """Stop the worker threads, then (unless ``stop_only``) start them on the AF_PACKET ports there are."""
        if self.workers is None:
            return
        self.workers.stop()
        if stop_only:
            return
        lanes = {
            pid: (port, self.specs[pid].name, self.core.ports[pid].mtu + ETH_OVERHEAD, port.up,
                  bool(self.core.pending(pid)))
            for pid, port in self.ports.items()
            if isinstance(port, AfPacketPort) and self._is_fast(pid)
        }  # fmt: skip
        if lanes:
            self.workers.start(lanes, self._others_up() or len(lanes) < len(self.ports))
            for pid, (port, *_) in lanes.items():
                self.kernel.attach_lanes(pid, port)

    def _remove(self, pid: int, why: str | None = None) -> None:
        self._restart_workers(stop_only=True)  # (started again below, without this port)
        if self.fast is not None and pid < FAST_PORTS:
            self.fast.clear_port(pid)
        self.kernel.remove(pid)
        self._udp_fast.discard(pid)
        port = self.ports.pop(pid)
        spec = self.specs.pop(pid)
        for fd in self._fds.pop(pid, ()):
            self.sel.unregister(fd)
        self._events.pop(pid, None)
        try:
            port.close()
        except OSError:
            pass
        self.core.remove_port(pid)
        if why:
            self.gone[spec.name] = why
            log(f"port {spec.name} gone: {why}")
        if not self._closing:
            self._restart_workers()

    def _sync(self, pid: int) -> None:
        """Keep the selector and the core's up flag in step with the port."""
        port = self.ports[pid]
        fds = port.filenos()
        want = selectors.EVENT_READ
        if self.core.pending(pid) or port.wants_write():
            want |= selectors.EVENT_WRITE
        old = self._fds.get(pid, ())
        if old != fds:
            for fd in old:
                self.sel.unregister(fd)
            for i, fd in enumerate(fds):
                self.sel.register(fd, want if i == 0 else selectors.EVENT_READ, ("port", pid))
            self._fds[pid] = fds
            self._events[pid] = want
        elif fds and self._events.get(pid) != want:
            self.sel.modify(fds[0], want, ("port", pid))
            self._events[pid] = want
        if self.core.ports[pid].up != port.up:
            self.core.set_up(pid, port.up)
            self.kernel.set_up(pid, port.up)
        if self._is_fast(pid):
            self.fast.set_state(pid, port.up, bool(self.core.pending(pid)))
            if self.workers is not None:
                self.workers.set_state(pid, port.up, bool(self.core.pending(pid)))

    def reload(self) -> None:
        """Re-read the config file and make the ports what it says, as a whole or not at all; the table and the
        [switch] settings stay.  A file that does not check, or a port that cannot open, refuses the reload with
        one line, and the running ports stay as they were (:func:`~pxproto.switch.portset.reload_ports`)."""
        if not self.config_path:
            log("SIGHUP: no config file to reload")
            return
        try:
            new = load_file(self.config_path)
        except ConfigError as exc:
            log(f"reload refused: {exc}")
            return
        reload_ports(self, new)

    # ------------------------------------------------------------- control socket

    def _open_control(self, path: str) -> socket.socket | None:
        if not path:
            return None
        try:
            claim_unix_path(path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(path)
                os.chmod(path, 0o600)
            except OSError:
                s.close()
                raise
        except OSError as exc:
            raise StartError(f"control socket {path}: {port_error(OSError(exc.errno, exc.strerror))}") from None
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, ("control", None))
        return s

    def stats(self) -> dict[str, Any]:
        st = self.core.stats()
        loops = [x for x in (self.fast, *(self.workers.loops if self.workers is not None else ())) if x is not None]
        names = {pid: self.core.ports[pid].name for pid in self.ports}
        # what the compiled loops handled themselves (route() for the ports Python reads)
        add_loops(st, loops, {pid: name for pid, name in names.items() if pid < FAST_PORTS})
        for pid, port in self.ports.items():
            st["ports"][names[pid]].update(port.describe())
        add_offload_errors(st, loops, {pid: name for pid, name in names.items() if self._is_fast(pid)})
        self.kernel.add_stats(st, names)
        if self.workers is not None:
            st["switch"]["workers"] = len(self.workers.loops) + 1
            st["switch"]["worker_rx"] = sum(
                w.counters(pid)[0] for w in self.workers.loops for pid in self.workers.lanes
            )
            if self.workers.errors:
                st["switch"]["worker_errors"] = list(self.workers.errors)
        for name, why in self.gone.items():
            st["ports"][name] = {"up": False, "gone": why}
        return st

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        try:
            req = conn.recv(256).decode("ascii", "replace").strip()
            if req == "stats":
                reply: Any = self.stats()
            elif req == "fdb":
                reply = self.core.fdb_table(time.monotonic())
            else:
                reply = {"error": f"unknown request {req[:40]!r}: stats or fdb"}
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass
        finally:
            conn.close()

    # ------------------------------------------------------------- the loop

    def _signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def install_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._signal)

    def stop(self) -> None:
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _receive(self, pid: int, now: float) -> None:
        if self._is_fast(pid):
            self._pump(pid, now)
            return
        port = self.ports[pid]
        try:
            frames = port.recv_batch(BATCH)
        except PortGone as exc:
            self._remove(pid, str(exc))
            return
        if self.fast is None or pid >= FAST_PORTS:
            for f in frames:
                self.core.receive(pid, f, now)
            return
        slow, routed = self.fast.route(pid, frames, now)  # decided at C level, queued by the core
        for f in slow:
            self.core.receive(pid, f, now)
        self.core.forward(pid, routed, now)
        if isinstance(port, UdpPort):  # once the first sender is learned, the compiled loop takes over
            self._udp_to_fast(pid, port, self.core.ports[pid].name)

    def _pump(self, pid: int, now: float) -> None:
        """Let the compiled loop forward what ``pid`` holds, a few batches at a time."""
        for _ in range(FAST_BATCHES):
            try:
                got, slow, retry, failed = self.fast.pump(pid, now)
            except OSError as exc:
                self._remove(pid, f"{self.core.ports[pid].name}: {exc.strerror}")
                return
            self._after_pump(pid, now, slow, retry, failed)
            if not got or pid not in self.ports:
                return

    def _after_pump(self, pid: int, now: float, slow: list[bytes], retry: list[Any], failed: list[int]) -> None:
        """Python's share of a fast batch: frames for the core, control frames a wire refused, failed ports."""
        for f in slow:
            self.core.receive(pid, f, now)
        for out, f, ci in retry:
            self.core.enqueue(out, f, ci)
        for out in failed:
            if out in self.ports:
                self._remove(out, f"{self.core.ports[out].name}: {'receive' if out == pid else 'send'} failed")
        if retry or slow:
            for out in list(self.ports):
                self._sync(out)  # a backlog now exists: the fast loop must queue behind it

    def _quiet_fast(self) -> list[int] | None:
        """When every waiting frame can only be the fast loop's (nothing queued in the core, nothing to write),
        the descriptors it must watch for the rest; else None."""
        if self.fast is None or not any(self._is_fast(pid) for pid in self.ports):
            return None
        watch = [self._wake_r.fileno()]
        if self.control is not None:
            watch.append(self.control.fileno())
        for pid, port in self.ports.items():
            if self.core.pending(pid) or port.wants_write():
                return None
            if not self._is_fast(pid):
                watch.extend(self._fds.get(pid, ()))
        return watch

    def _others_up(self) -> bool:
        return any(p.up for pid, p in self.ports.items() if not self._is_fast(pid))

    def _transmit(self) -> None:
        for pid in list(self.ports):
            port = self.ports.get(pid)
            if port is None:
                continue
            if pid in self._udp_fast and self.core.pending(pid):  # (the compiled loop may have followed a sender)
                assert self.fast is not None and isinstance(port, UdpPort)
                port.follow(self.fast.dest(pid)[0])
            try:
                port.flush()
                while self.core.pending(pid):
                    frames = self.core.peek(pid, BATCH)
                    k = port.send_batch(frames)
                    self.core.consume(pid, k)
                    if k < len(frames):
                        break
            except PortGone as exc:
                self._remove(pid, str(exc))
                continue
            self._sync(pid)

    def _write_mirror(self) -> None:
        if self.mirror is None or self._mirror_file is None:
            return
        if self.fast is not None:
            blocks = self.fast.take_mirror()  # whole pcapng blocks for interface 0, written as they are
            if blocks:
                self._mirror_file.write(blocks)
        if not self.core.mirror:
            self.mirror.flush()
            return
        wall = time.time() - time.monotonic()  # the core's clock is monotonic; pcapng's is the epoch
        for now, pid, frame in self.core.take_mirror():
            name = self.core.ports[pid].name if pid in self.core.ports else str(pid)
            self.mirror.write(frame, int((now + wall) * 1e9), comment=f"in {name}")
        self.mirror.flush()

    def step(self, timeout: float) -> None:
        """One turn of the loop: wait up to ``timeout`` seconds, then do all that is due."""
        t = self.core.next_timer()
        now = time.monotonic()
        if t is not None:
            timeout = max(0.0, min(timeout, t - now))
        due = self.kernel.due(self.core.fdb, now)
        if due is not None:
            timeout = min(timeout, due)
        watch = self._quiet_fast()
        if watch is not None and timeout > 0:
            self.fast.return_on_learn = self.kernel.active  # (the kernel's copy of the table follows each change)
            # The compiled loop polls and forwards on its own until Python has work: no Python per wake-up.
            for pid, slow, retry, failed in self.fast.run(watch, min(timeout, CHECK_PERIOD)):
                if pid in self.ports:
                    self._after_pump(pid, time.monotonic(), slow, retry, failed)
            timeout = 0.0
        if self.workers is not None:
            for pid, slow, retry, failed in self.workers.take():
                if pid in self.ports:
                    self._after_pump(pid, time.monotonic(), slow, retry, failed)
        for key, _ in self.sel.select(timeout):
            what, pid = key.data
            now = time.monotonic()
            if what == "port" and pid in self.ports:
                self._receive(pid, now)
            elif what == "control" and self.control is not None:
                try:
                    conn, _ = self.control.accept()
                except OSError:
                    continue
                self._answer(conn)
            elif what == "wake":
                try:
                    self._wake_r.recv(4096)
                except OSError:
                    pass
        now = time.monotonic()
        self._transmit()
        if self.fast is not None:
            self.fast.set_others_up(self._others_up())
            if self.workers is not None:
                self.workers.set_others_up(self._others_up() or any(not self._is_afpacket(p) for p in self.ports))
        self._write_mirror()
        self.core.handle_timer(now)
        self.kernel.tick(self.core.fdb, now, self._udp_remote)
        if now >= self._check_at:
            self._check_at = now + CHECK_PERIOD
            for pid in list(self.ports):
                try:
                    self.ports[pid].check()
                except PortGone as exc:
                    self._remove(pid, str(exc))
        if self._reload:
            self._reload = False
            self.reload()

    def _set_scheduler(self) -> None:
        prio, us = self.config.realtime, self.config.slice
        if prio:
            why = set_realtime(prio)
            log(f"realtime {prio} refused ({why}): running under the normal scheduler" if why else
                f"SCHED_FIFO priority {prio}")  # fmt: skip
            if not why:
                return
        if us:
            why = set_slice(us)
            if why:
                log(f"slice {us} µs refused ({why}): the kernel's default slice")

    def run(self) -> int:
        self._set_scheduler()
        names = ", ".join(self.core.ports[pid].name for pid in sorted(self.ports))
        log(f"running: {len(self.ports)} ports ({names}), control socket {self.config.control}")
        while not self._stop:
            self.step(0.5)
        self.close()
        log("stopped")
        return 0

    def close(self) -> None:
        self._closing = True
        self._restart_workers(stop_only=True)
        for pid in list(self.ports):
            self._remove(pid)
        self.kernel.close()
        if self.control is not None:
            path = self.control.getsockname()
            self.sel.unregister(self.control)
            self.control.close()
            self.control = None
            if isinstance(path, str) and os.path.exists(path):
                os.unlink(path)
        if self._mirror_file is not None:
            self._write_mirror()
            self._mirror_file.close()
            self._mirror_file = None
            self.mirror = None
        for s in (self._wake_r, self._wake_w):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.sel.close()
