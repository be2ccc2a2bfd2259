"""The compiled data channel against its pure twin, side by side on the same inputs.

Every sender and receiver here is a *pair*: the pure machine (:mod:`pxproto.dime.channel`,
:mod:`pxproto.dime.channel_rx`) and the compiled one (``pxproto.dime._channel``) take every call
together, and each call's output (frames, events, timer) and the state after it (counters, credit,
timers, bytes held, the RTO estimate) must be equal.  The design says they are the same machine, so
nothing is exempt.  The pure one's frames then cross a simulated link (encoded and decoded by the
codec, with seeded loss, reordering, duplication and delay), so both see the same world.

Workloads are seeded (``PXPROTO_SEED`` picks the first seed; ``PXPROTO_SEED=random`` explores, and a
failure names its seed): several channels at once, payloads of 0..200 KiB, MTUs 576..9000, credit
windows, reassembly budgets, pauses and window changes.  Hostile fragments (offsets that do not join,
overlaps, totals that disagree with msg_len, oversize messages, ids far ahead) and bogus acks are fed
to both and must give the same events and drop counters.  A bigger sweep is ``pytest -m slow``.
"""

from __future__ import annotations

import heapq
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest

from pxproto.dime.channel import ChannelBroken, MessageDropped, MessageReceived, WireOutput
from pxproto.dime.endpoint import Address, Output, frame_to
from pxproto.errors import ProtocolError
from pxproto.fastpath import decode, encode
from pxproto.wire.codes import DataFlag
from pxproto.wire.frame import Data, Frame
from tests.channel_impls import impl_classes

MAC_A = bytes.fromhex("02000000000a")
MAC_B = bytes.fromhex("02000000000b")
A = Address(MAC_A, 1, 0)
B = Address(MAC_B, 2, 0)


def base_seed() -> int:
    raw = os.environ.get("PXPROTO_SEED", "0")
    return random.randrange(1 << 30) if raw == "random" else int(raw)


class Pair:
    """A pure machine and its compiled copy, called together; every answer and the state after must agree."""

    def __init__(self, what: str, make: Callable[[Any], Any]) -> None:
        side = 0 if what == "tx" else 1
        pure, compiled = impl_classes("pure")[side], impl_classes("compiled")[side]
        self.what = what
        self.pure = make(pure)
        self.comp = make(compiled)
        self.calls = 0

    def state(self, m: Any) -> tuple[Any, ...]:
        if self.what == "tx":
            return (
                m.counters, m.in_flight, m.credit_left, m.unacked(), m.get_timer(), m.broken, m.next_msg_id,
                m.rto.srtt, m.rto.rttvar,
            )  # fmt: skip
        return (m.counters, m.buffered, m.get_timer(), m.paused, m.credit)

    def __call__(self, method: str, *args: Any, **kw: Any) -> Any:
        self.calls += 1
        try:
            a = getattr(self.pure, method)(*args, **kw)
        except ProtocolError as exc:
            with pytest.raises(ProtocolError) as got:
                getattr(self.comp, method)(*args, **kw)
            assert (got.value.field, got.value.offset, str(got.value)) == (exc.field, exc.offset, str(exc))
            raise
        b = getattr(self.comp, method)(*args, **kw)
        assert a == b, f"{self.what}.{method}{args[1:] if args else ''} call {self.calls}: pure {a!r}\ncompiled {b!r}"
        sa, sb = self.state(self.pure), self.state(self.comp)
        assert sa == sb, f"{self.what} state after {method} (call {self.calls}): pure {sa}\ncompiled {sb}"
        return a


@dataclass
class Link:
    """One direction of a lossy wire (the codec in the middle: what crosses is what the wire carries)."""

    rng: random.Random
    loss: float
    duplicate: float
    reorder: float
    delay: float = 0.001
    jitter: float = 0.002
    queue: list[tuple[float, int, int, bytes]] = field(default_factory=list)
    n: int = 0

    def send(self, ch: int, frames: list[Frame] | list[bytes], now: float) -> None:
        for f in frames:
            raw = f if isinstance(f, bytes) else encode(f)
            if self.rng.random() < self.loss:
                continue
            for _ in range(2 if self.rng.random() < self.duplicate else 1):
                t = now + self.delay + self.rng.uniform(0.0, self.jitter)
                if self.rng.random() < self.reorder:
                    t += 0.004
                self.n += 1
                heapq.heappush(self.queue, (t, self.n, ch, raw))


