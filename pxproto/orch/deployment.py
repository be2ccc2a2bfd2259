"""What the orchestrator runs and how it is set: deployments, their replicas and links, and :class:`OrchConfig`.

Plain records, kept by :class:`pxproto.orch.core.Orchestrator` and changed by
its reconciler (:mod:`pxproto.orch.reconcile`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pxproto.dime.endpoint import Output
from pxproto.dime.liveness import Liveness, PoolLimits
from pxproto.dime.signaling import (
    RetransmitPolicy,
)
from pxproto.orch.events import (
    DimeKey,
)
from pxproto.orch.service import Regulator, ServiceSpec, StageSpec

CHANNEL_SPACE = 0x7FFF
"""Channel ids are 1..0x7fff: the kernel sends completions back on ``channel | 0x8000``."""


class RState(IntEnum):
    """Where a replica is in its life."""

    PLACED = 0
    LOADED = 1
    STARTING = 2
    RUNNING = 3
    RETIRING = 4
    STOPPING = 5
    GONE = 6


class End(IntEnum):
    """One end of a link."""

    NONE = 0
    PENDING = 1
    DONE = 2
    CLOSING = 3
    CLOSED = 4


@dataclass(frozen=True)
class PackageRef:
    """What LOAD names: the package in the central store."""

    digest: bytes
    size: int
    sig: bytes = b""


@dataclass(eq=False)
class Replica:
    """One stage on one DIME."""

    svc: Deployment
    stage: StageSpec
    key: DimeKey
    why: str
    placed_at: float
    state: RState = RState.PLACED
    busy: bool = False
    """A command to it is in flight (load chain, START, STOP)."""
    step: int = 0
    """How far its load chain went."""
    repair_of: DimeKey | None = None
    repair_t0: float = 0.0
    drain_until: float = 0.0
    announced: bool = False
    first: int = 0
    """A source: the item it starts at (START's VALUE): where the source it replaces had finished."""

    @property
    def live(self) -> bool:
        return self.state < RState.RETIRING


@dataclass(eq=False)
class Link:
    """One data channel from an upstream replica to a downstream one."""

    channel: int
    up: Replica
    down: Replica
    out: End = End.NONE
    inp: End = End.NONE


@dataclass(eq=False)
class Deployment:
    """A service being run."""

    spec: ServiceSpec
    package: PackageRef
    started: float
    want: dict[str, int] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    deployed: bool = False
    starved: set[str] = field(default_factory=set)
    above_since: dict[str, float] = field(default_factory=dict)
    below_since: dict[str, float] = field(default_factory=dict)
    last_change: dict[str, float] = field(default_factory=dict)
    resume: dict[str, int] = field(default_factory=dict)
    """A source stage -> the highest first-unfinished item any of its replicas reported (SOURCE_RESUME): every
    item before it is finished, so a new replica of that stage (repair, or any later placement) starts there."""
    polling: set[DimeKey] = field(default_factory=set)
    """Source replicas with a SOURCE_RESUME query in flight."""

    def of(self, stage: str) -> list[Replica]:
        return [r for r in self.replicas if r.stage.name == stage]

    def live(self, stage: str) -> list[Replica]:
        return [r for r in self.replicas if r.stage.name == stage and r.live]


Done = Callable[[bool, Any, float, Output], None]
"""Called with (ok, the response or timeout event, now, output) when a request completes."""


@dataclass
class OrchConfig:
    """Orchestrator-wide settings (a service's regulator sets its own DIMEs' heartbeat period)."""

    liveness: Liveness = field(default_factory=Liveness)
    confirm: RetransmitPolicy = field(default_factory=lambda: RetransmitPolicy(0.008, 1.0, 0.008, 4))
    command: RetransmitPolicy = field(default_factory=lambda: RetransmitPolicy(0.1, 2.0, 0.5, 5))
    poll: RetransmitPolicy = field(default_factory=lambda: RetransmitPolicy(0.05, 1.0, 0.05, 2))
    """Queries of a source's progress (SOURCE_RESUME): the next tick asks again anyway."""
    default_period: float = 0.1
    tick: float = 0.05
    """Regulator period: scaling decisions, waiting allocations, drains."""
    stall: float = 0.03
    """A timer handled this late (seconds) means this process was stalled: its silences are not judged."""
    probe_period: float = 0.0
    """Seconds between discovery probes after the first (0: only when asked)."""
    limits: PoolLimits = field(default_factory=PoolLimits)
    """How many servers and DIMEs the pool takes in (announces and heartbeats past them are refused, counted)."""

    @classmethod
    def from_regulator(cls, r: Regulator, **kw: Any) -> OrchConfig:
        """Settings that follow one service's regulator (liveness and confirmation)."""
        confirm = RetransmitPolicy(r.confirm_ms / 1000, 1.0, r.confirm_ms / 1000, max(0, r.confirm_tries - 1))
        retries = 0
        span = 0.1
        while span < r.command_timeout_ms / 1000 and retries < 30:
            retries += 1
            span += min(0.1 * 2**retries, 0.5)
        command = RetransmitPolicy(0.1, 2.0, 0.5, retries)
        liveness = Liveness(r.detector, r.missed, r.phi)
        return cls(liveness=liveness, confirm=confirm, command=command, tick=min(0.05, r.heartbeat_ms / 1000), **kw)
