"""Security of signed signaling, against pxproto.dime's verifier: an attacker model, not just cases.

An attacker on the wire sees every legitimate signed frame and may replay
it (at once or much later), reorder, mutate it with every pxfuzz mutator,
truncate its trailer, re-sign it under a wrong key or an unknown key id.
Oracle: a frame is accepted if and only if it is byte for byte a legitimate
frame whose counter the sliding window model still takes; every frame is
either accepted or counted under exactly one rejection reason; a rejected
frame changes no window.  Key rotation: once it completes, the old key is
refused at every later instant, whatever the driver's timer calls.
The kernel's own key ring must make the same decisions on the same stream.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pxproto.dime.endpoint import Address, frame_to
from pxproto.dime.keys import KeyFileError, KeyRing, read_private
from pxproto.dime.replay import COUNTER_MAX, KEY_MIN_BYTES, KeyStore, Rejection, Signer, Verifier
from pxproto.testing.hostile import MUTATIONS
from pxproto.wire import auth, spec
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import Command, Op, TlvType
from pxproto.wire.frame import Signaling, Tlv

A = Address(bytes.fromhex("020000000001"), 1)
B = Address(bytes.fromhex("020000000002"), 2)
KEY = bytes(range(32))
WRONG = bytes(range(1, 33))
WINDOW = 32


def keystore() -> KeyStore:
    ks = KeyStore()
    ks.install(1, KEY)
    return ks


def legit_frames(n: int, counter_start: int = 1) -> list[bytes]:
    signer = Signer(keystore(), counter_start)
    out = []
    for i in range(n):
        body = Signaling(Command.MEM_LIMIT, Op.REQUEST, i + 1, params=(Tlv(TlvType.MEM_CHUNKS, i % 7),))
        out.append(signer.sign(frame_to(A, B, body)))
    return out


def counter_of(raw: bytes) -> int:
    f = decode(raw)
    assert f.auth is not None
    return f.auth.counter


class WindowModel:
    """What a sliding window of ``size`` must accept, written the obvious way."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen: set[int] = set()

    def takes(self, counter: int) -> bool:
        top = max(self.seen, default=0)
        return counter not in self.seen and (counter > top or top - counter < self.size)

    def take(self, counter: int) -> None:
        self.seen.add(counter)


MOVES = ("flip", "field", "truncate", "extend", "splice", "scope", "ethertype")
"""The attacker's moves 1..7: mutators of the shared table (move 0 replays; 8.. forge the trailer)."""


def attack(rng: random.Random, legit: list[bytes], delivered: list[bytes]) -> tuple[str, bytes]:
    """One attacker move over what it has seen so far."""
    seen = delivered or legit[:1]
    raw = rng.choice(seen)
    move = rng.randrange(11)
    if move == 0:
        return "replay", raw
    if move <= len(MOVES):
        kind = MOVES[move - 1]
        return kind, MUTATIONS[kind].apply(rng, raw, seen)  # splice takes its second frame from what was seen
    f = decode(raw)
    assert f.auth is not None
    counter = f.auth.counter + rng.randrange(1, 1000)
    if move == 8:
        return "wrong key", auth.sign(f, 1, counter, WRONG)
    if move == 9:
        return "wrong key id", auth.sign(f, rng.randrange(2, 0x10000), counter, KEY)
    cut = rng.randrange(1, spec.AUTH_LEN + 1)
    return "cut trailer", raw[:-cut]


@pytest.mark.parametrize("seed", range(5))
def test_an_attacker_without_the_key_gets_nothing_accepted(seed: int) -> None:
    rng = random.Random(seed)
    legit = legit_frames(100)
    verifier = Verifier(keystore(), window=WINDOW)
    ring = KeyRing({1: KEY})
    model = WindowModel(WINDOW)
    delivered: list[bytes] = []
    pending = list(range(len(legit)))
    moves: Counter[str] = Counter()
    total = 0
    while pending or total < 400:
        total += 1
        if pending and rng.random() < 0.3:
            # Legitimate frames arrive somewhat out of order (and some much later than others).
            raw = legit[pending.pop(rng.randrange(min(len(pending), 6)))]
            move = "legit"
        else:
            move, raw = attack(rng, legit, delivered)
        moves[move] += 1
        windows_before = {k: (w.highest, w._seen) for k, w in verifier._windows.items()}
        rejected_before = verifier.rejected.total()
        v = verifier.verify(raw, 0.0)
        should = raw in legit and model.takes(counter_of(raw))
        assert v.accepted == should, (move, v.rejection, v.detail)
        if v.accepted:
            model.take(counter_of(raw))
            delivered.append(raw)
        else:
            assert verifier.rejected.total() == rejected_before + 1
            assert {k: (w.highest, w._seen) for k, w in verifier._windows.items()} == windows_before
        # The kernel's key ring decides the same (frames it can decode and that carry a trailer).
        kr = _kernel_decision(ring, raw)
        if kr is not None:
            assert kr == v.accepted, (move, v.rejection)
    assert verifier.accepted + verifier.rejected.total() == total
    # Every legitimate frame got in once, but for those delivered after the window had moved past them.
    assert verifier.accepted == len(model.seen) >= len(legit) - 10
    assert {"replay", "flip", "field", "wrong key", "wrong key id", "cut trailer"} <= set(moves)


