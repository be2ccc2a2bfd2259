"""The AEAD frame mode: a frame's body encrypted and authenticated with AES-256-GCM.

A sealed frame keeps its Ethernet and Parallax headers in clear (a switch forwards it, a
sniffer sees who talks to whom) and sets the header flags ENCRYPTED and AUTH::

    | eth (14) | header (20, ENCRYPTED|AUTH) | ciphertext (length) | key id | counter | GCM tag |

- the ciphertext is exactly as long as the clear body (GCM is a stream mode), so ``length``,
  fragment sizes and padding are those of the clear frame;
- the trailer is the authentication trailer (26 bytes); its tag is the GCM tag;
- the key is derived per sender and class: HKDF-SHA256 of the cluster key ``key_id`` names,
  info ``INFO + src MAC + src DIME + class``; the nonce is 4 zero bytes and the sender's
  64-bit counter.  A sender never reuses a counter (``epoch << 32 | n``), and no two senders
  or classes share a derived key, so a nonce never repeats under one key;
- the associated data is every clear byte before the body (Ethernet and Parallax headers, flags
  included) and the trailer's key id and counter: a changed address, class, header or counter
  fails the tag, as it fails the HMAC of a signed frame.

Opening gives back the clear frame with its trailer (AUTH set, ENCRYPTED clear, the GCM tag in
the tag field): decoders see it as any signed frame; its tag is not an HMAC.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from pxproto.errors import ProtocolError
from pxproto.wire import spec
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import FrameClass, HeaderFlag
from pxproto.wire.frame import Frame

INFO = b"pxproto AEAD v1"
NONCE_PAD = bytes(4)
FLAGS_OFFSET = spec.HEADER_OFFSET + 1
LENGTH_OFFSET = spec.HEADER_OFFSET + 2
SRC_DIME_OFFSET = spec.HEADER_OFFSET + 4
_CACHE_SIZE = 1024
_ciphers: OrderedDict[tuple[bytes, bytes], Any] = OrderedDict()


def frame_key(key: bytes, src_mac: bytes, src_dime: int, cls: int) -> bytes:
    """The AES-256-GCM key of one sender's frames of one class under the cluster key ``key``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = INFO + bytes(src_mac) + src_dime.to_bytes(2, "big") + bytes([cls])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def _cipher(key: bytes, raw: bytes | bytearray) -> Any:
    """The AESGCM object for the sender and class of ``raw`` under ``key`` (kept in a small LRU)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from pxproto.wire import ethertypes

    ident = bytes(raw[6:14]) + bytes(raw[SRC_DIME_OFFSET : SRC_DIME_OFFSET + 2])
    c = _ciphers.get((key, ident))
    if c is None:
        cls = ethertypes.current().classify(int.from_bytes(raw[12:14], "big"))
        if cls is None:
            raise ProtocolError("eth.type", 12, "not a Parallax EtherType")
        src_dime = int.from_bytes(raw[SRC_DIME_OFFSET : SRC_DIME_OFFSET + 2], "big")
        c = _ciphers[(key, ident)] = AESGCM(frame_key(key, bytes(raw[6:12]), src_dime, int(cls)))
        if len(_ciphers) > _CACHE_SIZE:
            _ciphers.popitem(last=False)
    return c


def seal_raw(raw: bytes | bytearray, key_id: int, counter: int, key: bytes) -> bytes:
    """Encrypt an encoded frame that has no trailer: set ENCRYPTED and AUTH, replace the body by its
    ciphertext, drop padding, append key id, counter and the GCM tag (re-pad to 60 bytes if short)."""
    length = int.from_bytes(raw[LENGTH_OFFSET : LENGTH_OFFSET + 2], "big")
    end = spec.BODY_OFFSET + length
    if raw[FLAGS_OFFSET] & (HeaderFlag.AUTH | HeaderFlag.ENCRYPTED) or end > len(raw):
        raise ProtocolError("flags", FLAGS_OFFSET, "seal takes an encoded frame without a trailer")
    head = bytearray(raw[: spec.BODY_OFFSET])
    head[FLAGS_OFFSET] |= HeaderFlag.AUTH | HeaderFlag.ENCRYPTED
    ids = key_id.to_bytes(2, "big") + counter.to_bytes(8, "big")
    sealed = _cipher(key, head).encrypt(NONCE_PAD + ids[2:], bytes(raw[spec.BODY_OFFSET : end]), bytes(head) + ids)
    # AESGCM appends the 16-byte tag to the ciphertext: it lands after the key id and counter
    out = bytes(head) + sealed[:length] + ids + sealed[length:]
    if len(out) < spec.MIN_ETHERNET_FRAME:
        out += bytes(spec.MIN_ETHERNET_FRAME - len(out))
    return out


def open_raw(raw: bytes | bytearray, key: bytes) -> bytes | None:
    """The clear frame of a sealed one (AUTH set, ENCRYPTED clear, the GCM tag kept in the trailer), or
    None when the tag does not verify under ``key``.  ``raw`` must have decoded as a sealed frame."""
    from cryptography.exceptions import InvalidTag

    length = int.from_bytes(raw[LENGTH_OFFSET : LENGTH_OFFSET + 2], "big")
    end = spec.BODY_OFFSET + length
    head = bytes(raw[: spec.BODY_OFFSET])
    ids = bytes(raw[end : end + 10])
    tag = bytes(raw[end + 10 : end + spec.AUTH_LEN])
    try:
        clear = _cipher(key, head).decrypt(NONCE_PAD + ids[2:], bytes(raw[spec.BODY_OFFSET : end]) + tag, head + ids)
    except InvalidTag:
        return None
    out = bytearray(head)
    out[FLAGS_OFFSET] &= 0xFF ^ int(HeaderFlag.ENCRYPTED)
    out += clear + bytes(raw[end:])  # trailer and padding as they were
    return bytes(out)


def is_sealed(raw: bytes | bytearray) -> bool:
    """Whether an (already decoded) frame's header says ENCRYPTED."""
    return len(raw) > FLAGS_OFFSET and bool(raw[FLAGS_OFFSET] & HeaderFlag.ENCRYPTED)


