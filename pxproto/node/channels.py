"""A DIME's data plane, sans I/O: its data channels, the item flow and the MICE's queue.

Channel ids: CONNECT's CHANNEL must be below 0x8000.  Item data flows on
channel ``c`` from upstream to downstream; completions (batches of u64
lineage ids, see :mod:`pxproto.node.mice`) flow back on ``c | 0x8000``.
Part of :class:`pxproto.node.machine.DimeMachine`, which owns one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from pxproto.dime.channel import MessageReceived, WireOutput
from pxproto.dime.endpoint import Address
from pxproto.dime.fastchannel import ChannelReceiver, ChannelSender  # compiled when built, else the twins
from pxproto.errors import ProtocolError
from pxproto.fastpath import decode, encode
from pxproto.node import mice
from pxproto.node.flow import LOW_BITS, LOW_MASK, Flow, MiceQueue, Upstream
from pxproto.node.flow import loops as _loops
from pxproto.node.handover import pack_lineages
from pxproto.wire import ethertypes, layout, spec
from pxproto.wire.codes import DIME_ALL, CounterId, DataFlag, FaultCode, FrameClass, HeaderFlag
from pxproto.wire.frame import Data, Frame

if TYPE_CHECKING:
    from pxproto.node.machine import DimeMachine

COMPLETION_BIT = 0x8000
FLUSH_US = 0
"""Default of ``pxkernel --flush-us``: the longest a data frame that is not full waits for more items, in
microseconds (the loop's timers have millisecond resolution, so any wait is in effect up to a millisecond).
0: a frame goes at once with what is waiting.  At 100 the demo's unthrottled pipeline ran at 4,403 items/s
against 12,698-34,160 at 0 (one run against five, same hour): each hop held its last partial frame back."""
MICE_INFLIGHT = 4096
"""Items handed to the MICE and not yet DONE, at most (their bytes are held to MICE_INFLIGHT_BYTES besides).  At
512, a frame of 16-byte items (about 2,100) went to the MICE a few hundred at a time, the MICE idle between
batches for the DONE -> next batch round trip through its DIME (a sink DIME asleep waiting for its MICE with
items queued for 0.4-0.75 s of a 3 s run)."""
MICE_INFLIGHT_BYTES = 8 << 20
"""Bytes handed to the MICE and not yet DONE (about) above which it is handed nothing more (1 MiB items: 8)."""
HANDOVER_ITEMS = 128
HANDOVER_BYTES = 16 * 1024
"""While the MICE has items in flight, waiting items are handed over once this many (or this many bytes of them)
wait: one message per frame of large items cost the MICE and its DIME a few syscalls per item.  A MICE with
nothing in flight gets what waits at once, and its DONEs make the rest go, so an item waits at most for the
MICE's current batch."""
GATHER_BYTES = 128 * 1024
"""A hand-over of large items (kept as views, gathered by the ring) holds up to this many bytes, not BATCH_BYTES: two
64 KiB items a ring message instead of one, half the messages (and wake-ups, DONE batches) per item."""
PAUSE_INPUT = 4096
"""Items waiting for the MICE above which input channels get no credit."""
PAUSE_BYTES = 8 << 20
"""Bytes waiting for the MICE (about) above which input channels get no credit (large items: 128 of 64 KiB)."""
OUTQ_LIMIT = 4096
"""Outputs waiting for credit above which the MICE's output is not read."""
OUTQ_BYTES = 8 << 20
"""Bytes of outputs waiting for credit above which the MICE's output is not read (large items: 128 of 64 KiB)."""
LARGE_MSG_FRAGS = 8
"""Fragments a data message may span when the waiting items are on average too large for one frame each (a 64 KiB
item needs 2 frames of 65,000 bytes alone, the second nearly empty; 7 share 8): fewer frames per item at every hop
(0.9 items per data frame instead of 0.5), the sink reassembling them straight from its receive buffer (WireRx).
bench/channel.py 64 KiB, 1 s apart, alternated single runs of 8 against 1 on one host (2026-12-01, load 1.2-2.3),
the five pairs where 8 took effect: 704, 705, 664, 813, 961 against 531, 546, 629, 681, 987 MB/s (medians 705 and
629), pxswitch 28, 28, 33, 24, 20 against 40, 39, 33, 29, 20 us/item.  Before the sink's compiled receive it did
not pay (the sink copied each message again: its memmove 17% of the DIMEs' samples against 7%).  1: one frame per
message, or one item per message."""
COMPLETION_BATCH = 1024
"""Completions waiting for one upstream that make a message go at once (a message holds up to a fragment's worth)."""
CHANNEL_ENDS_MAX = 1024
"""Channel ends (inputs, and the completion return of each output) wired at once, at most."""
COMPLETION_DELAY = 0.002
"""Completions are coalesced: one message per COMPLETION_BATCH lineages or per this many seconds."""

ChannelKey = tuple[int, bytes, int]
"""(channel, peer MAC, peer DIME)."""

_OFF = {prefix: {f.name: f.offset for f in fields} for prefix, (_s, fields) in layout.struct_tables().items()}
KEY_AT = spec.HEADER_OFFSET + _OFF[""]["src_dime"]
KEY = struct.Struct("!HH12xHB14xH")
"""What a DATA frame's end is looked up by, read in place from KEY_AT: src_dime, src_thread, (dst_dime,
dst_thread, seq), channel, flags, (msg_id, msg_len, frag_offset, frag_index), frag_count."""
if [KEY_AT + 2, spec.BODY_OFFSET, spec.BODY_OFFSET + _OFF["data"]["frag_count"]] != [
    spec.HEADER_OFFSET + _OFF[""]["src_thread"],
    KEY_AT + 16,
    KEY_AT + 19 + 14,
]:
    raise ImportError("pxproto.node.channels: KEY no longer matches the DATA layout of pxproto.wire.spec")
ACK_ID = slice(spec.BODY_OFFSET + _OFF["data"]["msg_id"], spec.BODY_OFFSET + _OFF["data"]["msg_id"] + 4)
ACK_POS = slice(spec.BODY_OFFSET + _OFF["data"]["ack"], spec.BODY_OFFSET + _OFF["data"]["ack"] + 4)
DATA_MIN = spec.BODY_OFFSET + layout.struct_tables()["data"][0].sizeof()
"""The shortest DATA frame: below it the decoding path says what is wrong."""
_ACK = int(DataFlag.ACK)
CLEAR_ONLY = int(HeaderFlag.AUTH | HeaderFlag.ENCRYPTED)
"""Header flags that send a DATA frame down the decoding path (a trailer to check, a body to open); an int, as it is
tested on every frame (``int & Flag`` builds a Flag: about 0.9 us against 0.06)."""


class ChannelPlane:
    """The data channels and item flow of one DIME."""

    def __init__(self, machine: DimeMachine) -> None:
        self.m = machine
        self.flow = Flow()
        self.source_first = 0
        """The item a source was started at (START's VALUE)."""
        self.mice_queue = MiceQueue()
        """Items waiting for the MICE, as ITEM-record chunks; its ``size`` (bytes) bounds the input with PAUSE_BYTES."""
        self.mice_inflight = 0
        self.mice_inflight_bytes = 0
        """Bytes of the record batches handed to the MICE, less a DONE's share of them (0 once none is in flight)."""
        self.queued_bytes = 0
        """Bytes of the outputs in ``flow.queue``, about (counted as the MICE makes them and as they are sent;
        outputs queued again by a re-wire are not counted)."""
        self.handed_at: dict[int, float] = {}
        self.lat_sum = 0.0
        self.lat_n = 0
        self.done_n = 0
        self.senders: dict[ChannelKey, ChannelSender] = {}
        self.receivers: dict[ChannelKey, ChannelReceiver] = {}
        self.inputs: set[ChannelKey] = set()
        """Channel ends CONNECT wired as inputs (and each output's completion return):
        the only senders whose DATA this DIME takes."""
        self.outputs: dict[int, ChannelKey] = {}
        self._rr = 0
        self.completions: dict[Upstream, list[int]] = {}
        self.completions_since = 0.0
        self.acks_held: dict[ChannelKey, bytes] = {}
        """The latest ack of each input channel, sent once the frames read together are handled."""
        self._rx_key: ChannelKey = (0, b"", 0)
        self.data_type = ethertypes.current().data.to_bytes(2, "big")
        """The DATA EtherType as it is on the wire: clear DATA frames take :meth:`data_wire` (no Frame)."""
        self.flush_delay = FLUSH_US / 1e6
        """Seconds a data frame less than full waits for more items (0: sent at once)."""
        self.flush_at: float | None = None
        """When the items held back for a fuller frame go anyway (None: none held)."""
        self.iov_frames = False
        """Output channels give large DATA frames as ``pxproto.dime._channel.TxFrame`` (header and a view of the
        message, no copy), for a driver that sends them with ``send_frames`` (the DIME process); False: bytes."""
        self.frame_out: Callable[[int], None] | None = None
        """The driver's hook called with how many data messages :meth:`pump` just put out (one, or a batch of
        at most ``credit_window // tx_split``), to send them while the next are built (None: the frames wait for
        the driver's next flush).  Credit for 16 frames otherwise went out as one burst after all 16 were built,
        and the next hop sat idle meanwhile."""
        self.tx_split = 0
        """Messages of one output channel are built (in C) in batches of up to ``credit_window // tx_split``
        between two ``frame_out`` calls (0: one at a time; the DIME process sets its TX_SPLIT)."""

    # ------------------------------------------------------------------ wiring (CONNECT, DISCONNECT)

    def sender(self, peer: Address, ch: int) -> ChannelSender:
        m = self.m
        trailer = m.keyring.enabled and FrameClass.DATA in m.keyring.encrypt  # sealed DATA: room for the trailer
        tx = ChannelSender(m.local, peer, ch, mtu=m.cfg.mtu, auth=trailer, initial_credit=m.credit_window)
        if self.iov_frames and not trailer:  # (sealed frames are sealed whole: bytes)
            tx.iov = True
        return tx

    def unwire(self, ch: int) -> None:
        old = self.outputs.pop(ch, None)
        if old is not None:
            self.senders.pop(old, None)
            # Its completions are not needed any more: every output it had not completed is queued again.
            back = (ch | COMPLETION_BIT, *old[1:])
            self.inputs.discard(back)
            self.receivers.pop(back, None)
            self.requeue(ch)

    def requeue(self, ch: int | None) -> int:
        """Queue again what went on output ``ch`` (None: any) and is not completed, its bytes counted again (they are
        sent, and subtracted, again: a re-wiring left ``queued_bytes`` short, and pump packed 64 KiB items one per
        message); returns how many, counted as REPLAYED."""
        n = self.flow.requeue(ch)
        self.queued_bytes += self.flow.requeued_bytes
        self.m.counters[CounterId.REPLAYED] += n
        return n

    def clear(self) -> None:
        self.acks_held.clear()
        self.inputs.clear()
        self.senders.clear()
        self.receivers.clear()
        self.outputs.clear()
        self.completions.clear()
        self.flow = Flow()
        self.queued_bytes = 0

    def mice_started(self, first: int) -> None:
        self.source_first = first
        self.flow = Flow()
        self.queued_bytes = 0

    def mice_gone(self) -> None:
        self.mice_queue.clear()
        self.mice_inflight = 0
        self.mice_inflight_bytes = 0
        self.handed_at.clear()

    # ------------------------------------------------------------------ the MICE's records and queue

    def output_backlogged(self) -> bool:
        """Outputs wait for credit: the driver stops reading the MICE."""
        return self.flow.queued > OUTQ_LIMIT or self.queued_bytes > OUTQ_BYTES

    def output_drained(self) -> bool:
        """The backlog is down to half: the driver reads the MICE again."""
        return self.flow.queued <= OUTQ_LIMIT // 2 and self.queued_bytes <= OUTQ_BYTES // 2

    def mice_records(self, msg: bytes | memoryview, now: float) -> None:
        """One record batch of the MICE (a view is read before this returns: nothing of it is kept)."""
        m = self.m.mice
        assert m is not None
        self.m.counters[CounterId.MICE_MESSAGES] += 1
        try:
            if _loops is not None:
                outs, dones, made, lat_sum, lat_n, others, out_bytes = _loops.mice_records(
                    msg, self.flow, self.completions, self.handed_at, now
                )
            else:
                recs = mice.records(bytes(msg))  # (the pure codec slices: bytes, never views of a reused buffer)
                outs, dones, made, lat_sum, lat_n, others, out_bytes = self._mice_records_py(recs, now)
        except ValueError as exc:
            m.fault = (int(FaultCode.MICE_CRASHED), f"MICE {m.name} sent a bad batch: {exc}")
            return
        self.lat_sum += lat_sum
        self.lat_n += lat_n
        self.queued_bytes += out_bytes
        for kind, lineage, data in others:
            if kind == mice.EOF:
                m.eof = True
            elif kind == mice.READY:
                m.baseline = lineage
            elif kind == mice.FAULT:
                m.fault = (lineage, data.decode("utf-8", "replace"))
        flow = self.flow
        if made > flow.source_made:
            flow.source_made = made
        if outs:
            self.m.counters[CounterId.ITEMS_OUT] += outs
        if dones:
            inflight = self.mice_inflight
            if inflight:  # a DONE carries no size: the bytes in flight go down by its share (to 0 with the last)
                self.mice_inflight_bytes -= self.mice_inflight_bytes * min(dones, inflight) // inflight
            self.mice_inflight = max(0, inflight - dones)
            self.done_n += dones

    def _mice_records_py(
        self, recs: list[tuple[int, int, bytes]], now: float
    ) -> tuple[int, int, int, float, int, list[tuple[int, int, bytes]], int]:
        """The pure twin of ``_loops.mice_records`` (over records already parsed)."""
        flow, completions, handed_at = self.flow, self.completions, self.handed_at
        # Flow.produced and Flow.done, inlined for their common cases (the per-item hot path of every DIME);
        # anything else goes through the methods themselves.  Consecutive OUT records of one parent with
        # consecutive lineages are kept as one run (the one being gathered: g_base, its first lineage; g_recs, its
        # item records; g_parent; g_next, the lowest base in ``spans`` above it), as ``_flowc`` gathers them.
        done, to_mice, inputs, retained = flow.done, flow.to_mice, flow.inputs, flow.retained
        complete, marks, above = flow.completed.add, flow.completed.marks, flow.completed.above
        runs, spans = retained.runs, retained.spans
        outs = dones = made = lat_n = out_bytes = 0
        lat_sum = 0.0
        others = []
        OUT, DONE = mice.OUT, mice.DONE
        g_base = g_next = 0
        g_recs: list[bytes] = []
        g_parent: int | None = None
        for kind, lineage, data in recs:
            if kind == OUT:
                outs += 1
                parent = flow.head()  # (an input of its own: it has outputs)
                if not (
                    g_recs
                    and lineage == g_base + len(g_recs)
                    and parent == g_parent
                    and lineage < g_next
                    and (len(runs) == len(spans) or lineage not in runs)
                ):
                    if g_recs:
                        flow.keep(g_base, len(g_recs), b"".join(g_recs), g_parent)
                        g_recs = []
                    if retained.find(lineage) is not None:
                        continue  # the same lineage again (a re-run source): keep one copy
                    g_base, g_parent, g_next = lineage, parent, retained.next_base(lineage)
                g_recs.append(mice.ITEM_REC.pack(lineage, len(data)) + data)
                if parent is not None:
                    inputs[parent].open_outputs += 1
                elif lineage & LOW_MASK > made:
                    made = lineage & LOW_MASK
                out_bytes += len(data)
                continue
            if g_recs:
                flow.keep(g_base, len(g_recs), b"".join(g_recs), g_parent)
                g_recs = []
            if kind == DONE:
                dones += 1
                if handed_at:
                    t0 = handed_at.pop(lineage, None)
                    if t0 is not None:
                        lat_sum += now - t0
                        lat_n += 1
                inp = inputs.get(lineage) if to_mice and to_mice[0] == lineage else None
                if inp is None:
                    ups = done(lineage)
                else:
                    to_mice.popleft()
                    inp.done = True
                    if inp.open_outputs:
                        continue
                    del inputs[lineage]
                    hi = lineage >> LOW_BITS
                    if not above and (lineage & LOW_MASK) == marks.get(hi, 0) + 1:
                        marks[hi] = lineage & LOW_MASK  # Completed.add, when its watermark just moves up
                    else:
                        complete(lineage)
                    ups = inp.upstreams
                for up in ups:
                    waiting = completions.get(up)
                    if waiting is None:
                        completions[up] = [lineage]
                    else:
                        waiting.append(lineage)
            else:
                others.append((kind, lineage, data))
        if g_recs:
            flow.keep(g_base, len(g_recs), b"".join(g_recs), g_parent)
        return outs, dones, made, lat_sum, lat_n, others, out_bytes

    def feed_mice(self, now: float) -> None:
        """Hand waiting items to the MICE (batches of up to BATCH_BYTES in its ``pending_tx``, as many as the
        in-flight bounds let go: a burst of frames fed at once is not held to one batch), and pause or resume the
        inputs."""
        m = self.m.mice
        if m is None:
            return
        q = self.mice_queue
        gather = getattr(getattr(self.m, "host", None), "mice_link", None) is not None  # a ring gathers parts
        while True:
            room = min(MICE_INFLIGHT - self.mice_inflight, len(q))
            if not (
                room > 0
                and self.mice_inflight_bytes < MICE_INFLIGHT_BYTES
                and (not self.mice_inflight or len(q) >= HANDOVER_ITEMS or q.size >= HANDOVER_BYTES)
            ):
                break
            size = q.size
            large = gather and not isinstance(q.chunks[0][2], bytes)  # large items, as views: a message holds more
            msg, n, first = q.take(room, GATHER_BYTES if large else mice.BATCH_BYTES, gather)
            self.handed_at[first] = now  # latency is sampled: the first item of each batch
            self.mice_inflight += n
            self.mice_inflight_bytes += size - q.size
            self.m.counters[CounterId.ITEMS_IN] += n
            m.pending_tx.append(msg)
        paused = len(q) > PAUSE_INPUT or q.size > PAUSE_BYTES
        for k, rx in self.receivers.items():
            if k[0] < COMPLETION_BIT and rx.paused != paused:
                if paused:
                    rx.pause()
                else:
                    self.m.out(rx.resume(now))

    # ------------------------------------------------------------------ data frames

    def data(self, frame: Frame, body: Data, now: float) -> None:
        """A DATA frame decoded (sealed DATA, opened); clear ones come as bytes to :meth:`data_wire`."""
        key = (body.channel, frame.src_mac, frame.src_dime)
        self._data(key, frame.src_thread, bool(body.flags & DataFlag.ACK) and body.frag_count == 0, frame, now)

    def data_wire(self, raw: bytes, now: float) -> None:
        """:meth:`data` of a clear DATA frame as it came (read by the compiled channel in C, no Frame built);
        a malformed one is counted, as the decoding path counts it."""
        try:
            if len(raw) < DATA_MIN:
                raise ProtocolError("data", spec.BODY_OFFSET, f"a DATA frame of {len(raw)} bytes is too short")
            src_dime, src_thread, ch, flags, count = KEY.unpack_from(raw, KEY_AT)
            self._data((ch, raw[6:12], src_dime), src_thread, bool(flags & _ACK) and count == 0, raw, now)
        except ProtocolError as exc:
            self.m.counters[CounterId.REJECTED_MALFORMED] += 1
            self.m.reasons[f"malformed:{exc.field}"] += 1

    def _data(self, key: ChannelKey, thread: int, is_ack: bool, frame: bytes | Frame, now: float) -> None:
        m = self.m
        tx = self.senders.get(key)
        if tx is not None:
            if is_ack:
                m.out(tx.receive_wire(frame, now) if isinstance(frame, bytes) else tx.receive(frame, now))
                self.pump(now)
            else:
                if isinstance(frame, bytes):
                    decode(frame)  # refused either way: a malformed one is counted as malformed first
                m.reasons["data_on_output"] += 1
            return
        rx = self.receivers.get(key)
        if rx is None:
            # DATA is not signed: take it only from a sender CONNECT wired, so no one else can make this DIME
            # hold state (and a DIME id such as 0xffff, which no channel can have, never gets this far).
            ch, mac, dime = key
            if key not in self.inputs or dime == DIME_ALL:
                if isinstance(frame, bytes):
                    decode(frame)
                m.counters[CounterId.REJECTED_DATA] += 1
                m.reasons["data:from_dime_all" if dime == DIME_ALL else "data:not_wired"] += 1
                return
            rx = self.receivers[key] = ChannelReceiver(
                m.local, Address(mac, dime, thread), ch, window=m.credit_window, ack_every=32, ack_delay=0.002
            )
        self._rx_key = key
        if isinstance(frame, bytes):
            out = rx.receive_wire(frame, now)
        else:
            o = rx.receive(frame, now)
            out = WireOutput([encode(f) for f in o.frames], o.events, o.timer)  # the acks held back as bytes
        if out.frames:
            out.frames = self._hold_acks(key, out.frames)
        m.out(out)  # the items go to the MICE once the frames read together are handled (the driver's feed_mice)

    def _hold_acks(self, key: ChannelKey, frames: list[bytes]) -> list[bytes]:
        """Keep back a receiver's advancing acks until the frames read in one go are done (they are cumulative).

        The last ack of a batch says all the earlier ones say, with the credit as it is now; a repeated
        position (a duplicate ack, the sender's loss signal) is never merged away.  A receiver puts out
        acks only (a window probe's answer too), all of them encoded DATA frames.
        """
        rest = []
        held_now = self.acks_held
        for f in frames:
            held = held_now.get(key)
            if held is not None:
                if held[ACK_ID] == f[ACK_ID] and held[ACK_POS] == f[ACK_POS]:
                    rest.append(held)  # a duplicate: both go
                else:
                    self.m.counters[CounterId.ACKS_MERGED] += 1
            held_now[key] = f
        return rest

    def flush_acks(self, now: float | None = None) -> None:
        """The frames read together are handled: send the acks held back, and hand what they brought to the MICE
        (one message for the burst, not one per frame; ``now`` defaults to the machine's clock)."""
        if self.acks_held:
            held = list(self.acks_held.values())
            self.acks_held.clear()
            self.m.out(WireOutput(held))
        if self.m.mice is not None:
            self.feed_mice(self.m.now if now is None else now)

    def message(self, ev: MessageReceived) -> None:
        key = self._rx_key
        if ev.channel >= COMPLETION_BIT:
            self._completions_in(ev.channel & ~COMPLETION_BIT, ev.payload)
            return
        flow, queue, completions = self.flow, self.mice_queue, self.completions
        try:
            if _loops is not None and self.m.mice is not None:
                done = _loops.arrive(bytes(ev.payload), flow, key, queue)
                if done:
                    completions.setdefault(key, []).extend(done)
                return
            items = mice.unpack_items(ev.payload)
        except ValueError as exc:
            self.m.reasons["bad_item"] += 1
            self.m.log(f"channel {ev.channel} message {ev.msg_id}: {exc}")
            return
        if self.m.mice is not None:
            done = flow.arrive_batch(items, key, queue)
            if done:
                completions.setdefault(key, []).extend(done)
            return
        for lineage, item in items:
            verdict = flow.arrive(lineage, key)
            if verdict == "new":
                if self.m.mice is None:  # no MICE: forget it so a later copy is taken
                    flow.forget(lineage)
                    self.m.reasons["no_mice"] += 1
                    continue
                queue.append((lineage, item))
            elif verdict == "done":
                completions.setdefault(key, []).append(lineage)

    def _completions_in(self, ch: int, payload: bytes) -> None:
        if _loops is not None:
            _loops.completions_in(bytes(payload), self.flow, self.completions)
            return
        n = len(payload) // 8
        for parent, ups in self.flow.downstream_completed_batch(struct.unpack(f"!{n}Q", payload[: n * 8])):
            for up in ups:
                self.completions.setdefault(up, []).append(parent)

    def pump(self, now: float, force: bool = False) -> None:
        """Send queued outputs on output channels with credit (round robin): full frames at once, what fills less
        than a frame once ``flush_delay`` has passed since it was first held back (or when ``force``)."""
        q = self.flow.queue
        if not q:
            self.queued_bytes = 0
            self.flush_at = None
        if not q or not self.outputs:
            return
        live = [self.senders[k] for k in self.outputs.values() if not self.senders[k].broken]
        if not live:
            return
        n = len(live)
        flow = self.flow
        rec = mice.ITEM_REC.size
        split = self.tx_split and not self.flush_delay  # (a frame held back for more items: one at a time)
        while q:
            for i in range(n):
                tx = live[(self._rr + i) % n]
                if tx.credit_left > 0:
                    break
            else:
                return
            self._rr = (self._rr + i + 1) % n
            # As many waiting items as fit one fragment share one message (one frame); items too large for a frame
            # each share messages of up to LARGE_MSG_FRAGS fragments.
            room = tx.frag_size - len(mice.BATCH_MARK)
            if self.flush_delay and not force and self.queued_bytes + rec * flow.queued < room:
                if self.flush_at is None:
                    self.flush_at = now + self.flush_delay
                if now < self.flush_at:
                    return  # less than a frame: wait a little for more
            self.flush_at = None
            if LARGE_MSG_FRAGS > 1 and self.queued_bytes > (room - rec) * flow.queued:
                room += (LARGE_MSG_FRAGS - 1) * tx.frag_size
            flow.pack_room = room  # (a source's next outputs are kept in runs of a frame)
            if _loops is not None:  # a batch of messages built in C, put out at once (one, round robin or held back)
                most = max(1, self.m.credit_window // self.tx_split) if n == 1 and split else 1
                out, msgs, k, nframes, sent = _loops.send_batches(flow, tx, room, now, most)
                if not msgs:
                    return
                self.queued_bytes = max(0, self.queued_bytes - sent)
                self.m.counters[CounterId.ITEM_FRAMES_TX] += nframes
                self.m.out(out)
            else:
                msg, k = flow.take(tx.channel, room)
                if not k:
                    return
                msgs = 1
                self.queued_bytes = max(0, self.queued_bytes - (len(msg) - len(mice.BATCH_MARK) - rec * k))
                _, o = tx.send_wire(msg, now)
                self.m.counters[CounterId.ITEM_FRAMES_TX] += -(-len(msg) // tx.frag_size)
                self.m.out(o)
            if self.frame_out is not None:
                self.frame_out(msgs)

    def coalesce_completions(self, now: float) -> None:
        """Send completions once COMPLETION_BATCH are waiting for one upstream, or COMPLETION_DELAY passed."""
        if not self.completions:
            return
        if not self.completions_since:
            self.completions_since = now
        if now - self.completions_since >= COMPLETION_DELAY or any(
            len(v) >= COMPLETION_BATCH for v in self.completions.values()
        ):
            self._flush_completions(now)
            self.completions_since = 0.0

    def _flush_completions(self, now: float) -> None:
        for up, lineages in list(self.completions.items()):
            if not lineages:
                continue
            ch, mac, dime = up
            key = (ch | COMPLETION_BIT, mac, dime)
            tx = self.senders.get(key)
            if tx is None:
                tx = self.senders[key] = self.sender(Address(mac, dime, 0), ch | COMPLETION_BIT)
            if tx.broken:
                self.completions.pop(up)
                continue
            per = max(1, tx.frag_size // 8)
            for i in range(0, len(lineages), per):  # (a send that raises leaves them all: a completion may repeat)
                _, o = tx.send_wire(pack_lineages(lineages, i, min(per, len(lineages) - i)), now)
                self.m.out(o)
            lineages.clear()

    # ------------------------------------------------------------------ timers

    def timers(self) -> list[float | None]:
        """The earliest of the plane's timers (flush_at, each channel end's), as a list of one (None: none armed)."""
        due = self.flush_at
        for end in (self.senders, self.receivers):
            for c in end.values():
                t = c.get_timer()
                if t is not None and (due is None or t < due):
                    due = t
        return [due]

    def handle_timer(self, now: float) -> None:
        if self.flush_at is not None and self.flush_at <= now:
            self.flush_at = None  # pump holds nothing back now; with no credit the timer is not armed again
            self.pump(now, force=True)
        for tx in list(self.senders.values()):
            t = tx.get_timer()
            if t is not None and t <= now:
                self.m.out(tx.handle_timer_wire(now))
        for key, rx in list(self.receivers.items()):
            t = rx.get_timer()
            if t is not None and t <= now:
                self._rx_key = key
                self.m.out(rx.handle_timer_wire(now))
