"""The liveness policy: how long a silence makes a DIME suspect, how much the pool takes in, what it believes.

Settings of :class:`pxproto.dime.liveness.Pool`; a service's regulator chooses
the detector (:class:`Liveness`), the orchestrator the limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum


class Health(IntEnum):
    """What the pool believes about a DIME."""

    ALIVE = 0
    SUSPECT = 1
    """Heartbeats stopped; a direct PING is out."""
    DEAD = 2
    """Confirmed dead; it may come back with a new epoch."""


def _z_of_phi(phi: float) -> float:
    """The normal quantile z with upper tail 10^-phi (bisection on erfc)."""
    target = 10.0**-phi
    lo, hi = 0.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(mid / math.sqrt(2)) > target:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True, slots=True)
class Liveness:
    """How long a silence makes a DIME suspect."""

    detector: str = "missed"
    """``missed`` (count of heartbeat periods) or ``phi`` (phi-accrual)."""
    missed: float = 2.0
    """Suspect after this many heartbeat periods without one (``missed``)."""
    phi: float = 8.0
    """Suspect when phi reaches this (``phi``)."""
    min_std: float = 0.1
    """Phi: the interval's standard deviation is at least this fraction of the mean (so a perfectly regular
    sender is not suspected after a few ms of jitter)."""
    floor: float = 0.010
    """No timeout is shorter than this (seconds)."""
    z: float = field(init=False, repr=False, compare=False, default=0.0)
    """The normal quantile of ``phi`` (computed once: the bisection is too slow for every heartbeat)."""

    def __post_init__(self) -> None:
        if self.detector not in ("missed", "phi"):
            raise ValueError(f"detector {self.detector!r}: missed or phi")
        if self.missed <= 0 or self.phi <= 0:
            raise ValueError("missed and phi must be positive")
        object.__setattr__(self, "z", _z_of_phi(self.phi))

    def std(self, mean: float, var: float) -> float:
        return max(math.sqrt(var), self.min_std * mean)

    def timeout(self, mean: float, var: float) -> float:
        """Seconds of silence after the last heartbeat before suspicion."""
        if self.detector == "missed":
            return max(self.floor, self.missed * mean)
        # P(interval > t) = 10^-phi under N(mean, std): t = mean + z * std.
        return max(self.floor, mean + self.z * self.std(mean, var))


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """How much the pool takes in: without a cluster key anyone can announce or beat for made-up DIMEs."""

    max_servers: int = 4096
    max_dimes_per_server: int = 1024
    max_dimes: int = 16384
    """DIMEs in the pool in all; past any limit a new server or DIME is refused and counted by reason."""

    def __post_init__(self) -> None:
        if min(self.max_servers, self.max_dimes_per_server, self.max_dimes) < 1:
            raise ValueError("pool limits must be at least 1")
