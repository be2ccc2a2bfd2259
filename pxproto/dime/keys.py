"""Security of a DIME: the cluster key ring, the replay window, access lists.

Key file (``pxkernel --key FILE``), text, one key a line, ``#`` starts a comment::

    # key_id  key (hex, at least 16 bytes)
    1  00112233445566778899aabbccddeeff
    2  ffeeddccbbaa99887766554433221100

A line holding only hex is key id 1.  The *active* key (the one a kernel signs
with, and the one package signatures use) is the highest key id in the file;
KEY_INSTALL adds keys at run time and KEY_ROTATE makes one active; the key
it replaces is accepted for ``ROTATION_GRACE`` seconds more, then retired
for good (:class:`pxproto.dime.replay.KeyStore`).

Every frame a kernel sends carries an AUTH trailer when a key is configured.
Its counter is ``epoch << 32 | n`` (n counts up from 1 in this incarnation),
so a reborn DIME never reuses a counter its peers' windows have seen.

When a key is configured, every received signaling frame must carry a trailer
whose key id is installed, whose tag verifies, and whose counter passes the
sender's :class:`ReplayWindow` (MACsec style: above the highest seen is new;
within ``size`` below it is new if not seen; older is late and dropped).  The
window moves only after the tag verified, so a forged frame changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pxproto.dime import replay
from pxproto.dime.replay import Rejection
from pxproto.errors import ProtocolError
from pxproto.files import FileRefused, read_bounded
from pxproto.wire import aead, auth, spec
from pxproto.wire.codes import ACL_ENTRY_SIZE, Command, FrameClass
from pxproto.wire.frame import Frame

MIN_KEY = replay.KEY_MIN_BYTES
WINDOW = 1024
"""Counters a replay window remembers below the highest seen, per (sender MAC, DIME, key id)."""
ROTATION_GRACE = 1.0
KEY_FILE_MAX = 1 << 16
"""Bytes a key file may hold; a longer one is refused (cut, it would hold a shorter key)."""
"""Seconds a key rotated out by KEY_ROTATE is still accepted."""


class KeyFileError(ValueError):
    """A key file is malformed; the message names the file and line."""


def parse_keyfile(text: str, where: str = "key file") -> dict[int, bytes]:
    keys: dict[int, bytes] = {}
    for no, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) == 1:
            kid_text, hex_text = "1", parts[0]
        elif len(parts) == 2:
            kid_text, hex_text = parts
        else:
            raise KeyFileError(f"{where} line {no}: expected 'KEY_ID HEXKEY'")
        try:
            kid = int(kid_text, 0)
        except ValueError:
            raise KeyFileError(f"{where} line {no}: key id {kid_text!r} is not a number") from None
        if not 1 <= kid <= 0xFFFF:
            raise KeyFileError(f"{where} line {no}: key id {kid} is not in 1..65535")
        try:
            key = bytes.fromhex(hex_text)
        except ValueError:
            raise KeyFileError(f"{where} line {no}: key is not hex") from None
        if len(key) < MIN_KEY:
            raise KeyFileError(f"{where} line {no}: key of {len(key)} bytes, at least {MIN_KEY} needed")
        if kid in keys:
            raise KeyFileError(f"{where} line {no}: key id {kid} appears twice")
        keys[kid] = key
    if not keys:
        raise KeyFileError(f"{where}: no key")
    return keys


def check_private(path: str | os.PathLike[str], st: os.stat_result) -> None:
    """Refuse a secret file others may read or that someone else owns, as ssh does."""
    if st.st_uid not in (os.getuid(), 0):
        raise KeyFileError(f"{path}: owned by uid {st.st_uid}, not by this user: refused")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: mode {st.st_mode & 0o777:04o} lets group or others at it: refused (chmod 600 {path})"
        )


def read_small(path: str | os.PathLike[str], check: Callable[[os.stat_result], None] | None = None) -> bytes:
    """The bytes of a key file, at most :data:`KEY_FILE_MAX`; ``check`` sees the opened file's stat first.
    Anything but a regular file is refused before it is opened, and a longer file is refused, never cut
    (:func:`pxproto.files.read_bounded`)."""
    try:
        return read_bounded(path, KEY_FILE_MAX, check)
    except FileRefused as exc:
        tail = ": not a key file" if exc.kind == "large" else ""
        raise KeyFileError(f"{path}: {exc.reason}{tail}") from None


def read_private(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a secret file, after :func:`check_private` on the opened file (no symlink race)."""
    return read_small(path, lambda st: check_private(path, st))


