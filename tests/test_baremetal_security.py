"""KEY_INSTALL, KEY_ROTATE and access lists on the bare-metal DIME (QEMU TCG, two vCPUs), with the
Linux DIME's rules (pxproto/node/fcaps.py, tests/test_security_kernel.py): a key arrives wrapped
(pxproto.dime.keys.wrap_key) and is unwrapped in the image; after KEY_ROTATE the DIME signs with the
new key and, once the grace (1 s) is over, refuses the old one, counting it; each DIME has its own
ring; an ACL denies a peer outside it with DENIED and REJECTED_ACL, and changes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from pxproto.dime.keys import wrap_key
from pxproto.wire.auth import sign, verify
from pxproto.wire.codes import Command, Fcaps, Op, Param, Scope, Status, TlvType
from pxproto.wire.frame import Frame, Heartbeat, Signaling, Tlv
from tests.test_baremetal_net import GUEST_MAC, KEY, KEY_ID, OUR_MAC, QEMU, Guest, build, response_to

ATTACKER = bytes.fromhex("02aa00000066")
STRANGER = bytes.fromhex("02bb00000077")
AUTH, ACL = 12, 14  # a DIME's CounterId REJECTED_AUTH, REJECTED_ACL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed (apt install qemu-system-x86)"),
]


class Peer:
    """One signer on the guest's wire: its MAC, its key ring (id -> key), the key it signs with."""

    def __init__(self, guest: Guest, mac: bytes, key_id: int = KEY_ID, key: bytes = KEY) -> None:
        self.guest, self.mac, self.keys, self.active = guest, mac, {key_id: key}, key_id
        self.req_id = int.from_bytes(os.urandom(2), "big") << 8

    def send(self, cmd: Command, dime: int, *params: Tlv, key_id: int | None = None) -> int:
        self.req_id += 1
        kid = key_id or self.active
        frame = Frame(
            Signaling(cmd, Op.REQUEST, self.req_id, Status.OK, params), scope=Scope.DIME,
            src_dime=0xFFFF, dst_dime=dime, dst_mac=GUEST_MAC, src_mac=self.mac,
        )  # fmt: skip
        self.guest.send_raw(sign(frame, kid, self.guest.counter, self.keys[kid]))
        self.guest.counter += 1
        return self.req_id

    def ask(self, cmd: Command, dime: int, *params: Tlv, key_id: int | None = None) -> tuple[Signaling, Frame, bytes]:
        req_id = self.send(cmd, dime, *params, key_id=key_id)
        frame, raw = self.guest.expect(response_to(req_id), timeout=30)
        assert isinstance(frame.body, Signaling) and frame.dst_mac == self.mac and frame.src_dime == dime
        return frame.body, frame, raw

    def call(self, cmd: Command, dime: int, *params: Tlv) -> Signaling:
        return self.ask(cmd, dime, *params)[0]

    def silent(self, cmd: Command, dime: int, *params: Tlv, key_id: int | None = None) -> None:
        """Send, and see no answer within 2 s."""
        req_id = self.send(cmd, dime, *params, key_id=key_id)
        for frame, _ in self.guest.frames(2.0):
            assert not (isinstance(frame.body, Signaling) and frame.body.req_id == req_id), frame

    def counter(self, dime: int, cid: int) -> int:
        value = self.call(Command.COUNTERS, dime, Tlv(TlvType.COUNTER_ID, cid)).param(TlvType.VALUE)
        assert isinstance(value, int)
        return value


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    build()
    with Guest(smp=2, append=f"key={KEY_ID}:{KEY.hex()} hb=200 chunks=3", logdir=tmp_path_factory.mktemp("sec")) as g:
        yield g.booted(2)


def _limit(me: Peer, dime: int) -> int:
    value = me.call(Command.GET_PARAM, dime, Tlv(TlvType.PARAM_ID, Param.MEM_LIMIT_CHUNKS)).param(TlvType.VALUE)
    assert isinstance(value, int)
    return value


def test_acl_denies_a_peer_outside_it_counts_and_changes_nothing(guest: Guest) -> None:
    me, attacker, stranger = Peer(guest, OUR_MAC), Peer(guest, ATTACKER), Peer(guest, STRANGER)
    everything, fault_only = (1 << len(Fcaps)) - 1, 1 << Fcaps.F
    acl = ATTACKER + bytes([fault_only, 0]) + OUR_MAC + bytes([everything, 0])
    assert me.call(Command.ACL_SET, 1, Tlv(TlvType.ACL, acl)).status is Status.OK
    limit, denied0 = _limit(me, 1), me.counter(1, ACL)
    # the attacker holds the cluster key, but its entry allows FAULT commands only; the stranger has none
    for peer, cmd, params in (
        (attacker, Command.MEM_LIMIT, (Tlv(TlvType.MEM_CHUNKS, 1),)),
        (attacker, Command.ACL_SET, (Tlv(TlvType.ACL, ATTACKER + bytes([everything, 0])),)),
        (attacker, Command.KEY_ROTATE, (Tlv(TlvType.KEY_ID, KEY_ID),)),
        (stranger, Command.PING, (Tlv(TlvType.ECHO, b"who"),)),
    ):
        r = peer.call(cmd, 1, *params)
        assert r.status is Status.DENIED and r.param(TlvType.TEXT) == "access list", (cmd, r)
    assert me.counter(1, ACL) == denied0 + 4
    assert _limit(me, 1) == limit
    got = me.call(Command.ACL_GET, 1).param(TlvType.ACL)
    assert got == OUR_MAC + bytes([everything, 0]) + ATTACKER + bytes([fault_only, 0])  # sorted by MAC
    # an allowed area still goes through for the attacker, and is not counted as denied
    assert attacker.call(Command.PING, 1, Tlv(TlvType.ECHO, b"hi")).param(TlvType.ECHO) == b"hi"
    assert me.counter(1, ACL) == denied0 + 4
    # the list is DIME 1's: DIME 0 has none, and RESET empties DIME 1's
    assert stranger.call(Command.PING, 0).status is Status.OK
    assert me.call(Command.RESET, 1).status is Status.OK
    assert me.call(Command.ACL_GET, 1).param(TlvType.ACL) == b""
    assert stranger.call(Command.PING, 1).status is Status.OK


