"""What the orchestrator reports: one dataclass per kind of happening, and the event log.

The pool's events (a DIME discovered, suspected, dead, reborn) are the classes
of :mod:`pxproto.dime.liveness_events`, re-exported here.  Every event carries
``t`` (the caller's clock, seconds) and renders itself as one line of text
for the operator (:meth:`OrchEvent.text`).  The :class:`EventLog` keeps them
in order, bounded, and can write them as JSON lines for the timeline picture
and for tests.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import IO, Any

from pxproto.dime.liveness_events import (
    DimeDead,
    DimeDiscovered,
    DimeKey,
    DimeReborn,
    DimeSuspected,
    DimeUpdated,
    LoggedEvent,
    ServerDead,
    ServerDiscovered,
    SuspicionCleared,
    ZombieHeartbeat,
    key_text,
)

OrchEvent = LoggedEvent
"""Every event the orchestrator logs: its own below, and the pool's (:mod:`pxproto.dime.liveness_events`)."""


@dataclass(frozen=True, slots=True)
class ServiceDeployed(OrchEvent):
    """Every replica of a service runs and every data channel is wired."""

    service: str
    """The service's name."""
    replicas: int
    """How many replicas in all."""

    def text(self) -> str:
        return f"service {self.service} deployed: {self.replicas} replicas running"


@dataclass(frozen=True, slots=True)
class ReplicaPlaced(OrchEvent):
    """A DIME was allocated to a stage."""

    service: str
    """The service's name."""
    stage: str
    """The stage's name."""
    key: DimeKey
    """The DIME it runs on."""
    why: str
    """``deploy``, ``scale-out``, ``repair``."""

    def text(self) -> str:
        return f"{self.service}.{self.stage} -> DIME {key_text(self.key)} ({self.why})"


@dataclass(frozen=True, slots=True)
class ReplicaRunning(OrchEvent):
    """A replica answered START and is wired to its downstream stages."""

    service: str
    """The service's name."""
    stage: str
    """The stage's name."""
    key: DimeKey
    """The DIME it runs on."""
    why: str
    """``deploy``, ``scale-out``, ``repair``."""

    def text(self) -> str:
        return f"{self.service}.{self.stage} running on DIME {key_text(self.key)} ({self.why})"


@dataclass(frozen=True, slots=True)
class StageScaled(OrchEvent):
    """A stage's replica count target changed, by command or by policy."""

    service: str
    """The service's name."""
    stage: str
    """The stage's name."""
    before: int
    """Replicas before."""
    after: int
    """Replicas wanted now."""
    why: str
    """``command`` or the policy's reason (``queue 80 > 64 for 0.5 s``)."""

    def text(self) -> str:
        return f"scale {self.service}.{self.stage}: {self.before} -> {self.after} ({self.why})"


@dataclass(frozen=True, slots=True)
class Rewired(OrchEvent):
    """An upstream replica's output channel was connected or disconnected."""

    service: str
    """The service's name."""
    up: DimeKey
    """The upstream DIME."""
    down: DimeKey
    """The downstream DIME."""
    channel: int
    """The channel id."""
    connected: bool
    """True for CONNECT, False for DISCONNECT."""

    def text(self) -> str:
        down = key_text(self.down)
        verb = "connect" if self.connected else "disconnect"
        return f"{verb} {key_text(self.up)} -> {down} (channel {self.channel})"


@dataclass(frozen=True, slots=True)
class RepairStarted(OrchEvent):
    """A dead replica is being replaced."""

    service: str
    """The service's name."""
    stage: str
    """The stage's name."""
    dead: DimeKey
    """The DIME that died."""

    def text(self) -> str:
        return f"repair {self.service}.{self.stage}: replacing DIME {key_text(self.dead)}"


@dataclass(frozen=True, slots=True)
class RepairDone(OrchEvent):
    """The replacement of a dead replica runs and is wired."""

    service: str
    """The service's name."""
    stage: str
    """The stage's name."""
    dead: DimeKey
    """The DIME that died."""
    replacement: DimeKey
    """The DIME that took its place."""
    took: float
    """Seconds from the death's confirmation to the replacement running."""

    def text(self) -> str:
        return (
            f"repaired {self.service}.{self.stage}: {key_text(self.dead)} -> {key_text(self.replacement)}"
            f" in {self.took * 1e3:.0f} ms"
        )


@dataclass(frozen=True, slots=True)
class CommandFailed(OrchEvent):
    """A signaling command got an error status or timed out."""

    key: DimeKey
    """Whom it was sent to."""
    command: str
    """The command's name."""
    status: str
    """The status's name."""
    detail: str
    """What the DIME said (its TEXT parameter), or empty."""

    def text(self) -> str:
        tail = f": {self.detail}" if self.detail else ""
        return f"{self.command} to {key_text(self.key)} failed: {self.status}{tail}"


@dataclass(frozen=True, slots=True)
class PoolExhausted(OrchEvent):
    """A replica is wanted but no free DIME fits; the orchestrator retries on every pool change."""

    service: str
    """The service's name."""
    stage: str
    """The stage's name."""
    chunks: int
    """Memory chunks the stage needs."""

    def text(self) -> str:
        return f"no free DIME with {self.chunks} chunks for {self.service}.{self.stage}; waiting"


@dataclass(frozen=True, slots=True)
class FaultReported(OrchEvent):
    """A DIME sent a FAULT_REPORT."""

    key: DimeKey
    """Who reported."""
    code: str
    """The fault code's name."""
    detail: str
    """Its text."""

    def text(self) -> str:
        return f"fault from {key_text(self.key)}: {self.code} {self.detail}"


class EventLog:
    """The orchestrator's events in order (the newest ``capacity``), with an optional JSON-lines sink."""

    def __init__(self, capacity: int = 100_000, sink: IO[str] | None = None) -> None:
        self.entries: deque[OrchEvent] = deque(maxlen=capacity)
        self.sink = sink

    def add(self, event: OrchEvent) -> None:
        self.entries.append(event)
        if self.sink is not None:
            self.sink.write(json.dumps(event.record()) + "\n")

    def __iter__(self) -> Iterator[OrchEvent]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def of(self, kind: type[OrchEvent]) -> list[Any]:
        """Every logged event of one kind."""
        return [e for e in self.entries if isinstance(e, kind)]


def as_dict(event: OrchEvent) -> dict[str, Any]:
    """The event's plain fields (for tests)."""
    return asdict(event)


__all__ = [
    "CommandFailed", "DimeDead", "DimeDiscovered", "DimeKey", "DimeReborn", "DimeSuspected", "DimeUpdated",
    "EventLog", "FaultReported", "OrchEvent", "PoolExhausted", "RepairDone", "RepairStarted", "ReplicaPlaced",
    "ReplicaRunning", "Rewired", "ServerDead", "ServerDiscovered", "ServiceDeployed", "StageScaled",
    "SuspicionCleared", "ZombieHeartbeat", "as_dict", "key_text",
]  # fmt: skip
