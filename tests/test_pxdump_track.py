"""pxdump's protocol awareness: request/response matching across batches, heartbeat gaps, reassembly gaps."""

from __future__ import annotations

from pxproto.capture.pcapng import Packet
from pxproto.dump.columns import Batch, from_packets
from pxproto.dump.track import HeartbeatWatch, Reassembler, RequestMatcher
from pxproto.wire import encode
from pxproto.wire.codes import Command, DimeState, Op, Scope, Status
from pxproto.wire.frame import Data, Frame, Heartbeat, Signaling

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")


def sig(op: Op, req_id: int, cmd: Command = Command.PING) -> bytes:
    body = Signaling(cmd, op, req_id, Status.OK)
    if op is Op.REQUEST:
        return encode(Frame(body, Scope.DIME, 0xFFFF, 0, 3, 1, 0, B, A))
    return encode(Frame(body, Scope.DIME, 3, 1, 1, 0, 0, A, B))


def hb(dime: int) -> bytes:
    return encode(Frame(Heartbeat(1, DimeState.BUSY, 100), src_dime=dime))


def batch(items: list[tuple[int, bytes]], first: int = 0) -> Batch:
    return from_packets([Packet(raw, ms * 1_000_000, len(raw)) for ms, raw in items], first)


def test_response_matched_across_batches_and_unanswered_reported() -> None:
    m = RequestMatcher()
    r1 = m.feed(batch([(0, sig(Op.REQUEST, 7)), (1, sig(Op.REQUEST, 8)), (2, sig(Op.REQUEST, 9))]))
    assert (r1 == -1).all()
    r2 = m.feed(batch([(5, sig(Op.RESPONSE, 7)), (6, sig(Op.RESPONSE, 9, Command.RESET)), (9, sig(Op.RESPONSE, 8))], 3))
    assert r2.tolist() == [5_000_000, -1, 8_000_000]
    m.feed(batch([(10, sig(Op.REQUEST, 9))], 6))
    left = m.finish()
    assert [(u.frame, u.req_id) for u in left] == [(3, 9), (7, 9)]
    assert "same id" in left[0].reason and "end of the capture" in left[1].reason
    rtt, cmds = m.rtts()
    assert sorted(rtt.tolist()) == [5_000_000, 8_000_000] and set(cmds.tolist()) == {int(Command.PING)}


def test_heartbeat_gap_flagged_per_dime() -> None:
    w = HeartbeatWatch()
    w.feed(batch([(0, hb(1)), (0, hb(2)), (100, hb(1)), (100, hb(2))]))
    gaps = w.feed(batch([(200, hb(1)), (700, hb(2)), (400, hb(1)), (1000, hb(2))], 4))
    assert gaps.tolist() == [-1, 600_000_000, -1, -1]
    found = w.finish()
    # DIME 2 came back after 600 ms (frame 6); DIME 1 has been silent since 400 ms when the capture ends at 1000.
    assert [(g.dime, g.frame, g.gap_ns) for g in found] == [(2, 6, 600_000_000), (1, 0, 600_000_000)]
    assert found[0].period_ms == 100


def test_reassembly_completes_and_reports_gaps() -> None:
    r = Reassembler()
    parts = [b"abcd", b"efgh", b"ij"]
    offs = [0, 4, 8]
    frags = [Data(3, 9, p, 10, o, i, 3) for i, (p, o) in enumerate(zip(parts, offs, strict=True))]
    assert r.feed(1, (1, 0), (2, 0), frags[2]) is None
    done = r.feed(2, (1, 0), (2, 0), frags[0])
    assert done is None
    done = r.feed(3, (1, 0), (2, 0), frags[1])
    assert done is not None and done.message.payload() == b"abcdefghij" and done.frame == 3
    r.feed(4, (1, 0), (2, 0), Data(3, 10, b"xy", 6, 0, 0, 3))
    r.feed(5, (1, 0), (2, 0), Data(3, 10, b"zz", 6, 4, 2, 3))
    (left,) = r.finish()
    assert left.missing() == "fragments 1 missing (bytes 2..4)"
