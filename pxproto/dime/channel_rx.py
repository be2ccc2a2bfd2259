"""The receiving end of a data channel: reassembly, in-order delivery, acks and credit.

The protocol (positions, acknowledgements, credit, probes) is described in :mod:`pxproto.dime.channel`,
which holds the sending end and the events both ends emit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pxproto.dime.channel import (
    MAX_CREDIT,
    MAX_FRAGMENTS,
    MSG_ID_SPACE,
    MessageDropped,
    MessageReceived,
    ReassemblyOverflow,
    WireOutput,
    _ack_body,
    _check_peer,
    serial_diff,
    wire_frame,
    wire_output,
)
from pxproto.dime.endpoint import Address, Event, Output, frame_to
from pxproto.wire.codes import DataFlag
from pxproto.wire.frame import Data, Frame

# -------------------------------------------------------------------- receiver


@dataclass(slots=True)
class _InMessage:
    msg_len: int
    count: int
    frags: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    size: int = 0
    drop_reason: str | None = None
    fin: bool = False


def check_limits(window: int, ack_every: int, max_buffer_bytes: int, max_message_bytes: int | None) -> int:
    """A receiver's window and budgets checked (ValueError says which); its max_message_bytes (None: the budget)."""
    max_message_bytes = max_buffer_bytes if max_message_bytes is None else max_message_bytes
    if max_message_bytes > max_buffer_bytes:
        raise ValueError("max_message_bytes cannot exceed max_buffer_bytes: the next message must always fit")
    if not 0 <= window <= MAX_CREDIT or ack_every < 1:
        raise ValueError(f"window must be 0..{MAX_CREDIT} and ack_every >= 1")
    return max_message_bytes


