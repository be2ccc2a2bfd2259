"""Discovery: servers announce their DIMEs; the orchestrator builds its pool from the announces.

A server's :class:`DiscoveryResponder` (its kernel, DIME id 0xffff) answers
probes with the DIMEs whose state passes the probe's filter, and broadcasts a
gratuitous announce at boot (repeated, in case one is lost) and whenever the
driver asks.  A server with more DIMEs than one frame holds announces them
across several frames.

The orchestrator's :class:`Pool` sends probes (repeated) and keeps, from every
announce, the servers (capabilities, software version) and their DIMEs (state,
memory, epoch).  An announce from an older epoch than the pool knows is late
and ignored; a newer epoch is a reborn DIME.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from pxproto.dime.endpoint import BROADCAST_ADDRESS, Address, Event, Output, frame_to, source
from pxproto.wire import spec
from pxproto.wire.codes import DIME_ALL, STATE_ANY, DimeState, DiscoveryOp
from pxproto.wire.frame import DimeInfo, Discovery, Frame

MTU_ETHERNET = 1500
ID_SPACE = 1 << 32


def dimes_per_frame(mtu: int = MTU_ETHERNET, auth: bool = False) -> int:
    """How many DIME records one discovery frame can carry."""
    room = mtu - spec.HEADER_LEN - spec.DiscoveryFixed.sizeof() - (spec.AUTH_LEN if auth else 0)
    n = min(room // spec.DimeRecord.sizeof(), 0xFFFF)
    if n < 1:
        raise ValueError(f"an MTU of {mtu} holds no DIME record")
    return n


def matches(state: DimeState, state_filter: int) -> bool:
    return state_filter == STATE_ANY or state == state_filter


class DiscoveryResponder:
    """A server's side of discovery: answers probes, announces at boot."""

    def __init__(
        self,
        local: Address,
        dimes: Iterable[DimeInfo] = (),
        *,
        caps: int = 0,
        sw_version: int = 0,
        mtu: int = MTU_ETHERNET,
        auth: bool = False,
        boot_repeats: int = 3,
        boot_interval: float = 0.05,
    ) -> None:
        self.local = local
        self.dimes: dict[int, DimeInfo] = {d.dime: d for d in dimes}
        """The server's DIMEs by id: keep them current with :meth:`update`."""
        self.caps = caps
        self.sw_version = sw_version
        self.per_frame = dimes_per_frame(mtu, auth)
        self.boot_repeats = boot_repeats
        self.boot_interval = boot_interval
        self._repeats_left = 0
        self._deadline: float | None = None
        self.counters: Counter[str] = Counter()
        """Probes answered and filtered out, announces sent, frames ignored."""

    def update(self, info: DimeInfo) -> None:
        """Record a DIME's new state, memory or epoch (announced from the next probe or announce on)."""
        self.dimes[info.dime] = info

    def _announces(self, dest: Address, op: DiscoveryOp, probe_id: int, state_filter: int) -> list[Frame]:
        chosen = [d for _, d in sorted(self.dimes.items()) if matches(d.state, state_filter)]
        chunks = [chosen[i : i + self.per_frame] for i in range(0, len(chosen), self.per_frame)] or [[]]
        self.counters["announces"] += len(chunks)
        return [
            frame_to(self.local, dest, Discovery(op, probe_id, self.sw_version, self.caps, state_filter, tuple(c)))
            for c in chunks
        ]

    def announce(self, now: float) -> Output:
        """Broadcast a gratuitous announce of every DIME now."""
        return Output(
            frames=self._announces(BROADCAST_ADDRESS, DiscoveryOp.GRATUITOUS, 0, STATE_ANY), timer=self._deadline
        )

    def boot(self, now: float) -> Output:
        """Announce at boot, and again ``boot_repeats - 1`` times ``boot_interval`` apart."""
        self._repeats_left = self.boot_repeats - 1
        self._deadline = now + self.boot_interval if self._repeats_left > 0 else None
        return self.announce(now)

    def receive(self, frame: Frame, now: float) -> Output:
        """Answer a probe, to the prober only, with the DIMEs that pass its state filter."""
        out = Output(timer=self._deadline)
        body = frame.body
        if not isinstance(body, Discovery) or body.op is not DiscoveryOp.PROBE:
            self.counters["not_probe"] += 1
            return out
        if body.state_filter != STATE_ANY and not any(matches(d.state, body.state_filter) for d in self.dimes.values()):
            self.counters["probes_filtered"] += 1  # nothing to offer: stay quiet rather than flood
            return out
        self.counters["probes_answered"] += 1
        prober = Address(frame.src_mac, DIME_ALL, 0)
        out.frames = self._announces(prober, DiscoveryOp.ANNOUNCE, body.probe_id, body.state_filter)
        return out

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> Output:
        if self._deadline is None or now < self._deadline:
            return Output(timer=self._deadline)
        self._repeats_left -= 1
        self._deadline = now + self.boot_interval if self._repeats_left > 0 else None
        return self.announce(now)


# --------------------------------------------------------------------- the pool


@dataclass(frozen=True, slots=True)
class ServerDiscovered(Event):
    """A server announced itself for the first time."""

    mac: bytes
    """Its MAC: the server's identity."""
    caps: int
    """Its kernel's capabilities (Capability flags)."""
    sw_version: int
    """Its kernel's software version."""


@dataclass(frozen=True, slots=True)
class DimeDiscovered(Event):
    """A DIME the pool did not know."""

    address: Address
    """Its server's MAC and its DIME id."""
    info: DimeInfo
    """What it announced."""


