"""The data channel: fragmentation, in-order exactly-once delivery, credit, loss recovery, bounded memory."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxproto.dime.channel import (
    MTU_ETHERNET,
    MTU_JUMBO,
    ChannelBroken,
    ChannelSender,
    MessageAcked,
    MessageDropped,
    MessageReceived,
    ReassemblyOverflow,
    fragment,
    fragment_size,
    serial_diff,
)
from pxproto.dime.channel_rx import ChannelReceiver
from pxproto.dime.endpoint import Address, frame_to
from pxproto.dime.simlink import SimLink, SimNet
from pxproto.wire import spec
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import DataFlag
from pxproto.wire.frame import Auth, Data, Frame
from tests.channel_impls import IMPLS, impl_classes

MAC_S = bytes.fromhex("020000000011")
MAC_R = bytes.fromhex("020000000022")
S = Address(MAC_S, 1, 3)
R = Address(MAC_R, 2, 4)
CH = 7


@pytest.fixture(autouse=True, scope="module", params=IMPLS)
def impl(request: pytest.FixtureRequest) -> object:
    """Every test here runs against the pure machines and the compiled ones (the names below are rebound)."""
    global ChannelSender, ChannelReceiver
    saved = ChannelSender, ChannelReceiver
    ChannelSender, ChannelReceiver = impl_classes(request.param)  # type: ignore[misc]
    yield request.param
    ChannelSender, ChannelReceiver = saved  # type: ignore[misc]


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


class CreditAudit:
    """Checks, independently of the sender, that no fragment it sends lies beyond the credit it was given.

    The audit knows the stream layout (which messages, how many fragments) and
    sees every acknowledgement delivered to the sender and every fragment it emits.
    """

    def __init__(self, sender: ChannelSender, initial_credit: int) -> None:
        self.sender = sender
        self.limit = initial_credit
        self.starts: dict[int, int] = {}
        self.end = 0
        self.max_pos = -1
        self.checked = 0

    def queued(self, msg_id: int, count: int) -> None:
        self.starts[msg_id] = self.end
        self.end += count

    def ack(self, body: Data) -> None:
        start = self.starts.get(body.msg_id, self.end if body.ack == 0 else None)
        if start is not None and start + body.ack >= self.limit - 0xFFFF:
            # Only a fresher ack (further along the stream) sets the limit, as in the sender.
            self.limit = start + body.ack + body.credit

    def sent(self, body: Data) -> None:
        pos = self.starts[body.msg_id] + body.frag_index
        assert pos < self.limit, f"fragment at {pos} sent beyond the credit limit {self.limit}"
        self.checked += 1


def channel(
    seed: int = 0, *, mtu: int = MTU_ETHERNET, window: int = 32, initial_credit: int = 32, **link: float
) -> tuple[SimNet, ChannelSender, ChannelReceiver, CreditAudit]:
    net = SimNet(link=lambda s, d: SimLink(seed * 2 + (s == MAC_S), **link))  # type: ignore[arg-type]
    tx = ChannelSender(S, R, CH, mtu=mtu, initial_credit=initial_credit)
    rx = ChannelReceiver(R, S, CH, window=window)
    net.add(MAC_S, tx)
    net.add(MAC_R, rx)
    audit = CreditAudit(tx, initial_credit)

    def on_deliver(dst: bytes, frame: Frame) -> None:
        if dst == MAC_S and isinstance(frame.body, Data):
            audit.ack(frame.body)

    net.on_deliver = on_deliver
    link_out = net.link(MAC_S, MAC_R)
    orig = link_out.send_encoded

    def audited_send(frame: Frame, raw: bytes, now: float) -> None:
        if isinstance(frame.body, Data) and frame.body.frag_count:
            audit.sent(frame.body)
        orig(frame, raw, now)

    link_out.send_encoded = audited_send  # type: ignore[method-assign]
    return net, tx, rx, audit


def send(net: SimNet, tx: ChannelSender, audit: CreditAudit, payload: bytes, fin: bool = False) -> int:
    msg_id = tx.next_msg_id
    audit.queued(msg_id, max(1, -(-len(payload) // tx.frag_size)))
    got, out = tx.send(payload, net.now, fin=fin)
    assert got == msg_id
    net.emit(MAC_S, out)
    return msg_id


def received(net: SimNet) -> list[MessageReceived]:
    return [e for e in net.events_of(MessageReceived) if isinstance(e, MessageReceived)]


# ----------------------------------------------------------------- fragmentation


@pytest.mark.parametrize("mtu", [MTU_ETHERNET, MTU_JUMBO])
@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 200_000])
def test_fragments_fit_the_mtu_and_join_back(mtu: int, size: int) -> None:
    payload = blob(size)
    frags = fragment(CH, 9, payload, fragment_size(mtu), fin=True)
    assert len(frags) == max(1, -(-size // fragment_size(mtu)))
    joined = b""
    for i, body in enumerate(frags):
        raw = encode(frame_to(S, R, body))
        assert len(raw) - spec.ETH_LEN <= mtu
        back = decode(raw).body
        assert isinstance(back, Data)
        assert (back.frag_index, back.frag_count, back.msg_len, back.frag_offset) == (i, len(frags), size, len(joined))
        assert bool(back.flags & DataFlag.FIN) == (i == len(frags) - 1)
        joined += back.payload
    assert joined == payload
    if size >= 65536 and mtu == MTU_ETHERNET:
        assert len(raw) - spec.ETH_LEN <= mtu and len(frags) >= 46


def test_signed_fragments_fit_the_mtu() -> None:
    size = fragment_size(MTU_ETHERNET, auth=True)
    (body, _) = fragment(CH, 0, blob(size + 1), size)
    frame = frame_to(S, R, body)
    frame.auth = Auth(1, 1)
    assert len(encode(frame)) - spec.ETH_LEN == MTU_ETHERNET


def test_too_large_message_and_tiny_mtu_are_refused() -> None:
    with pytest.raises(ValueError, match="fragments"):
        fragment(CH, 0, bytes(0x10000 * 10 + 1), 10)
    with pytest.raises(ValueError, match="no room"):
        fragment_size(40)
    with pytest.raises(ValueError, match="DIME id"):
        ChannelSender(S, Address(MAC_R), CH)


def test_serial_diff_wraps() -> None:
    assert serial_diff(0, 2**32 - 1) == 1 and serial_diff(2**32 - 1, 0) == -1 and serial_diff(5, 5) == 0


# ----------------------------------------------------------------- transfer


def test_clean_transfer_in_order_with_acks() -> None:
    net, tx, rx, audit = channel()
    ids = [send(net, tx, audit, blob(n, n)) for n in (10, 5000, 0, 70_000)]
    net.run(5.0)
    got = received(net)
    assert [m.msg_id for m in got] == ids and [len(m.payload) for m in got] == [10, 5000, 0, 70_000]
    assert all(m.payload == blob(len(m.payload), len(m.payload)) for m in got)
    assert [e.msg_id for e in net.events_of(MessageAcked)] == ids  # type: ignore[attr-defined]
    assert tx.in_flight == 0 and tx.unacked() == [] and rx.buffered == 0
    assert tx.counters["retransmitted"] == 0 and tx.rto.srtt == pytest.approx(0.002)


@pytest.mark.parametrize("seed", range(1, 4))
@pytest.mark.parametrize("mtu", [MTU_ETHERNET, MTU_JUMBO])
def test_one_mib_over_ten_percent_loss_and_reordering(seed: int, mtu: int) -> None:
    """1 MiB arrives intact and exactly once over 10% loss, reordering and duplication; credit never exceeded."""
    net, tx, rx, audit = channel(seed, mtu=mtu, loss=0.1, duplicate=0.05, reorder=0.2, jitter=0.002)
    payload = blob(1 << 20, seed)
    msg_id = send(net, tx, audit, payload)
    tail = send(net, tx, audit, b"end", fin=True)
    net.run(120.0, stop=lambda: len(received(net)) == 2 and tx.in_flight == 0)
    got = received(net)
    assert [m.msg_id for m in got] == [msg_id, tail]
    assert got[0].payload == payload and got[1].payload == b"end" and got[1].fin and not got[0].fin
    assert audit.checked >= 1 + (1 << 20) // tx.frag_size
    assert tx.counters["retransmitted"] > 0 and rx.counters["duplicates"] > 0
    assert net.links[(MAC_S, MAC_R)].counters["reordered"] > 0
    assert not net.events_of(ChannelBroken) and not net.events_of(MessageDropped)


@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**16),
    sizes=st.lists(st.integers(0, 20_000), min_size=1, max_size=8),
    loss=st.floats(0.0, 0.3),
    window=st.integers(1, 40),
    first=st.sampled_from([0, 2**32 - 3]),
)
def test_any_messages_any_loss_arrive_in_order_exactly_once(
    seed: int, sizes: list[int], loss: float, window: int, first: int
) -> None:
    net = SimNet(link=lambda s, d: SimLink(seed + (s == MAC_S), loss=loss, duplicate=0.1, reorder=0.2, jitter=0.003))
    tx = ChannelSender(S, R, CH, initial_credit=window, first_msg_id=first, max_retries=30)
    rx = ChannelReceiver(R, S, CH, window=window, first_msg_id=first, ack_every=2)
    net.add(MAC_S, tx)
    net.add(MAC_R, rx)
    payloads = [blob(n, i) for i, n in enumerate(sizes)]
    for p in payloads:
        net.emit(MAC_S, tx.send(p, net.now)[1])
    net.run(300.0, stop=lambda: tx.in_flight == 0 and not tx.unacked())
    got = received(net)
    assert [m.payload for m in got] == payloads
    assert [m.msg_id for m in got] == [(first + i) % 2**32 for i in range(len(sizes))]


# ----------------------------------------------------------------- receiver details


def frag_frame(body: Data) -> Frame:
    return frame_to(S, R, body)


def test_duplicate_fragments_are_ignored_and_reacked() -> None:
    rx = ChannelReceiver(R, S, CH)
    frags = fragment(CH, 0, blob(4000), 1000)
    out = rx.receive(frag_frame(frags[1]), 0.0)
    assert not out.events and len(out.frames) == 1  # out of order: immediate (duplicate) ack
    ack = out.frames[0].body
    assert isinstance(ack, Data) and (ack.msg_id, ack.ack, ack.credit) == (0, 0, 64)
    assert not rx.receive(frag_frame(frags[1]), 0.0).events and rx.counters["duplicates"] == 1
    for f in (frags[0], frags[2], frags[0], frags[3]):
        out = rx.receive(frag_frame(f), 0.0)
    (msg,) = out.events
    assert isinstance(msg, MessageReceived) and msg.payload == blob(4000)
    assert rx.counters["duplicates"] == 2 and rx.counters["messages"] == 1
    for f in frags:  # the whole message again, late: nothing delivered twice
        assert not rx.receive(frag_frame(f), 0.0).events
    ack = rx.ack_frame().body
    assert isinstance(ack, Data) and (ack.msg_id, ack.ack) == (1, 0)


def test_message_over_the_reassembly_limit_is_dropped_and_the_stream_goes_on() -> None:
    net = SimNet()
    tx = ChannelSender(S, R, CH)
    rx = ChannelReceiver(R, S, CH, max_buffer_bytes=50_000, max_message_bytes=20_000)
    net.add(MAC_S, tx)
    net.add(MAC_R, rx)
    for n in (100, 30_000, 200):
        net.emit(MAC_S, tx.send(blob(n), net.now)[1])
    net.run(5.0)
    (drop,) = net.events_of(MessageDropped)
    assert isinstance(drop, MessageDropped) and drop.msg_id == 1 and "reassembly limit" in drop.reason
    assert [len(m.payload) for m in received(net)] == [100, 200]
    assert rx.buffered == 0 and tx.unacked() == []


@pytest.mark.parametrize(("size", "kept"), [(20_000, True), (20_001, False)])
def test_the_reassembly_limit_is_exact(size: int, kept: bool) -> None:
    rx = ChannelReceiver(R, S, CH, max_buffer_bytes=50_000, max_message_bytes=20_000)
    events = [e for f in fragment(CH, 0, blob(size), 1000) for e in rx.receive(frag_frame(f), 0.0).events]
    assert [type(e) for e in events] == [MessageReceived if kept else MessageDropped]


def test_the_channel_breaks_after_exactly_max_retries_retransmissions() -> None:
    tx = ChannelSender(S, R, CH, max_retries=3)
    tx.send(b"x", 0.0)
    resent = 0
    while not tx.broken:
        t = tx.get_timer()
        assert t is not None
        out = tx.handle_timer(t)
        resent += sum(1 for f in out.frames if isinstance(f.body, Data) and f.body.frag_count)
    assert resent == 3 and tx.counters["timeouts"] == 3


def test_full_budget_drops_out_of_order_fragments_but_never_the_next_one() -> None:
    rx = ChannelReceiver(R, S, CH, max_buffer_bytes=3000, window=64)
    first = fragment(CH, 0, blob(3000, 1), 1000)
    second = fragment(CH, 1, blob(3000, 2), 1000)
    for f in (first[1], first[2], second[0]):
        assert not rx.receive(frag_frame(f), 0.0).events
    assert rx.buffered == 3000
    (ov,) = rx.receive(frag_frame(second[1]), 0.0).events
    assert isinstance(ov, ReassemblyOverflow) and ov.dropped == 1 and ov.buffered == 3000 and ov.limit == 3000
    # The next fragment needed always gets in: it evicts what lies furthest ahead.
    ov, msg = rx.receive(frag_frame(first[0]), 0.0).events
    assert isinstance(ov, ReassemblyOverflow) and ov.dropped == 1
    assert isinstance(msg, MessageReceived) and msg.payload == blob(3000, 1) and rx.buffered == 0
    for f in second:
        out = rx.receive(frag_frame(f), 0.0)
    assert isinstance(out.events[-1], MessageReceived) and out.events[-1].payload == blob(3000, 2)
    assert rx.counters["overflow_dropped"] == 2


def test_small_budget_over_lossy_link_still_delivers_everything() -> None:
    net = SimNet(link=lambda s, d: SimLink(5 + (s == MAC_S), loss=0.1, reorder=0.3, jitter=0.002))
    tx = ChannelSender(S, R, CH, initial_credit=40)
    rx = ChannelReceiver(R, S, CH, window=40, max_buffer_bytes=20_000)
    net.add(MAC_S, tx)
    net.add(MAC_R, rx)
    payloads = [blob(15_000, i) for i in range(6)]
    for p in payloads:
        net.emit(MAC_S, tx.send(p, net.now)[1])
    peak = 0

    def watch(dst: bytes, frame: Frame) -> None:
        nonlocal peak
        peak = max(peak, rx.buffered)

    net.on_deliver = watch
    net.run(60.0, stop=lambda: not tx.unacked())
    assert [m.payload for m in received(net)] == payloads
    assert net.events_of(ReassemblyOverflow) and peak <= 20_000


def test_fragments_that_do_not_join_up_drop_the_message() -> None:
    rx = ChannelReceiver(R, S, CH)
    a, b = fragment(CH, 0, blob(2000), 1000)
    b.frag_offset = 900
    b.payload = b.payload + b"x" * 100
    rx.receive(frag_frame(a), 0.0)
    (drop,) = rx.receive(frag_frame(b), 0.0).events
    assert isinstance(drop, MessageDropped) and "join up" in drop.reason
    bad = fragment(CH, 1, blob(10), 1000)[0]
    other = Data(channel=CH, msg_id=1, payload=b"y" * 10, msg_len=20, frag_offset=10, frag_index=1, frag_count=2)
    rx.receive(frag_frame(other), 0.0)
    assert not rx.receive(frag_frame(bad), 0.0).events and rx.counters["inconsistent"] == 1


def test_fragment_beyond_any_credit_is_dropped() -> None:
    rx = ChannelReceiver(R, S, CH, window=4)
    far = fragment(CH, 0, blob(10_000), 1000)[6]
    assert not rx.receive(frag_frame(far), 0.0).frames and rx.counters["over_credit"] == 1
    assert not rx.receive(frag_frame(fragment(CH, 9, b"z", 1000)[0]), 0.0).frames
    assert rx.counters["over_credit"] == 2


# ----------------------------------------------------------------- sender details


def test_sender_stops_at_credit_probes_a_closed_window_and_resumes() -> None:
    net, tx, rx, audit = channel(window=4, initial_credit=4)
    rx.pause()
    send(net, tx, audit, blob(20_000))
    net.run(0.5)
    assert received(net) == [] and tx.counters["sent"] == 4 and tx.counters["probes"] >= 2
    assert rx.counters["probes"] == tx.counters["probes"]
    # The window update that reopens the channel is lost: the next probe recovers.
    out = rx.resume(net.now)
    assert out.frames
    net.run(5.0)
    (msg,) = received(net)
    assert msg.payload == blob(20_000) and audit.checked == tx.counters["sent"]


def test_fast_retransmit_recovers_one_loss_before_the_timer() -> None:
    lost: list[Frame] = []

    def drop_fragment_2_once(frame: Frame) -> bool:
        if isinstance(frame.body, Data) and frame.body.frag_index == 2 and not lost:
            lost.append(frame)
            return True
        return False

    net = SimNet(link=lambda s, d: SimLink(drop_if=drop_fragment_2_once if s == MAC_S else None))
    tx = ChannelSender(S, R, CH)
    rx = ChannelReceiver(R, S, CH)
    net.add(MAC_S, tx)
    net.add(MAC_R, rx)
    net.emit(MAC_S, tx.send(blob(20_000), net.now)[1])
    net.run(1.0, stop=lambda: bool(received(net)))
    assert received(net)[0].payload == blob(20_000)
    assert tx.counters["fast_retransmits"] == 1 and tx.counters["timeouts"] == 0
    assert tx.counters["retransmitted"] == 1 and net.now < tx.rto.initial


def test_fast_retransmit_fires_on_exactly_the_third_duplicate_ack() -> None:
    tx = ChannelSender(S, R, CH, initial_credit=32)
    msg_id, out = tx.send(blob(10_000), 0.0)
    assert len(out.frames) >= 5, "the whole message goes out at once"

    def ack(k: int, now: float) -> list[Data]:
        """The receiver's ack of everything before fragment ``k``, with an unchanged credit (no window update)."""
        got = tx.receive(frame_to(R, S, Data(CH, msg_id, ack=k, credit=32, frag_count=0, flags=DataFlag.ACK)), now)
        return [f.body for f in got.frames if isinstance(f.body, Data) and f.body.frag_count]

    assert ack(1, 0.001) == []  # fragment 0 acked; fragment 1 is lost
    assert ack(1, 0.002) == [] and ack(1, 0.003) == [], "two duplicate acks are not yet a loss"
    (again,) = ack(1, 0.004)
    assert again.msg_id == msg_id and again.frag_index == 1
    assert tx.counters["fast_retransmits"] == 1 and tx.counters["timeouts"] == 0
    assert ack(1, 0.005) == [], "one fast retransmit per loss"


