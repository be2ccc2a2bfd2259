"""The orchestrator's driver verifies signed frames when a cluster key is set, counting every rejection."""

from __future__ import annotations

from typing import Any

from pxproto.dime.endpoint import Address, frame_to
from pxproto.dime.keys import KeyRing
from pxproto.orch.core import Orchestrator
from pxproto.orch.driver import Driver
from pxproto.sim import ORCH_MAC, server_mac
from pxproto.wire.codec import encode
from pxproto.wire.codes import DIME_ALL, DimeState
from pxproto.wire.frame import BROADCAST, Heartbeat

KEY = bytes(range(32))


class NoWire:
    def send(self, raw: bytes) -> None:
        pass

    def fileno(self) -> int:
        return -1


def heartbeat(dime: int) -> bytes:
    hb = Heartbeat(1, DimeState.FREE, 50)
    return encode(frame_to(Address(server_mac(0), dime), Address(BROADCAST, DIME_ALL), hb))


def driver(keys: dict[int, bytes] | None) -> Driver:
    wire: Any = NoWire()
    return Driver(Orchestrator(ORCH_MAC), wire, keys)


def test_signed_frames_verified_and_rejections_counted() -> None:
    d = driver({1: KEY})
    dime_ring = KeyRing({1: KEY}, epoch=5)
    good = dime_ring.sign_raw(heartbeat(0))
    d._frame(good, 1.0)
    assert d.core.counters["heartbeats"] == 1
    d._frame(good, 1.1)  # the same counter again
    d._frame(heartbeat(1), 1.2)  # no trailer
    forged = bytearray(dime_ring.sign_raw(heartbeat(2)))
    forged[-1] ^= 1
    d._frame(bytes(forged), 1.3)
    d._frame(KeyRing({7: KEY}).sign_raw(heartbeat(3)), 1.4)  # a key id we do not have
    assert d.core.counters["heartbeats"] == 1, "a refused frame reached the core"
    assert len(d.core.pool) == 1
    c = d.counters
    assert (c["rejected"], c["rejected_replayed"], c["rejected_unsigned"], c["rejected_bad_tag"]) == (4, 1, 1, 1)
    assert c["rejected_unknown_key"] == 1
    d._frame(dime_ring.sign_raw(heartbeat(0)), 1.5)  # a fresh counter from the same sender
    assert d.core.counters["heartbeats"] == 2


def test_without_a_key_frames_are_taken_as_they_come() -> None:
    d = driver(None)
    d._frame(heartbeat(0), 1.0)
    d._frame(KeyRing({1: KEY}).sign_raw(heartbeat(1)), 1.1)
    assert d.core.counters["heartbeats"] == 2 and d.counters["rejected"] == 0