@dataclass(frozen=True, slots=True)
class DimeUpdated(Event):
    """A known DIME announced a change of state or memory in the same epoch."""

    address: Address
    """Its address."""
    old: DimeInfo
    """What the pool knew."""
    new: DimeInfo
    """What it announced now."""


@dataclass(frozen=True, slots=True)
class DimeReborn(Event):
    """A known DIME announced a newer epoch: it restarted."""

    address: Address
    """Its address."""
    old_epoch: int
    """The epoch the pool knew."""
    new_epoch: int
    """The epoch it announced."""
    info: DimeInfo
    """What it announced."""


@dataclass(slots=True)
class PoolDime:
    """One DIME in the orchestrator's pool."""

    address: Address
    """Its server's MAC and its DIME id."""
    info: DimeInfo
    """The latest announce of it (or the orchestrator's own marking of its state)."""
    last_seen: float
    """When it was last announced."""


@dataclass(slots=True)
class PoolServer:
    """One server in the pool."""

    mac: bytes
    """Its MAC."""
    caps: int
    """Capability flags from its announces."""
    sw_version: int
    """Software version from its announces."""
    last_seen: float
    """When it last announced."""
    dimes: dict[int, PoolDime] = field(default_factory=dict)
    """Its DIMEs by id."""


class Pool:
    """The orchestrator's pool of servers and DIMEs, built from probes and announces."""

    def __init__(
        self, local: Address, *, probe_repeats: int = 2, probe_interval: float = 0.1, first_probe_id: int = 1
    ) -> None:
        self.local = local
        self.servers: dict[bytes, PoolServer] = {}
        self.probe_repeats = probe_repeats
        self.probe_interval = probe_interval
        self._next_probe = first_probe_id % ID_SPACE or 1
        self._probe: tuple[Frame, int] | None = None  # the probe being repeated, sends left
        self._deadline: float | None = None
        self.counters: Counter[str] = Counter()
        """Probes sent, announces taken, late (older-epoch) records ignored, frames ignored."""

    def probe(self, now: float, state_filter: int = STATE_ANY) -> tuple[int, Output]:
        """Broadcast a probe (repeated ``probe_repeats`` times in all); return its id."""
        probe_id = self._next_probe
        self._next_probe = (probe_id + 1) % ID_SPACE or 1
        frame = frame_to(
            self.local, BROADCAST_ADDRESS, Discovery(DiscoveryOp.PROBE, probe_id, state_filter=state_filter)
        )
        left = self.probe_repeats - 1
        self._probe = (frame, left) if left > 0 else None
        self._deadline = now + self.probe_interval if left > 0 else None
        self.counters["probes"] += 1
        return probe_id, Output(frames=[frame], timer=self._deadline)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> Output:
        if self._probe is None or self._deadline is None or now < self._deadline:
            return Output(timer=self._deadline)
        frame, left = self._probe
        left -= 1
        self._probe = (frame, left) if left > 0 else None
        self._deadline = now + self.probe_interval if left > 0 else None
        self.counters["probes"] += 1
        return Output(frames=[frame], timer=self._deadline)

    def receive(self, frame: Frame, now: float) -> Output:
        """Take an announce (answer or gratuitous) into the pool."""
        out = Output(timer=self._deadline)
        body = frame.body
        if not isinstance(body, Discovery) or body.op is DiscoveryOp.PROBE:
            self.counters["not_announce"] += 1
            return out
        self.counters["announces"] += 1
        mac = source(frame).mac
        server = self.servers.get(mac)
        if server is None:
            server = self.servers[mac] = PoolServer(mac, body.caps, body.sw_version, now)
            out.events.append(ServerDiscovered(mac, body.caps, body.sw_version))
        server.caps, server.sw_version, server.last_seen = body.caps, body.sw_version, now
        for info in body.dimes:
            self._merge(server, info, now, out)
        return out

    def _merge(self, server: PoolServer, info: DimeInfo, now: float, out: Output) -> None:
        address = Address(server.mac, info.dime)
        known = server.dimes.get(info.dime)
        if known is None:
            server.dimes[info.dime] = PoolDime(address, info, now)
            out.events.append(DimeDiscovered(address, info))
        elif info.epoch < known.info.epoch:
            self.counters["late_epoch"] += 1
        else:
            old = known.info
            known.info, known.last_seen = info, now
            if info.epoch > old.epoch:
                out.events.append(DimeReborn(address, old.epoch, info.epoch, info))
            elif info != old:
                out.events.append(DimeUpdated(address, old, info))

    # -- queries and the orchestrator's own marks
    def get(self, address: Address) -> PoolDime | None:
        server = self.servers.get(address.mac)
        return server.dimes.get(address.dime) if server else None

    def dimes(self, state: DimeState | None = None) -> list[PoolDime]:
        """Every DIME (in a given state), by server then DIME id."""
        return [
            d
            for _, s in sorted(self.servers.items())
            for _, d in sorted(s.dimes.items())
            if state is None or d.info.state == state
        ]

    def free(self, min_mem_chunks: int = 0) -> list[PoolDime]:
        """Free DIMEs with at least this many free memory chunks, most free memory first."""
        found = [d for d in self.dimes(DimeState.FREE) if d.info.mem_free >= min_mem_chunks]
        return sorted(found, key=lambda d: -d.info.mem_free)

    def set_state(self, address: Address, state: DimeState) -> None:
        """Mark a DIME (allocated, or found dead by the failure detector) until it announces otherwise."""
        d = self.get(address)
        if d is None:
            raise KeyError(f"no DIME {address.dime} on server {address.mac.hex(':')} in the pool")
        i = d.info
        d.info = DimeInfo(i.dime, i.core, state, i.mem_total, i.mem_free, i.epoch)