def test_a_hostile_key_install_is_refused_counted_and_installs_nothing(guest: Guest) -> None:
    me = Peer(guest, OUR_MAC)
    new_key = os.urandom(32)
    good = wrap_key(KEY_ID, KEY, 5, new_key)
    tampered = bytearray(good)
    tampered[-1] ^= 0x01
    auth0 = me.counter(0, AUTH)
    # in clear (alone, or beside a wrapped copy): refused before any unwrap, so not counted
    clear = Tlv(TlvType.KEY, new_key)
    for extra, why in (((), "lacks WRAPPED_KEY"), ((Tlv(TlvType.WRAPPED_KEY, good),), "in clear is refused")):
        r = me.call(Command.KEY_INSTALL, 0, Tlv(TlvType.KEY_ID, 5), clear, *extra)
        assert r.status is Status.BAD_PARAM and why in str(r.param(TlvType.TEXT)), (why, r)
    unwrapped = {  # (offered id, WRAPPED_KEY) -> what the refusal says; each is counted
        (5, wrap_key(KEY_ID, os.urandom(32), 5, new_key)): "does not unwrap under key 7",
        (5, wrap_key(9, KEY, 5, new_key)): "wrapped under key 9, which this DIME does not hold",
        (5, bytes(tampered)): "does not unwrap",
        (6, good): "does not unwrap",  # wrapped for id 5, offered as id 6
        (5, wrap_key(KEY_ID, KEY, 5, os.urandom(15))): "fewer than 16 bytes",
        (5, wrap_key(KEY_ID, KEY, 5, b"short")): "too short",
    }
    for (kid, value), why in unwrapped.items():
        r = me.call(Command.KEY_INSTALL, 0, Tlv(TlvType.KEY_ID, kid), Tlv(TlvType.WRAPPED_KEY, value))
        assert r.status is Status.BAD_PARAM and why in str(r.param(TlvType.TEXT)), (why, r)
    assert me.counter(0, AUTH) == auth0 + len(unwrapped)
    for kid in (5, 6):
        assert me.call(Command.KEY_ROTATE, 0, Tlv(TlvType.KEY_ID, kid)).status is Status.NOT_FOUND
    _, frame, raw = me.ask(Command.PING, 0, Tlv(TlvType.ECHO, b"still the old key"))
    assert frame.auth is not None and frame.auth.key_id == KEY_ID and verify(frame, raw, KEY)


def test_after_rotation_the_new_key_signs_and_the_old_one_is_refused(guest: Guest) -> None:
    me = Peer(guest, OUR_MAC)
    new_key = bytes(range(100, 132))
    r = me.call(
        Command.KEY_INSTALL, 1, Tlv(TlvType.KEY_ID, 8), Tlv(TlvType.WRAPPED_KEY, wrap_key(KEY_ID, KEY, 8, new_key))
    )
    assert r.status is Status.OK and r.param(TlvType.KEY_ID) == 8
    me.keys[8] = new_key
    # installed, not yet signed with: the answer to a frame under the new key is still under the old one
    _, frame, raw = me.ask(Command.PING, 1, key_id=8)
    assert frame.auth is not None and frame.auth.key_id == KEY_ID and verify(frame, raw, KEY)
    _, frame, raw = me.ask(Command.KEY_ROTATE, 1, Tlv(TlvType.KEY_ID, 8))
    assert isinstance(frame.body, Signaling) and frame.body.status is Status.OK
    assert frame.auth is not None and frame.auth.key_id == 8 and verify(frame, raw, new_key)
    me.active = 8
    limit = _limit(me, 1)
    auth0 = me.counter(1, AUTH)
    time.sleep(1.5)  # past the rotation's grace (pxproto.dime.keys.ROTATION_GRACE, 1 s)
    me.silent(Command.MEM_LIMIT, 1, Tlv(TlvType.MEM_CHUNKS, 1), key_id=KEY_ID)
    assert _limit(me, 1) == limit
    assert me.counter(1, AUTH) == auth0 + 1
    # the old id is retired for good: wrapped again under the new key, it cannot come back
    again = wrap_key(8, new_key, KEY_ID, os.urandom(32))
    r = me.call(Command.KEY_INSTALL, 1, Tlv(TlvType.KEY_ID, KEY_ID), Tlv(TlvType.WRAPPED_KEY, again))
    assert r.status is Status.BAD_PARAM and "retired" in str(r.param(TlvType.TEXT))
    assert me.counter(1, AUTH) == auth0 + 2
    # heartbeats of DIME 1 are under the new key; DIME 0 (its own ring) and the server keep the boot key
    hb, raw = guest.expect(lambda f: f.src_dime == 1 and isinstance(f.body, Heartbeat), timeout=30)
    assert hb.auth is not None and hb.auth.key_id == 8 and verify(hb, raw, new_key)
    _, frame, raw = me.ask(Command.PING, 0, key_id=KEY_ID)
    assert frame.auth is not None and frame.auth.key_id == KEY_ID and verify(frame, raw, KEY)
    me.silent(Command.PING, 0, key_id=8)  # DIME 0 never installed key 8