def test_an_ack_one_past_the_last_fragment_sent_is_bogus() -> None:
    tx = ChannelSender(S, R, CH, initial_credit=2)
    msg_id, out = tx.send(blob(5_000), 0.0)
    assert [f.body.frag_index for f in out.frames] == [0, 1]  # type: ignore[union-attr]
    for k in (3, 4):  # fragments 2.. were never sent: nothing can have acknowledged them
        tx.receive(frame_to(R, S, Data(CH, msg_id, ack=k, credit=2, frag_count=0, flags=DataFlag.ACK)), 0.001)
    assert tx.counters["bad_ack"] == 2 and tx.counters["acks"] == 0
    tx.receive(frame_to(R, S, Data(CH, msg_id, ack=2, credit=2, frag_count=0, flags=DataFlag.ACK)), 0.002)
    assert tx.counters["acks"] == 1 and tx.counters["bad_ack"] == 2


def test_fragments_up_to_the_credit_edge_are_kept_and_the_next_is_dropped() -> None:
    rx = ChannelReceiver(R, S, CH, window=4)
    frags = fragment(CH, 0, blob(10_000), 1000)
    # Fragment 0 is missing: fragment 3 is 3 ahead of the next one needed (inside a window of 4), fragment 4 is 4.
    assert rx.receive(frag_frame(frags[3]), 0.0).frames and rx.counters["over_credit"] == 0
    assert not rx.receive(frag_frame(frags[4]), 0.0).frames and rx.counters["over_credit"] == 1
    rx.receive(frag_frame(frags[0]), 0.0)
    assert rx.counters["over_credit"] == 1 and rx.buffered == len(frags[0].payload) + len(frags[3].payload)


