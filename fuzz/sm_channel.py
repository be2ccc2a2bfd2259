"""Coverage-guided fuzz target: the data channel (sender, receiver, the link between them).

    python fuzz/sm_channel.py -max_total_time=1800 -print_final_stats=1 fuzz/corpus/sm_channel

The fuzzer's bytes decide the messages, which frames the link loses,
duplicates or holds back, pauses and window changes, and (in hostile mode)
forged DATA frames from the sender's address.  Checks: every output encodes,
the timer is in the future after handle_timer, the receiver's buffer stays
within its byte budget, and on an honest link the messages delivered are
exactly the messages sent, in order, each once.  See fuzz/README-sm.md.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from sm_common import MACS, Script, check_output, raw_frame, run, wire_roundtrip

    from pxproto.dime.channel import ChannelBroken, ChannelSender, MessageReceived
    from pxproto.dime.channel_rx import ChannelReceiver
    from pxproto.dime.endpoint import Address
    from pxproto.wire.codes import DataFlag
    from pxproto.wire.frame import Data, Frame, Scope

BUDGET = 4096


def one_input(data: bytes) -> None:
    s = Script(data)
    hostile = bool(s.u8() & 1)
    a, b = Address(MACS[1], 1, 0), Address(MACS[2], 2, 0)
    tx = ChannelSender(a, b, 7, mtu=100 + s.small(200), initial_credit=s.small(16), max_retries=2 + s.small(4))
    rx = ChannelReceiver(b, a, 7, window=s.small(16), max_buffer_bytes=BUDGET, ack_every=1 + s.small(3))
    now = 0.0
    sent: list[bytes] = []
    got: list[bytes] = []
    to_rx: list[Frame] = []
    to_tx: list[Frame] = []
    broken = False

    def take(out, queue: list[Frame]) -> None:  # type: ignore[no-untyped-def]
        nonlocal broken
        check_output(out, now)
        queue.extend(out.frames)
        for e in out.events:
            if isinstance(e, MessageReceived):
                got.append(e.payload)
            elif isinstance(e, ChannelBroken):
                broken = True

    while s.left():
        action = s.small(9)
        if action == 0 and not tx.broken:
            payload = s.take(s.small(255)) * (1 + s.small(4))
            try:
                _, out = tx.send(payload, now)
            except ValueError:
                continue
            sent.append(payload)
            take(out, to_rx)
        elif action in (1, 2) and (to_rx or to_tx):
            queue, dest, back = (to_rx, rx, to_tx) if (action == 1 and to_rx) or not to_tx else (to_tx, tx, to_rx)
            f = queue.pop(s.small(min(len(queue), 4)))  # a little reordering
            fate = s.small(8)
            if fate == 0:
                continue  # lost
            if fate == 1:
                queue.append(f)  # duplicated
            take(dest.receive(f, now), back)
        elif action == 3:
            now += s.u8() / 200.0
            take(tx.handle_timer(now), to_rx)
            take(rx.handle_timer(now), to_tx)
            for m in (tx, rx):
                t = m.get_timer()
                if t is not None and t <= now:
                    raise AssertionError(f"{type(m).__name__} timer {t} not after {now}")
        elif action == 4:
            take(rx.set_window(s.small(20), now), to_tx)
        elif action == 5:
            if s.u8() & 1:
                rx.pause()
            else:
                take(rx.resume(now), to_tx)
        elif action == 6 and hostile:
            flags = DataFlag(s.small(4))
            d = Data(
                7 if s.u8() & 1 else s.uint(2), s.small(4), s.take(s.small(64)), s.uint(2), s.uint(2),
                s.small(4), s.small(5), s.uint(1) if flags & DataFlag.ACK else 0,
                s.uint(1) if flags & DataFlag.ACK else 0, flags,
            )  # fmt: skip
            forged = wire_roundtrip(Frame(d, Scope.DIME, 1, 0, 2, 0, 0, MACS[2], MACS[1]))
            if forged is not None:
                take(rx.receive(forged, now), to_tx)
                take(tx.receive(forged, now), to_rx)
        elif action == 7 and hostile:
            frame = raw_frame(s)
            if frame is not None:
                take(rx.receive(frame, now), to_tx)
                take(tx.receive(frame, now), to_rx)
        elif action == 8 and not tx.broken and s.u8() < 16:
            _, out = tx.close(now)
            sent.append(b"")
            take(out, to_rx)
        if rx.buffered > BUDGET:
            raise AssertionError(f"receiver holds {rx.buffered} bytes over its budget {BUDGET}")
        if not hostile and got != sent[: len(got)]:
            raise AssertionError(f"delivered {len(got)} messages that are not the ones sent")
    _ = broken


if __name__ == "__main__":
    run(one_input)
