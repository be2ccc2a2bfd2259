"""Authentication of frames: keys with ids and rotation, signing, and per-sender replay windows.

Every authenticated frame carries a trailer (key id, the sender's counter, a
16-byte HMAC tag, :mod:`pxproto.wire.auth`).  A :class:`Verifier` accepts a
frame only if it decodes, is signed, names a key in the :class:`KeyStore`, has
a valid tag, and its counter is new in that sender's sliding window for that
key (MACsec-style: a counter below the window is late and dropped, one inside
it is accepted once, so reordering within the window is fine).  The window
moves only after the tag checks, so a forgery cannot push it forward.  A
rejected frame changes nothing but a counter of its reason.

Rotation: :meth:`KeyStore.rotate` makes the new key the one to sign with and
keeps the old one acceptable for a grace period; once the rotation completes
(grace over, or :meth:`KeyStore.complete_rotation`), the old key is refused,
whether or not the driver has called ``handle_timer`` yet.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum

from pxproto.errors import ProtocolError
from pxproto.wire import auth
from pxproto.wire.codec import decode
from pxproto.wire.frame import Frame

KEY_MIN_BYTES = 16
COUNTER_MAX = (1 << 64) - 1


class Rejection(Enum):
    """Why a frame was refused."""

    MALFORMED = "malformed"
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown key"
    RETIRED_KEY = "retired key"
    BAD_TAG = "bad tag"
    REPLAYED = "replayed"
    TOO_OLD = "too old"


class ReplayWindow:
    """Which counters of one sender (under one key) have been accepted: the highest, and a bitmap below it."""

    __slots__ = ("_seen", "highest", "size")

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError("a replay window holds at least one counter")
        self.size = size
        self.highest = 0
        self._seen = 0  # bit i: counter highest - i was accepted

    def check(self, counter: int) -> Rejection | None:
        """Whether ``counter`` would be accepted (without accepting it)."""
        if counter > self.highest:
            return None
        behind = self.highest - counter
        if behind >= self.size:
            return Rejection.TOO_OLD
        return Rejection.REPLAYED if self._seen >> behind & 1 else None

    def accept(self, counter: int) -> None:
        """Record ``counter`` as seen (call only after :meth:`check` passed and the tag verified)."""
        if counter > self.highest:
            shift = counter - self.highest
            self._seen = ((self._seen << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.highest = counter
        else:
            self._seen |= 1 << (self.highest - counter)


@dataclass(slots=True)
class _Rotation:
    old: int
    retire_at: float


class KeyStore:
    """The cluster keys by id: one to sign with, the ones to accept, rotation between them."""

    def __init__(self) -> None:
        self._keys: dict[int, bytes] = {}
        self.retired: set[int] = set()
        self.current: int | None = None
        """The key id new frames are signed with."""
        self._rotation: _Rotation | None = None

    def install(self, key_id: int, key: bytes) -> None:
        """Add a key (KEY_INSTALL); it is accepted at once but not signed with until activated or rotated to."""
        if not 1 <= key_id <= 0xFFFF:
            raise ValueError(f"key id {key_id} is not in 1..65535 (0 is reserved)")
        if len(key) < KEY_MIN_BYTES:
            raise ValueError(f"a key needs at least {KEY_MIN_BYTES} bytes, this one has {len(key)}")
        if key_id in self.retired:
            raise ValueError(f"key id {key_id} was retired and cannot come back")
        self._keys[key_id] = bytes(key)
        if self.current is None:
            self.current = key_id

    def rotate(self, new_key_id: int, now: float, grace: float = 1.0) -> None:
        """Sign with ``new_key_id`` from now on; accept the old key for ``grace`` seconds more (KEY_ROTATE)."""
        if new_key_id not in self._keys:
            raise KeyError(f"key id {new_key_id} is not installed")
        if self._rotation is not None:
            if self._rotation.old == new_key_id:
                self._rotation = None  # back to the key still in its grace period: it stays, not retired (F2)
            else:
                self.complete_rotation()
        if self.current is not None and self.current != new_key_id:
            self._rotation = _Rotation(self.current, now + grace)
        self.current = new_key_id

    def complete_rotation(self) -> None:
        """Retire the old key now: from here on it is refused."""
        if self._rotation is not None:
            old = self._rotation.old
            self._keys.pop(old, None)
            self.retired.add(old)
            self._rotation = None

    def signing_key(self) -> tuple[int, bytes]:
        if self.current is None:
            raise LookupError("no key installed to sign with")
        return self.current, self._keys[self.current]

    def lookup(self, key_id: int, now: float) -> bytes | Rejection:
        """The key to verify a frame signed under ``key_id`` at ``now``, or why there is none."""
        if self._rotation is not None and now >= self._rotation.retire_at:
            self.complete_rotation()
        key = self._keys.get(key_id)
        if key is not None:
            return key
        return Rejection.RETIRED_KEY if key_id in self.retired else Rejection.UNKNOWN_KEY

    def get_timer(self) -> float | None:
        return self._rotation.retire_at if self._rotation else None

    def handle_timer(self, now: float) -> None:
        if self._rotation is not None and now >= self._rotation.retire_at:
            self.complete_rotation()


class Signer:
    """Signs outgoing frames under the current key with a counter that never repeats for that key.

    Start the counter above anything sent before under the same key: a
    restarted sender passes ``counter_start=epoch << 32``, say.
    """

    def __init__(self, keys: KeyStore, counter_start: int = 1) -> None:
        if not 1 <= counter_start <= COUNTER_MAX:
            raise ValueError(f"counter_start {counter_start} is not in 1..2**64-1")
        self.keys = keys
        self.counter_start = counter_start
        self._next: dict[int, int] = {}

    def sign(self, frame: Frame) -> bytes:
        """The frame's bytes with a trailer under the current key and the next counter."""
        key_id, key = self.keys.signing_key()
        counter = self._next.get(key_id, self.counter_start)
        if counter > COUNTER_MAX:
            raise OverflowError(f"the counter for key {key_id} is exhausted: rotate the key")
        self._next[key_id] = counter + 1
        return auth.sign(frame, key_id, counter, key)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the verifier made of one frame."""

    frame: Frame | None
    """The decoded frame if it was accepted (or got as far as decoding)."""
    rejection: Rejection | None = None
    """Why it was refused, or None if accepted."""
    detail: str = ""
    """Words for a log line."""

    @property
    def accepted(self) -> bool:
        return self.rejection is None


class Verifier:
    """Checks incoming frames' trailers, tags and counters; counts every rejection by reason."""

    def __init__(self, keys: KeyStore, window: int = 64) -> None:
        self.keys = keys
        self.window = window
        self._windows: dict[tuple[bytes, int, int], ReplayWindow] = {}
        self.rejected: Counter[Rejection] = Counter()
        """Frames refused, by reason."""
        self.accepted = 0

    def _reject(self, frame: Frame | None, why: Rejection, detail: str) -> Verdict:
        self.rejected[why] += 1
        return Verdict(frame, why, detail)

    def verify(self, raw: bytes, now: float) -> Verdict:
        """Accept or refuse one frame off the wire; only an accepted frame moves its sender's window."""
        try:
            frame = decode(raw)
        except ProtocolError as exc:
            return self._reject(None, Rejection.MALFORMED, str(exc))
        trailer = frame.auth
        if trailer is None:
            return self._reject(frame, Rejection.UNSIGNED, "no authentication trailer")
        key = self.keys.lookup(trailer.key_id, now)
        if isinstance(key, Rejection):
            return self._reject(frame, key, f"key id {trailer.key_id}")
        sender = (frame.src_mac, frame.src_dime, trailer.key_id)
        win = self._windows.get(sender)
        if win is not None and (why := win.check(trailer.counter)) is not None:
            return self._reject(frame, why, f"counter {trailer.counter}, highest seen {win.highest}")
        if not auth.verify(frame, raw, key):
            return self._reject(frame, Rejection.BAD_TAG, f"tag does not match under key {trailer.key_id}")
        if win is None:
            win = self._windows[sender] = ReplayWindow(self.window)
        win.accept(trailer.counter)
        self.accepted += 1
        return Verdict(frame)

    def forget_retired(self) -> None:
        """Free the windows of retired keys (their frames are refused before any window is read)."""
        for k in [k for k in self._windows if k[2] in self.keys.retired]:
            del self._windows[k]
