"""Fast takeover: a follower deposes a leader only on proof that its process ended (its TCP connection
closed), never on silence (a split between orchestrators); the leader key's deletion wakes followers."""

from __future__ import annotations

import json
import socket

from pxproto.orch.core import Orchestrator
from pxproto.orch.leader import Elector, Leadership
from pxproto.orch.peer import PeerLink
from pxproto.orch.store import Holder, MemoryKv


class Clock:
    """The store's clock, set by hand."""

    t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeDriver:
    def __init__(self, last: int) -> None:
        self.core = Orchestrator(bytes([2, 0, 0, 0, 0xF0, last]))
        self.muted = False

    def send(self, out: object, even_muted: bool = False) -> None:
        pass


def _pair(clock: Clock) -> tuple[Leadership, Leadership]:
    kv = MemoryKv(clock)
    a = Leadership(FakeDriver(1), kv, "a", ttl=2, say=lambda s: None)  # type: ignore[arg-type]
    a.step(0.0)
    b = Leadership(FakeDriver(2), kv, "b", ttl=2, say=lambda s: None)  # type: ignore[arg-type]
    b.step(0.0)
    a.step(0.01)  # a accepts b's connection
    assert a.leading and not b.leading
    assert b.peer is not None and a.peer is not None and b.peer.target == a.peer.address
    return a, b


def test_a_follower_deposes_a_leader_whose_process_ended_without_waiting_for_the_lease() -> None:
    clock = Clock()
    a, b = _pair(clock)
    first = a.elector.epoch or 0
    assert a.peer is not None
    a.peer.close()  # what the kernel does to a SIGKILLed process's sockets; a steps no more
    clock.t = 0.05
    b.step(clock.t)
    assert b.leading and (b.elector.epoch or 0) > first, "b leads at once, 1.95 s before a's lease would expire"
    assert b.elector.deposed == 1
    assert json.loads(b.elector.kv.holder(b.elector.key).value)["name"] == "b"  # type: ignore[union-attr]
    b.stop()


def test_a_leader_that_is_alive_but_silent_is_not_deposed() -> None:
    """A hung or partitioned leader keeps its connections open: no proof, so the lease decides."""
    clock = Clock()
    a, b = _pair(clock)
    for i in range(1, 8):  # a steps no more (paused), but its process and sockets live on
        clock.t = i * 0.25
        b.step(clock.t)
    assert not b.leading and b.elector.deposed == 0
    for i in range(8, 14):  # the lease (2 s) runs out
        clock.t = i * 0.25
        b.step(clock.t)
    assert b.leading and b.elector.deposed == 0
    a.stop()
    b.stop()


def test_an_unreachable_or_refusing_leader_is_no_proof_of_death() -> None:
    """A split between orchestrators: the follower cannot connect (no answer, or a firewall's refusal); it
    waits for the lease."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()  # nothing listens there: refused
    link = PeerLink()
    link.CONNECT_TIMEOUT = 0.05
    for addr in ("192.0.2.1:9", closed):  # TEST-NET-1: no route, a timeout, or a refusal
        link.follow(addr)
        assert link.conn is None and not link.leader_gone() and link.dead is None
        link._retry_at = 0.0
    link.close()


def test_the_leader_keys_deletion_wakes_a_watching_follower() -> None:
    clock = Clock()
    kv = MemoryKv(clock)
    a, b, c = Elector(kv, "a", 1), Elector(kv, "b", 1), Elector(kv, "c", 1, watch=False)
    for e in (a, b, c):
        e.step(0.0)
    assert a.epoch is not None and isinstance(b.leader, Holder) and b.leader.revision == a.epoch
    a.resign()  # the key goes (as when etcd expires a's lease)
    assert b.wake.is_set() and not c.wake.is_set()
    b.step(0.01)
    assert b.epoch is not None and b.epoch > a.seen_epoch


def test_deposing_revokes_only_the_lease_last_read() -> None:
    clock = Clock()
    kv = MemoryKv(clock)
    a, b = Elector(kv, "a", 1), Elector(kv, "b", 1)
    a.step(0.0)
    b.step(0.0)
    old = a.epoch
    assert old is not None and b.depose()
    assert kv.holder(a.key) is None, "the revoked lease took the leader key with it"
    a.step(0.25)  # its refresh finds its lease gone: its old epoch is over (it may win a new one)
    assert a.epoch != old and (a.epoch is None or a.epoch > old)
    assert not b.depose(), "nothing read to depose any more"