def test_dead_receiver_breaks_the_channel_and_keeps_the_unacked_messages() -> None:
    net, tx, _rx, audit = channel()
    send(net, tx, audit, b"one")
    net.run(0.1)
    net.kill(MAC_R)
    send(net, tx, audit, b"two")
    send(net, tx, audit, b"three")
    net.run(100.0)
    (broken,) = net.events_of(ChannelBroken)
    assert isinstance(broken, ChannelBroken) and broken.unacked == (1, 2) and broken.peer == R
    assert tx.unacked() == [(1, b"two"), (2, b"three")] and tx.broken and tx.get_timer() is None
    with pytest.raises(RuntimeError, match="broken"):
        tx.send(b"four", net.now)


def test_stale_and_bogus_acks_are_ignored() -> None:
    tx = ChannelSender(S, R, CH, initial_credit=8)
    tx.send(blob(5000), 0.0)

    def ack(msg_id: int, frag: int, credit: int = 8) -> None:
        body = Data(channel=CH, msg_id=msg_id, ack=frag, credit=credit, frag_count=0, flags=DataFlag.ACK)
        tx.receive(frame_to(R, S, body), 0.01)

    ack(0, 9)
    ack(77, 0)
    assert tx.counters["bad_ack"] == 2 and tx.in_flight == 4
    ack(0, 2)
    assert tx.in_flight == 2
    ack(2**32 - 1, 0)
    assert tx.counters["stale_ack"] == 1
    tx.receive(frame_to(R, S, Data(channel=CH + 1, flags=DataFlag.ACK, frag_count=0)), 0.02)
    assert tx.counters["not_ack"] == 1


def test_window_can_change_at_run_time() -> None:
    rx = ChannelReceiver(R, S, CH, window=4)
    (frame,) = rx.set_window(100, 0.0).frames
    assert isinstance(frame.body, Data) and frame.body.credit == 100
    with pytest.raises(ValueError, match="window"):
        rx.set_window(70_000, 0.0)
    with pytest.raises(ValueError, match="max_message_bytes"):
        ChannelReceiver(R, S, CH, max_buffer_bytes=10, max_message_bytes=20)


def test_delayed_ack_fires_on_its_timer() -> None:
    rx = ChannelReceiver(R, S, CH, ack_every=4, ack_delay=0.01)
    frags = fragment(CH, 0, blob(5000), 1000)
    assert not rx.receive(frag_frame(frags[0]), 0.0).frames
    assert rx.get_timer() == pytest.approx(0.01)
    (ack,) = rx.handle_timer(0.01).frames
    assert isinstance(ack.body, Data) and ack.body.ack == 1 and rx.get_timer() is None
