"""The MICE side of a DIME process (:class:`MiceHost`, a part of :class:`pxproto.node.dime.Dime`): the forked child
that runs the stage (:func:`pxproto.node.mice.run_child`), its memory limit and cgroup, and the hand-over of record
batches both ways, through the shared rings of :mod:`pxproto.node.shmring` (the socketpair beside them for wake-ups
and end of file) or, without the compiled ring, on the SOCK_SEQPACKET socketpair itself."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pxproto import package
from pxproto.fastpath import heap
from pxproto.node import memcg, memory, mice, shmring
from pxproto.node.machine import DimeMachine, Loaded, Mice
from pxproto.wire.codes import FaultCode

if TYPE_CHECKING:
    from pxproto.node.dime import DimeConfig

MICE_NICE = -5
"""Scheduling priority of a MICE when permitted (root; otherwise both stay at 0): level with its DIME's loop
(:data:`pxproto.node.dime.DIME_NICE`) and ahead of ordinary work; FCAPS stays ahead of the MICE through the
real-time heartbeat thread, and the loop wakes ahead of a MICE that has run longer.  SCHED_IDLE, used first,
starved the MICE for seconds whenever two busy processes shared the machine; nice 5 (weight 335) still lost to
ordinary load: bench/demo_stress.py on a host at load 10-25, under ``stress-ng --cpu 2``, medians of 3 runs: nice
5, 5,004 items/s quiet and 1,536 stressed (0.31x), 22 and 26 false deaths; nice 0, 14,187 and 5,848 (0.41x), 0
and 1 (and 27,931 and 23,806, 0.85x, no false death, once the sink's commit kept its file open).  Nice 0 behind a
loop at -5 (CFS weights 1024 against 3121) cost the channel: the loop took the core while its MICE had work, in
more, smaller turns; level at -5, bench/channel.py 1400 B (two alternated pairs, medians of 3): 318,559 and
352,136 items/s against 271,290 and 302,304 with the MICE at 0 (1.06x and 1.05x pyzmq tcp against 0.91x and
1.01x), each DIME's CPU per item 10-25% lower; 16 B 1.86M against 1.48M, 64 KiB 570 against 511 MB/s; and
bench/demo_stress.py, 3 runs each: 22,229 items/s under stress-ng (0.85x quiet) against 18,742 (0.74x), no
false death either way."""


class MiceHost:
    """The MICE process and its hand-over, for the DIME's loop (which owns the attributes below)."""

    cfg: DimeConfig
    sock: socket.socket
    wire: socket.socket | None
    store: package.LocalStore
    trees: dict[Path, dict[str, bytes]]
    sel: selectors.BaseSelector
    m: DimeMachine
    mice_sock: socket.socket | None
    mice_link: shmring.Link | None
    inbox: mice.Inbox
    mice_watched: bool
    memcg_base: tuple[Path, int] | None
    mice_cg: memcg.MiceCgroup | None
    mice_cg_joined: bool

    log: Callable[[str], None]

    def start_mice(self, loaded: Loaded, first: int, epoch: int, limit: int) -> int:
        link: shmring.Link | None = None
        theirs: shmring.Link | None = None
        if shmring.available():  # fresh rings for every MICE, touched here (charged to the DIME) before the fork
            link, theirs = shmring.Link.pair()
            parent, child = link.sock, theirs.sock
        else:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            for s in (parent, child):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        st = loaded.spec
        ctx = mice.Context(
            loaded.service, loaded.stage, loaded.name, self.cfg.dime, epoch, dict(st.params), self.store, first=first
        )
        self.mice_cg, self.mice_cg_joined = memcg.create(self.memcg_base), False
        pid = os.fork()
        if pid == 0:  # the MICE child
            code = 1
            try:
                if link is not None:
                    link.drop()  # the DIME's end: its socket and eventfds (the rings stay mapped for ``theirs``)
                else:
                    parent.close()
                self.sock.close()
                if self.wire is not None:
                    self.wire.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                die_with_parent()
                heap.default_heap()  # the DIME keeps its freed buffers; the MICE, within its limit, returns them
                with contextlib.suppress(OSError):  # the FCAPS loop on the same core comes first
                    os.setpriority(os.PRIO_PROCESS, 0, MICE_NICE)
                sys.dont_write_bytecode = True  # nothing lands in the verified tree
                try:
                    package.verify_tree(loaded.path, self.trees.get(loaded.path, {}))
                except (package.PackageError, OSError) as exc:
                    print(f"dime {self.cfg.dime}: MICE not started: {exc}", file=sys.stderr, flush=True)
                    os._exit(3)
                baseline = memory.limit_self(limit, self.mice_cg)
                ready = mice.REC.pack(mice.READY, baseline, 0)
                if theirs is not None:
                    theirs.send(ready)
                else:
                    child.send(ready)
                code = mice.run_child(child, str(loaded.path), st.entry, ctx, theirs)
            finally:
                os._exit(code)
        if theirs is not None:
            theirs.drop()  # (the MICE's rings here go with ``theirs``; the mappings stay, the DIME's link holds them)
        else:
            child.close()
        parent.setblocking(False)
        self.mice_sock = parent
        self.mice_link = link
        self._watch_mice()
        return pid

    def _mice_fds(self) -> list[Any]:
        """What the loop watches for the MICE: its socket (the hand-over itself, or with the rings, only its end of
        file) and, with the rings, the eventfd its wakes come on."""
        if self.mice_sock is None:
            return []
        return [self.mice_sock] if self.mice_link is None else [self.mice_link.wake_in, self.mice_sock]

    def _watch_mice(self) -> None:
        for fd in self._mice_fds():
            self.sel.register(fd, selectors.EVENT_READ, "mice")
        self.mice_watched = True

    def _unwatch_mice(self) -> None:
        for fd in self._mice_fds():
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(fd)

    def stop_mice(self, m: Mice) -> None:
        if self.mice_link is not None:
            with contextlib.suppress(OSError, ValueError):  # (a full ring: as a full socket, the kill below ends it)
                self.mice_link.try_send(mice.REC.pack(mice.STOP, 0, 0))
        elif self.mice_sock is not None:
            with contextlib.suppress(OSError):
                self.mice_sock.send(mice.REC.pack(mice.STOP, 0, 0))
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
        self._close_mice()
        self._drop_cgroup()

    def _drop_cgroup(self) -> None:
        if self.mice_cg is not None:
            self.mice_cg.remove()
        self.mice_cg = None

    def _cgroup_of(self, m: Mice) -> memcg.MiceCgroup | None:
        """The MICE's cgroup once its READY says it took its limit there, else None.

        A child that could not use the cgroup removes it before READY (and takes RLIMIT_AS), so after READY
        the directory's presence is the answer, whether or not the MICE is still alive to be seen in it."""
        cg = self.mice_cg
        if cg is not None and not self.mice_cg_joined and m.baseline:
            self.mice_cg_joined = cg.path.is_dir()
            if not self.mice_cg_joined:
                self.mice_cg = cg = None
        return cg if self.mice_cg_joined else None

    def _close_mice(self) -> None:
        s = self.mice_sock
        if s is not None:
            self._unwatch_mice()
            s.close()
        if self.mice_link is not None:
            self.mice_link.close()
        self.mice_sock = self.mice_link = None

    def relimit(self, m: Mice, chunks: int) -> None:
        with contextlib.suppress(OSError):
            memory.relimit(m.pid, m.baseline, chunks, self._cgroup_of(m))

    def cpu_ns(self, m: Mice | None) -> tuple[int, int]:
        t = os.times()
        return int((t.user + t.system) * 1e9), memory.proc_cpu_ns(m.pid) if m is not None else 0

    def mice_mem_chunks(self, m: Mice) -> int | None:
        return memory.mice_chunks(m.pid, m.baseline, self._cgroup_of(m))  # 0 before READY: memory.mice_chunks

    # ------------------------------------------------------------------ I/O

    def _send_mice(self) -> None:
        """Hand the MICE the record batches the machine prepared."""
        mc, s, link = self.m.mice, self.mice_sock, self.mice_link
        if mc is None or s is None:
            return
        if link is not None:
            while mc.pending_tx:
                try:
                    if not link.try_send(mc.pending_tx[0]):
                        break  # the ring is full: the MICE's release of space wakes the loop
                except ValueError as exc:  # (a batch past the ring's largest message: never made by the flow)
                    self.log(f"MICE hand-over: {exc}")
                    mc.pending_tx.clear()
                    break
                mc.pending_tx.popleft()
            return
        while mc.pending_tx:
            try:
                s.send(mc.pending_tx[0])
            except BlockingIOError:
                break
            except OSError:
                mc.pending_tx.clear()
                break
            mc.pending_tx.popleft()

    def _reap(self, now: float) -> None:
        """The MICE closed its socket: collect its exit and tell the machine (which reports a failure)."""
        mc = self.m.mice
        assert mc is not None
        try:
            _, status = os.waitpid(mc.pid, 0)
        except ChildProcessError:
            status = 0
        code, text = mc.fault or (0, "")
        cg = self._cgroup_of(mc)
        if not code and os.WIFSIGNALED(status) and cg is not None and cg.oom_kills():
            code = int(FaultCode.MEMORY_EXCEEDED)
            text = f"MICE {mc.name} killed at its memory limit of {self.m.mem.limit} chunks (cgroup v{cg.version})"
        elif not code and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            code, text = int(FaultCode.MICE_CRASHED), f"MICE {mc.name} killed by signal {sig}"
        elif not code and os.WEXITSTATUS(status):
            code, text = int(FaultCode.MICE_CRASHED), f"MICE {mc.name} exited with status {os.WEXITSTATUS(status)}"
        self._close_mice()
        self._drop_cgroup()
        self.m.mice_exited(code, text, now)

    def _mice_readable(self, now: float, woken: bool = True) -> None:
        """Read the MICE's record batches (64 at most; ``woken``: its socket was readable, else only its ring had
        messages)."""
        if self.mice_link is not None:
            self._mice_ring(now, self.mice_link, woken)
            return
        m, s = self.m, self.mice_sock
        assert s is not None
        for _ in range(64):
            if m.plane.output_backlogged():
                # Outputs wait for credit: stop watching the MICE (the socket stays readable, and a
                # level-triggered wait would spin) until the queue is down to half (_mice_watch).
                self._unwatch_mice()
                self.mice_watched = False
                break
            msg: bytes | memoryview
            try:
                msg = self.inbox.recv_view(s)  # no copy out: what the machine keeps it copies
            except BlockingIOError:
                break
            except OSError:
                msg = b""
            if not msg:
                self._reap(now)
                return
            m.mice_message(msg, now)
        m.mice_batch_done(now)

    def _mice_ring(self, now: float, link: shmring.Link, woken: bool) -> None:
        """:meth:`_mice_readable` from the shared ring: each batch handed to the machine as a view of the ring, its
        space freed once read; the MICE is reaped when its socket is at end of file and its ring is empty."""
        m = self.m
        if woken:
            link.drain_wakes()
        for _ in range(64):
            if m.plane.output_backlogged():  # as on the socket: the MICE waits on a full ring meanwhile
                self._unwatch_mice()
                self.mice_watched = False
                break
            try:
                view = link.recv_view()
            except ValueError as exc:  # the MICE wrote over its ring's bookkeeping: a crash, as a bad batch is
                mc = m.mice
                if mc is not None:
                    mc.fault = (int(FaultCode.MICE_CRASHED), f"MICE {mc.name} broke its hand-over ring: {exc}")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(mc.pid, signal.SIGKILL)
                    self._reap(now)
                return
            if view is None:
                if link.eof:
                    self._reap(now)
                    return
                break
            m.mice_message(view, now)
            del view
            if self.mice_link is not link:  # (the machine stopped the MICE meanwhile)
                return
            link.done()
        m.mice_batch_done(now)

    def _mice_watch(self) -> None:
        """Watch the MICE's output again once the queue held back by credit is down to half."""
        if self.mice_sock is not None and not self.mice_watched and self.m.plane.output_drained():
            self._watch_mice()


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (no orphaned DIME or MICE)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
