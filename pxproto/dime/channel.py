"""The data channel: a MICE's messages, fragmented, delivered in order and exactly once.

A channel runs one way, from a :class:`ChannelSender` to a
:class:`~pxproto.dime.channel_rx.ChannelReceiver`.  A message is cut into fragments that fit the MTU
(:func:`fragment`).  The fragments of all messages form one stream; a position
in it is (msg_id, frag_index), and that is what an acknowledgement carries:
``Data(msg_id=M, ack=F, flags=ACK, frag_count=0)`` says "every fragment before
fragment F of message M arrived", and its ``credit`` lets the sender have that
many fragments past that point on the wire, no more.

The sender retransmits the first unacknowledged fragment when its timer (an
RTO from measured round trips, with backoff) runs out, or at once after three
duplicate acknowledgements, and each next hole after a partial ack.  When the
receiver's credit is zero it probes with an ack-only frame, which the
receiver answers with its current acknowledgement.  The receiver keeps out of
order fragments within a byte budget, drops duplicates, and evicts the
furthest fragments (never the next one it needs) when the budget is full.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field

from pxproto.dime.endpoint import Address, Event, Output, frame_to
from pxproto.wire import spec
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import DIME_ALL, DataFlag
from pxproto.wire.frame import Data, Frame

__all__ = [  # the receiving end lives in pxproto.dime.channel_rx
    "ChannelBroken",
    "ChannelSender",
    "MessageAcked",
    "MessageDropped",
    "MessageReceived",
    "ReassemblyOverflow",
    "RtoEstimator",
    "WireOutput",
    "fragment",
    "fragment_count",
    "fragment_size",
    "serial_diff",
]

MTU_ETHERNET = 1500
MTU_JUMBO = 9000
MSG_ID_SPACE = 1 << 32
MAX_FRAGMENTS = 0xFFFF
MAX_CREDIT = 0xFFFF
DUPACK_THRESHOLD = 3


def fragment_size(mtu: int = MTU_ETHERNET, auth: bool = False) -> int:
    """Payload bytes per fragment for an MTU (the Ethernet payload: header, data fields, trailer, bytes)."""
    size = mtu - spec.HEADER_LEN - spec.DataFixed.sizeof() - (spec.AUTH_LEN if auth else 0)
    if size < 1:
        raise ValueError(f"an MTU of {mtu} leaves no room for data")
    return size


def fragment_count(msg_len: int, frag_size: int) -> int:
    return max(1, -(-msg_len // frag_size))


def fragment(channel: int, msg_id: int, payload: bytes, frag_size: int, fin: bool = False) -> list[Data]:
    """Cut one message into DATA fragments of ``frag_size`` payload bytes (the last may be shorter)."""
    count = fragment_count(len(payload), frag_size)
    if count > MAX_FRAGMENTS or len(payload) >= 1 << 32:
        raise ValueError(f"a {len(payload)}-byte message needs {count} fragments, at most {MAX_FRAGMENTS}")
    return [_fragment(channel, msg_id, payload, frag_size, count, i, fin) for i in range(count)]


def _fragment(channel: int, msg_id: int, payload: bytes, size: int, count: int, i: int, fin: bool) -> Data:
    off = i * size
    last = i == count - 1
    return Data(
        channel=channel,
        msg_id=msg_id,
        payload=payload[off : off + size],
        msg_len=len(payload),
        frag_offset=off,
        frag_index=i,
        frag_count=count,
        flags=DataFlag.FIN if fin and last else DataFlag(0),
    )


def serial_diff(a: int, b: int) -> int:
    """a - b for message ids, which wrap at 2**32 (RFC 1982 arithmetic)."""
    d = (a - b) % MSG_ID_SPACE
    return d - MSG_ID_SPACE if d >= MSG_ID_SPACE // 2 else d


def _ack_body(channel: int, msg_id: int, frag: int, credit: int) -> Data:
    return Data(channel=channel, msg_id=msg_id, ack=frag, credit=credit, frag_count=0, flags=DataFlag.ACK)


def _check_peer(peer: Address) -> None:
    if peer.dime == DIME_ALL:
        raise ValueError("a data channel joins two DIMEs: the peer needs a DIME id, not 0xffff")


# ---------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A whole message, delivered in order, once."""

    channel: int
    """The channel it came on."""
    msg_id: int
    """Its id in the sender's numbering."""
    payload: bytes
    """The message."""
    fin: bool = False
    """The sender marked it as its last."""


