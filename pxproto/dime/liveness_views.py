"""What the pool (:class:`pxproto.dime.liveness.Pool`) knows of each DIME and server: its records, no logic."""

from __future__ import annotations

from dataclasses import dataclass, field

from pxproto.dime.endpoint import Address
from pxproto.dime.liveness_events import DimeKey
from pxproto.dime.liveness_policy import Health
from pxproto.wire.codes import DimeState
from pxproto.wire.frame import DimeInfo


@dataclass(slots=True, eq=False)
class DimeView:
    """One DIME as the pool sees it."""

    mac: bytes
    dime: int
    core: int = 0
    state: DimeState = DimeState.FREE
    """What the DIME last reported."""
    epoch: int = 0
    mem_total: int = 0
    """Chunks it may be given."""
    mem_free: int = 0
    mem_used: int = 0
    mem_limit: int = 0
    cpu_permille: int = 0
    rx_queue: int = 0
    tx_queue: int = 0
    stage: int = 0
    service: int = 0
    period: float = 0.1
    """Heartbeat period it reports (seconds)."""
    last_seen: float = 0.0
    first_seen: float = 0.0
    beats: int = 0
    seq: int = 0
    """The header seq of its latest heartbeat in this epoch (0: not given)."""
    health: Health = Health.ALIVE
    timeout: float = 0.2
    """Current silence allowance (seconds)."""
    mean: float = 0.1
    """Running mean of heartbeat intervals (phi)."""
    var: float = 0.0
    """Running variance of heartbeat intervals (phi)."""
    armed: bool = False
    """A deadline for it is in the heap."""
    forgiven: float = float("-inf")
    """When a silence of it was last forgiven (the driver itself had stalled; its deadline was pushed to then
    plus its timeout): not again before its next heartbeat."""
    ping: int | None = None
    """The request id of the PING out to it while it is suspect."""
    again: bool = False
    """A PING round that ends while the driver is stalled is followed by one more."""
    suspected_at: float = 0.0
    zombie_reported: bool = False
    assigned: object | None = None
    """The orchestrator's mark: the replica it placed on it, if any."""
    faulted: bool = False
    """The orchestrator's mark: it reported a fault; not allocated again until reborn."""

    @property
    def key(self) -> DimeKey:
        return (self.mac, self.dime)

    @property
    def address(self) -> Address:
        return Address(self.mac, self.dime)

    @property
    def info(self) -> DimeInfo:
        """What it announced (or last reported), as a discovery record."""
        return DimeInfo(self.dime, self.core, self.state, self.mem_total, self.mem_free, self.epoch)


@dataclass(slots=True)
class ServerView:
    """One server (one kernel, one MAC) and its DIMEs."""

    mac: bytes
    caps: int = 0
    sw_version: int = 0
    dimes: dict[int, DimeView] = field(default_factory=dict)
    dead: bool = False

    def alive_dimes(self) -> int:
        return sum(1 for d in self.dimes.values() if d.health is not Health.DEAD)


__all__ = ["DimeView", "ServerView"]
