"""Heartbeats: a DIME's sign of life, and the failure detector that watches them.

A :class:`HeartbeatEmitter` broadcasts a DIME's heartbeat every period (100 ms
by default, changeable at run time) with its epoch, state and load.  The epoch
grows on every restart (:func:`next_epoch`, :meth:`HeartbeatEmitter.restart`),
and the header's ``seq`` counts heartbeats within an epoch, so a watcher can
tell a reborn DIME from a late or reordered frame.

The watcher's side -- the failure detector that suspects a silent DIME, PINGs
it (:func:`ping_handler` is the DIME's answer) and declares it dead -- is the
pool's: :mod:`pxproto.dime.liveness`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from pxproto.dime.endpoint import BROADCAST_ADDRESS, Address, Output, frame_to
from pxproto.dime.signaling import (
    Handler,
    RequestReceived,
)
from pxproto.wire.codes import DimeState, Status, TlvType
from pxproto.wire.frame import Frame, Heartbeat, Tlv

EPOCH_SPACE = 1 << 32
PERIOD_MS_MAX = 0xFFFF


def next_epoch(previous: int | None) -> int:
    """The epoch for a (re)start after ``previous`` (None on a first boot); the driver persists it."""
    nxt = 1 if previous is None else previous + 1
    if nxt >= EPOCH_SPACE:
        raise OverflowError("the 32-bit epoch is exhausted")
    return nxt


def period_ms(period: float) -> int:
    ms = round(period * 1000)
    if not 1 <= ms <= PERIOD_MS_MAX:
        raise ValueError(f"a heartbeat period of {period} s is not within 1..{PERIOD_MS_MAX} ms")
    return ms


class HeartbeatEmitter:
    """Broadcasts one DIME's heartbeats."""

    def __init__(self, local: Address, epoch: int, *, period: float = 0.1, state: DimeState = DimeState.FREE) -> None:
        self.local = local
        self.epoch = epoch
        self.period = period
        self._period_ms = period_ms(period)
        self.load = Heartbeat(epoch, state, self._period_ms)
        """The body of the next heartbeat: change it with :meth:`update`."""
        self.sent = 0
        """Heartbeats sent in this epoch (the header's seq)."""
        self._deadline: float | None = None

    def update(self, **fields: int) -> None:
        """Set state or load fields for the next heartbeats (``state=``, ``cpu_permille=``, ``rx_queue=``...)."""
        for name, value in fields.items():
            if name in ("epoch", "period_ms") or not hasattr(self.load, name):
                raise AttributeError(f"a heartbeat has no settable field {name!r}")
            setattr(self.load, name, DimeState(value) if name == "state" else value)

    def _beat(self, now: float) -> Output:
        self.sent += 1
        body = replace(self.load, epoch=self.epoch, period_ms=self._period_ms)
        frame = frame_to(self.local, BROADCAST_ADDRESS, body)
        frame.seq = self.sent
        return Output(frames=[frame], timer=self._deadline)

    def start(self, now: float) -> Output:
        """Send the first heartbeat now and the next one period later."""
        self._deadline = now + self.period
        return self._beat(now)

    def stop(self) -> None:
        self._deadline = None

    def restart(self, now: float) -> Output:
        """A new life: the next epoch, the count from 1, a heartbeat at once."""
        self.epoch = next_epoch(self.epoch)
        self.sent = 0
        return self.start(now)

    def set_period(self, period: float, now: float) -> Output:
        """Change the period at run time; the next heartbeat is due one new period after the last one."""
        self._period_ms = period_ms(period)
        if self._deadline is not None:
            last = self._deadline - self.period
            self._deadline = max(last + period, now)
        self.period = period
        return Output(timer=self._deadline)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> Output:
        if self._deadline is None or now < self._deadline:
            return Output(timer=self._deadline)
        # Keep to the schedule; if the driver was late by whole periods, skip them rather than burst.
        missed = math.floor((now - self._deadline) / self.period)
        self._deadline += (missed + 1) * self.period
        while self._deadline <= now:  # the division can round down by one period (finding F1)
            self._deadline += self.period
        return self._beat(now)

    def receive(self, frame: Frame, now: float) -> Output:
        """An emitter takes no frames (present so it can be driven like the other machines)."""
        return Output(timer=self._deadline)


def ping_handler(epoch: Callable[[], int]) -> Handler:
    """A :class:`~pxproto.dime.signaling.Responder` handler for PING: echo, and the DIME's current epoch."""

    def answer(req: RequestReceived) -> tuple[Status, list[Tlv]]:
        echo = req.param(TlvType.ECHO)
        return Status.OK, [Tlv(TlvType.ECHO, echo if isinstance(echo, bytes) else b""), Tlv(TlvType.EPOCH, epoch())]

    return answer
