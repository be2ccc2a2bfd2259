"""Two DIME machines joined by a data channel, sans I/O: completions keep flowing across re-wiring.

An upstream DIME sends its MICE's outputs on channel ``c``; the sink DIME completes them back on ``c | 0x8000``.
The upstream drops an output only when its completion arrives (``RETAINED``), so a completion return that stops
answering leaves every later output retained for good: the source DIME's memory grows and, with ``bench/channel.py``
re-wiring one pair of DIMEs run after run, the sink reported ``CHANNEL_BROKEN channel 32769`` and stopped moving
items.  The cause: CONNECT gave the upstream a fresh completion receiver (expecting message 0) but left the sink's
completion sender numbering on from the last wiring.  Every test runs with the pure channel machines and with the
compiled ones (``tests.channel_impls``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pxproto import package
from pxproto.dime.endpoint import Address
from pxproto.dime.signaling import Requester, ResponseReceived, RetransmitPolicy
from pxproto.fastpath import decode, encode
from pxproto.node import channels, mice
from pxproto.node.machine import DimeMachine, Loaded, MachineConfig
from pxproto.wire.codes import Command, CounterId, Direction, Status, TlvType
from pxproto.wire.frame import Signaling, Tlv
from tests.channel_impls import IMPLS, impl_classes
from tests.test_node_machine import ME, FakeHost

UP = Address(b"\x02\x00\x00\x00\x01\x00", 0, 0)
DOWN = Address(b"\x02\x00\x00\x00\x02\x00", 1, 0)
CH = 1
TICK = 0.001


class Pair:
    """An upstream and a sink machine on a lossless wire, with a sink MICE that completes every item at once."""

    def __init__(self, mtu: int = 1500) -> None:
        self.now = 10.0
        self.req = Requester(ME, RetransmitPolicy(retries=0))
        self.hosts = {UP: FakeHost(), DOWN: FakeHost()}
        cfg = {a: MachineConfig(a, has_store=True, insecure=True, mtu=mtu) for a in self.hosts}
        self.m = {a: DimeMachine(cfg[a], h) for a, h in self.hosts.items()}
        self.consume = True
        """Whether the sink's MICE completes what it is handed (False: it takes nothing, as a stuck stage)."""
        for m in self.m.values():
            m.start(self.now)
        self.wire: list[tuple[Address, bytes]] = []
        """Frames on their way: (to, raw)."""

    def ask(self, dest: Address, cmd: Command, *params: Tlv) -> Status:
        _, out = self.req.request(dest, cmd, list(params), now=self.now)
        m = self.m[dest]
        for f in out.frames:
            m.on_frame(encode(f), self.now)
        status = None
        for raw in self._outbox(m):
            f = decode(raw)
            if isinstance(f.body, Signaling) and f.dst_mac == ME.mac:
                for ev in self.req.receive(f, self.now).events:
                    if isinstance(ev, ResponseReceived):
                        status = ev.status
        assert status is not None, f"{cmd.name} to {dest}: no answer"
        return status

    def _outbox(self, m: DimeMachine) -> list[bytes]:
        """What ``m`` sent: frames for the other DIME go on the wire, the rest is given back."""
        rest = []
        for raw, _route in m.take_outbox():
            dst = raw[0:6]
            peer = next((a for a in self.m if a.mac == dst), None)
            if peer is not None and peer != m.local:
                self.wire.append((peer, raw))
            else:
                rest.append(raw)
        return rest

    def start(self, at: Address, stage: int) -> None:
        m = self.m[at]
        m.loaded = Loaded(5, stage, f"s{stage}", Path("."), package.Stage(stage, f"s{stage}", "m:f"))
        m.start_mice(0)

    def stop(self, at: Address) -> None:
        self.m[at].stop_mice("stop")

    def wire_end(self, at: Address, direction: Direction, peer: Address, connect: bool = True) -> None:
        params = [Tlv(TlvType.CHANNEL, CH), Tlv(TlvType.DIRECTION, direction)]
        if connect:
            params += [Tlv(TlvType.PEER_MAC, peer.mac), Tlv(TlvType.PEER_DIME, peer.dime), Tlv(TlvType.PEER_THREAD, 0)]
        assert self.ask(at, Command.CONNECT if connect else Command.DISCONNECT, *params) is Status.OK

    def produce(self, stage: int, n: int, size: int = 16) -> None:
        """The upstream's MICE yields ``n`` items of ``size`` bytes of a source with index ``stage``."""
        up = self.m[UP]
        lineages = [mice.source_lineage(stage, i) for i in range(n)]
        up.mice_message(mice.pack_records(mice.OUT, [(lin, b"x" * size) for lin in lineages]), self.now)
        up.mice_batch_done(self.now)

    def run(self, seconds: float) -> None:
        """Move frames, complete items at the sink and fire timers for ``seconds`` of the machines' clock."""
        end = self.now + seconds
        while self.now < end:
            self.now += TICK
            moved = True
            while moved:
                moved = False
                for m in self.m.values():
                    self._outbox(m)
                wire, self.wire = self.wire, []
                for to, raw in wire:
                    self.m[to].on_frame(raw, self.now)
                    moved = True
                for m in self.m.values():
                    m.plane.flush_acks()
                moved = self._sink_mice() or moved
            for m in self.m.values():
                m.plane.coalesce_completions(self.now)
                t = m.get_timer()
                if t is not None and t <= self.now:
                    m.handle_timer(self.now)

    def _sink_mice(self) -> bool:
        m = self.m[DOWN]
        if m.mice is None or not m.mice.pending_tx or not self.consume:
            return False
        for msg in m.mice.pending_tx:
            lineages = [lin for kind, lin, _ in mice.records(msg) if kind == mice.ITEM]
            m.mice_message(mice.pack_records(mice.DONE, [(lin, b"") for lin in lineages]), self.now)
        m.mice.pending_tx.clear()
        m.mice_batch_done(self.now)
        return True

    def faults(self) -> list[str]:
        return [line for h in self.hosts.values() for line in h.lines if line.startswith("FAULT")]