@dataclass
class Chan:
    """One channel: a sender pair at A, a receiver pair at B, its workload and what arrived."""

    ch: int
    tx: Pair
    rx: Pair
    todo: list[tuple[float, bytes]]
    sent: list[bytes] = field(default_factory=list)
    got: list[bytes] = field(default_factory=list)
    fins: int = 0
    paused_at: float = 0.0
    wire: bool = False
    """Driven through the ``*_wire`` methods (encoded frames in and out) rather than the Frame ones."""


def _make(local: Address, peer: Address, ch: int, kw: dict[str, int], cls: Any) -> Any:
    return cls(local, peer, ch, **kw)


CATCH_UP = 1.0
"""Simulated seconds after which a paused receiver's application has caught up (it resumes), at the latest: a pause
that waited only for the 1% chance below could outlast the horizon once the sender's probes back off."""


def run_workload(seed: int, *, channels: int, messages: int, max_size: int, horizon: float = 600.0) -> list[Chan]:
    rng = random.Random(seed)
    loss, dup, reorder = rng.choice([0.0, 0.02, 0.1]), rng.choice([0.0, 0.05]), rng.choice([0.0, 0.2])
    fwd = Link(random.Random(seed * 7 + 1), loss, dup, reorder)
    back = Link(random.Random(seed * 7 + 2), loss, dup, reorder)
    chans: list[Chan] = []
    for i in range(channels):
        ch = 1 + i
        mtu = rng.choice([576, 1500, rng.randrange(576, 9001), 9000])
        window = rng.choice([4, 16, 64, 200])
        budget = rng.choice([256 << 10, 8 << 20])
        ack_every = rng.choice([1, 4, 32])
        first = rng.choice([0, 2**32 - 3])
        tx_args = {"mtu": mtu, "initial_credit": window, "max_retries": 40, "first_msg_id": first}
        rx_args = {"window": window, "max_buffer_bytes": budget, "ack_every": ack_every, "first_msg_id": first}
        rx_args["max_message_bytes"] = min(budget, 256 << 10)
        tx = Pair("tx", partial(_make, A, B, ch, tx_args))
        rx = Pair("rx", partial(_make, B, A, ch, rx_args))
        t = 0.0
        todo = []
        for _ in range(messages):
            t += rng.expovariate(200.0)
            size = rng.choice([0, rng.randrange(1, 64), rng.randrange(64, 2000), rng.randrange(0, max_size + 1)])
            todo.append((t, rng.randbytes(size)))
        chans.append(Chan(ch, tx, rx, todo[::-1], wire=rng.random() < 0.5))
    by_ch = {c.ch: c for c in chans}
    now = 0.0

    def deliver_tx(c: Chan, out: Output | WireOutput) -> None:
        fwd.send(c.ch, out.frames, now)
        assert not any(isinstance(e, ChannelBroken) for e in out.events), f"seed {seed}: channel {c.ch} broke"

    def deliver_rx(c: Chan, out: Output | WireOutput) -> None:
        back.send(c.ch, out.frames, now)
        for e in out.events:
            assert not isinstance(e, MessageDropped), f"seed {seed}: {e}"
            if isinstance(e, MessageReceived):
                c.got.append(e.payload)
                c.fins += e.fin

    while now < horizon:
        if all(not c.todo and not c.tx.pure.unacked() and c.tx.pure.in_flight == 0 for c in chans):
            break
        times = [c.todo[-1][0] for c in chans if c.todo]
        times += [c.paused_at + CATCH_UP for c in chans if c.rx.pure.paused]
        times += [link.queue[0][0] for link in (fwd, back) if link.queue]
        for c in chans:
            times += [t for t in (c.tx.pure.get_timer(), c.rx.pure.get_timer()) if t is not None]
        now = max(now, min(times))
        for c in chans:
            while c.todo and c.todo[-1][0] <= now:
                _, payload = c.todo.pop()
                fin = not c.todo
                c.sent.append(payload)
                _msg_id, out = c.tx("send_wire" if c.wire else "send", payload, now, fin=fin)
                deliver_tx(c, out)
            if c.rx.pure.paused and now >= c.paused_at + CATCH_UP:  # it catches up in time, however idle the link
                deliver_rx(c, c.rx("resume", now))
            if rng.random() < 0.01:  # the application falls behind, then catches up; or the window changes
                if c.rx.pure.paused:
                    deliver_rx(c, c.rx("resume", now))
                elif rng.random() < 0.5:
                    c.rx("pause")
                    c.paused_at = now
                else:
                    deliver_rx(c, c.rx("set_window", rng.choice([2, 16, 64, 300]), now))
        for link, to_rx in ((fwd, True), (back, False)):
            while link.queue and link.queue[0][0] <= now:
                _, _, ch, raw = heapq.heappop(link.queue)
                c = by_ch[ch]
                end = c.rx if to_rx else c.tx
                out = end("receive_wire", raw, now) if c.wire else end("receive", decode(raw), now)
                (deliver_rx if to_rx else deliver_tx)(c, out)
        for c in chans:
            t = c.tx.pure.get_timer()
            timer = "handle_timer_wire" if c.wire else "handle_timer"
            if t is not None and t <= now:
                deliver_tx(c, c.tx(timer, now))
            t = c.rx.pure.get_timer()
            if t is not None and t <= now:
                deliver_rx(c, c.rx(timer, now))
            if c.rx.pure.paused and rng.random() < 0.05:
                deliver_rx(c, c.rx("resume", now))
    return chans