def seal(frame: Frame, key_id: int, counter: int, key: bytes) -> bytes:
    """Encode a clear ``frame`` (its trailer, if any, is replaced) and seal it."""
    from dataclasses import replace

    return seal_raw(encode(replace(frame, auth=None, padding=0)), key_id, counter, key)


def open_frame(raw: bytes | bytearray, key: bytes) -> Frame:
    """Decode and open a sealed frame; ProtocolError if it is not sealed or the tag fails."""
    decode(raw)  # the header and trailer rules first
    if not is_sealed(raw):
        raise ProtocolError("flags", FLAGS_OFFSET, "not an encrypted frame")
    clear = open_raw(raw, key)
    if clear is None:
        raise ProtocolError("auth", len(raw) - spec.TAG_LEN, "the AEAD tag does not verify under this key")
    return decode(clear)


CLASS_NAMES = {c.name.lower(): c for c in FrameClass}


def parse_classes(text: str, where: str = "--encrypt") -> frozenset[FrameClass]:
    """``"data,signaling"`` -> {DATA, SIGNALING}; ``""``/``"none"`` -> none; ``"all"`` -> every class."""
    text = text.strip().lower()
    if text in ("", "none"):
        return frozenset()
    if text == "all":
        return frozenset(FrameClass)
    out = set()
    for word in text.split(","):
        word = word.strip()
        if word not in CLASS_NAMES:
            raise ValueError(f"{where}: unknown frame class {word!r} (one of {', '.join(CLASS_NAMES)}, all, none)")
        out.add(CLASS_NAMES[word])
    return frozenset(out)
