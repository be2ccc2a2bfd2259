"""A bare-metal DIME as a workflow stage, on the wire (QEMU, TCG): LOAD of the image's package (digest, size and
signature checked), START, CONNECT, and items through the built-in C transform between pxproto's channel ends,
exactly once, completions back (the same Workflow as tests/test_baremetal_plane.py, over the guest's NIC)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from pxproto import package
from pxproto.baremetal import builtin
from pxproto.dime.endpoint import Address
from pxproto.node.testbed import SIGNER
from pxproto.signing import fresh_signing_key
from pxproto.wire.codes import Command, CounterId, DimeState, Direction, Status, TlvType
from pxproto.wire.frame import Frame, Heartbeat, Tlv
from tests import test_baremetal_net as net
from tests.test_baremetal_net import KEY, KEY_ID, VK, Guest, call, request
from tests.test_baremetal_plane import CH, DOWN, UP, Workflow, _items, _want

pytestmark = net.pytestmark
ARCHIVE = builtin.archive()
REQ_IDS = itertools.count(1000)


def load(stage: int, name: str, req_id: int, *, digest: bytes | None = None, sig: bytes | None = None) -> Frame:
    return request(
        Command.LOAD, 0, req_id, Tlv(TlvType.SERVICE_ID, 42), Tlv(TlvType.STAGE, stage), Tlv(TlvType.MICE_NAME, name),
        Tlv(TlvType.PACKAGE_DIGEST, digest or package.digest(ARCHIVE)), Tlv(TlvType.PACKAGE_SIZE, len(ARCHIVE)),
        Tlv(TlvType.PACKAGE_SIG, sig or package.sign(ARCHIVE, SIGNER)),
    )  # fmt: skip


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    net.build()
    g = Guest(smp=1, append=f"key={KEY_ID}:{KEY.hex()} {VK} hb=100 chunks=8", logdir=tmp_path_factory.mktemp("mice"))
    try:
        yield g.booted(1)
    finally:
        g.close()


class GuestWorkflow(Workflow):
    """The Workflow, its DIME a QEMU guest: frames over the UDP pipe, real time."""

    stage = (2, "transform")
    """The package's stage the guest's DIME 0 runs."""

    def __init__(self, guest: Guest) -> None:
        self.guest, self.t0 = guest, time.monotonic()
        super().__init__(None)

    def setup(self) -> None:
        assert call(self.guest, request(Command.RESET, 0, self.next_req())).status is Status.OK
        assert call(self.guest, load(*self.stage, self.next_req())).status is Status.OK
        ids = Tlv(TlvType.SERVICE_ID, 42), Tlv(TlvType.STAGE, self.stage[0])
        start = request(Command.START, 0, self.next_req(), *ids)
        assert call(self.guest, start).status is Status.OK
        self.connect(CH, "in", UP)
        self.wire_down(DOWN)

    def next_req(self) -> int:
        # request ids unique across workflows on one guest: a repeated (id, command) is a retransmission,
        # answered from the DIME's cache and not run again
        return next(REQ_IDS)

    def connect(self, ch: int, direction: str, peer: Address) -> None:
        d = Direction.OUTPUT if direction == "out" else Direction.INPUT
        got = call(self.guest, request(
            Command.CONNECT, 0, self.next_req(), Tlv(TlvType.CHANNEL, ch), Tlv(TlvType.PEER_MAC, peer.mac),
            Tlv(TlvType.PEER_DIME, peer.dime), Tlv(TlvType.PEER_THREAD, 0), Tlv(TlvType.DIRECTION, int(d)),
        ))  # fmt: skip
        assert got.status is Status.OK, got

    def exchange(self, frame: Frame) -> list[Frame]:
        self.guest.send(frame, signed=False)  # DATA is not signed
        return []

    def turn(self) -> list[Frame]:
        got = [f for f, _ in self.guest.frames(0.005)]
        self.now = time.monotonic() - self.t0
        return got


def test_load_checks_the_images_package(guest: Guest) -> None:
    assert call(guest, request(Command.RESET, 0, 1)).status is Status.OK
    wrong = call(guest, load(2, "transform", 2, digest=bytes(32)))
    assert wrong.status is Status.NOT_FOUND and "not the one built into" in str(wrong.param(TlvType.TEXT))
    before = call(guest, request(Command.COUNTERS, 0, 3, Tlv(TlvType.COUNTER_ID, int(CounterId.REJECTED_AUTH))))
    good = package.sign(ARCHIVE, SIGNER)
    flipped = bytearray(good)
    flipped[40] ^= 1  # a bit of R
    other = fresh_signing_key()  # another Ed25519 key signing under SIGNER's key id
    forgeries = [
        bytes(flipped),
        good[:-1] + bytes([good[-1] ^ 0x80]),  # a bit of S
        SIGNER.key_id.to_bytes(2, "big") + other.sign(ARCHIVE)[2:],
        ((SIGNER.key_id + 1) & 0xFFFF).to_bytes(2, "big") + good[2:],  # a key id with no vk=
        good[:-1],  # 65 bytes
    ]
    for i, forged in enumerate(forgeries):
        got = call(guest, load(2, "transform", 20 + i, sig=forged))
        assert got.status is Status.DENIED, i
        assert "PACKAGE_SIG" in str(got.param(TlvType.TEXT)), i
    after = call(guest, request(Command.COUNTERS, 0, 5, Tlv(TlvType.COUNTER_ID, int(CounterId.REJECTED_AUTH))))
    assert after.param(TlvType.VALUE) == before.param(TlvType.VALUE) + len(forgeries)  # type: ignore[operator]
    assert call(guest, load(2, "parse", 6)).status is Status.BAD_PARAM  # stage 2 of the package is transform
    no_store = call(guest, load(3, "sink", 7))  # this guest has no second serial port: no store to commit to
    assert no_store.status is Status.UNSUPPORTED and "no store" in str(no_store.param(TlvType.TEXT))
    assert call(guest, load(1, "parse", 8)).status is Status.OK
    start = request(Command.START, 0, 9, Tlv(TlvType.SERVICE_ID, 42), Tlv(TlvType.STAGE, 3))
    assert call(guest, start).status is Status.NOT_FOUND  # stage 3 is not the one loaded
    assert "loaded service 42 stage 1 (parse, built in)" in guest.wait_serial("(parse, built in)", 10)


def test_items_through_the_guests_transform_exactly_once(guest: Guest) -> None:
    wf = GuestWorkflow(guest)
    items = _items(600)
    wf.send(items)
    want = _want(items)
    wf.run(120.0, until=lambda: len(wf.outputs) == len(want) and len(set(wf.completed)) == len(want))
    assert wf.outputs == want
    assert sorted(set(wf.completed)) == sorted(want)
    hb, _ = guest.expect(lambda f: isinstance(f.body, Heartbeat) and f.src_dime == 0, timeout=10)
    assert isinstance(hb.body, Heartbeat) and hb.body.state is DimeState.BUSY
    assert (hb.body.stage, hb.body.service) == (2, 42)
    stop = call(guest, request(Command.STOP, 0, 50, Tlv(TlvType.SERVICE_ID, 42), Tlv(TlvType.STAGE, 2)))
    assert stop.status is Status.OK and isinstance(stop.param(TlvType.CPU_NS), int)
