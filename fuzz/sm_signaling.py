"""Coverage-guided fuzz target: reliable signaling (Requester and Responder).

    python fuzz/sm_signaling.py -max_total_time=1800 -print_final_stats=1 fuzz/corpus/sm_signaling

See fuzz/README-sm.md.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from sm_common import MACS, Script, check_output, raw_frame, run, signaling_body, wire_roundtrip

    from pxproto.dime.endpoint import Address
    from pxproto.dime.signaling import Requester, RequestReceived, Responder, RetransmitPolicy
    from pxproto.wire.codes import Command, Op, Status
    from pxproto.wire.frame import Frame

CACHE = 8


def one_input(data: bytes) -> None:
    s = Script(data)
    me = Address(MACS[0], 1, 0)
    req = Requester(me, RetransmitPolicy(initial=0.01, max_interval=0.05, retries=s.small(4)), first_req_id=s.uint(4))
    resp = Responder(me, {Command.PING: lambda r: (Status.OK, r.params)}, cache_size=CACHE, cache_ttl=0.5)
    now = 0.0
    sent = 0
    waiting: list[RequestReceived] = []
    while s.left():
        action = s.small(6)
        if action == 0:
            peer = Address(s.pick(MACS[1:]), s.small(3), 0)
            cmd = s.pick(list(Command))
            _, out = req.request(peer, cmd, signaling_body(s).params, now=now)
            sent += 1
            check_output(out, now)
        elif action in (1, 2):
            body = signaling_body(s, Op.RESPONSE if action == 1 else Op.REQUEST)
            frame = wire_roundtrip(Frame(body, src_mac=s.pick(MACS[1:]), src_dime=s.small(3), dst_dime=1))
            if frame is None:
                continue
            check_output(req.receive(frame, now), now)
            out = resp.receive(frame, now)
            check_output(out, now)
            waiting.extend(e for e in out.events if isinstance(e, RequestReceived))
        elif action == 3:
            frame = raw_frame(s)
            if frame is not None:
                check_output(req.receive(frame, now), now)
                out = resp.receive(frame, now)
                check_output(out, now)
                waiting.extend(e for e in out.events if isinstance(e, RequestReceived))
        elif action == 4:
            now += s.u8() / 100.0
            for m in (req, resp):
                check_output(m.handle_timer(now), now, after_timer=True)
        elif waiting:
            # Answer a request the responder handed out as an event, possibly long after it came.
            event = waiting.pop(s.small(len(waiting)))
            check_output(resp.respond(event, s.pick(list(Status)), signaling_body(s).params, now=now), now)
        if len(resp) > CACHE:
            raise AssertionError(f"responder cache {len(resp)} over its bound {CACHE}")
        if req.pending > sent:
            raise AssertionError(f"{req.pending} pending of {sent} sent")
    if req.counters["answered"] + req.counters["timed_out"] + req.pending != sent:
        raise AssertionError(f"requests not accounted for: {dict(req.counters)} pending {req.pending} sent {sent}")


if __name__ == "__main__":
    run(one_input)