@dataclass(frozen=True, slots=True)
class MessageDropped(Event):
    """A message the receiver acknowledged but could not deliver."""

    channel: int
    """The channel."""
    msg_id: int
    """The message."""
    msg_len: int
    """Its announced length."""
    reason: str
    """Why: too large for the reassembly budget, or fragments that do not fit together."""


@dataclass(frozen=True, slots=True)
class ReassemblyOverflow(Event):
    """The reassembly budget was full: out-of-order fragments were dropped (they will be resent)."""

    channel: int
    """The channel."""
    dropped: int
    """Fragments dropped or evicted by this call."""
    buffered: int
    """Bytes held after the drop."""
    limit: int
    """The budget in bytes."""


@dataclass(frozen=True, slots=True)
class MessageAcked(Event):
    """The receiver has every fragment of a message."""

    channel: int
    """The channel."""
    msg_id: int
    """The message."""


@dataclass(frozen=True, slots=True)
class ChannelBroken(Event):
    """The receiver stopped answering: retransmissions or window probes went unanswered too often."""

    channel: int
    """The channel."""
    peer: Address
    """The receiver."""
    unacked: tuple[int, ...]
    """Ids of the messages it may not have (see :meth:`ChannelSender.unacked`)."""


# ---------------------------------------------------------------------- wire form


@dataclass(slots=True)
class WireOutput:
    """What a ``*_wire`` call gives back: an :class:`Output` whose frames are already encoded.

    Both ends take and give encoded frames through their ``*_wire`` methods (``send_wire``,
    ``receive_wire``, ``handle_timer_wire``): the same frames as the Frame methods, as the codec
    encodes them, so a driver that sends and receives bytes builds no Frame.  The compiled machines
    (``pxproto.dime._channel``) build and read these bytes in C; the twins go through the codec.
    """

    frames: list[bytes] = field(default_factory=list)
    """Encoded frames to send, in order."""
    events: list[Event] = field(default_factory=list)
    """What happened, in order."""
    timer: float | None = None
    """When to call ``handle_timer`` (or ``handle_timer_wire``) next, or None."""


def wire_output(out: Output) -> WireOutput:
    """An :class:`Output` with its frames encoded."""
    return WireOutput([encode(f) for f in out.frames], out.events, out.timer)


def wire_frame(raw: bytes) -> Frame:
    """A received frame, decoded (ProtocolError, from the reference codec, when it is not one)."""
    return decode(raw)


# ---------------------------------------------------------------------- sender


@dataclass(slots=True)
class _OutMessage:
    msg_id: int
    payload: bytes
    count: int
    start: int
    fin: bool


@dataclass(slots=True)
class RtoEstimator:
    """Retransmission timeout from round-trip samples (Jacobson's estimator, Karn's rule by the caller)."""

    initial: float = 0.1
    """RTO before any sample."""
    minimum: float = 0.005
    """The RTO never goes below this."""
    maximum: float = 2.0
    """Nor above this, backoff included."""
    srtt: float | None = None
    """Smoothed round trip."""
    rttvar: float = 0.0
    """Its mean deviation."""

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def rto(self, backoff: int = 0) -> float:
        base = self.initial if self.srtt is None else self.srtt + 4 * self.rttvar
        return min(max(base, self.minimum) * (2**backoff), self.maximum)