def load_keyfile(path: str | os.PathLike[str]) -> dict[int, bytes]:
    """Parse a key file; one readable by group or others, or owned by someone else, is refused."""
    try:
        text = read_private(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    return parse_keyfile(text, str(path))


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Create a new secret file, mode 0600 from the start (never an existing file or a symlink)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_keyfile(path: str | os.PathLike[str], keys: dict[int, bytes]) -> None:
    """Write a cluster key file, 0600."""
    write_private(path, "".join(f"{kid} {key.hex()}\n" for kid, key in sorted(keys.items())).encode())


def fresh_keys() -> dict[int, bytes]:
    """A new random cluster key (key id 1, 32 bytes): what the demo and the test bed use per run."""
    return {1: os.urandom(32)}


REASONS = {
    Rejection.REPLAYED: "replayed",
    Rejection.TOO_OLD: "late",
    Rejection.UNKNOWN_KEY: "unknown_key",
    Rejection.RETIRED_KEY: "retired_key",
    Rejection.BAD_TAG: "bad_tag",
}
"""The kernel's words (counter and log reasons) for :class:`pxproto.dime.replay.Rejection`."""


class ReplayWindow(replay.ReplayWindow):
    """:class:`pxproto.dime.replay.ReplayWindow` (1024 counters by default) answering in the kernel's words."""

    __slots__ = ()

    def __init__(self, size: int = WINDOW) -> None:
        super().__init__(size)

    def check(self, counter: int) -> str | None:  # type: ignore[override]
        """None if ``counter`` is fresh, else why not ('replayed' or 'late'); changes nothing."""
        why = super().check(counter)
        return None if why is None else REASONS[why]


class KeyRing:
    """The kernel's view of :mod:`pxproto.dime.replay`: its key store, per-sender windows, our send counter.

    The key store and the replay windows are pxproto's (one implementation);
    this adds what the kernel needs on top: signing an already encoded frame
    (no decode), counters ``epoch << 32 | n`` so a reborn DIME never reuses
    one, and checking a frame whose trailer the caller has decoded already.
    """

    def __init__(
        self,
        keys: dict[int, bytes] | None = None,
        epoch: int = 0,
        grace: float = ROTATION_GRACE,
        encrypt: Iterable[int] = (),
    ) -> None:
        self.store = replay.KeyStore()
        for kid in sorted(keys or {}):
            self.store.install(kid, keys[kid])  # type: ignore[index]
        if keys:
            self.store.current = max(keys)  # the highest key id in the file signs
        self.epoch = epoch
        self.sent = 0
        self.grace = grace
        self.windows: dict[tuple[bytes, int, int], ReplayWindow] = {}
        self.encrypt = frozenset(FrameClass(c) for c in encrypt)
        """The frame classes sent encrypted (the AEAD mode); the others are signed (DATA: sent as is)."""

    @property
    def enabled(self) -> bool:
        return self.store.current is not None

    @property
    def active(self) -> int:
        """The key id frames are signed with (0: none)."""
        return self.store.current or 0

    def active_key(self) -> bytes | None:
        return self.store.signing_key()[1] if self.enabled else None

    def has(self, key_id: int, now: float) -> bool:
        return not isinstance(self.store.lookup(key_id, now), Rejection)

    def install(self, key_id: int, key: bytes) -> None:
        """KEY_INSTALL: accepted at once; signed with only if it is the first key (else after a rotation)."""
        self.store.install(key_id, key)

    def rotate(self, key_id: int, now: float) -> None:
        """KEY_ROTATE: sign with ``key_id``; the old key stays acceptable for ``grace`` seconds, then is retired."""
        self.store.rotate(key_id, now, self.grace)

    def next_counter(self) -> int:
        self.sent += 1
        return (self.epoch & 0xFFFFFFFF) << 32 | (self.sent & 0xFFFFFFFF)

    def sign_raw(self, raw: bytes) -> bytes:
        """Add an AUTH trailer to an encoded frame without one (header flag and trailer appended)."""
        kid, key = self.store.signing_key()
        return add_trailer(raw, kid, self.next_counter(), key)

    def seal_raw(self, raw: bytes) -> bytes:
        """Encrypt an encoded frame without a trailer (the AEAD mode, :mod:`pxproto.wire.aead`) under the
        active key, with our next counter as its nonce."""
        kid, key = self.store.signing_key()
        return aead.seal_raw(raw, kid, self.next_counter(), key)

    def protect(self, raw: bytes, cls: FrameClass) -> bytes:
        """An encoded frame as it goes on the wire: sealed when its class is encrypted, else signed (DATA
        unsigned: a signed full fragment would pass the MTU); as is without a key."""
        if not self.enabled:
            return raw
        if cls in self.encrypt:
            return self.seal_raw(raw)
        return raw if cls is FrameClass.DATA else self.sign_raw(raw)

    def open_frame(
        self, frame: Frame, raw: bytes, now: float, decode: Callable[[bytes], Frame]
    ) -> tuple[Frame, bytes] | str:
        """A received encrypted frame (``frame`` decoded from ``raw``, its body Sealed) opened under the ring:
        (the clear frame, its bytes), its counter taken by the window; else why not (a reason of
        :data:`REASONS`, ``no_key`` without a cluster key, ``malformed`` when the clear body breaks a rule)."""
        a = frame.auth
        if not self.enabled or a is None:
            return "no_key"
        clear, why = self.open(raw, frame.src_mac, frame.src_dime, a.key_id, a.counter, now)
        if clear is None:
            return why or "bad_tag"
        try:
            return decode(clear), clear
        except ProtocolError:
            return "malformed"

    def _key_and_window(
        self, src_mac: bytes, src_dime: int, key_id: int, counter: int, now: float
    ) -> tuple[bytes, ReplayWindow | None] | str:
        key = self.store.lookup(key_id, now if now else float("-inf"))
        if isinstance(key, Rejection):
            return REASONS[key]
        win = self.windows.get((src_mac, src_dime, key_id))
        if win is not None:
            why = win.check(counter)
            if why is not None:
                return why
        return key, win

    def _accept(self, win: ReplayWindow | None, src_mac: bytes, src_dime: int, key_id: int, counter: int) -> None:
        if win is None:
            win = self.windows[(src_mac, src_dime, key_id)] = ReplayWindow()
        win.accept(counter)

    def check(
        self, raw: bytes, src_mac: bytes, src_dime: int, key_id: int, counter: int, padding: int, now: float = 0.0
    ) -> str | None:
        """Verify a received frame's trailer; None if good (and the window moves), else the reason.

        ``now`` (monotonic seconds) retires a rotated-out key once its grace is over; 0 skips that check.
        """
        got = self._key_and_window(src_mac, src_dime, key_id, counter, now)
        if isinstance(got, str):
            return got
        key, win = got
        end = len(raw) - padding
        if not hmac.compare_digest(auth.tag(key, raw, padding), raw[end - spec.TAG_LEN : end]):
            return "bad_tag"
        self._accept(win, src_mac, src_dime, key_id, counter)
        return None

    def open(
        self, raw: bytes, src_mac: bytes, src_dime: int, key_id: int, counter: int, now: float = 0.0
    ) -> tuple[bytes | None, str | None]:
        """Open a received encrypted frame (decoded already): (its clear bytes, None) and the window moves,
        or (None, the reason) as :meth:`check` gives it (a tag that fails is ``bad_tag``)."""
        got = self._key_and_window(src_mac, src_dime, key_id, counter, now)
        if isinstance(got, str):
            return None, got
        key, win = got
        clear = aead.open_raw(raw, key)
        if clear is None:
            return None, "bad_tag"
        self._accept(win, src_mac, src_dime, key_id, counter)
        return clear, None


FLAGS_OFFSET = spec.HEADER_OFFSET + 1


def add_trailer(raw: bytes, key_id: int, counter: int, key: bytes) -> bytes:
    """Sign an encoded frame that has no trailer: set the AUTH flag, drop padding, append key id, counter, tag."""
    length = int.from_bytes(raw[spec.HEADER_OFFSET + 2 : spec.HEADER_OFFSET + 4], "big")
    end = spec.BODY_OFFSET + length
    buf = bytearray(raw[:end])
    buf[FLAGS_OFFSET] |= 0x02
    buf += key_id.to_bytes(2, "big") + counter.to_bytes(8, "big")
    buf += hmac.new(key, bytes(buf), hashlib.sha256).digest()[: spec.TAG_LEN]
    if len(buf) < spec.MIN_ETHERNET_FRAME:  # only when the whole frame is exactly 60 bytes
        buf += bytes(spec.MIN_ETHERNET_FRAME - len(buf))
    return bytes(buf)


# --------------------------------------------------------------------- KEY_INSTALL: keys never travel in clear

WRAP_INFO = b"pxproto KEY_INSTALL wrap v1"


def _kek(wrapping_key: bytes, new_id: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=WRAP_INFO + new_id.to_bytes(2, "big"))
    return hkdf.derive(wrapping_key)


def wrap_key(wrapping_id: int, wrapping_key: bytes, new_id: int, new_key: bytes) -> bytes:
    """The WRAPPED_KEY TLV of a KEY_INSTALL: the wrapping key's id (2 bytes), then ``new_key`` under
    AES key wrap with padding (RFC 5649), its KEK derived by HKDF-SHA256 from an installed cluster key
    and bound to ``new_id``. A listener without that key learns nothing of the new one; a tampered or
    re-labelled value fails to unwrap."""
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    return wrapping_id.to_bytes(2, "big") + aes_key_wrap_with_padding(_kek(wrapping_key, new_id), new_key)


def unwrap_key(ring: KeyRing, new_id: int, value: bytes, now: float) -> bytes:
    """The key a WRAPPED_KEY carries, unwrapped under the ring's (unretired) key it names; ValueError if not."""
    from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

    if len(value) < 2 + 24:
        raise ValueError("WRAPPED_KEY is too short")
    kid = int.from_bytes(value[:2], "big")
    key = ring.store.lookup(kid, now if now else float("-inf"))
    if isinstance(key, Rejection):
        raise ValueError(f"WRAPPED_KEY is wrapped under key {kid}, which this DIME does not hold")
    try:
        return aes_key_unwrap_with_padding(_kek(key, new_id), value[2:])
    except InvalidUnwrap:
        raise ValueError(f"WRAPPED_KEY does not unwrap under key {kid}") from None


# --------------------------------------------------------------------- access lists


@dataclass
class AccessList:
    """Per-DIME access list: which peer MACs may send commands of which FCAPS areas.

    Empty means everyone may do everything.  An entry's mask has bit ``area`` set
    for each allowed FCAPS area (F=bit 0 ... S=bit 4).
    """

    entries: dict[bytes, int] = field(default_factory=dict)

    def allows(self, mac: bytes, cmd: Command) -> bool:
        if not self.entries:
            return True
        return bool(self.entries.get(mac, 0) >> int(cmd.fcaps) & 1)

    def set_raw(self, raw: bytes) -> None:
        self.entries = {
            raw[i : i + 6]: raw[i + 6] for i in range(0, len(raw) - len(raw) % ACL_ENTRY_SIZE, ACL_ENTRY_SIZE)
        }

    def raw(self) -> bytes:
        return b"".join(mac + bytes([mask, 0]) for mac, mask in sorted(self.entries.items()))
