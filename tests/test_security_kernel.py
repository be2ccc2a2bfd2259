"""Security checks against a running pxkernel (authentication on): packages, access lists, key rotation.

Each hostile request is refused, changes nothing (the parameter or the
loaded stage stays as it was), and is counted in the DIME's counters.
Forged, replayed and truncated signaling is covered by
tests/test_kernel_integration.py; the attacker model is in test_security_dime.py.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto import package
from pxproto.dime.endpoint import Address, frame_to
from pxproto.dime.keys import add_trailer, wrap_key
from pxproto.node.testbed import KEY, SIGNER, Cluster
from pxproto.signing import fresh_signing_key
from pxproto.wire.codec import encode
from pxproto.wire.codes import Command, Fcaps, Param, Status, TlvType
from pxproto.wire.frame import Signaling, Tlv
from tests._helpers import load_params, packaged_cluster

MANIFEST = """
[service]
name = "sectest"

[[stage]]
name = "idle"
entry = "stages:idle"
"""
STAGES = "def idle(item, ctx):\n    return ()\n"
AUTH, REPLAY, ACL = 12, 13, 14
ATTACKER = bytes.fromhex("02aa00000066")
_attacker_counter = itertools.count(int.from_bytes(os.urandom(4), "big") << 16)
"""The attacker's trailer counters go up, so its frames are judged on their merits, not as replays."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = packaged_cluster(tmp_path_factory.mktemp("ksec"), MANIFEST, STAGES, kernels=1, dimes=2)
    yield c
    c.close()


def counter(c: Cluster, dest: Address, cid: int) -> int:
    return int(c.ask(dest, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, cid)).param(TlvType.VALUE))  # type: ignore[arg-type]


def load(c: Cluster, dest: Address, service: int, archive: bytes, sig: bytes, digest: bytes | None = None) -> Status:
    return c.ask(dest, Command.LOAD, *load_params(archive, service, 0, "idle", sig=sig, digest=digest)).status


def mem_limit(c: Cluster, dest: Address) -> int:
    r = c.ask(dest, Command.GET_PARAM, Tlv(TlvType.PARAM_ID, Param.MEM_LIMIT_CHUNKS))
    return int(r.param(TlvType.VALUE))  # type: ignore[arg-type]


def attacker_sends(c: Cluster, dest: Address, cmd: Command, params: tuple[Tlv, ...], key_id: int, key: bytes) -> None:
    """A frame from another MAC, signed with ``key`` under ``key_id`` (the attacker may hold a cluster key)."""
    body = Signaling(cmd, req_id=int.from_bytes(os.urandom(3), "big") + 1, params=params)
    raw = encode(frame_to(Address(ATTACKER), dest, body))
    c.client.send_raw(add_trailer(raw, key_id, next(_attacker_counter), key))
    c.client.wait_for(lambda: False, 0.3)