class ChannelSender:
    """The sending end of a data channel."""

    iov = False
    """The compiled twin, with ``iov`` set, gives large DATA frames as ``pxproto.dime._channel.TxFrame`` (the same
    bytes, the payload not copied); this one gives bytes whatever it is set to."""

    def __init__(
        self,
        local: Address,
        peer: Address,
        channel: int,
        *,
        mtu: int = MTU_ETHERNET,
        auth: bool = False,
        initial_credit: int = 64,
        rto: RtoEstimator | None = None,
        max_retries: int = 10,
        first_msg_id: int = 0,
    ) -> None:
        _check_peer(peer)
        self.local = local
        self.peer = peer
        self.channel = channel
        self.frag_size = fragment_size(mtu, auth)
        self.rto = rto or RtoEstimator()
        self.max_retries = max_retries
        self._msgs: list[_OutMessage] = []
        self._starts: list[int] = []
        self._next_msg_id = first_msg_id % MSG_ID_SPACE
        self._end = 0  # stream position after the last queued fragment
        self._una = 0  # first fragment not acknowledged
        self._nxt = 0  # first fragment never sent
        self._limit = initial_credit  # the receiver allows fragments before this position
        self._sent_at: dict[int, float] = {}
        self._retransmitted: set[int] = set()
        self._dupacks = 0
        self._recover: int | None = None
        self._timeouts = 0
        self._deadline: float | None = None
        self.broken = False
        """Set once :class:`ChannelBroken` has been reported; the sender then sends nothing."""
        self.counters: Counter[str] = Counter()
        """Fragments sent and retransmitted, acks taken and ignored by reason, probes."""

    # -- queries
    @property
    def next_msg_id(self) -> int:
        """The id the next message sent will get."""
        return self._next_msg_id

    @property
    def in_flight(self) -> int:
        """Fragments sent and not yet acknowledged."""
        return self._nxt - self._una

    @property
    def credit_left(self) -> int:
        """New fragments the receiver's credit still allows."""
        return max(0, self._limit - self._nxt)

    def unacked(self) -> list[tuple[int, bytes]]:
        """(msg_id, payload) of every message the receiver has not wholly acknowledged, oldest first."""
        return [(m.msg_id, m.payload) for m in self._msgs]

    def position(self, msg_id: int, frag_index: int) -> int | None:
        """The stream position of a fragment still held, or None."""
        for m in self._msgs:
            if m.msg_id == msg_id:
                return m.start + frag_index
        return None

    # -- application side
    def send(self, payload: bytes, now: float, *, fin: bool = False) -> tuple[int, Output]:
        """Queue a message; return its id and whatever fragments the credit lets go now."""
        if self.broken:
            raise RuntimeError(f"channel {self.channel} is broken")
        payload = bytes(payload)
        count = fragment_count(len(payload), self.frag_size)
        if count > MAX_FRAGMENTS or len(payload) >= 1 << 32:
            raise ValueError(f"a {len(payload)}-byte message needs {count} fragments, at most {MAX_FRAGMENTS}")
        msg_id = self._next_msg_id
        self._next_msg_id = (msg_id + 1) % MSG_ID_SPACE
        self._msgs.append(_OutMessage(msg_id, payload, count, self._end, fin))
        self._starts.append(self._end)
        self._end += count
        out = Output()
        self._pump(now, out)
        out.timer = self.get_timer()
        return msg_id, out

    def send_wire(self, payload: bytes, now: float, *, fin: bool = False) -> tuple[int, WireOutput]:
        """:meth:`send`, its frames encoded."""
        msg_id, out = self.send(payload, now, fin=fin)
        return msg_id, wire_output(out)

    def receive_wire(self, raw: bytes, now: float) -> WireOutput:
        """:meth:`receive` of an encoded frame (ProtocolError when it does not decode), its frames encoded."""
        return wire_output(self.receive(wire_frame(raw), now))

    def handle_timer_wire(self, now: float) -> WireOutput:
        """:meth:`handle_timer`, its frames encoded."""
        return wire_output(self.handle_timer(now))

    def close(self, now: float) -> tuple[int, Output]:
        """Send an empty message marked FIN: the receiver sees the end of the stream."""
        return self.send(b"", now, fin=True)

    # -- wire side
    def _frame(self, pos: int) -> Frame:
        m = self._msgs[bisect_right(self._starts, pos) - 1]
        body = _fragment(self.channel, m.msg_id, m.payload, self.frag_size, m.count, pos - m.start, m.fin)
        return frame_to(self.local, self.peer, body)

    def _transmit(self, pos: int, now: float, out: Output) -> None:
        out.frames.append(self._frame(pos))
        if pos in self._sent_at:
            self._retransmitted.add(pos)
            self.counters["retransmitted"] += 1
        self._sent_at[pos] = now
        self.counters["sent"] += 1

    def _pump(self, now: float, out: Output) -> None:
        while self._nxt < self._end and self._nxt < self._limit:
            self._transmit(self._nxt, now, out)
            self._nxt += 1
        self._arm(now)

    def _arm(self, now: float) -> None:
        if self.broken:
            self._deadline = None
        elif self._una < self._nxt or self._nxt < self._end:
            # Data in flight waits for its ack; data held back by zero credit waits to probe.
            if self._deadline is None:
                self._deadline = now + self.rto.rto(self._timeouts)
        else:
            self._deadline = None

    def _ack_position(self, body: Data) -> int | None:
        if body.msg_id == self._next_msg_id and body.ack == 0:
            return self._end
        for m in self._msgs:
            if m.msg_id == body.msg_id:
                return m.start + body.ack if body.ack <= m.count else None
        return None

    def receive(self, frame: Frame, now: float) -> Output:
        """Take an acknowledgement (any DATA frame with the ACK flag) from the receiver."""
        out = Output()
        body = frame.body
        if not isinstance(body, Data) or not body.flags & DataFlag.ACK or body.channel != self.channel:
            self.counters["not_ack"] += 1
        elif self.broken:
            self.counters["ack_after_break"] += 1
        else:
            self._on_ack(body, now, out)
        out.timer = self.get_timer()
        return out

    def _on_ack(self, body: Data, now: float, out: Output) -> None:
        pos = self._ack_position(body)
        if pos is None:
            stale = not self._msgs or serial_diff(body.msg_id, self._msgs[0].msg_id) < 0
            self.counters["stale_ack" if stale else "bad_ack"] += 1
            return
        if pos > self._nxt:
            self.counters["bad_ack"] += 1
            return
        self.counters["acks"] += 1
        self._timeouts = 0
        old_limit = self._limit
        self._limit = pos + body.credit
        if pos > self._una:
            self._advance(pos, now, out)
        elif pos == self._una and self._una < self._nxt and self._limit == old_limit:
            self._dupacks += 1
            if self._dupacks == DUPACK_THRESHOLD and self._recover is None:
                self.counters["fast_retransmits"] += 1
                self._recover = self._nxt
                self._retransmit_una(now, out)
        self._pump(now, out)

    def _advance(self, pos: int, now: float, out: Output) -> None:
        sample = [now - self._sent_at[p] for p in range(self._una, pos) if p not in self._retransmitted]
        if sample:
            self.rto.sample(min(sample))
        for p in range(self._una, pos):
            self._sent_at.pop(p, None)
            self._retransmitted.discard(p)
        self._una = pos
        self._dupacks = 0
        done = bisect_right(self._starts, pos - 1) if self._msgs else 0
        # A message is done when the stream position passed its last fragment.
        while done and self._msgs[done - 1].start + self._msgs[done - 1].count > pos:
            done -= 1
        for m in self._msgs[:done]:
            out.events.append(MessageAcked(self.channel, m.msg_id))
        del self._msgs[:done]
        del self._starts[:done]
        self._deadline = None
        if self._recover is not None:
            if pos < self._recover:
                self._retransmit_una(now, out)  # a partial ack: the next hole
            else:
                self._recover = None

    def _retransmit_una(self, now: float, out: Output) -> None:
        if self._una < self._nxt and self._una < self._limit:
            self._transmit(self._una, now, out)
            self._deadline = now + self.rto.rto(self._timeouts)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> Output:
        """Retransmit the first unacknowledged fragment, or probe a closed window; break after too many."""
        out = Output()
        if self._deadline is None or now < self._deadline:
            out.timer = self._deadline
            return out
        self._deadline = None
        self._timeouts += 1
        if self._timeouts > self.max_retries:
            self.broken = True
            out.events.append(ChannelBroken(self.channel, self.peer, tuple(m.msg_id for m in self._msgs)))
            return out
        if self._una < self._nxt and self._una < self._limit:
            self.counters["timeouts"] += 1
            self._recover = self._nxt
            self._retransmit_una(now, out)
        elif self._una < self._end:
            self.counters["probes"] += 1
            out.frames.append(frame_to(self.local, self.peer, _ack_body(self.channel, 0, 0, 0)))
            self._deadline = now + self.rto.rto(self._timeouts)
        self._arm(now)
        out.timer = self._deadline
        return out