@pytest.fixture(params=IMPLS)
def pair(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Pair:
    tx, rx = impl_classes(request.param)
    monkeypatch.setattr(channels, "ChannelSender", tx)
    monkeypatch.setattr(channels, "ChannelReceiver", rx)
    return Pair()


def _round(p: Pair, stage: int, n: int) -> None:
    p.produce(stage, n)
    p.run(0.2)
    up, down = p.m[UP], p.m[DOWN]
    assert down.counter(CounterId.ITEMS_IN) >= n
    assert up.counter(CounterId.RETAINED) == 0, (
        f"round of stage {stage}: {up.counter(CounterId.RETAINED)} of {n} outputs never completed "
        f"(upstream receivers {[(hex(k[0]), r.counters) for k, r in up.plane.receivers.items()]})"
    )


def _first_round(p: Pair) -> None:
    """Stage 0 at the sink, source stage 1 upstream, wired input end first; 3000 items through."""
    p.start(DOWN, 0)
    p.start(UP, 1)
    p.wire_end(DOWN, Direction.INPUT, UP)
    p.wire_end(UP, Direction.OUTPUT, DOWN)
    _round(p, 1, 3000)


@pytest.mark.parametrize("up_first", [False, True], ids=["input-first", "output-first"])
def test_completions_flow_after_the_same_pair_is_connected_again(pair: Pair, up_first: bool) -> None:
    """bench/channel.py's pattern: STOP both stages, START new ones, CONNECT the same two DIMEs on the same channel.

    The orchestrator CONNECTs the input end first; the other order must converge too."""
    p = pair
    _first_round(p)
    for stage in (2, 3):
        p.stop(UP)
        p.stop(DOWN)
        p.start(DOWN, 0)
        p.start(UP, stage)
        ends = [(DOWN, Direction.INPUT, UP), (UP, Direction.OUTPUT, DOWN)]
        for at, d, peer in reversed(ends) if up_first else ends:
            p.wire_end(at, d, peer)
        _round(p, stage, 3000)
    p.run(25.0)  # long enough for a stale completion sender to give up (10 retries with backoff)
    assert p.faults() == []


def test_completions_flow_after_disconnect_and_connect_again(pair: Pair) -> None:
    """DISCONNECT both ends (as when a link is dropped), then CONNECT the same pair on the same channel."""
    p = pair
    _first_round(p)
    p.wire_end(UP, Direction.OUTPUT, DOWN, connect=False)
    p.wire_end(DOWN, Direction.INPUT, UP, connect=False)
    p.wire_end(DOWN, Direction.INPUT, UP)
    p.wire_end(UP, Direction.OUTPUT, DOWN)
    p.stop(UP)
    p.start(UP, 2)
    _round(p, 2, 3000)
    p.run(25.0)
    assert p.faults() == []
