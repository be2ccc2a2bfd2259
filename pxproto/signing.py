"""Service package signatures: Ed25519, the operator signs, kernels only verify.

The orchestrator (or the operator) holds a *signing key* file; every kernel holds
only *verification keys* (``pxkernel --verify-key FILE``), so a compromised kernel
-- which holds the cluster MAC key -- still cannot mint a package the others run.

Both files are text, one key a line, ``KEY_ID HEX``, ``#`` starts a comment (the
format of :mod:`pxproto.dime.keys`): a signing key file holds 32-byte Ed25519
private keys (mode 0600, checked like ssh), the highest key id signs; a
verification key file holds 32-byte Ed25519 public keys, any of which is accepted
(rotation: add the new public key to every kernel's file, then sign with it; drop
the old one when no package signed with it is left).

``PACKAGE_SIG`` = the signing key id (2 bytes, big-endian) + the Ed25519 signature
of the archive bytes (64 bytes): 66 bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from pxproto.dime.keys import KeyFileError, parse_keyfile, read_private, read_small, write_private

SIG_LEN = 2 + 64


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key and its id: what signs packages (the operator's, never a kernel's)."""

    key_id: int
    private: Ed25519PrivateKey

    def sign(self, archive: bytes) -> bytes:
        """PACKAGE_SIG of ``archive``."""
        return self.key_id.to_bytes(2, "big") + self.private.sign(archive)

    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def seed(self) -> bytes:
        return self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@dataclass(frozen=True)
class VerifyKeys:
    """The Ed25519 public keys a kernel accepts package signatures from, by key id."""

    keys: dict[int, Ed25519PublicKey]

    @classmethod
    def from_raw(cls, raw: dict[int, bytes]) -> VerifyKeys:
        return cls({kid: Ed25519PublicKey.from_public_bytes(pk) for kid, pk in raw.items()})

    def raw(self) -> dict[int, bytes]:
        return {kid: pk.public_bytes(Encoding.Raw, PublicFormat.Raw) for kid, pk in self.keys.items()}

    def verify(self, archive: bytes, sig: bytes) -> bool:
        if len(sig) != SIG_LEN:
            return False
        pk = self.keys.get(int.from_bytes(sig[:2], "big"))
        if pk is None:
            return False
        try:
            pk.verify(sig[2:], archive)
        except InvalidSignature:
            return False
        return True


def fresh_signing_key(key_id: int = 1) -> SigningKey:
    return SigningKey(key_id, Ed25519PrivateKey.generate())


def _exact32(keys: dict[int, bytes], where: str) -> dict[int, bytes]:
    for kid, k in keys.items():
        if len(k) != 32:
            raise KeyFileError(f"{where}: key {kid} has {len(k)} bytes, an Ed25519 key has 32")
    return keys


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """The highest key id of a signing key file (refused if group or others can read it)."""
    try:
        text = read_private(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    keys = _exact32(parse_keyfile(text, str(path)), str(path))
    kid = max(keys)
    return SigningKey(kid, Ed25519PrivateKey.from_private_bytes(keys[kid]))


def load_verify_keys(path: str | os.PathLike[str]) -> VerifyKeys:
    """A verification key file (public keys: others may read it, but not write it)."""

    def check(st: os.stat_result) -> None:
        if st.st_mode & 0o022 or st.st_uid not in (os.getuid(), 0):
            raise KeyFileError(f"{path}: writable by group or others, or not ours: refused")

    try:
        text = read_small(path, check).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    return VerifyKeys.from_raw(_exact32(parse_keyfile(text, str(path)), str(path)))


def write_signing_key(path: str | os.PathLike[str], key: SigningKey) -> None:
    write_private(path, f"{key.key_id} {key.seed().hex()}\n".encode())


def write_verify_keys(path: str | os.PathLike[str], keys: list[SigningKey] | VerifyKeys) -> None:
    raw = keys.raw() if isinstance(keys, VerifyKeys) else {k.key_id: k.public_bytes() for k in keys}
    write_private(path, "".join(f"{kid} {pk.hex()}\n" for kid, pk in sorted(raw.items())).encode())