def _kernel_decision(ring: KeyRing, raw: bytes) -> bool | None:
    try:
        f = decode(raw)
    except Exception:
        return None
    if f.auth is None:
        return None
    from pxproto.dime.keys import ReplayWindow

    key = (f.src_mac, f.src_dime, f.auth.key_id)
    if key not in ring.windows:  # the same window size as the verifier's (unused if the key is unknown)
        ring.windows[key] = ReplayWindow(WINDOW)
    return ring.check(raw, f.src_mac, f.src_dime, f.auth.key_id, f.auth.counter, f.padding) is None


def test_every_truncation_of_the_trailer_is_refused_as_malformed_and_a_stripped_one_as_unsigned() -> None:
    raw = legit_frames(1)[0]
    verifier = Verifier(keystore())
    for cut in range(1, spec.AUTH_LEN + 1):
        assert verifier.verify(raw[:-cut], 0.0).rejection is Rejection.MALFORMED
    f = decode(raw)
    f.auth = None
    stripped = encode(f)  # the same request with its trailer and AUTH flag taken off
    assert verifier.verify(stripped, 0.0).rejection is Rejection.UNSIGNED
    assert verifier.rejected == {Rejection.MALFORMED: spec.AUTH_LEN, Rejection.UNSIGNED: 1}
    assert verifier.verify(raw, 0.0).accepted  # and none of that burned the real frame's counter


@pytest.mark.parametrize("seed", range(3))
def test_rotation_leaves_no_instant_where_the_old_key_is_taken_after_it_completes(seed: int) -> None:
    rng = random.Random(seed)
    ks = KeyStore()
    ks.install(1, KEY)
    ks.install(2, WRONG)
    verifier = Verifier(ks, window=1024)
    old_signer = Signer(_store_with(1, KEY))
    new_signer = Signer(_store_with(2, WRONG))
    t0, grace = rng.uniform(0, 5), rng.uniform(0.01, 2)
    ks.rotate(2, t0, grace)
    times = sorted(rng.uniform(t0 - 1, t0 + 2 * grace + 1) for _ in range(150))
    for t in times:
        if rng.random() < 0.2 and ks.get_timer() is not None:
            ks.handle_timer(t)  # drivers call the timer late, early or not at all
        body = Signaling(Command.PING, Op.REQUEST, 1, params=(Tlv(TlvType.ECHO, b"x"),))
        old = verifier.verify(old_signer.sign(frame_to(A, B, body)), t)
        new = verifier.verify(new_signer.sign(frame_to(A, B, body)), t)
        assert new.accepted
        if t >= t0 + grace:
            assert old.rejection is Rejection.RETIRED_KEY, (t, t0 + grace)
        else:
            assert old.accepted or t >= t0 + grace
    # Nor may the old key come back.
    with pytest.raises(ValueError, match="retired"):
        ks.install(1, KEY)


def _store_with(key_id: int, key: bytes) -> KeyStore:
    ks = KeyStore()
    ks.install(key_id, key)
    return ks


def test_a_key_shorter_than_the_minimum_is_refused() -> None:
    ks = KeyStore()
    with pytest.raises(ValueError, match=f"at least {KEY_MIN_BYTES} bytes"):
        ks.install(1, b"k" * (KEY_MIN_BYTES - 1))
    ks.install(1, b"k" * KEY_MIN_BYTES)
    assert ks.signing_key() == (1, b"k" * KEY_MIN_BYTES)


def test_the_last_counter_signs_once_then_the_key_must_rotate() -> None:
    ks = KeyStore()
    ks.install(1, KEY)
    signer = Signer(ks, counter_start=COUNTER_MAX)
    frame = frame_to(A, B, Signaling(Command.PING, Op.REQUEST, 1))
    last = decode(signer.sign(frame))
    assert last.auth is not None and last.auth.counter == COUNTER_MAX
    with pytest.raises(OverflowError, match="exhausted"):
        signer.sign(frame)


def test_a_key_file_that_is_not_a_regular_file_is_refused() -> None:
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_private("/dev/null")