def check_delivered(seed: int, chans: list[Chan]) -> None:
    for c in chans:
        assert len(c.got) == len(c.sent), f"seed {seed} channel {c.ch}: {len(c.got)} of {len(c.sent)} delivered"
        assert c.got == c.sent, f"seed {seed} channel {c.ch}: payloads differ (order or content)"
        assert c.fins == 1
        assert c.rx.pure.buffered == 0 and c.tx.pure.unacked() == []


@pytest.mark.parametrize("k", range(8))
def test_workloads_deliver_the_same_frames_events_and_payloads(k: int) -> None:
    seed = base_seed() + k
    chans = run_workload(seed, channels=4, messages=30, max_size=200 << 10)
    check_delivered(seed, chans)
    assert sum(c.tx.calls + c.rx.calls for c in chans) > 100


@pytest.mark.slow
@pytest.mark.parametrize("k", range(8, 48))
def test_workloads_sweep(k: int) -> None:
    seed = base_seed() + k
    # A reassembly budget below a window's worth of fragments (256 KiB against 300 of up to 9000 bytes) makes the
    # receiver evict what lies ahead and take the next message a retransmission at a time: slow, never stuck (seed
    # 1033 delivered 54 of 60 messages in 600 simulated seconds, all of them in 3000), hence the longer horizon.
    chans = run_workload(seed, channels=5, messages=60, max_size=200 << 10, horizon=3600.0)
    check_delivered(seed, chans)


def test_lossy_workloads_retransmit_in_both() -> None:
    """The workloads above do exercise recovery: one lossy seed, checked to have retransmitted and reordered."""
    for seed in range(base_seed() + 100, base_seed() + 200):
        if random.Random(seed).choice([0.0, 0.02, 0.1]) == 0.1:
            break
    chans = run_workload(seed, channels=2, messages=8, max_size=64 << 10)
    check_delivered(seed, chans)
    assert sum(c.tx.pure.counters["retransmitted"] for c in chans) > 0
    assert sum(c.rx.pure.counters["duplicates"] for c in chans) > 0


# ----------------------------------------------------------------- hostile input


def hostile_fragment(rng: random.Random, ch: int, next_msg: int) -> Data:
    """A DATA fragment the codec accepts but a well-behaved sender would not send (near the next message)."""
    ahead = rng.choice([0, 0, 0, 1, 2, rng.randrange(3, 40), -1, rng.randrange(2**32)])
    msg_id = (next_msg + ahead) % 2**32
    count = rng.choice([1, 1, 2, 3, 5, rng.randrange(1, 70)])
    index = rng.randrange(count)
    msg_len = rng.choice([0, 10, 1000, 3000, 20_000, 300_000, rng.randrange(1, 1 << 20)])
    n = min(msg_len, rng.choice([0, 1, 100, 1000, 1400]))
    off = 0 if index == 0 else rng.randrange(0, msg_len - n + 1)
    if n == 0 and msg_len:
        n = 1
        off = 0 if index == 0 else min(off, msg_len - 1)
    flags = DataFlag.FIN if rng.random() < 0.2 else DataFlag(0)
    return Data(ch, msg_id, rng.randbytes(n), msg_len, off, index, count, flags=flags)


