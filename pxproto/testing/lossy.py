"""A lossy wire for the rootless test bed: UDP relays that drop a random fraction of datagrams.

Where ``tc netem`` is not available (a kernel built without ``sch_netem``, or no root), put one of these
between each pxkernel (or orchestrator) and its pxswitch UDP port: the node sends to the relay's port
instead of the switch's, and every datagram, either way, is dropped with probability ``loss``.  The
node's socket is connected to the relay's port and the switch answers the relay's socket, so neither
end sees a difference but the losses.

``python -m pxproto.testing.lossy --loss 2 LISTEN_PORT:SWITCH_PORT ...`` (127.0.0.1; percent).
"""

from __future__ import annotations

import argparse
import random
import selectors
import signal
import socket
import sys

BUF = 1 << 16


class Relay:
    """One relay: ``near`` (bound to the node's port) <-> ``far`` (connected to the switch's port)."""

    def __init__(self, listen: int, to: int) -> None:
        self.near = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.near.bind(("127.0.0.1", listen))
        self.far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.far.bind(("127.0.0.1", 0))
        self.far.connect(("127.0.0.1", to))
        for s in (self.near, self.far):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.client: tuple[str, int] | None = None
        """Where the node sends from (the last sender to ``near``): the switch's answers go there."""


def serve(pairs: list[tuple[int, int]], loss: float, seed: int | None = None) -> None:
    """Relay until SIGTERM; ``loss`` is a probability (0..1) applied to each datagram in each direction."""
    rng = random.Random(seed)
    sel = selectors.DefaultSelector()
    relays = [Relay(a, b) for a, b in pairs]
    for r in relays:
        sel.register(r.near, selectors.EVENT_READ, (r, True))
        sel.register(r.far, selectors.EVENT_READ, (r, False))
    counts = {"relayed": 0, "dropped": 0}
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    while running:
        for key, _ in sel.select(0.5):
            r, inbound = key.data
            for _ in range(256):
                try:
                    if inbound:
                        data, r.client = r.near.recvfrom(BUF)
                    else:
                        data = r.far.recv(BUF)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                if rng.random() < loss:
                    counts["dropped"] += 1
                    continue
                try:
                    if inbound:
                        r.far.send(data)
                    elif r.client is not None:
                        r.near.sendto(data, r.client)
                    counts["relayed"] += 1
                except (BlockingIOError, ConnectionRefusedError):
                    counts["dropped"] += 1  # a full buffer or a switch not up yet: a loss like any other
    print(f"lossy: relayed {counts['relayed']}, dropped {counts['dropped']}", flush=True)


def _pair(text: str) -> tuple[int, int]:
    a, sep, b = text.partition(":")
    if not sep or not a.isdigit() or not b.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected LISTEN_PORT:SWITCH_PORT")
    return int(a), int(b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pxproto.testing.lossy", description=__doc__.splitlines()[0])
    ap.add_argument("--loss", type=float, required=True, help="percent of datagrams dropped, each direction")
    ap.add_argument("--seed", type=int)
    ap.add_argument("pairs", nargs="+", type=_pair, help="LISTEN_PORT:SWITCH_PORT (127.0.0.1)")
    args = ap.parse_args(argv)
    if not 0 <= args.loss < 100:
        print(f"lossy: --loss {args.loss}: a percentage in [0, 100)", file=sys.stderr)
        return 2
    serve(args.pairs, args.loss / 100, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
