"""Every vCPU a DIME: -smp 4 gives four DIMEs, each heartbeating on its own core and timer,
each answering for itself, and a chunk outside a DIME's partition faults that DIME only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pxproto.wire.codes import Command, CounterId, DimeState, Status, TlvType
from pxproto.wire.frame import Discovery, Heartbeat, Tlv
from tests import test_baremetal_net as net
from tests.test_baremetal_net import KEY, KEY_ID, Guest, call, request

pytestmark = net.pytestmark  # slow, and skipped without QEMU, as the single-core tests

CORES = 4
POKER = 1


@pytest.fixture(scope="module")
def guest4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    net.build()
    g = Guest(smp=CORES, append=f"key={KEY_ID}:{KEY.hex()} hb=150 chunks=2 poke={POKER}",
              logdir=tmp_path_factory.mktemp("guest4"))  # fmt: skip
    try:
        yield g.booted(CORES)
    finally:
        g.close()


def beats(guest: Guest, seconds: float) -> dict[int, list[Heartbeat]]:
    seen: dict[int, list[Heartbeat]] = {}
    for frame, _ in guest.frames(seconds):
        if isinstance(frame.body, Heartbeat):
            assert frame.auth is not None
            seen.setdefault(frame.src_dime, []).append(frame.body)
    return seen


def test_four_cores_four_dimes(guest4: Guest) -> None:
    frame = guest4.announce
    assert frame is not None and isinstance(frame.body, Discovery)
    assert [(d.dime, d.core, d.state) for d in frame.body.dimes] == [(i, i, DimeState.FREE) for i in range(CORES)]
    seen = beats(guest4, 3.0)
    assert sorted(seen) == list(range(CORES)) and all(len(b) >= 2 for b in seen.values()), seen.keys()
    serial = guest4.serial()
    for i in range(1, CORES):
        assert f"smp: cpu {i} (APIC id {i}) online" in serial
    for dime in range(CORES):  # each core answers for its own DIME
        ping = call(guest4, request(Command.PING, dime, 10 + dime, Tlv(TlvType.ECHO, bytes([dime]))))
        assert ping.status is Status.OK and ping.param(TlvType.ECHO) == bytes([dime])


def fault_the_poker(guest: Guest) -> None:
    """Give the poking DIME a chunk: it writes it, then its neighbour's, once (tests may run in any order)."""
    if f"DIME {POKER} faulted" not in guest.serial():
        alloc = call(guest, request(Command.MEM_ALLOC, POKER, 50, Tlv(TlvType.MEM_CHUNKS, 1)))
        assert alloc.status is Status.OK
    guest.wait_serial(f"DIME {POKER} faulted", timeout=30)


def test_touching_another_dimes_chunk_faults_only_that_dime(guest4: Guest) -> None:
    fault_the_poker(guest4)
    serial = guest4.serial()
    assert f"dime {POKER}: wrote its own chunk" in serial and "the partition leaks" not in serial
    seen = beats(guest4, 2.0)
    assert {b.state for b in seen[POKER][-2:]} == {DimeState.FAULTED}
    assert all(seen[d][-1].state == DimeState.FREE for d in range(CORES) if d != POKER)
    # the faulted DIME's core still runs its loop and answers; the others are untouched
    assert call(guest4, request(Command.PING, POKER, 60)).status is Status.OK
    assert call(guest4, request(Command.PING, (POKER + 1) % CORES, 61)).status is Status.OK


def test_reset_brings_the_faulted_dime_back(guest4: Guest) -> None:
    fault_the_poker(guest4)
    old = beats(guest4, 1.0)[POKER][-1].epoch
    reset = call(guest4, request(Command.RESET, POKER, 70))
    epoch = reset.param(TlvType.EPOCH)
    assert reset.status is Status.OK and isinstance(epoch, int) and epoch > old
    last = beats(guest4, 1.5)[POKER][-1]
    assert (last.state, last.epoch) == (DimeState.FREE, epoch)
    assert f"server: DIME {POKER} reborn in epoch {epoch}" in guest4.serial()  # and announced again
    again = call(guest4, request(Command.MEM_ALLOC, POKER, 71, Tlv(TlvType.MEM_CHUNKS, 2)))
    assert again.status is Status.OK and again.param(TlvType.MEM_CHUNKS) == 2


def test_without_a_vk_load_is_denied(guest4: Guest) -> None:
    """This guest booted with no vk=: a correctly signed LOAD of the image's own package is still refused."""
    from tests.test_baremetal_mice import load

    cid = Tlv(TlvType.COUNTER_ID, int(CounterId.REJECTED_AUTH))
    before = call(guest4, request(Command.COUNTERS, 0, 80, cid)).param(TlvType.VALUE)
    got = call(guest4, load(2, "transform", 81))
    assert got.status is Status.DENIED and "no verification key (vk=)" in str(got.param(TlvType.TEXT))
    after = call(guest4, request(Command.COUNTERS, 0, 82, cid)).param(TlvType.VALUE)
    assert after == before + 1  # type: ignore[operator]
