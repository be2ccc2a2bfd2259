"""What the AEAD frame mode costs per frame, end to end through the codec, against the HMAC trailer.

    python bench/aead.py [--repeat 5] [--frames 5000]

Per frame size (a 64 B signaling frame and a 1400 B DATA frame, whole Ethernet frames before the
trailer) and direction, each row is what a kernel does for one frame:

- ``clear``: encode with the fast path (``pxproto.fastpath.encode``) / decode it (``fastpath.decode``);
- ``HMAC trailer``: encode, then :meth:`pxproto.dime.keys.KeyRing.sign_raw` (HMAC-SHA256, 16-byte tag) /
  decode, then :meth:`KeyRing.check` (key lookup, replay window, tag);
- ``AEAD (AES-256-GCM)``: encode, then :meth:`KeyRing.seal_raw` (body encrypted, per-sender-and-class key,
  the counter as nonce) / decode the sealed frame (header and trailer rules), :meth:`KeyRing.open` (key
  lookup, replay window, decrypt and tag), then decode the clear frame.

Each cell is the median over ``--repeat`` rounds of the mean time per frame (µs); each round runs the
three modes of a row group one after another (interleaved), and the ratio column is against the HMAC
trailer's figure for the same size and direction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping

from _common import measure_installed, print_table  # bench/ is sys.path[0] when a script runs

measure_installed()

import pxproto.fastpath as fp  # noqa: E402
from pxproto.dime.keys import KeyRing  # noqa: E402
from pxproto.wire import spec  # noqa: E402
from pxproto.wire.codes import (  # noqa: E402
    Command,
    Scope,
    TlvType,
)
from pxproto.wire.frame import Data, Frame, Signaling, Tlv  # noqa: E402

MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


def frames() -> list[tuple[str, Frame]]:
    """(label, frame): a 64-byte signaling frame and a 1400-byte DATA frame (before any trailer)."""
    sig = Frame(
        Signaling(Command.PING, req_id=7, params=(Tlv(TlvType.ECHO, bytes(64 - spec.BODY_OFFSET - 8 - 4)),)),
        Scope.DIME, src_dime=1, dst_dime=2, src_mac=MAC_A, dst_mac=MAC_B,
    )  # fmt: skip
    payload = bytes(range(256)) * 6
    n = 1400 - spec.BODY_OFFSET - spec.DataFixed.sizeof()
    data = Frame(Data(3, 9, payload[:n], n), Scope.DIME, src_dime=1, dst_dime=2, src_mac=MAC_A, dst_mac=MAC_B)
    for label, f in (("64 B", sig), ("1400 B", data)):
        assert len(fp.encode(f)) == int(label.split()[0]), label
    return [("64 B signaling", sig), ("1400 B data", data)]


def interleaved(
    fns: Mapping[str, Callable[[int], object]], n: int, repeat: int, setup: Callable[[], None] | None = None
) -> dict[str, float]:
    """Median over ``repeat`` rounds of the mean seconds per call of each ``fn(i)``, i = 0..n-1; each round
    runs every function once, one after another, so a busy host's swings fall on all of them alike."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            if setup is not None:
                setup()
            t0 = time.perf_counter()
            for i in range(n):
                fn(i)
            runs[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(r) for name, r in runs.items()}


def measure(label: str, frame: Frame, key: bytes, n: int, repeat: int) -> list[tuple[str, ...]]:
    tx = KeyRing({1: key}, epoch=1)
    rx: list[KeyRing] = [KeyRing({1: key})]

    def fresh_rx() -> None:  # a fresh replay window per run: every counter is new to it
        rx[0] = KeyRing({1: key})

    clear = fp.encode(frame)
    signed = [tx.sign_raw(clear) for _ in range(n)]
    sealed = [tx.seal_raw(clear) for _ in range(n)]

    def hmac_rx(i: int) -> object:
        f = fp.decode(signed[i])
        a = f.auth
        if rx[0].check(signed[i], f.src_mac, f.src_dime, a.key_id, a.counter, f.padding) is not None:
            raise SystemExit("bench/aead.py: a signed frame did not verify")
        return f

    def aead_rx(i: int) -> object:
        f = fp.decode(sealed[i])
        a = f.auth
        raw, why = rx[0].open(sealed[i], f.src_mac, f.src_dime, a.key_id, a.counter)
        if raw is None:
            raise SystemExit(f"bench/aead.py: a sealed frame did not open: {why}")
        return fp.decode(raw)

    assert aead_rx(0) is not None
    fresh_rx()
    assert fp.decode(rx[0].open(sealed[0], MAC_A, 1, 1, fp.decode(sealed[0]).auth.counter)[0]).body == frame.body
    send = interleaved(
        {
            "clear": lambda i: fp.encode(frame),
            "HMAC trailer": lambda i: tx.sign_raw(fp.encode(frame)),
            "AEAD (AES-256-GCM)": lambda i: tx.seal_raw(fp.encode(frame)),
        },
        n,
        repeat,
    )
    receivers = {"clear": lambda i: fp.decode(clear), "HMAC trailer": hmac_rx, "AEAD (AES-256-GCM)": aead_rx}
    recv = interleaved(receivers, n, repeat, fresh_rx)
    rows: list[tuple[str, ...]] = []
    for direction, table in (("encode + seal/sign", send), ("decode + open/verify", recv)):
        base = table["HMAC trailer"]
        for mode, t in table.items():
            rows.append((label, direction, mode, f"{t * 1e6:.2f}", f"{t / base:.2f}"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--frames", type=int, default=5000)
    args = ap.parse_args()
    key = os.urandom(32)
    rows: list[tuple[str, ...]] = [("frame", "direction", "mode", "µs/frame", "x HMAC trailer")]
    for label, f in frames():
        rows += measure(label, f, key, args.frames, args.repeat)
    print(f"load average {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}; "
          f"{args.frames} frames x {args.repeat} runs, medians")  # fmt: skip
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
