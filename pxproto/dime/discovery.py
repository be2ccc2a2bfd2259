"""Discovery: servers announce their DIMEs; the orchestrator builds its pool from the announces.

A server's :class:`DiscoveryResponder` (its kernel, DIME id 0xffff) answers
probes with the DIMEs whose state passes the probe's filter, and broadcasts a
gratuitous announce at boot (repeated, in case one is lost) and whenever the
driver asks.  A server with more DIMEs than one frame holds announces them
across several frames.

The orchestrator's side -- probes, and the pool built from the announces and
heartbeats -- is :class:`pxproto.dime.liveness.Pool`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pxproto.dime.endpoint import BROADCAST_ADDRESS, Address, Output, frame_to
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
