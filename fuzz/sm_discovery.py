"""Coverage-guided fuzz target: discovery (a server's responder and the orchestrator's pool, the one pxorch runs).

    python fuzz/sm_discovery.py -max_total_time=1800 -print_final_stats=1 fuzz/corpus/sm_discovery

Probes and announces built field by field (few servers, few DIME ids, wild
epochs and memory figures), raw bytes, DIME updates, boots and clock steps.
Checks: every output encodes and fits the responder's MTU, the timer is in
the future after handle_timer, an announce never moves a DIME to an older
epoch, the pool's queries agree, and it never holds more than its limits.
See fuzz/README-sm.md.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from sm_common import MACS, Script, check_output, raw_frame, run, wire_roundtrip

    from pxproto.dime.discovery import DiscoveryResponder
    from pxproto.dime.endpoint import Address
    from pxproto.dime.liveness import Pool, PoolLimits
    from pxproto.wire.codec import encode
    from pxproto.wire.codes import DIME_ALL, STATE_ANY, DimeState, DiscoveryOp
    from pxproto.wire.frame import DimeInfo, Discovery, Frame, Scope

MTU = 300


def dime_info(s: Script) -> DimeInfo:
    total = s.uint(1)
    return DimeInfo(s.small(6), s.small(4), s.pick(list(DimeState)), total, min(total, s.uint(1)), s.small(4))


def one_input(data: bytes) -> None:
    s = Script(data)
    responder = DiscoveryResponder(Address(MACS[1]), [dime_info(s) for _ in range(s.small(12))], mtu=MTU)
    limits = PoolLimits(max_servers=1 + s.small(4), max_dimes_per_server=1 + s.small(8), max_dimes=1 + s.small(16))
    pool = Pool(Address(MACS[0]), probe_repeats=1 + s.small(3), limits=limits)
    now = 0.0
    while s.left():
        action = s.small(7)
        outs = []
        if action == 0:
            _, out = pool.probe(now, s.pick([STATE_ANY, *[int(x) for x in DimeState]]))
            outs.append(out)
            for f in out.frames:
                outs.append(responder.receive(f, now))
        elif action == 1:
            op = s.pick([DiscoveryOp.ANNOUNCE, DiscoveryOp.GRATUITOUS])
            dimes = tuple(dime_info(s) for _ in range(s.small(4)))
            body = Discovery(
                op, 0 if op is DiscoveryOp.GRATUITOUS else s.uint(1), s.uint(1), s.uint(1), STATE_ANY, dimes
            )
            rt = wire_roundtrip(Frame(body, Scope.SYSTEM, DIME_ALL, 0, DIME_ALL, 0, 0, MACS[0], s.pick(MACS[1:])))
            if rt is not None:
                before = {d.key: d.epoch for d in pool.in_state()}
                outs.append(pool.receive(rt, now))
                for d in pool.in_state():
                    old = before.get(d.key)
                    if old is not None and d.epoch < old:
                        raise AssertionError(f"{d.address} went back from epoch {old} to {d.epoch}")
        elif action == 2:
            frame = raw_frame(s)
            if frame is not None:
                outs += [pool.receive(frame, now), responder.receive(frame, now)]
        elif action == 3:
            responder.update(dime_info(s))
        elif action == 4:
            out = responder.boot(now)
            outs.append(out)
            for f in out.frames:
                outs.append(pool.receive(f, now))
        else:
            now += s.u8() / 100.0
            for m in (pool, responder):
                out = m.handle_timer(now)
                check_output(out, now, after_timer=True)
                outs.append(out)
        for out in outs:
            check_output(out, now)
            for f in out.frames:
                if isinstance(f.body, Discovery) and len(encode(f)) - 14 > MTU:
                    raise AssertionError(f"announce of {len(encode(f)) - 14} bytes over the MTU {MTU}")
        pool.free(s.small(4))
        for d in pool.in_state():
            if pool.get(d.key) is not d:
                raise AssertionError(f"pool.get({d.key}) disagrees with pool.in_state()")
        if len(pool) > limits.max_dimes or len(pool.servers) > limits.max_servers:
            raise AssertionError(f"{len(pool)} DIMEs on {len(pool.servers)} servers: over {limits}")


if __name__ == "__main__":
    run(one_input)
