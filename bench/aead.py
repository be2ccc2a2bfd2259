"""What an AEAD frame mode would cost per frame, against the HMAC trailer every signed frame pays today.

    python bench/aead.py [--repeat 5] [--frames 5000]

Issue 15 asks for an optional AEAD mode (AES-GCM or ChaCha20-Poly1305 from ``cryptography``, the
per-sender counter as nonce).  The mode is not built yet; this measures its two primitives on the
frames it would protect, beside what the kernel does now for each signed frame:

- ``HMAC trailer, sign``: :func:`pxproto.dime.keys.add_trailer` (HMAC-SHA256 over the frame, 16-byte tag);
- ``HMAC trailer, verify``: :meth:`pxproto.dime.keys.KeyRing.check` on that frame (tag and replay window);
- ``AES-256-GCM seal`` / ``open``: the body encrypted, the header, key id and counter as associated data,
  nonce = 4 zero bytes + the 8-byte counter under a per-sender key (so no two senders share a nonce);
  seal includes building the frame (clear part + ciphertext + tag), open has no replay window yet;
- ``ChaCha20-Poly1305 seal`` / ``open``: the same with the other AEAD.

Each cell is the median over ``--repeat`` runs of the mean time per frame (µs), and the ratio to the
HMAC trailer's figure for the same frame size and direction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

from _common import measure_installed, print_table  # bench/ is sys.path[0] when a script runs

measure_installed()

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402

from pxproto.dime.keys import KeyRing, add_trailer  # noqa: E402
from pxproto.wire import spec  # noqa: E402

SIZES = (("signaling, 64 B body", 64), ("1500 B frame", 1500 - 34 - 26), ("9000 B frame", 9000 - 34 - 26))


def frame(body_len: int) -> bytes:
    """An encoded frame without a trailer: Ethernet and Parallax headers (length set), then the body."""
    head = bytearray(spec.BODY_OFFSET)
    head[12:14] = (0xABBB).to_bytes(2, "big")
    head[spec.HEADER_OFFSET + 2 : spec.HEADER_OFFSET + 4] = body_len.to_bytes(2, "big")
    return bytes(head) + os.urandom(body_len)


def per_frame(fn: Callable[[int], object], n: int, repeat: int) -> float:
    """Median over ``repeat`` runs of the mean seconds per call of ``fn(i)``, i = 0..n-1."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def measure(label: str, body_len: int, key: bytes, n: int, repeat: int) -> list[tuple[str, str, str, str]]:
    """The rows of one frame size: the HMAC trailer's sign and verify, then each AEAD's seal and open."""
    raw = frame(body_len)
    hdr, body = raw[: spec.BODY_OFFSET], raw[spec.BODY_OFFSET :]
    sign = per_frame(lambda i: add_trailer(raw, 1, 1 << 32 | i + 1, key), n, repeat)
    signed = [add_trailer(raw, 1, 1 << 32 | i + 1, key) for i in range(n)]
    rings: list[KeyRing] = []

    def verify(i: int) -> object:
        if i == 0:  # a fresh replay window per run: every counter is new to it
            rings[:] = [KeyRing({1: key})]
        return rings[0].check(signed[i], b"\x02" * 6, 0, 1, 1 << 32 | i + 1, 0)

    check = per_frame(verify, n, repeat)
    if rings[0].check(signed[0], b"\x02" * 6, 0, 1, 1 << 32 | 1, 0) is None:
        raise SystemExit("bench/aead.py: the replay window took a frame twice: the verify figure is wrong")
    rows = [(label, "HMAC trailer, sign", f"{sign * 1e6:.2f}", "1.00")]
    rows.append((label, "HMAC trailer, verify + window", f"{check * 1e6:.2f}", "1.00"))

    def nonce(i: int) -> bytes:
        return bytes(4) + (1 << 32 | i + 1).to_bytes(8, "big")

    def aad(i: int) -> bytes:
        return hdr + (1).to_bytes(2, "big") + (1 << 32 | i + 1).to_bytes(8, "big")

    for name, cls in (("AES-256-GCM", AESGCM), ("ChaCha20-Poly1305", ChaCha20Poly1305)):
        aead = cls(key)
        sealed = aead.encrypt(nonce(0), body, aad(0))

        def seal_frame(i: int, a: AESGCM | ChaCha20Poly1305 = aead) -> bytes:
            head = aad(i)  # the clear part of the frame: headers, key id, counter
            return head + a.encrypt(nonce(i), body, head)  # ciphertext then the 16-byte tag

        def open_frame(i: int, a: AESGCM | ChaCha20Poly1305 = aead, frame: bytes = sealed) -> bytes:
            return a.decrypt(nonce(0), frame, aad(0))

        seal = per_frame(seal_frame, n, repeat)
        opened = per_frame(open_frame, n, repeat)
        rows.append((label, f"{name} seal", f"{seal * 1e6:.2f}", f"{seal / sign:.2f}"))
        rows.append((label, f"{name} open (no window)", f"{opened * 1e6:.2f}", f"{opened / check:.2f}"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--frames", type=int, default=5000)
    args = ap.parse_args()
    key = os.urandom(32)
    rows = [("frame", "operation", "µs/frame", "x HMAC trailer")]
    for label, body_len in SIZES:
        rows += measure(label, body_len, key, args.frames, args.repeat)
    print(f"load average {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}; "
          f"{args.frames} frames x {args.repeat} runs, medians")  # fmt: skip
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
