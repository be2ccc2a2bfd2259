"""What the pool and its failure detector report (:mod:`pxproto.dime.liveness`): one set of names for the project.

Every event carries ``t`` (the caller's clock, seconds), names a DIME by its
:data:`DimeKey`, and renders itself as one line for the operator
(:meth:`LoggedEvent.text`).  The orchestrator logs these same classes beside
its own (:mod:`pxproto.orch.events`); nothing else defines a DIME's death.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pxproto.dime.endpoint import Event
from pxproto.wire.frame import DimeInfo, mac_text

DimeKey = tuple[bytes, int]
"""A DIME on the network: (its server's MAC, its DIME id)."""


def key_text(key: DimeKey) -> str:
    """``02:00:00:00:00:01/3``: a DIME as the operator reads it."""
    return f"{mac_text(key[0])}/{key[1]}"


@dataclass(frozen=True, slots=True)
class LoggedEvent(Event):
    """Base of every event the orchestrator logs: a time, a line of text, a JSON record."""

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
            elif isinstance(v, DimeInfo):
                v = {g.name: int(getattr(v, g.name)) for g in fields(v)}
            elif isinstance(v, tuple | list):
                v = [key_text(x) if isinstance(x, tuple) and x and isinstance(x[0], bytes) else x for x in v]
            d[f.name] = v
        return d


@dataclass(frozen=True, slots=True)
class ServerDiscovered(LoggedEvent):
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
class DimeDiscovered(LoggedEvent):
    """A DIME joined the pool (by an announce or its first heartbeat)."""

    key: DimeKey
    """Which DIME."""
    epoch: int
    """Its epoch."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} joined the pool (epoch {self.epoch})"


@dataclass(frozen=True, slots=True)
class DimeUpdated(LoggedEvent):
    """A known DIME announced a change of state or memory in the same epoch."""

    key: DimeKey
    """Which DIME."""
    old: DimeInfo
    """What the pool knew."""
    new: DimeInfo
    """What it announced now."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} announced {self.new.state.name.lower()}, {self.new.mem_free} chunks free"


@dataclass(frozen=True, slots=True)
class DimeSuspected(LoggedEvent):
    """Heartbeats from a DIME stopped for longer than the detector allows; a direct PING goes out."""

    key: DimeKey
    """Which DIME."""
    epoch: int
    """The epoch it was last heard in."""
    silent: float
    """Seconds since its last heartbeat."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} suspected (silent {self.silent * 1e3:.0f} ms), pinging"


@dataclass(frozen=True, slots=True)
class SuspicionCleared(LoggedEvent):
    """A suspected DIME answered (or heartbeated) with the same epoch: no repair."""

    key: DimeKey
    """Which DIME."""
    by_ping: bool
    """The PING was answered, rather than a heartbeat arriving."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} is alive after all"


@dataclass(frozen=True, slots=True)
class DimeDead(LoggedEvent):
    """A DIME's death is confirmed (no heartbeat and no answer to a direct PING, or a new epoch)."""

    key: DimeKey
    """Which DIME."""
    epoch: int
    """The epoch that died."""
    last_seen: float
    """When its last heartbeat arrived."""
    reason: str
    """``no heartbeat, no answer to PING`` or ``restarted (epoch a -> b)``."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} dead ({self.reason})"


@dataclass(frozen=True, slots=True)
class ServerDead(LoggedEvent):
    """Every DIME of a server is dead."""

    mac: bytes
    """The server's MAC."""

    def text(self) -> str:
        return f"server {mac_text(self.mac)} dead"


@dataclass(frozen=True, slots=True)
class DimeReborn(LoggedEvent):
    """A DIME came back with a new epoch (a heartbeat, an announce or a PING's answer): it restarted."""

    key: DimeKey
    """Which DIME."""
    old_epoch: int
    """The epoch we knew."""
    epoch: int
    """Its new epoch."""
    was_dead: bool
    """The old epoch had been declared dead."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} reborn (epoch {self.old_epoch} -> {self.epoch}), back in the pool"


@dataclass(frozen=True, slots=True)
class ZombieHeartbeat(LoggedEvent):
    """A heartbeat in an epoch already declared dead (starved or cut off, not dead): reported once per epoch
    until :meth:`pxproto.dime.liveness.Pool.rearm_zombie`."""

    key: DimeKey
    """Which DIME."""
    epoch: int
    """The dead epoch it still speaks in."""

    def text(self) -> str:
        return f"DIME {key_text(self.key)} declared dead still heartbeats (epoch {self.epoch})"
