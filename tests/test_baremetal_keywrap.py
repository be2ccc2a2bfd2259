"""The kernel's KEY_INSTALL unwrap (kernel/keywrap.c: AES-256, HKDF-SHA256, RFC 5649) on the host.

tests/c/keywrap_check.c is compiled with the host gcc and driven over a pipe; its answers are checked
against the `cryptography` package (AES-ECB, HKDF, aes_key_wrap_with_padding) and against
pxproto.dime.keys.wrap_key, the Linux DIME's wrapping, so a key wrapped by the orchestrator unwraps
in the image to the same bytes, and a tampered, relabelled or mis-keyed one does not.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap, aes_key_wrap_with_padding

from pxproto.dime.keys import _kek, wrap_key
from tests._hostcheck import HostDriver

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernel"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc to build tests/c/keywrap_check.c")


class Check(HostDriver):
    """tests/c/keywrap_check.c over kernel/keywrap.c and kernel/sha256.c."""

    def unwrap(self, kek: bytes, wrapped: bytes) -> bytes | None:
        got = self.ask(f"unwrap {kek.hex()} {wrapped.hex() or '-'}")
        return None if got == "-" else bytes.fromhex(got)


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Check]:
    with Check(tmp_path_factory.mktemp("keywrap"), "keywrap_check", "keywrap.c", "sha256.c") as c:
        yield c


def test_aes256_inverse_cipher_matches_fips197_and_cryptography(check: Check) -> None:
    # FIPS 197 appendix C.3: AES-256, key 00..1f, plaintext 00112233..eeff
    key = bytes(range(32))
    assert check.ask(f"aes {key.hex()} 8ea2b7ca516745bfeafc49904b496089") == "00112233445566778899aabbccddeeff"
    rng = random.Random(3)
    for _ in range(100):
        key, block = rng.randbytes(32), rng.randbytes(16)
        dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
        assert check.ask(f"aes {key.hex()} {block.hex()}") == (dec.update(block) + dec.finalize()).hex()


def test_kek_is_the_linux_dimes_hkdf(check: Check) -> None:
    rng = random.Random(4)
    for n, new_id in [(16, 1), (32, 2), (33, 0xFFFF), (64, 300), (100, 7)]:
        key = rng.randbytes(n)
        assert check.ask(f"kek {key.hex()} {new_id}") == _kek(key, new_id).hex()


def test_rfc5649_unwrap_of_every_length(check: Check) -> None:
    rng = random.Random(5)
    for n in list(range(1, 65)):
        kek, key = rng.randbytes(32), rng.randbytes(n)
        wrapped = aes_key_wrap_with_padding(kek, key)
        assert check.unwrap(kek, wrapped) == key, n
        bad = bytearray(wrapped)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        assert check.unwrap(kek, bytes(bad)) is None, n
        assert check.unwrap(rng.randbytes(32), wrapped) is None, n


def test_rfc5649_section6_vectors_under_a_256_bit_kek_and_malformed_lengths(check: Check) -> None:
    kek = bytes.fromhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8") + bytes(8)  # RFC 5649 KEK, padded to 256
    for key in (bytes.fromhex("c37b7e6492584340bed12207808941155068f738"), bytes.fromhex("466f7250617369")):
        assert check.unwrap(kek, aes_key_wrap_with_padding(kek, key)) == key
    key = bytes(range(16))
    wrapped = aes_key_wrap_with_padding(kek, key)
    for bad in (b"", wrapped[:8], wrapped[:-1], wrapped + b"\0", wrapped[:-8]):
        assert check.unwrap(kek, bad) is None, len(bad)
    # RFC 3394 without padding has IV A6A6A6A6A6A6A6A6: not a valid RFC 5649 wrapping
    assert check.unwrap(kek, aes_key_wrap(kek, key)) is None
    # longer than the ring holds (64 bytes): refused, not truncated
    assert check.unwrap(kek, aes_key_wrap_with_padding(kek, bytes(65))) is None


def test_a_key_wrapped_by_pxproto_unwraps_and_a_relabelled_one_does_not(check: Check) -> None:
    rng = random.Random(6)
    for _ in range(20):
        cluster, new = rng.randbytes(32), rng.randbytes(rng.choice([16, 24, 32, 48, 64]))
        new_id = rng.randrange(1, 0x10000)
        value = wrap_key(1, cluster, new_id, new)
        assert value[:2] == b"\0\1"
        kek = bytes.fromhex(check.ask(f"kek {cluster.hex()} {new_id}"))
        assert check.unwrap(kek, value[2:]) == new
        other = bytes.fromhex(check.ask(f"kek {cluster.hex()} {new_id % 0xFFFF + 1}"))
        assert check.unwrap(other, value[2:]) is None
