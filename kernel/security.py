"""Security of a DIME: the cluster key ring, the replay window, access lists.

Key file (``pxkernel --key FILE``), text, one key a line, ``#`` starts a comment::

    # key_id  key (hex, at least 16 bytes)
    1  00112233445566778899aabbccddeeff
    2  ffeeddccbbaa99887766554433221100

A line holding only hex is key id 1.  The *active* key (the one a kernel signs
with, and the one package signatures use) is the highest key id in the file;
KEY_INSTALL adds keys at run time and KEY_ROTATE makes one active.

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
from dataclasses import dataclass, field
from pathlib import Path

from pxproto.wire import spec
from pxproto.wire.codes import ACL_ENTRY_SIZE, Command

MIN_KEY = 16


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


def load_keyfile(path: str | os.PathLike[str]) -> dict[int, bytes]:
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    return parse_keyfile(text, str(path))


class ReplayWindow:
    """Sliding anti-replay window over 64-bit counters (a bitmap of the last ``size``)."""

    __slots__ = ("highest", "mask", "size")

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.highest = 0
        self.mask = 0  # bit i set: counter highest - i seen

    def check(self, counter: int) -> str | None:
        """None if ``counter`` is fresh, else why not ('replayed' or 'late'); changes nothing."""
        if counter > self.highest:
            return None
        back = self.highest - counter
        if back >= self.size:
            return "late"
        return "replayed" if self.mask >> back & 1 else None

    def accept(self, counter: int) -> None:
        """Record ``counter`` (call only after check() passed and the tag verified)."""
        if counter > self.highest:
            shift = counter - self.highest
            self.mask = ((self.mask << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.highest = counter
        else:
            self.mask |= 1 << (self.highest - counter)


@dataclass
class KeyRing:
    """Installed keys, the active one, the per-sender replay windows and our own send counter."""

    keys: dict[int, bytes] = field(default_factory=dict)
    active: int = 0
    epoch: int = 0
    sent: int = 0
    windows: dict[tuple[bytes, int, int], ReplayWindow] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.keys and not self.active:
            self.active = max(self.keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def active_key(self) -> bytes | None:
        return self.keys.get(self.active)

    def next_counter(self) -> int:
        self.sent += 1
        return (self.epoch & 0xFFFFFFFF) << 32 | (self.sent & 0xFFFFFFFF)

    def sign_raw(self, raw: bytes) -> bytes:
        """Add an AUTH trailer to an encoded frame without one (header flag and trailer appended)."""
        return add_trailer(raw, self.active, self.next_counter(), self.keys[self.active])

    def check(self, raw: bytes, src_mac: bytes, src_dime: int, key_id: int, counter: int, padding: int) -> str | None:
        """Verify a received frame's trailer; None if good (and the window moves), else the reason."""
        key = self.keys.get(key_id)
        if key is None:
            return "unknown_key"
        win_key = (src_mac, src_dime, key_id)
        win = self.windows.get(win_key)
        if win is not None:
            why = win.check(counter)
            if why is not None:
                return why
        end = len(raw) - padding
        tag = hmac.new(key, raw[: end - spec.TAG_LEN], hashlib.sha256).digest()[: spec.TAG_LEN]
        if not hmac.compare_digest(tag, raw[end - spec.TAG_LEN : end]):
            return "bad_tag"
        if win is None:
            win = self.windows[win_key] = ReplayWindow()
        win.accept(counter)
        return None


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