def next_fragment(rx: Any, msg_id: int, index: int, rng: random.Random) -> Data:
    """The fragment the receiver needs next, shaped as whatever its first fragment announced (so it completes)."""
    m = rx._partial.get(msg_id)
    msg_len, count = (m.msg_len, m.count) if m is not None else (1500, 3)
    chunk = -(-msg_len // count)
    off = min(index * chunk, msg_len)
    n = min(chunk, msg_len - off, 1400)  # (a fragment of a huge announced length: it will not join up)
    if n == 0 and msg_len:
        off, n = (0, 1) if index == 0 else (msg_len - 1, 1)
    if index == count - 1 and index:  # the codec: the last fragment ends the message
        n = min(msg_len, 1400)
        off = msg_len - n
    return Data(rx.channel, msg_id, rng.randbytes(n), msg_len, off, index, count)


@pytest.mark.parametrize("k", range(3))
def test_hostile_fragments_give_the_same_events_and_drop_counters(k: int) -> None:
    seed = base_seed() + k
    rng = random.Random(seed)
    ch = 5
    rx = Pair("rx", lambda cls: cls(B, A, ch, window=16, max_buffer_bytes=50_000, max_message_bytes=20_000))
    good = random.Random(seed + 1)
    taken = malformed = 0
    now = 0.0
    for _ in range(3000):
        now += 0.0005
        if rng.random() < 0.3:  # honest fragments of the next messages, so hostile ones meet real reassembly
            want = rx.pure.ack_frame().body
            rx.comp.ack_frame()
            body = next_fragment(rx.pure, want.msg_id, want.ack, good)
        else:
            body = hostile_fragment(rng, ch, rx.pure.ack_frame().body.msg_id)
            rx.comp.ack_frame()
        try:
            raw = encode(frame_to(A, B, body))
        except ProtocolError:
            continue  # not even encodable: no wire carries it
        if rng.random() < 0.1:  # a flipped byte: the codec refuses it, or lets a different fragment through
            b = bytearray(raw)
            b[rng.randrange(14, len(b))] ^= 1 << rng.randrange(8)
            raw = bytes(b)
        try:
            if rng.random() < 0.5:  # read in C by the compiled one, by the codec in the twin
                rx("receive_wire", raw, now)
            else:
                rx("receive", decode(raw), now)
        except ProtocolError:
            malformed += 1  # what the node counts as REJECTED_MALFORMED (the same error from both)
            continue
        taken += 1
        if rx.pure.get_timer() is not None and rng.random() < 0.5:
            rx("handle_timer", rx.pure.get_timer())
    counters = rx.pure.counters
    assert taken > 1000 and malformed > 0
    for reason in ("duplicates", "over_credit", "inconsistent", "messages_dropped", "messages"):
        assert counters[reason] > 0, (reason, counters)


def test_hand_built_fragments_the_codec_cannot_carry_are_counted_alike() -> None:
    rx = Pair("rx", lambda cls: cls(B, A, 5, window=16))
    bad = [
        Data(5, 0, b"abc", 10, 0, 3, 3),  # index past the count
        Data(5, 0, b"abcdef", 4, 0, 0, 2),  # more bytes than msg_len
        Data(5, 0, b"abc", 10, 9, 1, 2),  # runs past msg_len
    ]
    for body in bad:
        rx("receive", frame_to(A, B, body), 0.0)
    assert rx.pure.counters["malformed"] == 3 and rx.pure.buffered == 0


def test_bogus_acks_give_the_same_counters() -> None:
    rng = random.Random(base_seed())
    tx = Pair("tx", lambda cls: cls(A, B, 5, mtu=1500, initial_credit=16, max_retries=50))
    now = 0.0
    for _ in range(400):
        now += 0.001
        r = rng.random()
        if r < 0.2:
            tx("send", rng.randbytes(rng.randrange(0, 20_000)), now)
        elif r < 0.9:
            first = tx.pure.unacked()[0][0] if tx.pure.unacked() else tx.pure.next_msg_id
            msg_id = (first + rng.randrange(-3, 6)) % 2**32
            body = Data(5, msg_id, ack=rng.randrange(0, 20), credit=rng.randrange(0, 40), frag_count=0,
                        flags=DataFlag.ACK)  # fmt: skip
            tx("receive", frame_to(B, A, body), now)
        else:
            t = tx.pure.get_timer()
            if t is not None:
                now = max(now, t)
                tx("handle_timer", now)
    counters = tx.pure.counters
    for reason in ("acks", "bad_ack", "stale_ack", "sent"):
        assert counters[reason] > 0, (reason, counters)


def test_the_node_gets_the_compiled_machines_when_they_are_required() -> None:
    """Under PXPROTO_REQUIRE_COMPILED=1 (CI) the selection (pxproto.dime.fastchannel) is the compiled pair."""
    if os.environ.get("PXPROTO_REQUIRE_COMPILED") != "1" or os.environ.get("PXPROTO_PURE") == "1":
        pytest.skip("PXPROTO_REQUIRE_COMPILED is not 1")
    from pxproto.dime import fastchannel

    assert fastchannel.COMPILED
    assert (fastchannel.ChannelSender, fastchannel.ChannelReceiver) == impl_classes("compiled")