class ChannelReceiver:
    """The receiving end of a data channel: reassembly, in-order delivery, acks and credit."""

    lent = 0
    """Messages delivered where they lay in the caller's receive buffer, not copied (the compiled twin's, with the
    node's wire loop; never here)."""

    def __init__(
        self,
        local: Address,
        peer: Address,
        channel: int,
        *,
        window: int = 64,
        max_buffer_bytes: int = 8 << 20,
        max_message_bytes: int | None = None,
        ack_every: int = 1,
        ack_delay: float = 0.002,
        first_msg_id: int = 0,
    ) -> None:
        _check_peer(peer)
        max_message_bytes = check_limits(window, ack_every, max_buffer_bytes, max_message_bytes)
        self.local = local
        self.peer = peer
        self.channel = channel
        self.window = window
        self.max_buffer_bytes = max_buffer_bytes
        self.max_message_bytes = max_message_bytes
        self.ack_every = ack_every
        self.ack_delay = ack_delay
        self.paused = False
        self._max_window = window
        self._next_msg = first_msg_id % MSG_ID_SPACE
        self._next_frag = 0
        self._partial: dict[int, _InMessage] = {}
        self.buffered = 0
        """Bytes of fragments held for reassembly."""
        self._unacked = 0
        self._ack_deadline: float | None = None
        self.counters: Counter[str] = Counter()
        """Fragments taken, duplicates, drops by reason, messages delivered, acks sent."""

    @property
    def credit(self) -> int:
        return 0 if self.paused else self.window

    def ack_frame(self) -> Frame:
        """The acknowledgement of everything received so far, with the current credit."""
        self.counters["acks_sent"] += 1
        self._unacked = 0
        self._ack_deadline = None
        return frame_to(self.local, self.peer, _ack_body(self.channel, self._next_msg, self._next_frag, self.credit))

    def pause(self) -> None:
        """Stop granting credit (the application is not keeping up)."""
        self.paused = True

    def resume(self, now: float) -> Output:
        """Grant credit again, and tell the sender."""
        self.paused = False
        return Output(frames=[self.ack_frame()], timer=self.get_timer())

    def set_window(self, window: int, now: float) -> Output:
        """Change the credit window at run time (Param.CREDIT_WINDOW), and tell the sender."""
        if not 0 <= window <= MAX_CREDIT:
            raise ValueError(f"window {window} is not in 0..{MAX_CREDIT}")
        self.window = window
        self._max_window = max(self._max_window, window)
        return Output(frames=[self.ack_frame()], timer=self.get_timer())

    def receive(self, frame: Frame, now: float) -> Output:
        """Take a fragment (or a window probe) from the sender."""
        out = Output()
        body = frame.body
        if not isinstance(body, Data) or body.channel != self.channel:
            self.counters["not_data"] += 1
        elif body.frag_count == 0:
            self.counters["probes"] += 1
            out.frames.append(self.ack_frame())
        else:
            self._on_fragment(body, now, out)
        out.timer = self.get_timer()
        return out

    def receive_wire(self, raw: bytes, now: float) -> WireOutput:
        """:meth:`receive` of an encoded frame (ProtocolError when it does not decode), its frames encoded."""
        return wire_output(self.receive(wire_frame(raw), now))

    def handle_timer_wire(self, now: float) -> WireOutput:
        """:meth:`handle_timer`, its frames encoded."""
        return wire_output(self.handle_timer(now))

    def _ahead(self, msg_id: int, index: int) -> int:
        """A lower bound on how many fragments separate this one from the next one needed."""
        d = serial_diff(msg_id, self._next_msg)
        if d == 0:
            return index - self._next_frag
        head = self._partial.get(self._next_msg)
        gap = (head.count if head else 1) - self._next_frag
        for k in range(1, d):
            m = self._partial.get((self._next_msg + k) % MSG_ID_SPACE)
            gap += m.count if m else 1
        return gap + index

    def _on_fragment(self, body: Data, now: float, out: Output) -> None:
        self.counters["fragments"] += 1
        if (
            body.frag_index >= body.frag_count
            or body.frag_offset + len(body.payload) > body.msg_len
            or not 0 <= body.msg_id < MSG_ID_SPACE
            or body.frag_count > MAX_FRAGMENTS
            or body.msg_len >= 1 << 32
        ):
            self.counters["malformed"] += 1  # nothing the codec lets through: a Data built by hand
            return
        d = serial_diff(body.msg_id, self._next_msg)
        if d < 0 or (d == 0 and body.frag_index < self._next_frag):
            self.counters["duplicates"] += 1
            out.frames.append(self.ack_frame())
            return
        if d >= self._max_window or self._ahead(body.msg_id, body.frag_index) >= self._max_window:
            self.counters["over_credit"] += 1
            return
        m = self._partial.get(body.msg_id)
        if m is None:
            m = self._partial[body.msg_id] = _InMessage(body.msg_len, body.frag_count)
            if body.msg_len > self.max_message_bytes:
                m.drop_reason = f"{body.msg_len} bytes exceed the {self.max_message_bytes}-byte reassembly limit"
        elif (m.msg_len, m.count) != (body.msg_len, body.frag_count):
            self.counters["inconsistent"] += 1
            return
        if body.frag_index in m.frags:
            self.counters["duplicates"] += 1
            out.frames.append(self.ack_frame())
            return
        keep = b"" if m.drop_reason else body.payload
        if keep and not self._make_room(body.msg_id, len(keep), out):
            return
        m.frags[body.frag_index] = (body.frag_offset, keep)
        m.size += len(keep)
        m.fin = m.fin or bool(body.flags & DataFlag.FIN)
        self.buffered += len(keep)
        in_order = d == 0 and body.frag_index == self._next_frag
        delivered = self._deliver(out) if in_order else 0
        self._unacked += 1
        if not in_order or delivered or self._unacked >= self.ack_every:
            out.frames.append(self.ack_frame())
        elif self._ack_deadline is None:
            self._ack_deadline = now + self.ack_delay

    def _make_room(self, msg_id: int, size: int, out: Output) -> bool:
        if self.buffered + size <= self.max_buffer_bytes:
            return True
        dropped = 1
        if msg_id == self._next_msg:
            # The next message always fits: evict what lies furthest ahead.
            victims = sorted(self._partial, key=lambda k: serial_diff(k, self._next_msg), reverse=True)
            dropped = 0
            for k in victims:
                if k == self._next_msg or self.buffered + size <= self.max_buffer_bytes:
                    break
                victim = self._partial.pop(k)
                self.buffered -= victim.size
                dropped += len(victim.frags)
        self.counters["overflow_dropped"] += dropped
        out.events.append(ReassemblyOverflow(self.channel, dropped, self.buffered, self.max_buffer_bytes))
        return self.buffered + size <= self.max_buffer_bytes

    def _deliver(self, out: Output) -> int:
        delivered = 0
        while (m := self._partial.get(self._next_msg)) is not None:
            while self._next_frag in m.frags:
                self._next_frag += 1
            if self._next_frag < m.count:
                break
            del self._partial[self._next_msg]
            self.buffered -= m.size
            out.events.append(self._complete(self._next_msg, m))
            delivered += 1
            self._next_msg = (self._next_msg + 1) % MSG_ID_SPACE
            self._next_frag = 0
        return delivered

    def _complete(self, msg_id: int, m: _InMessage) -> Event:
        if m.drop_reason is None:
            parts = [m.frags[i] for i in range(m.count)]
            expected = 0
            for off, payload in parts:
                if off != expected:
                    m.drop_reason = f"fragments do not join up at byte {expected} (one starts at {off})"
                    break
                expected += len(payload)
            else:
                if expected != m.msg_len:
                    m.drop_reason = f"fragments hold {expected} bytes, msg_len says {m.msg_len}"
        if m.drop_reason is not None:
            self.counters["messages_dropped"] += 1
            return MessageDropped(self.channel, msg_id, m.msg_len, m.drop_reason)
        self.counters["messages"] += 1
        return MessageReceived(self.channel, msg_id, b"".join(p for _, p in parts), m.fin)

    def get_timer(self) -> float | None:
        return self._ack_deadline

    def handle_timer(self, now: float) -> Output:
        """Send a delayed acknowledgement that is due."""
        out = Output()
        if self._ack_deadline is not None and now >= self._ack_deadline:
            out.frames.append(self.ack_frame())
        out.timer = self.get_timer()
        return out
