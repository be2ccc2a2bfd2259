"""Reliable signaling: retransmission, timeouts, duplicate suppression, over a lossy simulated wire."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxproto.dime.endpoint import Address
from pxproto.dime.signaling import (
    Requester,
    RequestReceived,
    RequestTimedOut,
    Responder,
    ResponseReceived,
    RetransmitPolicy,
)
from pxproto.dime.simlink import SimLink, SimNet
from pxproto.wire.codes import Command, Op, Status, TlvType
from pxproto.wire.frame import Frame, Signaling, Tlv

A, B = (Address(bytes.fromhex(f"0200000000{n:02x}"), n, 0) for n in (1, 2))
MAC_A, MAC_B = A.mac, B.mac
POLICY = RetransmitPolicy(initial=0.01, factor=2.0, max_interval=0.08, retries=8)


class Executions:
    """A PING handler that counts how often each (peer, req_id) is executed."""

    def __init__(self) -> None:
        self.count: Counter[tuple[bytes, int, int]] = Counter()

    def __call__(self, req: RequestReceived) -> tuple[Status, list[Tlv]]:
        self.count[(req.peer.mac, req.peer.dime, req.req_id)] += 1
        return Status.OK, [Tlv(TlvType.ECHO, req.param(TlvType.ECHO) or b""), Tlv(TlvType.EPOCH, 7)]  # type: ignore[list-item]


def pair(seed: int = 0, **link: float) -> tuple[SimNet, Requester, Responder, Executions]:
    net = SimNet(link=lambda s, d: SimLink(seed * 2 + (s == MAC_A), **link))  # type: ignore[arg-type]
    req = Requester(A, POLICY)
    ex = Executions()
    resp = Responder(B, {Command.PING: ex}, cache_ttl=5.0)
    net.add(MAC_A, req)
    net.add(MAC_B, resp)
    return net, req, resp, ex


def ping(net: SimNet, req: Requester, echo: bytes) -> int:
    req_id, out = req.request(B, Command.PING, [Tlv(TlvType.ECHO, echo)], now=net.now)
    net.emit(MAC_A, out)
    return req_id


def test_round_trip() -> None:
    net, req, _resp, ex = pair()
    rid = ping(net, req, b"hello")
    net.run(1.0)
    (ev,) = net.events_of(ResponseReceived)
    assert isinstance(ev, ResponseReceived)
    assert (ev.req_id, ev.cmd, ev.status, ev.attempts) == (rid, Command.PING, Status.OK, 1)
    assert ev.param(TlvType.ECHO) == b"hello" and ev.param(TlvType.EPOCH) == 7
    assert ev.peer.peer == B.peer and ev.rtt == pytest.approx(0.002)
    assert req.pending == 0 and sum(ex.count.values()) == 1


@pytest.mark.parametrize("seed", range(1, 9))
def test_signaling_with_loss(seed: int) -> None:
    """30% loss, duplication and reordering both ways: every request answered, each executed exactly once."""
    net, req, resp, ex = pair(seed, loss=0.3, duplicate=0.2, reorder=0.3, jitter=0.003)
    ids = [ping(net, req, bytes([i])) for i in range(40)]
    net.run(30.0)
    answered = Counter(e.req_id for e in net.events_of(ResponseReceived))  # type: ignore[attr-defined]
    timed_out = {e.req_id for e in net.events_of(RequestTimedOut)}  # type: ignore[attr-defined]
    assert set(answered) | timed_out == set(ids) and not set(answered) & timed_out
    assert max(answered.values()) == 1
    assert max(ex.count.values()) == 1
    # With 9 sends, P(timeout) per request is about (1 - 0.7**2)**9 ~ 0.2%: all answered for these seeds.
    assert not timed_out
    assert req.counters["retransmitted"] > 0 and resp.counters["duplicate_answered"] > 0
    for e in net.events_of(ResponseReceived):
        assert e.param(TlvType.ECHO) == bytes([ids.index(e.req_id)])  # type: ignore[attr-defined]


def test_timeout_after_retry_cap_with_exponential_backoff() -> None:
    net, req, _resp, _ex = pair()
    net.kill(MAC_B)
    sent: list[float] = []
    link = net.link(MAC_A, MAC_B)
    orig = link.send_encoded
    link.send_encoded = lambda frame, raw, now: (sent.append(now), orig(frame, raw, now))  # type: ignore[method-assign]
    rid = ping(net, req, b"x")
    net.run(10.0)
    (ev,) = net.events_of(RequestTimedOut)
    assert isinstance(ev, RequestTimedOut)
    assert (ev.req_id, ev.status, ev.attempts, ev.cmd) == (rid, Status.TIMEOUT, POLICY.retries + 1, Command.PING)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(sent)]
    assert gaps == [0.01, 0.02, 0.04, 0.08, 0.08, 0.08, 0.08, 0.08]
    assert net.events[-1][0] == pytest.approx(POLICY.span())
    assert req.pending == 0 and req.get_timer() is None


ECHO = (Tlv(TlvType.ECHO, b"e"),)


def request_frame(req_id: int, cmd: Command = Command.PING, params: tuple[Tlv, ...] = ECHO) -> Frame:
    return Frame(
        body=Signaling(cmd=cmd, op=Op.REQUEST, req_id=req_id, params=params),
        src_mac=A.mac,
        src_dime=A.dime,
        dst_mac=B.mac,
        dst_dime=B.dime,
    )


def test_duplicate_request_gets_cached_response_not_second_execution() -> None:
    ex = Executions()
    resp = Responder(B, {Command.PING: ex})
    first = resp.receive(request_frame(5), 0.0)
    again = resp.receive(request_frame(5), 0.1)
    assert sum(ex.count.values()) == 1
    assert len(first.frames) == 1 and again.frames == first.frames
    assert resp.counters["duplicate_answered"] == 1
    other_peer = request_frame(5)
    other_peer.src_dime = 9
    assert len(resp.receive(other_peer, 0.2).frames) == 1 and sum(ex.count.values()) == 2


def test_duplicate_while_in_progress_is_dropped_then_answered_from_cache() -> None:
    resp = Responder(B)
    out = resp.receive(request_frame(1, Command.START, (Tlv(TlvType.SERVICE_ID, 1), Tlv(TlvType.STAGE, 2))), 0.0)
    (ev,) = out.events
    assert isinstance(ev, RequestReceived) and ev.cmd is Command.START
    dup = resp.receive(request_frame(1, Command.START, (Tlv(TlvType.SERVICE_ID, 1), Tlv(TlvType.STAGE, 2))), 0.1)
    assert not dup.frames and not dup.events and resp.counters["duplicate_in_progress"] == 1
    answer = resp.respond(ev, Status.OK, [Tlv(TlvType.EPOCH, 3)], now=0.2)
    (frame,) = answer.frames
    assert isinstance(frame.body, Signaling) and frame.body.op is Op.RESPONSE and frame.body.req_id == 1
    assert (frame.dst_mac, frame.dst_dime, frame.src_mac, frame.src_dime) == (A.mac, A.dime, B.mac, B.dime)
    again = resp.receive(request_frame(1, Command.START, (Tlv(TlvType.SERVICE_ID, 1), Tlv(TlvType.STAGE, 2))), 0.3)
    assert again.frames == answer.frames and not again.events


def test_reused_req_id_with_other_command_is_a_new_request() -> None:
    ex = Executions()
    resp = Responder(B, {Command.PING: ex})
    resp.receive(request_frame(3), 0.0)
    out = resp.receive(request_frame(3, Command.USAGE, ()), 0.1)
    assert resp.counters["req_id_reused"] == 1 and isinstance(out.events[0], RequestReceived)


def test_reused_req_id_with_other_parameters_is_a_new_request() -> None:
    ex = Executions()
    resp = Responder(B, {Command.PING: ex})
    first = resp.receive(request_frame(4, Command.PING, (Tlv(TlvType.ECHO, b"one"),)), 0.0)
    second = resp.receive(request_frame(4, Command.PING, (Tlv(TlvType.ECHO, b"two"),)), 0.1)
    assert sum(ex.count.values()) == 2 and resp.counters["req_id_reused"] == 1
    (a,), (b,) = first.frames, second.frames
    assert isinstance(a.body, Signaling) and isinstance(b.body, Signaling)
    assert (a.body.param(TlvType.ECHO), b.body.param(TlvType.ECHO)) == (b"one", b"two")


def test_cache_is_bounded_and_expires() -> None:
    resp = Responder(B, {Command.PING: Executions()}, cache_size=3, cache_ttl=1.0)
    for i in range(10):
        resp.receive(request_frame(i), i * 0.01)
    assert len(resp) == 3 and resp.counters["evicted"] == 7
    assert resp.get_timer() == pytest.approx(1.07)
    resp.handle_timer(1.075)
    assert len(resp) == 2
    resp.handle_timer(5.0)
    assert len(resp) == 0 and resp.get_timer() is None and resp.counters["expired"] == 3
    # Expired: a late retransmission executes again (the requester gave up long ago).
    assert resp.receive(request_frame(9), 6.0).frames


def test_missing_parameter_is_bad_param_and_handler_failure_is_internal() -> None:
    def broken(req: RequestReceived) -> tuple[Status, list[Tlv]]:
        raise RuntimeError("boom")

    resp = Responder(B, {Command.PING: broken, Command.GET_PARAM: broken})
    (bad,) = resp.receive(request_frame(1, Command.GET_PARAM, ()), 0.0).frames
    assert isinstance(bad.body, Signaling) and bad.body.status is Status.BAD_PARAM
    assert "PARAM_ID" in str(bad.body.param(TlvType.TEXT))
    (err,) = resp.receive(request_frame(2), 0.0).frames
    assert isinstance(err.body, Signaling) and err.body.status is Status.INTERNAL
    assert "boom" in str(err.body.param(TlvType.TEXT)) and resp.counters["handler_failed"] == 1


def test_response_from_other_peer_or_command_is_not_matched() -> None:
    req = Requester(A, POLICY)
    rid, _ = req.request(B, Command.PING, [Tlv(TlvType.ECHO, b"")], now=0.0)
    body = Signaling(cmd=Command.PING, op=Op.RESPONSE, req_id=rid, params=())
    wrong_peer = Frame(body=body, src_mac=MAC_B, src_dime=3, dst_mac=MAC_A, dst_dime=1)
    assert not req.receive(wrong_peer, 0.001).events and req.counters["unmatched"] == 1
    wrong_cmd = Frame(
        body=Signaling(cmd=Command.USAGE, op=Op.RESPONSE, req_id=rid), src_mac=MAC_B, src_dime=2, dst_dime=1
    )
    assert not req.receive(wrong_cmd, 0.001).events and req.counters["cmd_mismatch"] == 1
    right = Frame(body=body, src_mac=MAC_B, src_dime=2, dst_mac=MAC_A, dst_dime=1)
    assert isinstance(req.receive(right, 0.002).events[0], ResponseReceived)
    assert not req.receive(right, 0.003).events and req.counters["unmatched"] == 2


def test_req_ids_wrap_and_skip_zero_and_pending() -> None:
    req = Requester(A, POLICY, first_req_id=2**32 - 1)
    ids = [req.request(B, Command.PING, [], now=0.0)[0] for _ in range(3)]
    assert ids == [2**32 - 1, 1, 2]
    req2 = Requester(A, POLICY, first_req_id=2**32 - 1)
    req2._next_id = 1
    req2.request(B, Command.PING, [], now=0.0)
    req2._next_id = 1
    assert req2.request(B, Command.PING, [], now=0.0)[0] == 2


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="retransmit policy"):
        RetransmitPolicy(initial=0.0)


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**16),
    loss=st.floats(0.0, 0.6),
    dup=st.floats(0.0, 0.5),
    n=st.integers(1, 12),
)
def test_exactly_once_property(seed: int, loss: float, dup: float, n: int) -> None:
    """Whatever the loss: each request ends once (answer xor timeout) and runs at most once."""
    net, req, _resp, ex = pair(seed, loss=loss, duplicate=dup, reorder=0.2, jitter=0.002)
    ids = [ping(net, req, b"p") for _ in range(n)]
    net.run(30.0)
    ends = Counter(e.req_id for e in net.events_of(ResponseReceived))  # type: ignore[attr-defined]
    ends.update(e.req_id for e in net.events_of(RequestTimedOut))  # type: ignore[attr-defined]
    assert ends == Counter(ids)
    assert not ex.count or max(ex.count.values()) == 1
    assert req.pending == 0
