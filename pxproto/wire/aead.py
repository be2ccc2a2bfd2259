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

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pxproto.errors import ProtocolError
from pxproto.wire import ethertypes, spec
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import FrameClass, HeaderFlag
from pxproto.wire.frame import Frame

INFO = b"pxproto AEAD v1"
NONCE_PAD = bytes(4)
FLAGS_OFFSET = spec.HEADER_OFFSET + 1
LENGTH_OFFSET = spec.HEADER_OFFSET + 2
SRC_DIME_OFFSET = spec.HEADER_OFFSET + 4
BODY = spec.BODY_OFFSET
SEALED_FLAGS = int(HeaderFlag.AUTH | HeaderFlag.ENCRYPTED)
_IDS = struct.Struct(">HQ")
IDS_LEN = _IDS.size
"""Key id and counter: the trailer bytes that are the nonce's tail and close the associated data."""
_CACHE_SIZE = 1024
_ciphers: dict[tuple[bytes, bytes], AESGCM] = {}
"""AESGCM objects by (cluster key, src MAC + EtherType + src DIME): the HKDF runs once per sender and class."""


def frame_key(key: bytes, src_mac: bytes, src_dime: int, cls: int) -> bytes:
    """The AES-256-GCM key of one sender's frames of one class under the cluster key ``key``."""
    info = INFO + bytes(src_mac) + src_dime.to_bytes(2, "big") + bytes([cls])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def _cipher(key: bytes, head: bytes) -> AESGCM:
    """The AESGCM object for the sender and class of the frame whose headers are ``head``, under ``key``."""
    ident = head[6:14] + head[SRC_DIME_OFFSET : SRC_DIME_OFFSET + 2]
    c = _ciphers.get((key, ident))
    if c is None:
        cls = ethertypes.current().classify(int.from_bytes(head[12:14], "big"))
        if cls is None:
            raise ProtocolError("eth.type", 12, "not a Parallax EtherType")
        src_dime = int.from_bytes(head[SRC_DIME_OFFSET : SRC_DIME_OFFSET + 2], "big")
        if len(_ciphers) >= _CACHE_SIZE:
            _ciphers.clear()
        c = _ciphers[(key, ident)] = AESGCM(frame_key(key, head[6:12], src_dime, int(cls)))
    return c


def seal_raw(raw: bytes, key_id: int, counter: int, key: bytes) -> bytes:
    """Encrypt an encoded frame that has no trailer: set ENCRYPTED and AUTH, replace the body by its
    ciphertext, drop padding, append key id, counter and the GCM tag (re-pad to 60 bytes if short)."""
    length = (raw[LENGTH_OFFSET] << 8) | raw[LENGTH_OFFSET + 1]
    end = BODY + length
    flags = raw[FLAGS_OFFSET]
    if flags & SEALED_FLAGS or end > len(raw):
        raise ProtocolError("flags", FLAGS_OFFSET, "seal takes an encoded frame without a trailer")
    head = raw[:FLAGS_OFFSET] + bytes([flags | SEALED_FLAGS]) + raw[FLAGS_OFFSET + 1 : BODY]
    ids = _IDS.pack(key_id, counter)
    sealed = _cipher(key, head).encrypt(NONCE_PAD + ids[2:], raw[BODY:end], head + ids)
    # AESGCM appends the 16-byte tag to the ciphertext: it goes after the key id and counter
    out = head + sealed[:length] + ids + sealed[length:]
    if len(out) < spec.MIN_ETHERNET_FRAME:
        out += bytes(spec.MIN_ETHERNET_FRAME - len(out))
    return out


def open_raw(raw: bytes, key: bytes) -> bytes | None:
    """The clear frame of a sealed one (AUTH set, ENCRYPTED clear, the GCM tag kept in the trailer), or
    None when the tag does not verify under ``key``.  ``raw`` must have decoded as a sealed frame."""
    length = (raw[LENGTH_OFFSET] << 8) | raw[LENGTH_OFFSET + 1]
    end = BODY + length
    head = raw[:BODY]
    ids = raw[end : end + 10]
    try:
        clear = _cipher(key, head).decrypt(
            NONCE_PAD + ids[2:], raw[BODY:end] + raw[end + 10 : end + spec.AUTH_LEN], head + ids
        )
    except InvalidTag:
        return None
    flags = raw[FLAGS_OFFSET] & (0xFF ^ int(HeaderFlag.ENCRYPTED))
    return raw[:FLAGS_OFFSET] + bytes([flags]) + raw[FLAGS_OFFSET + 1 : BODY] + clear + raw[end:]


def is_sealed(raw: bytes | bytearray) -> bool:
    """Whether an (already decoded) frame's header says ENCRYPTED."""
    return len(raw) > FLAGS_OFFSET and bool(raw[FLAGS_OFFSET] & HeaderFlag.ENCRYPTED)


def seal(frame: Frame, key_id: int, counter: int, key: bytes) -> bytes:
    """Encode a clear ``frame`` (its trailer, if any, is replaced) and seal it."""
    from dataclasses import replace

    return seal_raw(encode(replace(frame, auth=None, padding=0)), key_id, counter, key)


def open_frame(raw: bytes, key: bytes) -> Frame:
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
