"""The orchestrator's I/O: one wire (a pxswitch port, rootless, or AF_PACKET on an interface), the clock, signing.

:class:`Driver` decodes what arrives (the compiled codec when it is built),
hands heartbeats to the core's hot path and everything else to
:meth:`Orchestrator.receive`, sends what the core returns (signed under the
cluster key when one is set), and calls the core's timer when it is due.
With a key, every frame that arrives must carry a good trailer: key known,
tag right, counter fresh in its sender's window (:class:`pxproto.dime.keys.KeyRing`,
that is :mod:`pxproto.dime.replay`'s key store and windows); the others are
dropped before the core sees them and counted by reason (``rejected_*``).
It can record every heartbeat it sees (for the timeline picture) and passes
each event to a callback as it happens.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterable
from typing import Any

from pxproto.dime.endpoint import Output
from pxproto.dime.keys import KeyRing
from pxproto.errors import ProtocolError
from pxproto.fastpath import decode, encode  # compiled or pure: pxproto.fastpath.select
from pxproto.link import Port
from pxproto.orch.core import Orchestrator
from pxproto.orch.events import OrchEvent
from pxproto.wire.frame import Heartbeat, Sealed


def raise_priority(nice: int = -10) -> bool:
    """Run the orchestrator ahead of the DIMEs it judges (they run at nice -5): a starved orchestrator reads a
    late heartbeat as a dead DIME.  Needs CAP_SYS_NICE; returns whether it took."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        return False
    return True


class Driver:
    """Runs one :class:`Orchestrator` on one wire."""

    def __init__(
        self,
        core: Orchestrator,
        wire: Port,
        keys: dict[int, bytes] | None = None,
        on_event: Callable[[OrchEvent], None] | None = None,
        record_heartbeats: bool = False,
        encrypt: Iterable[int] = (),
    ) -> None:
        self.core = core
        self.wire = wire
        self.keyring = KeyRing(dict(keys or {}), epoch=int(time.time()) & 0xFFFFFFFF, encrypt=encrypt)
        """Signs what the orchestrator sends (seals the classes of ``encrypt``), checks or opens what comes."""
        self.on_event = on_event
        self.heartbeats: list[tuple[float, bytes, int, int, int]] | None = [] if record_heartbeats else None
        """(arrival, server MAC, DIME, epoch, rx_queue) of every heartbeat, when recording."""
        self.counters: dict[str, int] = {"rx": 0, "tx": 0, "malformed": 0, "not_for_us": 0, "rejected": 0}
        self.gone = False
        self.muted = False
        """A follower (:mod:`pxproto.orch.leader`): it listens and keeps its liveness view warm, and sends nothing."""
        self.before_send: Callable[[Output], None] | None = None
        """Called with what is about to go out unmuted (a leader writes its plan ahead of its commands)."""

    def send(self, out: Output | None, even_muted: bool = False) -> None:
        """Send what the core returned; a muted (following) driver sends only ``even_muted`` output: discovery
        probes, which change nothing and keep this port known to the switch, so the broadcasts reach it."""
        if out is None:
            return
        if self.before_send is not None and (out.frames or out.events) and not self.muted:
            self.before_send(out)
        for frame in out.frames:
            if self.muted and not even_muted:
                self.counters["muted"] = self.counters.get("muted", 0) + 1
                continue
            self.wire.send(self.keyring.protect(encode(frame), frame.cls))
            self.counters["tx"] += 1
        if self.on_event is not None:
            for ev in out.events:
                if isinstance(ev, OrchEvent):
                    self.on_event(ev)

    def _frame(self, raw: bytes, now: float) -> None:
        self.counters["rx"] += 1
        try:
            f = decode(raw)
        except ProtocolError:
            self.counters["malformed"] += 1
            return
        if isinstance(f.body, Sealed):  # the AEAD mode: opened under the ring (tag, replay window)
            got = self.keyring.open_frame(f, raw, now, decode)
            if isinstance(got, str):
                self.counters["rejected"] += 1
                self.counters[f"rejected_{got}"] = self.counters.get(f"rejected_{got}", 0) + 1
                return
            f, raw = got
        elif self.keyring.enabled:
            a = f.auth
            why = "unsigned" if a is None else self.keyring.check(raw, f.src_mac, f.src_dime, a.key_id, a.counter,
                                                                   f.padding, now)  # fmt: skip
            if why is not None:
                self.counters["rejected"] += 1
                self.counters[f"rejected_{why}"] = self.counters.get(f"rejected_{why}", 0) + 1
                return
        body = f.body
        if isinstance(body, Heartbeat):
            if self.heartbeats is not None:
                self.heartbeats.append((now, f.src_mac, f.src_dime, body.epoch, body.rx_queue))
            self.send(self.core.heartbeat(f.src_mac, f.src_dime, body, now))
            return
        if f.dst_mac != self.core.local.mac and not f.dst_mac[0] & 1:
            self.counters["not_for_us"] += 1
            return
        self.send(self.core.receive(f, now))

    def poll(self, timeout: float, extra: list[Any] | None = None) -> list[Any]:
        """Wait for frames up to ``timeout`` (or the core's next timer), handle them, run due timers;
        return which of ``extra`` (other sockets) are readable."""
        now = time.monotonic()
        t = self.core.get_timer()
        if t is not None:
            timeout = max(0.0, min(timeout, t - now))
        fd = self.wire.fileno()
        r, _, _ = select.select([fd, *(extra or [])], [], [], timeout)
        if fd in r:
            self._drain()
        now = time.monotonic()
        t = self.core.get_timer()
        if t is not None and t <= now:
            self.send(self.core.handle_timer(now))
        return [x for x in r if x is not fd]

    def _drain(self, limit: int = 64) -> None:
        """Take every frame waiting (up to ``limit`` batches) before any timer runs: after this process was
        descheduled, the heartbeats and PING answers that came meanwhile must be seen before a silence is judged."""
        for _ in range(limit):
            frames = self.wire.recv_batch()
            if frames is None:
                self.gone = True
                return
            if not frames:
                return
            now = time.monotonic()
            for raw in frames:
                self._frame(raw, now)

    def run_until(self, cond: Callable[[], bool], timeout: float, tick: Callable[[], Any] | None = None) -> bool:
        """Poll until ``cond()`` or ``timeout`` seconds pass; ``tick`` runs after every poll."""
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() >= end or self.gone:
                return False
            self.poll(0.02)
            if tick is not None:
                tick()
        return True
