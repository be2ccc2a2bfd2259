"""Coverage-guided fuzz target: heartbeat emitter and the pool's failure detector (missed-count and phi-accrual).

The detector is :class:`pxproto.dime.liveness.Pool`, the one pxorch runs, driven
here as pxorch drives it, including the "I was stalled" flag of handle_timer.

    python fuzz/sm_heartbeat.py -max_total_time=1800 -print_final_stats=1 fuzz/corpus/sm_heartbeat

Heartbeats from a few DIMEs with fuzzed epochs, seqs, periods and arrival
times; answers (or not) to the detector's pings; clock steps.  Checks: every
output encodes, the timer is in the future after handle_timer, phi is a
number for every watched DIME, a DIME is never declared dead twice in one epoch.
See fuzz/README-sm.md.
"""

from __future__ import annotations

import math

import atheris

with atheris.instrument_imports():
    from sm_common import MACS, Script, check_output, raw_frame, run, wire_roundtrip

    from pxproto.dime.endpoint import Address
    from pxproto.dime.heartbeat import HeartbeatEmitter
    from pxproto.dime.liveness import DimeDead, Liveness, Pool
    from pxproto.wire.codes import DIME_ALL, Command, DimeState, Op, Status, TlvType
    from pxproto.wire.frame import Frame, Heartbeat, Scope, Signaling, Tlv


def one_input(data: bytes) -> None:
    s = Script(data)
    me = Address(MACS[0], DIME_ALL)
    policy = (
        Liveness("missed", missed=1 + s.small(5))
        if s.u8() & 1
        else Liveness("phi", phi=1 + s.small(12), min_std=s.small(4) / 10)
    )
    fd = Pool(me, policy)
    emitter = HeartbeatEmitter(Address(MACS[1], 1), s.uint(4), period=(1 + s.small(200)) / 1000)
    check_output(emitter.start(0.0), 0.0)
    now = 0.0
    dead: set[tuple[bytes, int, int]] = set()
    pings: list[Frame] = []
    while s.left():
        action = s.small(6)
        out = None
        if action == 0:
            hb = Heartbeat(s.uint(1), s.pick(list(DimeState)), 1 + s.uint(2) % 2000, s.small(201) * 5)
            frame = Frame(hb, Scope.SYSTEM, s.small(3), 0, DIME_ALL, 0, s.uint(1), src_mac=s.pick(MACS[1:]))
            rt = wire_roundtrip(frame)
            if rt is not None:
                out = fd.receive(rt, now)
        elif action == 1:
            now += s.u8() / 50.0
            out = fd.handle_timer(now, stalled=bool(s.u8() & 1))
            check_output(out, now, after_timer=True)
            hb_out = emitter.handle_timer(now)
            # Finding F1 (tests/test_fuzz_sm.py): the emitter may leave its timer exactly at ``now`` after
            # skipping late periods (float rounding); tolerated here so the run goes on past it.
            check_output(hb_out, now, after_timer=hb_out.timer != now)
            pings.extend(f for f in out.frames if isinstance(f.body, Signaling))
        elif action == 2 and pings:
            # The suspected DIME answers one of the pings, maybe with a newer epoch.
            ping = pings.pop(s.small(len(pings)))
            body = ping.body
            assert isinstance(body, Signaling)
            params = (*body.params, Tlv(TlvType.EPOCH, s.uint(1)))
            answer = Frame(
                Signaling(Command.PING, Op.RESPONSE, body.req_id, s.pick([Status.OK, Status.BUSY]), params),
                ping.scope, ping.dst_dime, 0, ping.src_dime, 0, 0, ping.src_mac, ping.dst_mac,
            )  # fmt: skip
            rt = wire_roundtrip(answer)
            if rt is not None:
                out = fd.receive(rt, now)
        elif action == 3:
            frame = raw_frame(s)
            if frame is not None:
                out = fd.receive(frame, now)
        elif action == 4:
            out = emitter.set_period((1 + s.small(250)) / 1000, now)
        else:
            try:
                hb_out = emitter.restart(now) if s.u8() & 1 else emitter.handle_timer(now)
            except OverflowError:  # documented: the 32-bit epoch is exhausted
                continue
            check_output(hb_out, now)
            for f in hb_out.frames:
                out = fd.receive(f, now + s.u8() / 1000)
        if out is not None:
            check_output(out, now)
            for e in out.events:
                if isinstance(e, DimeDead):
                    key = (*e.key, e.epoch)
                    if key in dead:
                        raise AssertionError(f"{key} declared dead twice")
                    dead.add(key)
        for w in list(fd.dimes.values()):
            if math.isnan(fd.phi(w.key, now)):
                raise AssertionError(f"phi of {w.key} is NaN")


if __name__ == "__main__":
    run(one_input)