def test_load_of_an_unsigned_or_altered_package_is_refused_and_changes_nothing(cluster: Cluster) -> None:
    c = cluster
    dest = c.dime(0, 0)
    archive: bytes = c.archive  # type: ignore[attr-defined]
    assert load(c, dest, 5, archive, package.sign(archive, SIGNER)) is Status.OK
    auth0 = counter(c, dest, AUTH)
    # Unsigned, signed under another key, and signed for other bytes.
    assert load(c, dest, 6, archive, b"") is Status.DENIED
    assert load(c, dest, 6, archive, package.sign(archive, fresh_signing_key())) is Status.DENIED
    assert load(c, dest, 6, archive, package.sign(archive + b"x", SIGNER)) is Status.DENIED
    assert counter(c, dest, AUTH) == auth0 + 3
    # Altered in the central store after it was signed: the bytes no longer match the digest asked for.
    other = archive + b"\0" * 512  # a gzip stream followed by zeros: another archive, never fetched before
    tampered = bytearray(other)
    tampered[len(tampered) // 2] ^= 0x01
    (Path(c.store) / f"{package.digest(other).hex()}.tar.gz").write_bytes(bytes(tampered))
    assert load(c, dest, 7, other, package.sign(other, SIGNER)) in (Status.DENIED, Status.NOT_FOUND)
    # Nothing refused got loaded, and what was loaded before is still there.
    for service in (6, 7):
        r = c.ask(dest, Command.START, Tlv(TlvType.SERVICE_ID, service), Tlv(TlvType.STAGE, 0))
        assert r.status is Status.NOT_FOUND
    r = c.ask(dest, Command.START, Tlv(TlvType.SERVICE_ID, 5), Tlv(TlvType.STAGE, 0))
    assert r.status is Status.OK


def test_a_command_outside_the_peers_access_list_is_denied_counted_and_changes_nothing(cluster: Cluster) -> None:
    c = cluster
    dest = c.dime(0, 1)
    me = c.client.mac
    everything = (1 << len(Fcaps)) - 1
    fault_only = 1 << Fcaps.F
    acl = me + bytes([everything, 0]) + ATTACKER + bytes([fault_only, 0])
    assert c.ask(dest, Command.ACL_SET, Tlv(TlvType.ACL, acl)).status is Status.OK
    try:
        limit = mem_limit(c, dest)
        denied0 = counter(c, dest, ACL)
        # The attacker holds the cluster key (a compromised peer) but its ACL entry allows FAULT commands only.
        attacker_sends(c, dest, Command.MEM_LIMIT, (Tlv(TlvType.MEM_CHUNKS, 1),), 1, KEY)
        attacker_sends(c, dest, Command.KEY_INSTALL, (Tlv(TlvType.KEY_ID, 9), Tlv(TlvType.KEY, b"\x09" * 32)), 1, KEY)
        attacker_sends(c, dest, Command.ACL_SET, (Tlv(TlvType.ACL, ATTACKER + bytes([everything, 0])),), 1, KEY)
        assert counter(c, dest, ACL) == denied0 + 3
        assert mem_limit(c, dest) == limit
        got = c.ask(dest, Command.ACL_GET).param(TlvType.ACL)
        assert isinstance(got, bytes) and sorted(got[i : i + 8] for i in range(0, len(got), 8)) == sorted(
            [acl[:8], acl[8:]]
        )
        # A command in an allowed area still goes through for it (not counted as denied).
        attacker_sends(c, dest, Command.PING, (Tlv(TlvType.ECHO, b"hi"),), 1, KEY)
        assert counter(c, dest, ACL) == denied0 + 3
    finally:
        assert c.ask(dest, Command.ACL_SET, Tlv(TlvType.ACL, b"")).status is Status.OK


def test_after_key_rotation_the_cluster_works_and_the_old_key_is_refused(cluster: Cluster) -> None:
    c = cluster
    dest = c.dime(0, 1)
    new_key = bytes(range(100, 132))
    wrapped = wrap_key(1, KEY, 2, new_key)
    r = c.ask(dest, Command.KEY_INSTALL, Tlv(TlvType.KEY_ID, 2), Tlv(TlvType.WRAPPED_KEY, wrapped))
    assert r.status is Status.OK
    c.client.keyring.install(2, new_key)
    assert c.ask(dest, Command.KEY_ROTATE, Tlv(TlvType.KEY_ID, 2)).status is Status.OK
    c.client.keyring.rotate(2, time.monotonic())
    limit = mem_limit(c, dest)  # the manager, now on the new key, is still answered
    auth0 = counter(c, dest, AUTH)
    # A peer still on the old key, after the rotation's grace (pxproto.dime.keys.ROTATION_GRACE, 1 s) is over.
    c.client.wait_for(lambda: False, 1.5)
    attacker_sends(c, dest, Command.MEM_LIMIT, (Tlv(TlvType.MEM_CHUNKS, 1),), 1, KEY)
    assert mem_limit(c, dest) == limit
    assert counter(c, dest, AUTH) == auth0 + 1


def test_a_hostile_key_install_is_refused_counted_and_installs_nothing(cluster: Cluster) -> None:
    """A KEY_INSTALL in clear, wrapped under a key the DIME does not hold, tampered or relabelled: BAD_PARAM."""
    c = cluster
    dest = c.dime(0, 1)  # it holds the client's signing key, before and after the rotation test
    kid0, key0 = c.client.keyring.active, c.client.keyring.active_key()
    assert key0 is not None
    new_key = os.urandom(32)
    good = wrap_key(kid0, key0, 5, new_key)
    tampered = bytearray(good)
    tampered[-1] ^= 0x01
    auth0 = counter(c, dest, AUTH)

    def wrapped(value: bytes) -> Tlv:
        return Tlv(TlvType.WRAPPED_KEY, value)

    clear = Tlv(TlvType.KEY, new_key)
    cases: list[tuple[int, tuple[Tlv, ...], str]] = [
        (5, (clear,), "lacks WRAPPED_KEY"),  # the old clear form alone
        (5, (clear, wrapped(good)), "in clear is refused"),  # a key that travelled in clear is burnt
        (5, (wrapped(wrap_key(kid0, os.urandom(32), 5, new_key)),), "does not unwrap"),
        (5, (wrapped(wrap_key(9, KEY, 5, new_key)),), "does not hold"),
        (5, (wrapped(bytes(tampered)),), "does not unwrap"),
        (6, (wrapped(good),), "does not unwrap"),  # wrapped for id 5, offered as id 6
        (5, (wrapped(wrap_key(kid0, key0, 5, os.urandom(15))),), "fewer than 16 bytes"),
        (5, (wrapped(wrap_key(kid0, key0, 5, b"short")),), "too short"),  # shorter than any wrapped 16 bytes
    ]
    for kid, tlvs, why in cases:
        r = c.ask(dest, Command.KEY_INSTALL, Tlv(TlvType.KEY_ID, kid), *tlvs)
        assert r.status is Status.BAD_PARAM and why in str(r.param(TlvType.TEXT)), (why, r)
    assert counter(c, dest, AUTH) == auth0 + len(cases) - 2  # the clear forms are refused before any unwrap
    # Nothing was installed: rotating to either id is refused, and the signing key still works.
    for kid in (5, 6):
        assert c.ask(dest, Command.KEY_ROTATE, Tlv(TlvType.KEY_ID, kid)).status is not Status.OK
    assert c.ask(dest, Command.PING, Tlv(TlvType.ECHO, b"still the old key")).status is Status.OK
