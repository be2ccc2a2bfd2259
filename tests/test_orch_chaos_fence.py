"""What chaos found: a command the orchestrator had sent to a DIME that died was retransmitted to the DIME's next
life (pxkernel restarts it at once, the same MAC and DIME id, a new epoch) and acted on there.  A CONNECT OUTPUT
meant for a transform that died with its server wired, in the restarted DIME, an output to the replacement
sink; the DIME was then given a replacement source, which sent a share of its items into that dead channel, and
15 lines never reached the sink (``chaos.run(kills=5, passes=1, seed=4)``: 2 runs of 4).

Now every command carries the EPOCH of the life it is meant for and a DIME in another epoch refuses it; a
CONNECT answered after its link was dropped is undone; and an output channel that breaks gives what it had not
delivered to the DIME's other outputs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from pxproto import package
from pxproto.dime.endpoint import Address, Output
from pxproto.dime.signaling import ResponseReceived
from pxproto.fastpath import decode
from pxproto.node import mice
from pxproto.node.machine import Loaded
from pxproto.node.testbed import Cluster
from pxproto.orch.deployment import RState
from pxproto.wire.codes import Command, CounterId, Direction, Status, TlvType
from pxproto.wire.frame import Data, Tlv, connect_params
from tests._helpers import deployed
from tests.test_node_machine import ask, machine

PEER = Address(b"\x02\x00\x00\x00\x02\x00", 1, 0)


def output_to(peer: Address, channel: int) -> list[Tlv]:
    return [*connect_params(channel, Direction.OUTPUT, peer.mac, peer.dime)]


def test_a_command_for_another_life_of_the_dime_is_refused_and_does_nothing() -> None:
    m, _ = machine()
    r = ask(m, Command.CONNECT, *output_to(PEER, 8), Tlv(TlvType.EPOCH, m.epoch - 1))
    assert r.status is Status.DENIED and r.param(TlvType.EPOCH) == m.epoch, r
    assert "epoch" in str(r.param(TlvType.TEXT)) and 8 not in m.plane.outputs
    assert m.counter(CounterId.REJECTED_FENCED) == 1
    # Addressed to this life, or to no life in particular (older orchestrators, operators' tools): done.
    assert ask(m, Command.CONNECT, *output_to(PEER, 8), Tlv(TlvType.EPOCH, m.epoch)).status is Status.OK
    assert ask(m, Command.CONNECT, *output_to(PEER, 9)).status is Status.OK
    assert {8, 9} <= set(m.plane.outputs) and m.counter(CounterId.REJECTED_FENCED) == 1


def test_a_broken_output_hands_what_it_had_not_delivered_to_the_other_outputs() -> None:
    m, _ = machine()
    m.loaded = Loaded(5, 0, "only", Path("."), package.Stage(0, "only", "m:f"))
    m.start_mice(0)
    other = Address(b"\x02\x00\x00\x00\x03\x00", 2, 0)
    assert ask(m, Command.CONNECT, *output_to(PEER, 1)).status is Status.OK
    m.mice_message(mice.REC.pack(mice.OUT, 77, 3) + b"abc", 10.1)
    m.mice_batch_done(10.1)
    first = [decode(raw) for raw, _ in m.take_outbox()]
    assert [f.dst_dime for f in first if isinstance(f.body, Data)] == [PEER.dime]
    assert ask(m, Command.CONNECT, *output_to(other, 2)).status is Status.OK
    m.take_outbox()
    now = 10.1
    while not m.plane.senders[m.plane.outputs[1]].broken:  # PEER never acknowledges: retries, then broken
        assert now < 100, "the channel never broke"
        now += 2.5
        m.now = now
        m.plane.handle_timer(now)
    again = [decode(raw) for raw, _ in m.take_outbox()]
    data = [f for f in again if isinstance(f.body, Data) and f.body.frag_count and f.dst_dime == other.dime]
    assert data and any(77 in dict(mice.unpack_items(f.body.payload)) for f in data), again
    assert m.counter(CounterId.REPLAYED) == 1


def test_the_orchestrator_addresses_each_command_to_the_life_it_knows() -> None:
    c, name = deployed()
    sent: list[tuple[Address, Command, dict[int, Any]]] = []
    request = c.orch.requester.request

    def spy(dest: Address, cmd: Command, params: Any, **kw: Any) -> Any:
        sent.append((dest, cmd, {int(t.type): t.value for t in params}))
        return request(dest, cmd, params, **kw)

    c.orch.requester.request = spy  # type: ignore[method-assign,assignment]
    c.emit(c.orch.scale(name, "transform", 3, c.net.now))
    assert c.run_until(lambda: len(c.orch.replicas(name)["transform"]) == 3, 5.0)
    c.run(0.5)
    cmds = {cmd for _, cmd, _ in sent}
    assert {Command.LOAD, Command.START, Command.CONNECT} <= cmds, cmds
    for dest, cmd, params in sent:
        if cmd is Command.PING:
            continue
        assert params.get(int(TlvType.EPOCH)) == c.orch.pool.dimes[(dest.mac, dest.dime)].epoch, (cmd, dest)


def test_a_connect_retransmitted_to_the_next_life_of_a_dead_dime_wires_nothing() -> None:
    # The orchestrator sends CONNECT OUTPUT to a DIME that has just died; the first copy is lost with it; pxkernel
    # starts the DIME again before its death is known, and the retransmission reaches the new life.
    c, name = deployed()
    parse = c.orch.replicas(name)["parse"][0]
    c.kill_dime(parse)
    answers: list[tuple[bool, Any]] = []
    out = Output()
    params = output_to(Address(*c.orch.replicas(name)["sink"][0], 0), 4000)
    c.orch._request(parse, Command.CONNECT, params, c.net.now, out, lambda ok, ev, t, o: answers.append((ok, ev)))
    c.emit(out)
    c.run(0.01)
    c.restart_dime(parse)
    assert c.run_until(lambda: bool(answers), 5.0)
    reborn = c.server_of(parse).dimes[parse[1]].machine
    assert 4000 not in reborn.plane.outputs, "the new life wired an output meant for the old one"
    ok, ev = answers[0]
    assert not ok and isinstance(ev, ResponseReceived) and ev.status is Status.DENIED, ev
    assert ev.param(TlvType.EPOCH) == reborn.epoch


def test_a_connect_answered_after_its_link_was_dropped_is_undone() -> None:
    c, name = deployed()
    svc = c.orch.services[name]
    link = next(lk for lk in svc.links if lk.down.stage.name == "sink")
    up = link.up
    disconnects: list[int] = []
    request = c.orch.requester.request

    def spy(dest: Address, cmd: Command, params: Any, **kw: Any) -> Any:
        if cmd is Command.DISCONNECT and (dest.mac, dest.dime) == up.key:
            disconnects.append(next(t.value for t in params if t.type is TlvType.CHANNEL))
        return request(dest, cmd, params, **kw)

    c.orch.requester.request = spy  # type: ignore[method-assign,assignment]
    # A CONNECT OUTPUT for the link still on its way when the link is dropped (its sink died meanwhile).
    out = Output()
    c.orch._connect(svc, link, up, Direction.OUTPUT, link.down.key, c.net.now, out)
    svc.links.remove(link)
    c.emit(out)
    assert c.run_until(lambda: link.channel in disconnects, 5.0), disconnects
    assert up.state is RState.RUNNING
    assert c.run_until(lambda: link.channel not in c.server_of(up.key).dimes[up.key[1]].machine.plane.outputs, 5.0)


def test_a_real_dime_restarted_by_its_kernel_refuses_what_was_meant_for_its_former_life(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "bed", kernels=1, dimes=2, key=True)
    try:
        dest = cluster.dime(0, 1)
        ping = [Tlv(TlvType.ECHO, b"e")]
        old = cluster.ask(dest, Command.PING, *ping).param(TlvType.EPOCH)
        pid = cluster.dime_pid(0, 1)
        assert isinstance(old, int) and pid is not None
        os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 60

        def epoch() -> object:
            r = cluster.client.request(dest, Command.PING, ping, timeout=1.0)
            return r.param(TlvType.EPOCH) if isinstance(r, ResponseReceived) else None

        while (new := epoch()) in (None, old):  # pxkernel starts it again, in a new epoch
            assert time.monotonic() < end, cluster.log_text()
            time.sleep(0.1)
        assert isinstance(new, int)
        r = cluster.ask(dest, Command.CONNECT, *output_to(cluster.dime(0, 0), 8), Tlv(TlvType.EPOCH, old))
        assert r.status is Status.DENIED and r.param(TlvType.EPOCH) == new, r
        # Nothing was wired: there is no output 8 to take down.
        r = cluster.ask(dest, Command.DISCONNECT, Tlv(TlvType.CHANNEL, 8), Tlv(TlvType.DIRECTION, Direction.OUTPUT))
        assert r.status is Status.NOT_FOUND
        fenced = cluster.ask(dest, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, CounterId.REJECTED_FENCED))
        assert fenced.param(TlvType.VALUE) == 1
        r = cluster.ask(dest, Command.CONNECT, *output_to(cluster.dime(0, 0), 8), Tlv(TlvType.EPOCH, new))
        assert r.status is Status.OK
    finally:
        cluster.close()
