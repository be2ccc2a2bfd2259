"""Liveness probes: is the target still answering?  Run by the campaign between bursts.

A probe is any callable returning True when the target is alive.  The ones
here watch the wire the frames go out on:

* :class:`PingProbe`: a signaling PING with a fresh ECHO nonce, answered with the same nonce;
* :class:`HeartbeatProbe`: a heartbeat seen (from a given DIME, if asked) within a window;
* :class:`ForwardProbe`: a marked frame sent on one wire comes out of another (a switch).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Protocol

from pxproto.errors import ProtocolError
from pxproto.link import Wire
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import DIME_ALL, Command, Op, TlvType
from pxproto.wire.frame import Frame, Heartbeat, Scope, Signaling, Tlv

PROBE_MAC = bytes.fromhex("02fe00000001")


class Probe(Protocol):
    def __call__(self) -> bool: ...


def _try_decode(raw: bytes) -> Frame | None:
    try:
        return decode(raw)
    except ProtocolError:
        return None


def _wait_for(wire: Wire, timeout: float, match: Callable[[bytes], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if any(match(r) for r in wire.recv(left)):
            return True


class PingProbe:
    """Send a PING request to ``dst_mac`` / ``dst_dime``; alive when its response (same req_id and ECHO) comes back."""

    def __init__(
        self,
        wire: Wire,
        dst_mac: bytes,
        dst_dime: int = DIME_ALL,
        src_mac: bytes = PROBE_MAC,
        timeout: float = 1.0,
        sign: Callable[[Frame], bytes] | None = None,
    ) -> None:
        self.wire = wire
        self.dst_mac = dst_mac
        self.dst_dime = dst_dime
        self.src_mac = src_mac
        self.timeout = timeout
        self.sign = sign
        """Turns the request into signed bytes, for targets that accept only authenticated signaling."""
        self._ids = itertools.count(int.from_bytes(os.urandom(3), "big") + 1)
        self.sent = 0
        self.answered = 0

    def request(self) -> tuple[int, bytes, bytes]:
        req_id = next(self._ids) & 0xFFFFFFFF or 1
        nonce = os.urandom(8)
        scope = Scope.SYSTEM if self.dst_dime == DIME_ALL else Scope.DIME
        frame = Frame(
            Signaling(Command.PING, Op.REQUEST, req_id, params=(Tlv(TlvType.ECHO, nonce),)),
            scope, DIME_ALL, 0, self.dst_dime, 0, req_id, self.dst_mac, self.src_mac,
        )  # fmt: skip
        return req_id, nonce, self.sign(frame) if self.sign else encode(frame)

    def __call__(self) -> bool:
        req_id, nonce, raw = self.request()
        self.wire.send([raw])
        self.sent += 1

        def answers(r: bytes) -> bool:
            f = _try_decode(r)
            if f is None or not isinstance(f.body, Signaling) or f.dst_mac != self.src_mac:
                return False
            b = f.body
            if b.op is not Op.RESPONSE or b.cmd is not Command.PING:
                return False
            return b.req_id == req_id and b.param(TlvType.ECHO) == nonce

        ok = _wait_for(self.wire, self.timeout, answers)
        self.answered += ok
        return ok


class HeartbeatProbe:
    """Alive when a heartbeat (from ``src_mac`` / ``src_dime`` when given) arrives within ``timeout``."""

    def __init__(
        self, wire: Wire, src_mac: bytes | None = None, src_dime: int | None = None, timeout: float = 2.0
    ) -> None:
        self.wire = wire
        self.src_mac = src_mac
        self.src_dime = src_dime
        self.timeout = timeout
        self.seen = 0

    def __call__(self) -> bool:
        def beat(r: bytes) -> bool:
            f = _try_decode(r)
            if f is None or not isinstance(f.body, Heartbeat):
                return False
            if self.src_mac is not None and f.src_mac != self.src_mac:
                return False
            return self.src_dime is None or f.src_dime == self.src_dime

        ok = _wait_for(self.wire, self.timeout, beat)
        self.seen += ok
        return ok


class ForwardProbe:
    """Alive when a frame made by ``make(marker)`` and sent on ``into`` arrives on ``out_of``.

    ``make`` must put the 8-byte marker somewhere the target passes through
    untouched (the header's seq field, say).
    """

    def __init__(self, into: Wire, out_of: Wire, make: Callable[[bytes], bytes], timeout: float = 1.0) -> None:
        self.into = into
        self.out_of = out_of
        self.make = make
        self.timeout = timeout
        self.sent = 0
        self.arrived = 0

    def __call__(self) -> bool:
        marker = os.urandom(8)
        self.into.send([self.make(marker)])
        self.sent += 1
        ok = _wait_for(self.out_of, self.timeout, lambda r: marker in r)
        self.arrived += ok
        return ok
