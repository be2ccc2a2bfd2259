"""What the orchestrator reports: one dataclass per kind of happening, and the event log.

Every event carries ``t`` (the caller's clock, seconds) and renders itself as
one line of text for the operator (:meth:`OrchEvent.text`).  The
:class:`EventLog` keeps them in order, bounded, and can write them as JSON
lines for the timeline picture and for tests.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import IO, Any

from pxproto.dime.endpoint import Event
from pxproto.wire.frame import mac_text

DimeKey = tuple[bytes, int]
"""A DIME on the network: (its server's MAC, its DIME id)."""


def key_text(key: DimeKey) -> str:
    """``02:00:00:00:00:01/3``: a DIME as the operator reads it."""
    return f"{mac_text(key[0])}/{key[1]}"


@dataclass(frozen=True, slots=True)
class OrchEvent(Event):
    """Base of the orchestrator's events."""

    t: float
    """When it happened (the caller's clock)."""

    def text(self) -> str:
        """One line for the operator."""
        return type(self).__name__

    def record(self) -> dict[str, Any]:
        """A JSON-ready dict: ``kind``, ``t``, ``text`` and the fields (DIME keys as text)."""
        d: dict[str, Any] = {"kind": type(self).__name__, "t": self.t, "text": self.text()}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], bytes):
                v = key_text(v)  # type: ignore[arg-type]
            elif isinstance(v, bytes):
                v = mac_text(v)
            elif isinstance(v, tuple | list):
                v = [key_text(x) if isinstance(x, tuple) and x and isinstance(x[0], bytes) else x for x in v]
            d[f.name] = v
        return d


@dataclass(frozen=True, slots=True)
class ServerDiscovered(OrchEvent):
    """A server answered a probe or announced itself for the first time."""

    mac: bytes
    """The server's MAC."""
    dimes: int
    """How many DIMEs it announced (0 when first heard through a heartbeat)."""

    def text(self) -> str:
        if not self.dimes:
            return f"discovered server {mac_text(self.mac)} (by a heartbeat)"
        return f"discovered server {mac_text(self.mac)} with {self.dimes} DIMEs"


@dataclass(frozen=True, slots=True)
class DimeDiscovered(OrchEvent):
    """A DIME joined the pool."""

    key: DimeKey
    """Which DIME."""
    epoch: int
    """Its epoch."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} joined the pool (epoch {self.epoch})"


@dataclass(frozen=True, slots=True)
class DimeSuspected(OrchEvent):
    """Heartbeats from a DIME stopped for longer than the detector allows; a direct PING goes out."""

    key: DimeKey
    """Which DIME."""
    silent: float
    """Seconds since its last heartbeat."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} suspected (silent {self.silent * 1e3:.0f} ms), pinging"


@dataclass(frozen=True, slots=True)
class SuspicionCleared(OrchEvent):
    """A suspected DIME answered (or heartbeated) with the same epoch: no repair."""

    key: DimeKey
    """Which DIME."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} is alive after all"


@dataclass(frozen=True, slots=True)
class DimeDead(OrchEvent):
    """A DIME's death is confirmed (no heartbeat and no answer to a direct PING, or a new epoch)."""

    key: DimeKey
    """Which DIME."""
    last_seen: float
    """When its last heartbeat arrived."""
    reason: str
    """``ping timeout``, ``new epoch``, ``fault report``, ``server dead``."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} dead ({self.reason})"


@dataclass(frozen=True, slots=True)
class ServerDead(OrchEvent):
    """Every DIME of a server is dead."""

    mac: bytes
    """The server's MAC."""

    def text(self) -> str:
        return f"server {mac_text(self.mac)} dead"


@dataclass(frozen=True, slots=True)
class DimeReborn(OrchEvent):
    """A DIME came back with a new epoch and returns to the pool."""

    key: DimeKey
    """Which DIME."""
    old_epoch: int
    """The epoch we knew."""
    epoch: int
    """Its new epoch."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} reborn (epoch {self.old_epoch} -> {self.epoch}), back in the pool"


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
