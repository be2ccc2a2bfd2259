"""Coverage-guided fuzz target: signed-frame verification (keys, rotation, per-sender replay windows).

    python fuzz/sm_replay.py -max_total_time=1800 -print_final_stats=1 fuzz/corpus/sm_replay

Two legitimate senders sign frames; the fuzzer's bytes deliver them late,
twice or never, mutate them, install and rotate keys, and move the clock.
Checks: only byte-identical legitimate frames are ever accepted, none twice;
a rejected frame moves no window and is counted once; once a rotation has
completed (its grace is over), no frame under the old key is accepted.
See fuzz/README-sm.md.
"""

from __future__ import annotations

import random

import atheris

with atheris.instrument_imports():
    from sm_common import MACS, Script, run

    from pxproto.dime.endpoint import Address, frame_to
    from pxproto.dime.replay import KeyStore, Signer, Verifier
    from pxproto.testing.hostile import mutate_field, mutate_flip, mutate_splice, mutate_truncate
    from pxproto.wire import auth
    from pxproto.wire.codec import decode
    from pxproto.wire.codes import Command, Op, TlvType
    from pxproto.wire.frame import Signaling, Tlv

KEYS = {i: bytes([i]) * 32 for i in range(1, 5)}


def one_input(data: bytes) -> None:
    s = Script(data)
    theirs = KeyStore()  # the senders' keys
    mine = KeyStore()  # the verifier's
    for ks in (theirs, mine):
        ks.install(1, KEYS[1])
    signers = [Signer(theirs, 1 + s.small(4)) for _ in range(2)]
    senders = [Address(MACS[1], 1), Address(MACS[2], 2)]
    verifier = Verifier(mine, window=1 + s.small(16))
    rng = random.Random(s.uint(2))
    now = 0.0
    legit: list[bytes] = []
    accepted: set[bytes] = set()
    retired_at: dict[int, float] = {}
    calls = 0
    while s.left():
        action = s.small(8)
        raw: bytes | None = None
        if action <= 1:
            who = s.small(2)
            body = Signaling(Command.PING, Op.REQUEST, s.uint(2), params=(Tlv(TlvType.ECHO, s.take(s.small(8))),))
            legit.append(signers[who].sign(frame_to(senders[who], Address(MACS[0], 3), body)))
            if action == 1:
                raw = legit[-1]
        elif action == 2 and legit:
            raw = legit[s.small(len(legit))]  # late, again, or out of order
        elif action == 3 and legit:
            base = legit[s.small(len(legit))]
            how = s.small(5)
            if how == 0:
                raw = mutate_flip(rng, base)
            elif how == 1:
                raw = mutate_field(rng, base)
            elif how == 2:
                raw = mutate_truncate(rng, base)
            elif how == 3:
                raw = mutate_splice(rng, base, legit[s.small(len(legit))])
            else:
                f = decode(base)
                kid = s.small(5) or 1
                raw = auth.sign(f, kid, s.uint(1) + 1, b"\xee" * 32)  # the attacker holds no cluster key
        elif action == 4:
            kid = 1 + s.small(4)
            for ks in (theirs, mine):
                try:
                    ks.install(kid, KEYS[kid])
                except ValueError:
                    pass
        elif action == 5:
            kid = 1 + s.small(4)
            grace = s.u8() / 100
            pending = mine._rotation
            if pending is not None and pending.old == kid:
                continue  # finding F2 (tests/test_fuzz_sm.py): rotating back during the grace wedges the store
            try:
                old = mine.current
                mine.rotate(kid, now, grace)
                theirs.rotate(kid, now, grace)
                if old is not None and old != kid:
                    retired_at[old] = min(retired_at.get(old, now + grace), now + grace)
            except KeyError:
                pass
        elif action == 6:
            now += s.u8() / 50
            if s.u8() & 1:
                mine.handle_timer(now)
                theirs.handle_timer(now)
        if raw is None:
            continue
        calls += 1
        before = {k: (w.highest, w._seen) for k, w in verifier._windows.items()}
        rejected = verifier.rejected.total()
        v = verifier.verify(raw, now)
        if v.accepted:
            if raw not in legit:
                raise AssertionError("a frame no sender made was accepted")
            if raw in accepted:
                raise AssertionError("a frame was accepted twice")
            accepted.add(raw)
            kid = v.frame.auth.key_id  # type: ignore[union-attr]
            if kid in retired_at and now >= retired_at[kid]:
                raise AssertionError(f"key {kid} accepted at {now}, after its rotation completed at {retired_at[kid]}")
        else:
            if verifier.rejected.total() != rejected + 1:
                raise AssertionError("a rejection was not counted exactly once")
            if {k: (w.highest, w._seen) for k, w in verifier._windows.items()} != before:
                raise AssertionError("a rejected frame moved a window")
    if verifier.accepted + verifier.rejected.total() != calls:
        raise AssertionError("frames not accounted for")


if __name__ == "__main__":
    run(one_input)
