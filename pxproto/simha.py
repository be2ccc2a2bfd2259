"""Several orchestrators on the simulated cluster, electing a leader in a store on the simulation's clock.

:class:`SimOrch` is one ``pxorch run --etcd`` process as the simulation sees it: an orchestrator core on the
:class:`~pxproto.dime.simlink.SimNet` (it hears every heartbeat) driven by the real
:class:`~pxproto.orch.leader.Leadership` (election, muting, LEADER_EPOCH fencing, plan writes, takeover),
which it steps every ``step_every`` simulated seconds.  :class:`HaCluster` is a
:class:`~pxproto.sim.SimCluster` whose single orchestrator is replaced by ``orchs`` of them sharing one
:class:`~pxproto.orch.store.MemoryKv` whose leases run on the simulation's clock; each may be cut off from
the store (a partition from etcd), killed, and started again as a new process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pxproto.dime.endpoint import Output, earliest
from pxproto.orch.core import OrchConfig, Orchestrator
from pxproto.orch.leader import Leadership
from pxproto.orch.store import Kv, KvError, MemoryKv
from pxproto.sim import ORCH_MAC, SimCluster
from pxproto.wire.frame import Frame


class Cuttable:
    """A :class:`Kv` between one orchestrator and the store that a partition can cut (every call then fails)."""

    def __init__(self, kv: Kv) -> None:
        self.kv = kv
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        if self.cut:

            def fail(*a: object, **k: object) -> object:
                raise KvError("partitioned from the store")

            return fail
        return getattr(self.kv, name)


class SimOrch:
    """One orchestrator process on the SimNet: a core, and the Leadership that mutes or fences it."""

    def __init__(self, cluster: SimCluster, mac: bytes, kv: Kv, name: str, config: OrchConfig | None,
                 ttl: int = 1, step_every: float = 0.05, peer: bool = False) -> None:  # fmt: skip
        self.net = cluster.net
        self.core = Orchestrator(mac, config)
        self.muted = True
        self.store = Cuttable(kv)
        self.step_every = step_every
        self.said: list[str] = []
        self.before_send: Callable[[Output], None] | None = None
        self.sent: list[tuple[float, Frame]] = []
        """Every frame this orchestrator put on the wire, with when."""
        self.ha = Leadership(self, self.store, name, ttl, say=self.said.append,  # type: ignore[arg-type]
                             peer_host="127.0.0.1" if peer else None,
                             clock=lambda: self.net.now)  # fmt: skip
        self._next_step = self.net.now

    @property
    def mac(self) -> bytes:
        return self.core.local.mac

    # the driver's side (what Leadership calls)
    def send(self, out: Output | None, even_muted: bool = False) -> None:
        if out is not None and self.before_send is not None and (out.frames or out.events) and not self.muted:
            self.before_send(out)
        if out is not None and (even_muted or not self.muted) and self.mac not in self.net.dead:
            self.sent.extend((self.net.now, f) for f in out.frames)
            self.net.emit(self.mac, out)

    def _out(self, out: Output) -> Output:
        if self.muted:
            out.frames.clear()
        elif (out.frames or out.events) and self.before_send is not None:
            self.before_send(out)
        self.sent.extend((self.net.now, f) for f in out.frames)
        return out

    # the machine's side (what the SimNet calls)
    def receive(self, frame: Frame, now: float) -> Output:
        return self._out(self.core.receive(frame, now))

    def get_timer(self) -> float | None:
        return earliest(self.core.get_timer(), self._next_step)

    def handle_timer(self, now: float) -> Output:
        if now >= self._next_step:
            self._next_step = now + self.step_every
            self.ha.step(now)  # a takeover sends its restore output itself, through send()
        t = self.core.get_timer()
        return self._out(self.core.handle_timer(now)) if t is not None and t <= now else Output()


class HaCluster(SimCluster):
    """A simulated cluster run by ``orchs`` orchestrators that elect a leader in one store."""

    def __init__(self, orchs: int = 3, *, ttl: int = 1, kv: Kv | None = None, peer: bool = False,
                 **kw: Any) -> None:  # fmt: skip
        super().__init__(**kw)
        self.net.kill(ORCH_MAC)  # SimCluster's lone orchestrator is not one of them
        self.kv: Kv = kv if kv is not None else MemoryKv(clock=lambda: self.net.now)
        """The store: in memory on the simulation's clock, or a real etcd (:class:`~pxproto.orch.store.EtcdKv`,
        whose leases run on the wall clock: give it a TTL of several seconds unless the run is paced)."""
        self.ttl = ttl
        self.peer = peer
        """Each orchestrator holds a real TCP peer link (:mod:`pxproto.orch.peer`): a killed one's closes."""
        self.config: OrchConfig | None = kw.get("config")
        self.orchs: list[SimOrch] = []
        for i in range(orchs):
            self.orchs.append(self._start(i))

    def _start(self, i: int) -> SimOrch:
        o = SimOrch(self, bytes([2, 0, 0, 0, 0x0E, i]), self.kv, f"orch{i}", self.config, self.ttl, peer=self.peer)
        self.net.add(o.mac, o)
        return o

    def leader(self) -> SimOrch | None:
        leading = [o for o in self.orchs if o.ha.leading and o.mac not in self.net.dead]
        return max(leading, key=lambda o: o.ha.elector.epoch or 0) if leading else None

    def kill_orch(self, o: SimOrch) -> None:
        """SIGKILL: it sends nothing more, its lease runs out in the store, and its kernel closes its sockets."""
        self.net.kill(o.mac)
        if o.ha.peer is not None:
            o.ha.peer.close()
        if o.ha.elector._watch is not None:
            o.ha.elector._watch.stop()

    def run_paced(self, seconds: float) -> float:
        """Run ``seconds`` of simulated time no faster than the wall clock (a real etcd's leases run on it);
        returns how far the simulation fell behind the wall clock at worst, in seconds."""
        t0, w0, behind = self.net.now, time.monotonic(), 0.0
        while self.net.now < t0 + seconds - 1e-9:
            self.run(0.01)
            ahead = (self.net.now - t0) - (time.monotonic() - w0)
            if ahead > 0:
                time.sleep(ahead)
            behind = max(behind, -ahead)
        return behind

    def stop(self) -> None:
        """End every orchestrator's election (their leases revoked, watches and peer links closed)."""
        for o in self.orchs:
            o.ha.stop()

    def restart_dime(self, key: tuple[bytes, int]) -> None:
        super().restart_dime(key)
        touch = getattr(self.net, "touch", None)
        if touch is not None:  # a FleetNet reads a server's timer only when told it moved
            touch(key[0])

    def restart_orch(self, o: SimOrch) -> SimOrch:
        """A new process in the killed one's place (same port): it joins as a follower."""
        i = self.orchs.index(o)
        self.orchs[i] = self._start(i)
        return self.orchs[i]


__all__ = ["Cuttable", "HaCluster", "SimOrch"]
