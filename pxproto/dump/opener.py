"""``pxdump --key FILE``: encrypted frames (header flag ENCRYPTED) opened before any view sees them.

The key file is the cluster key file of ``pxkernel --key`` (same format, same permission rules:
one readable by group or others is refused).  A frame that opens under the key its trailer names
is replaced, in the batch, by its clear frame (same length: AUTH set, ENCRYPTED clear, the GCM tag
in the trailer), so every view, filter and counter sees its fields; one whose key is not in the
file, or whose tag fails, stays encrypted and prints as such.
"""

from __future__ import annotations

import numpy as np

from pxproto.capture.pcapng import Packet
from pxproto.dime.keys import load_keyfile
from pxproto.dump.columns import Batch, from_packets
from pxproto.dump.source import Frames
from pxproto.errors import ProtocolError
from pxproto.wire import aead, spec
from pxproto.wire.codec import decode


class Opener:
    """Opens the encrypted frames of batches under a cluster key file's keys."""

    def __init__(self, keys: dict[int, bytes]) -> None:
        self.keys = dict(keys)
        self.opened = 0
        self.failed = 0

    @classmethod
    def from_file(cls, path: str) -> Opener:
        return cls(load_keyfile(path))

    def open_bytes(self, raw: bytes) -> bytes | None:
        """The clear frame of a valid encrypted frame that opens under one of our keys, else None."""
        try:
            f = decode(raw)
        except ProtocolError:
            return None
        if f.auth is None or not aead.is_sealed(raw):
            return None
        key = self.keys.get(f.auth.key_id)
        clear = None if key is None else aead.open_raw(raw, key)
        if clear is None:
            self.failed += 1
        else:
            self.opened += 1
        return clear

    def _sealed_rows(self, buf: np.ndarray, offset: np.ndarray, caplen: np.ndarray) -> np.ndarray:
        long_enough = caplen >= spec.BODY_OFFSET + spec.AUTH_LEN
        rows = np.flatnonzero(long_enough)
        flags = buf[offset[rows] + aead.FLAGS_OFFSET]
        return rows[(flags & 0x04) != 0]

    def frames(self, f: Frames) -> Frames:
        rows = self._sealed_rows(f.buf, f.offset, f.caplen)
        if not len(rows):
            return f
        lo = int(f.offset.min())
        hi = int((f.offset + f.caplen).max())
        buf = f.buf[lo:hi].copy()
        offset = f.offset - lo
        for i in rows.tolist():
            o, n = int(offset[i]), int(f.caplen[i])
            clear = self.open_bytes(bytes(buf[o : o + n]))
            if clear is not None:
                buf[o : o + n] = np.frombuffer(clear, np.uint8)
        return Frames(buf, offset, f.caplen, f.wirelen, f.ts_ns, f.first)

    def batch(self, b: Batch) -> Batch:
        rows = self._sealed_rows(b.buf, b.offset, b.caplen)
        if not len(rows):
            return b
        sealed = set(rows.tolist())
        packets = []
        for i in range(len(b)):
            raw = bytes(b.buf[b.offset[i] : b.offset[i] + b.caplen[i]])
            clear = self.open_bytes(raw) if i in sealed else None
            packets.append(Packet(clear or raw, int(b.ts_ns[i]), int(b.wirelen[i])))
        return from_packets(packets, b.first)
