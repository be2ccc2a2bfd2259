"""The authentication trailer's tag: HMAC-SHA256 over the frame, truncated to 16 bytes.

The tag covers every byte from the Ethernet destination to the trailer's
counter (padding excluded), so the key id and the replay counter are
authenticated too.  Replay windows are the endpoints' business.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

from pxproto.wire import spec
from pxproto.wire.codec import encode
from pxproto.wire.frame import Auth, Frame


def _covered(raw: bytes, padding: int) -> bytes:
    end = len(raw) - padding
    return raw[: end - spec.TAG_LEN]


def tag(key: bytes, raw: bytes, padding: int = 0) -> bytes:
    """The 16-byte tag for an encoded frame whose trailer is in place."""
    return hmac.new(key, _covered(raw, padding), hashlib.sha256).digest()[: spec.TAG_LEN]


def sign(frame: Frame, key_id: int, counter: int, key: bytes) -> bytes:
    """Encode ``frame`` with a trailer for (key_id, counter) and a valid tag."""
    unsigned = replace(frame, auth=Auth(key_id, counter))
    raw = bytearray(encode(unsigned))
    end = len(raw) - frame.padding
    raw[end - spec.TAG_LEN : end] = tag(key, bytes(raw), frame.padding)
    return bytes(raw)


def verify(frame: Frame, raw: bytes, key: bytes) -> bool:
    """Whether the decoded ``frame`` (from ``raw``) carries a valid tag for ``key``."""
    if frame.auth is None:
        return False
    return hmac.compare_digest(frame.auth.tag, tag(key, raw, frame.padding))
