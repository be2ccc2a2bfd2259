"""The data channel's machines alone, pure twin against compiled, side by side in one run.

    PYTHONPATH=. python bench/channel_machine.py [--sizes 16,1400,65536] [--rounds 5] [--seconds 0.3] [--mtu 1500]

One process, no I/O, no loss: a :class:`ChannelSender` sends messages of each size to a
:class:`ChannelReceiver` (credit 64, an ack per 32 fragments, as the node wires them); every
frame and ack goes straight to the other end.  Four ways: ``pure`` and ``compiled`` hand Frame
objects across (the machines alone); ``pure+codec`` also encodes and decodes each frame with the
fast path's codec (what the node does per frame today); ``compiled wire`` uses the ``*_wire``
methods (bytes in and out, read and built in C, no Frame).  It prints microseconds per message
(sender -> receiver -> acks -> sender, all included) and fragments/s, the median of ``--rounds``
rounds, and two ratios: compiled/pure, and compiled wire/pure+codec.  The four run interleaved
round by round, so a busy machine slows all alike: compare ratios.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from typing import Any

from _common import measure_installed, print_table  # bench/ is sys.path[0]

measure_installed()

from pxproto import fastpath  # noqa: E402
from pxproto.dime import channel, channel_rx  # noqa: E402
from pxproto.dime.endpoint import Address  # noqa: E402

S = Address(bytes.fromhex("020000000011"), 1, 0)
R = Address(bytes.fromhex("020000000022"), 2, 0)


def impls() -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {"pure": (channel.ChannelSender, channel_rx.ChannelReceiver)}
    try:
        # directly: both are measured, whatever is selected
        tx, rx = (importlib.import_module(f"pxproto.dime.{m}") for m in ("_channel", "_channel_rx"))
    except ImportError as exc:
        raise SystemExit(f"the compiled channel is not built ({exc}): python setup.py build_ext --inplace") from exc
    out["compiled"] = (tx.ChannelSender, rx.ChannelReceiver)
    return out


def one_round(classes: tuple[Any, Any], size: int, mtu: int, seconds: float, mode: str) -> tuple[float, float]:
    """(fragments per second, microseconds per message) of one round.

    ``mode``: ``frames`` (Frame objects handed across), ``codec`` (each frame encoded and decoded by the
    fast path's codec, as the node does today), ``wire`` (the ``*_wire`` methods: bytes in and out)."""
    sender_cls, receiver_cls = classes
    tx = sender_cls(S, R, 7, mtu=mtu, initial_credit=64)
    rx = receiver_cls(R, S, 7, window=64, ack_every=32, ack_delay=0.002)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    wire = mode == "wire"
    send = tx.send_wire if wire else tx.send
    rx_take = rx.receive_wire if wire else rx.receive
    tx_take = tx.receive_wire if wire else tx.receive
    rx_timer = rx.handle_timer_wire if wire else rx.handle_timer
    if mode == "codec":
        enc, dec = fastpath.encode, fastpath.decode
    else:
        enc = dec = _same
    now = 0.0
    msgs = frags = delivered = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(16):
            now += 1e-5
            _, out = send(payload, now)
            pending = out.frames
            while pending:
                acks = []
                for f in pending:
                    frags += 1
                    o = rx_take(dec(enc(f)), now)
                    acks += o.frames
                    delivered += len(o.events)
                if rx.get_timer() is not None:
                    acks += rx_timer(rx.get_timer()).frames
                pending = []
                for a in acks:
                    pending += tx_take(dec(enc(a)), now).frames
            msgs += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - t0
    if delivered != msgs or tx.in_flight:
        raise SystemExit(f"{size} B: {delivered} of {msgs} messages delivered, {tx.in_flight} in flight")
    return frags / elapsed, elapsed / msgs * 1e6


def _same(x: Any) -> Any:
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="16,1400,65536")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.3, help="per round, per implementation and size")
    ap.add_argument("--mtu", type=int, default=1500)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    classes = impls()
    runs = {  # (implementation, mode)
        "pure": ("pure", "frames"),
        "compiled": ("compiled", "frames"),
        "pure+codec": ("pure", "codec"),
        "compiled wire": ("compiled", "wire"),
    }
    head = ["payload", "frags/msg"] + [f"{r} us/msg" for r in runs] + ["compiled/pure", "wire/pure+codec"]
    rows = [head]
    for size in sizes:
        got: dict[str, list[tuple[float, float]]] = {r: [] for r in runs}
        for _ in range(args.rounds):
            for r, (impl, mode) in runs.items():
                got[r].append(one_round(classes[impl], size, args.mtu, args.seconds, mode))
        us = {r: statistics.median(x[1] for x in v) for r, v in got.items()}
        fps = {r: statistics.median(x[0] for x in v) for r, v in got.items()}
        per = channel.fragment_count(size, channel.fragment_size(args.mtu))
        rows.append(
            [f"{size} B", str(per)]
            + [f"{us[r]:.2f} ({fps[r] / 1000:,.0f}k fr/s)" for r in runs]
            + [f"{us['pure'] / us['compiled']:.2f}x", f"{us['pure+codec'] / us['compiled wire']:.2f}x"]
        )
    print(
        f"channel machines, MTU {args.mtu}, median of {args.rounds} rounds (sender -> receiver -> acks -> sender); "
        "us per message (fragments/s)"
    )
    print_table(rows)


if __name__ == "__main__":
    main()
