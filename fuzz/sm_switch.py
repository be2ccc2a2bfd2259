"""Coverage-guided fuzz target: the switch's forwarding core (learning table, queues, counters), sans I/O.

    python fuzz/sm_switch.py -max_total_time=1800 -print_final_stats=1 fuzz/corpus/sm_switch

Frames from a few MACs and DIMEs (built field by field, or raw bytes) enter
three ports under a fuzzed policy; ports go down and up; output queues are
drained partly; the clock moves past the aging time.  Checks: queues never
pass their limits, the table never passes its capacity, every received
frame is counted once (rx = malformed + by class, when malformed frames are
dropped), a frame only goes out on an up port other than the one it came in.
See fuzz/README-sm.md.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from sm_common import MACS, Script, run, signaling_body

    from pxproto.switch.core import Switch, SwitchPolicy
    from pxproto.switch.fdb import PyFdb
    from pxproto.wire.codec import encode
    from pxproto.wire.codes import DIME_ALL, DimeState, Scope
    from pxproto.wire.frame import BROADCAST, Data, Frame, Heartbeat

PORTS = 3


def frame(s: Script) -> bytes:
    kind = s.small(4)
    src = s.pick(MACS)
    dst = s.pick([*MACS, BROADCAST])
    if kind == 0:
        return encode(Frame(Heartbeat(1, DimeState.FREE, 100), Scope.SYSTEM, s.small(3), 0, DIME_ALL, 0, 0, dst, src))
    if kind == 1:
        body = Data(1, 0, b"x" * (1 + s.small(40)), 0, 0, 0, 1)
        body.msg_len = len(body.payload)
        return encode(Frame(body, Scope.DIME, s.small(3), 0, s.small(3), 0, 0, dst, src))
    if kind == 2:
        scope = s.pick(list(Scope))
        return encode(
            Frame(
                signaling_body(s), scope, s.small(3), 0, s.small(3) if scope is Scope.DIME else DIME_ALL, 0, 0, dst, src
            )
        )
    return dst + src + s.take(s.small(80))


def one_input(data: bytes) -> None:
    s = Script(data)
    policy = SwitchPolicy(
        validation=s.pick(["none", "header", "full"]),
        malformed="drop",
        non_parallax=s.pick(["pass", "drop"]),
        fdb_capacity=1 + s.small(6),
        aging=1 + s.small(20),
        queue_data=1 + s.small(6),
        queue_control=1 + s.small(6),
    )
    sw = Switch(policy, PyFdb(policy.fdb_capacity, policy.aging))
    ports = [sw.add_port(f"p{i}") for i in range(PORTS)]
    now = 0.0
    received = 0
    while s.left():
        action = s.small(6)
        if action <= 2:
            port = s.pick(ports)
            try:
                raw = frame(s)
            except Exception as exc:  # a drawn frame the encoder refuses: not the switch's business
                if type(exc).__name__ != "ProtocolError":
                    raise
                continue
            before = {p: sw.pending(p) for p in ports}
            sw.receive(port, raw, now)
            received += 1
            if sw.pending(port) != before[port]:
                raise AssertionError("a frame was queued back out of the port it came in on")
            for p in ports:
                if not sw.ports[p].up and sw.pending(p):
                    raise AssertionError(f"port {p} is down but holds frames")
        elif action == 3:
            p = s.pick(ports)
            sw.set_up(p, bool(s.u8() & 1))
        elif action == 4:
            p = s.pick(ports)
            got = sw.peek(p, s.small(8))
            sw.consume(p, s.small(len(got) + 1))
        else:
            now += s.u8() / 10
            t = sw.next_timer()
            if t is not None and t <= now:
                sw.handle_timer(now)
        for p in ports:
            q = sw.ports[p].queue
            if len(q.control) > policy.queue_control or len(q.data) > policy.queue_data:
                raise AssertionError(f"port {p} queue over its limits")
        if len(sw.fdb) > policy.fdb_capacity:
            raise AssertionError(f"table holds {len(sw.fdb)} entries, capacity {policy.fdb_capacity}")
        st = sw.stats()["ports"]
        rx = sum(v["rx"] for v in st.values())
        counted = sum(v["rx_malformed"] + sum(v["rx_class"].values()) for v in st.values())
        if rx != received or counted != rx:
            raise AssertionError(f"received {received}, rx {rx}, counted {counted}")


if __name__ == "__main__":
    run(one_input)
