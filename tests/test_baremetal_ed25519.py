"""The kernel's SHA-512 and Ed25519 verification (kernel/sha512.c, kernel/ed25519.c) on the host.

tests/c/ed25519_check.c is compiled with the host gcc and driven over a pipe; the answers are checked
against hashlib and the `cryptography` package's Ed25519, against RFC 8032's section 7.1 vectors 1-3,
and against hand-made bad encodings (S >= L, y >= p, x = 0 with the sign bit set, off-curve y) built
with a small affine Edwards model below.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests._hostcheck import HostDriver

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernel"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc to build tests/c/ed25519_check.c")

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P

# RFC 8032 section 7.1, TEST 1-3: (secret key, public key, message, signature)
RFC_VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]  # fmt: skip


class Check(HostDriver):
    """tests/c/ed25519_check.c over kernel/sha512.c and kernel/ed25519.c."""

    def sha512(self, msg: bytes) -> str:
        return self.ask(f"sha {msg.hex() or '-'}")

    def verify(self, pub: bytes, sig: bytes, msg: bytes) -> bool:
        return self.ask(f"verify {pub.hex()} {sig.hex()} {msg.hex() or '-'}") == "1"


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Check]:
    with Check(tmp_path_factory.mktemp("ed25519"), "ed25519_check", "sha512.c", "ed25519.c") as c:
        yield c


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _ref_verify(pub: bytes, sig: bytes, msg: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    except (InvalidSignature, ValueError):
        return False
    return True


# -- a small affine Edwards model, only to build points for the bad-encoding cases --
Point = tuple[int, int]


def _add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return (x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P


def _mul(k: int, a: Point) -> Point:
    r: Point = (0, 1)
    while k:
        if k & 1:
            r = _add(r, a)
        a, k = _add(a, a), k >> 1
    return r


def _enc(a: Point) -> bytes:
    return (a[1] | (a[0] & 1) << 255).to_bytes(32, "little")


def _base() -> Point:
    y = 4 * pow(5, -1, P) % P
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(v, P - 2, P) % P
    r = pow(x, (P + 3) // 8, P)
    if r * r % P != x:
        r = r * pow(2, (P - 1) // 4, P) % P
    return (r if r % 2 == 0 else P - r), y


def test_sha512_matches_hashlib_across_block_boundaries(check: Check) -> None:
    rng = random.Random(1)
    for n in [0, 1, 55, 56, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 257, 1000, 4096 + 17]:
        msg = rng.randbytes(n)
        assert check.sha512(msg) == hashlib.sha512(msg).hexdigest(), n


def test_rfc8032_vectors_1_to_3(check: Check) -> None:
    for secret, pub, msg, sig in RFC_VECTORS:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
        # the typed vectors are what the reference derives (Ed25519 signing is deterministic)
        assert _raw(key).hex() == pub
        assert key.sign(bytes.fromhex(msg)).hex() == sig
        assert check.verify(bytes.fromhex(pub), bytes.fromhex(sig), bytes.fromhex(msg))
        assert not check.verify(bytes.fromhex(pub), bytes.fromhex(sig), bytes.fromhex(msg) + b"\0")


def test_random_signatures_verify_and_tampered_ones_do_not(check: Check) -> None:
    rng = random.Random(2)
    valid = 0
    for i in range(300):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        pub, msg = _raw(key), rng.randbytes(rng.choice([0, 1, 31, 64, 127, 128, 500, 3000]))
        sig = key.sign(msg)
        assert check.verify(pub, sig, msg), i
        valid += 1
        bad_sig = bytearray(sig)
        bad_sig[rng.randrange(64)] ^= 1 << rng.randrange(8)
        bad_pub = bytearray(pub)
        bad_pub[rng.randrange(32)] ^= 1 << rng.randrange(8)
        bad_msg = bytearray(msg or b"\0")
        bad_msg[rng.randrange(len(bad_msg))] ^= 1 << rng.randrange(8)
        for p, s, m in ((pub, bytes(bad_sig), msg), (bytes(bad_pub), sig, msg), (pub, sig, bytes(bad_msg))):
            assert not check.verify(p, s, m), i
            assert not _ref_verify(p, s, m), i
        other = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        assert not check.verify(_raw(other), sig, msg)
    assert valid == 300


def test_s_at_or_above_l_is_rejected(check: Check) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    pub, msg = _raw(key), b"malleable"
    sig = key.sign(msg)
    s = int.from_bytes(sig[32:], "little")
    assert check.verify(pub, sig, msg)
    # S + L is the same scalar mod L: the group equation still holds, only the S < L rule refuses it
    for bad in (s + L, L, 2**256 - 1):
        assert not check.verify(pub, sig[:32] + bad.to_bytes(32, "little"), msg), hex(bad)


def test_bad_point_encodings_are_rejected(check: Check) -> None:
    b = _base()
    assert _enc(b) == bytes([0x58]) + bytes([0x66]) * 31
    msg, s = b"identity key", 12345
    r = _mul(s, b)
    # with A the identity, [k]A vanishes and [S]B == R: a valid signature for the canonical encoding
    ident = (1).to_bytes(32, "little")
    sig = _enc(r) + s.to_bytes(32, "little")
    assert check.verify(ident, sig, msg)
    non_canonical = (P + 1).to_bytes(32, "little")  # y = p + 1, the same y mod p
    assert not check.verify(non_canonical, sig, msg)
    neg_zero = (1 | 1 << 255).to_bytes(32, "little")  # x = 0 with the sign bit set
    assert not check.verify(neg_zero, sig, msg)
    # R the same: A and R the identity with S = 0 verify; R's y written as p + 1 does not
    assert check.verify(ident, ident + bytes(32), msg)
    assert not check.verify(ident, non_canonical + bytes(32), msg)
    assert not check.verify(ident, neg_zero + bytes(32), msg)
    # a y off the curve (no square root for x^2 = (y^2 - 1) / (d y^2 + 1)) as A and as R
    y = 2
    while pow((y * y - 1) * pow(D * y * y + 1, -1, P) % P, (P - 1) // 2, P) == 1:
        y += 1
    off = y.to_bytes(32, "little")
    assert not check.verify(off, sig, msg)
    assert not check.verify(ident, off + sig[32:], msg)
