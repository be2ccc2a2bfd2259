"""Authentication: signing, tag checks, the replay window's edges, key rotation, rejection counters."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproto.dime.endpoint import Address, frame_to
from pxproto.dime.replay import KeyStore, Rejection, ReplayWindow, Signer, Verifier
from pxproto.wire import auth
from pxproto.wire.codes import Command, Op
from pxproto.wire.frame import Frame, Signaling

A = Address(bytes.fromhex("020000000001"), 1)
B = Address(bytes.fromhex("020000000002"), 2)
K1 = b"k" * 32
K2 = b"q" * 32


def request(src: Address = A, req_id: int = 1) -> Frame:
    return frame_to(src, B, Signaling(cmd=Command.PING, op=Op.REQUEST, req_id=req_id))


def keystore(*ids: int) -> KeyStore:
    ks = KeyStore()
    for i in ids:
        ks.install(i, {1: K1, 2: K2}.get(i, bytes([i]) * 16))
    return ks


def test_signed_frame_is_accepted_once_and_its_copy_refused() -> None:
    signer, verifier = Signer(keystore(1)), Verifier(keystore(1))
    raw = signer.sign(request())
    v = verifier.verify(raw, 0.0)
    assert v.accepted and v.frame is not None and v.frame.auth is not None and v.frame.auth.counter == 1
    again = verifier.verify(raw, 0.0)
    assert again.rejection is Rejection.REPLAYED and "counter 1" in again.detail
    assert verifier.rejected == {Rejection.REPLAYED: 1} and verifier.accepted == 1


def test_reordering_within_the_window_is_accepted_and_old_counters_are_not() -> None:
    signer, verifier = Signer(keystore(1)), Verifier(keystore(1), window=16)
    raws = [signer.sign(request(req_id=i)) for i in range(40)]  # counters 1..40
    order = list(range(20, 36))
    random.Random(3).shuffle(order)
    assert all(verifier.verify(raws[i], 0.0).accepted for i in order)  # counters 21..36 in any order
    assert verifier.verify(raws[35], 0.0).rejection is Rejection.REPLAYED
    # highest 36, window 16: counter 21 is the oldest still inside; 20 is outside.
    assert verifier.verify(raws[19], 0.0).rejection is Rejection.TOO_OLD
    assert verifier.verify(raws[39], 0.0).accepted  # 40: the window slides by 4
    assert verifier.verify(raws[23], 0.0).rejection is Rejection.TOO_OLD  # 24 now fell out (40 - 16)
    assert verifier.verify(raws[24], 0.0).rejection is Rejection.REPLAYED  # 25 still inside, already seen
    assert verifier.verify(raws[37], 0.0).accepted  # 38, a gap left behind
    assert dict(verifier.rejected) == {Rejection.REPLAYED: 2, Rejection.TOO_OLD: 2}


def test_window_edges() -> None:
    w = ReplayWindow(4)
    assert w.check(1) is None
    w.accept(1)
    w.accept(10)  # a jump past the whole window forgets the old bitmap
    assert w.check(7) is None and w.check(6) is Rejection.TOO_OLD and w.check(10) is Rejection.REPLAYED
    w.accept(7)
    assert w.check(7) is Rejection.REPLAYED and w.check(8) is None and w.check(9) is None
    w.accept(11)
    assert w.check(7) is Rejection.TOO_OLD and w.check(8) is None
    with pytest.raises(ValueError):
        ReplayWindow(0)


@given(st.lists(st.integers(1, 200), max_size=300), st.integers(1, 70))
def test_window_matches_its_definition(counters: list[int], size: int) -> None:
    """Accepted iff never accepted before and within ``size`` of the highest accepted so far."""
    w = ReplayWindow(size)
    seen: set[int] = set()
    for c in counters:
        highest = max(seen, default=0)
        expect = c not in seen and c > highest - size
        assert (w.check(c) is None) == expect, (c, highest, size)
        if expect:
            w.accept(c)
            seen.add(c)


def test_forgeries_do_not_move_the_window() -> None:
    signer, verifier = Signer(keystore(1)), Verifier(keystore(1))
    good = [signer.sign(request(req_id=i)) for i in range(3)]
    forged = auth.sign(request(), 1, 10**12, b"x" * 32)  # right key id, wrong key, far-ahead counter
    assert verifier.verify(forged, 0.0).rejection is Rejection.BAD_TAG
    tampered = bytearray(good[0])
    tampered[30] ^= 0x01  # a header byte covered by the tag
    assert verifier.verify(bytes(tampered), 0.0).rejection is Rejection.BAD_TAG
    assert all(verifier.verify(r, 0.0).accepted for r in good)


def test_unsigned_malformed_unknown_key_and_per_sender_windows() -> None:
    from pxproto.wire.codec import encode

    verifier = Verifier(keystore(1))
    assert verifier.verify(encode(request()), 0.0).rejection is Rejection.UNSIGNED
    bad = verifier.verify(b"\x00" * 10, 0.0)
    assert bad.rejection is Rejection.MALFORMED and "truncated" in bad.detail and bad.frame is None
    assert verifier.verify(Signer(keystore(7)).sign(request()), 0.0).rejection is Rejection.UNKNOWN_KEY
    # Two senders may use the same counter: each has its own window.
    c = Address(bytes.fromhex("020000000003"), 3)
    assert verifier.verify(Signer(keystore(1)).sign(request(A)), 0.0).accepted
    assert verifier.verify(Signer(keystore(1)).sign(request(c)), 0.0).accepted
    assert verifier.verify(Signer(keystore(1)).sign(replace(request(A), src_dime=4)), 0.0).accepted
    assert dict(verifier.rejected) == {Rejection.UNSIGNED: 1, Rejection.MALFORMED: 1, Rejection.UNKNOWN_KEY: 1}


def test_rotation_accepts_the_old_key_only_until_it_completes() -> None:
    tx_keys, rx_keys = keystore(1), keystore(1)
    signer, verifier = Signer(tx_keys), Verifier(rx_keys)
    old = [signer.sign(request(req_id=i)) for i in range(3)]
    assert verifier.verify(old[0], 0.0).accepted
    for ks in (tx_keys, rx_keys):
        ks.install(2, K2)
        ks.rotate(2, now=1.0, grace=0.5)
    new = signer.sign(request())
    assert auth.verify(verifier.verify(new, 1.1).frame, new, K2)  # type: ignore[arg-type]
    assert rx_keys.get_timer() == 1.5
    assert verifier.verify(old[1], 1.2).accepted  # in flight during the grace period
    # Grace over: refused even though nobody called handle_timer.
    assert verifier.verify(old[2], 1.5).rejection is Rejection.RETIRED_KEY
    assert rx_keys.get_timer() is None and 1 in rx_keys.retired
    with pytest.raises(ValueError, match="retired"):
        rx_keys.install(1, K1)
    verifier.forget_retired()
    assert all(k[2] != 1 for k in verifier._windows)


def test_complete_rotation_at_once_and_rotate_again() -> None:
    ks = keystore(1, 2, 3)
    ks.rotate(2, now=0.0, grace=10.0)
    ks.complete_rotation()
    assert ks.lookup(1, 0.1) is Rejection.RETIRED_KEY and ks.lookup(2, 0.1) == K2
    ks.rotate(3, now=1.0, grace=10.0)
    ks.rotate(2, now=1.1, grace=10.0)  # a second rotation completes the first: 2 stays (it is current)
    assert ks.current == 2 and ks.lookup(3, 1.2) == bytes([3]) * 16
    ks.handle_timer(11.1)
    assert ks.lookup(3, 11.2) is Rejection.RETIRED_KEY


def test_key_store_and_signer_refuse_bad_input() -> None:
    ks = KeyStore()
    with pytest.raises(LookupError):
        Signer(ks).sign(request())
    with pytest.raises(ValueError, match="reserved"):
        ks.install(0, K1)
    with pytest.raises(ValueError, match="16 bytes"):
        ks.install(1, b"short")
    with pytest.raises(KeyError, match="not installed"):
        ks.rotate(5, now=0.0)
    with pytest.raises(ValueError, match="counter_start"):
        Signer(ks, counter_start=0)
    s = Signer(keystore(1), counter_start=2**64 - 1)
    s.sign(request())
    with pytest.raises(OverflowError, match="rotate"):
        s.sign(request())


def test_restarted_sender_with_epoch_counter_base_is_accepted() -> None:
    verifier = Verifier(keystore(1))
    first_life = Signer(keystore(1), counter_start=1 << 32)
    for i in range(5):
        assert verifier.verify(first_life.sign(request(req_id=i)), 0.0).accepted
    same_start = Signer(keystore(1), counter_start=1 << 32)
    assert verifier.verify(same_start.sign(request()), 0.0).rejection is Rejection.REPLAYED
    reborn = Signer(keystore(1), counter_start=2 << 32)
    assert verifier.verify(reborn.sign(request()), 0.0).accepted
