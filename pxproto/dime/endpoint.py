"""What every DIME state machine shares: an address, and what a call gives back.

The machines in :mod:`pxproto.dime` do no I/O.  Each call takes a frame (or
bytes) and ``now`` (float seconds, any monotonic origin) and returns an
:class:`Output`: frames for the driver to send, events for it to act on, and
the deadline at which it must call ``handle_timer(now)`` next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pxproto.wire.codes import DIME_ALL, Scope
from pxproto.wire.frame import BROADCAST, Body, Frame


class Address(NamedTuple):
    """Where a frame comes from or goes to: a server's MAC, a DIME on it, a thread in that DIME."""

    mac: bytes
    dime: int = DIME_ALL
    thread: int = 0

    @property
    def peer(self) -> tuple[bytes, int]:
        """The (mac, dime) pair that identifies a DIME (or a server's kernel) on the network."""
        return (self.mac, self.dime)


BROADCAST_ADDRESS = Address(BROADCAST, DIME_ALL, 0)


def source(frame: Frame) -> Address:
    """The sender of a decoded frame."""
    return Address(frame.src_mac, frame.src_dime, frame.src_thread)


def frame_to(local: Address, dest: Address, body: Body) -> Frame:
    """A frame from ``local`` to ``dest``; the scope follows the destination DIME id."""
    scope = Scope.SYSTEM if dest.dime == DIME_ALL else Scope.DIME
    return Frame(
        body=body,
        scope=scope,
        src_dime=local.dime,
        src_thread=local.thread,
        dst_dime=dest.dime,
        dst_thread=dest.thread,
        dst_mac=dest.mac,
        src_mac=local.mac,
    )


class Event:
    """Base class of everything a state machine reports to its driver."""

    __slots__ = ()


@dataclass(slots=True)
class Output:
    """The result of one call into a state machine."""

    frames: list[Frame] = field(default_factory=list)
    """Frames to send, in order."""
    events: list[Event] = field(default_factory=list)
    """What happened, in order."""
    timer: float | None = None
    """When to call ``handle_timer`` next (absolute, in the caller's clock), or None for never."""

    def merge(self, other: Output) -> Output:
        """Append another output's frames and events, and keep the earlier timer."""
        self.frames.extend(other.frames)
        self.events.extend(other.events)
        self.timer = earliest(self.timer, other.timer)
        return self


def earliest(*deadlines: float | None) -> float | None:
    """The earliest of some deadlines, ignoring None."""
    real = [d for d in deadlines if d is not None]
    return min(real) if real else None
