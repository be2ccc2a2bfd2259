"""CPU per item of two DIME machines joined in one process: the data plane's Python cost without syscalls.

    PYTHONPATH=. python bench/dime_loop.py [--sizes 16,1400,65536] [--mb 16]

A source DimeMachine and a sink DimeMachine (sans I/O, the same code a pxkernel DIME runs) are wired
by CONNECT; the source is fed MICE batches of OUT records, every frame either puts out goes straight
into the other, and the sink's ITEM batches are answered with DONE records as a MICE would. The MICE's
own packing and parsing are left out of the figures, and so are sockets and scheduling, so on a loaded
machine this is the figure to compare between versions (process CPU time, one run per size).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

from pxproto import package  # noqa: E402
from pxproto.dime.endpoint import Address, frame_to  # noqa: E402
from pxproto.fastpath import encode  # noqa: E402
from pxproto.node import mice  # noqa: E402
from pxproto.node.machine import DimeMachine, Loaded, MachineConfig, Mice, UnmeteredMice  # noqa: E402
from pxproto.signing import VerifyKeys  # noqa: E402
from pxproto.wire.codes import Command, Direction, Op  # noqa: E402
from pxproto.wire.frame import Signaling, connect_params  # noqa: E402

SRC = Address(b"\x02\x00\x00\x00\x00\x01", 0, 0)
SNK = Address(b"\x02\x00\x00\x00\x00\x02", 1, 0)
MANAGER = Address(b"\x02\x00\x00\x00\x00\xfe", 0xFFFF, 0)
DRIVER_TX_SPLIT = 2
"""pxproto.node.dime.TX_SPLIT (not imported: the tree measured may predate it)."""


class Host(UnmeteredMice):
    """No process and no package: the MICE is this script."""

    def log(self, text: str) -> None:
        pass  # "MICE started" and the like

    def next_epoch(self) -> int:
        return 1

    def fetch(self, digest: bytes, size: int, sig: bytes, key: VerifyKeys | None) -> tuple[Path, package.Manifest]:
        raise RuntimeError("no LOAD here")

    def start_mice(self, loaded: Loaded, first: int, epoch: int, limit: int) -> int:
        return 1

    def stop_mice(self, m: Mice) -> None:
        pass


def machine(addr: Address, stage: int, mtu: int) -> DimeMachine:
    m = DimeMachine(MachineConfig(addr, has_store=True, mtu=mtu, has_wire=True), Host())
    m.start(10.0)
    m.loaded = Loaded(1, stage, "x", Path("."), package.Stage(stage, "x", "m:f"))
    m.start_mice(0)
    return m


def connect(m: DimeMachine, addr: Address, direction: Direction, peer: Address) -> None:
    params = connect_params(1, direction, peer.mac, peer.dime)
    m.on_frame(encode(frame_to(MANAGER, addr, Signaling(Command.CONNECT, Op.REQUEST, 1, params=params))), 10.0)
    m.take_outbox()


def run(size: int, n: int, mtu: int, driver: bool = False, window: int = 0) -> tuple[float, float]:
    """(source, sink) CPU seconds per item for ``n`` items of ``size`` bytes (``driver``: the source's plane set up
    as the DIME process sets it: data frames as TxFrames, messages built in batches of half a window; ``window``:
    both machines' credit window in fragments, 0: the machine's default)."""
    src, snk = machine(SRC, 1, mtu), machine(SNK, 0, mtu)
    if window:
        src.credit_window = snk.credit_window = window
    if driver:
        src.plane.iov_frames = True
        src.plane.tx_split = DRIVER_TX_SPLIT
    connect(snk, SNK, Direction.INPUT, SRC)
    connect(src, SRC, Direction.OUTPUT, SNK)
    assert snk.mice is not None
    item = b"x" * size
    per_msg = max(1, mice.BATCH_BYTES // (mice.REC.size + size))
    clock = time.process_time
    cpu_src = cpu_snk = 0.0
    made = got = idle = 0
    now = 11.0
    while got < n:
        now += 0.0005
        idle += 1
        if idle > 10_000:
            raise SystemExit(f"{size}-byte items: none arrived for 10,000 turns (got {got} of {n})")
        msg = b""
        if made < n and not src.plane.output_backlogged():
            k = min(n - made, per_msg)
            msg, _ = mice.pack_run(mice.OUT, 1 << 48 | made + 1, [item] * k, 0, 1 << 30, mice.MAX_ITEM)
            made += k
        t0 = clock()
        if msg:
            src.mice_message(msg, now)
            src.mice_batch_done(now)
        src.handle_timer(now)
        src.plane.coalesce_completions(now)
        frames = src.take_outbox()
        t1 = clock()
        frames = [(raw if type(raw) is bytes else bytes(raw), route) for raw, route in frames]  # (the wire's copy)
        t1b = clock()
        for raw, _ in frames:
            snk.on_frame_guarded(raw, now)
        snk.plane.flush_acks()
        snk.handle_timer(now)
        snk.plane.coalesce_completions(now)
        snk.plane.feed_mice(now)
        t2 = clock()
        dones = [(lin, b"") for m in snk.mice.pending_tx for _, lin, _ in mice.records(m)]  # the sink MICE
        snk.mice.pending_tx.clear()
        got += len(dones)
        idle = 0 if dones else idle
        done_msg = mice.pack_records(mice.DONE, dones)
        t3 = clock()
        if dones:
            snk.mice_message(done_msg, now)
            snk.mice_batch_done(now)
        back = snk.take_outbox()
        t4 = clock()
        for raw, _ in back:
            src.on_frame_guarded(raw, now)
        src.plane.flush_acks()
        cpu_src += t1 - t0 + clock() - t4
        cpu_snk += t2 - t1b + t4 - t3
    return cpu_src / n, cpu_snk / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="16,1400,65536")
    ap.add_argument("--mb", type=float, default=16.0, help="megabytes of items per size (at least 2,000 items)")
    ap.add_argument("--mtu", type=int, default=9000)
    ap.add_argument("--driver", action="store_true", help="the source's plane as the DIME process sets it up")
    ap.add_argument("--window", type=int, default=0, help="credit window in fragments (0: the machine's default)")
    args = ap.parse_args()
    how = "as the DIME process drives it" if args.driver else "frames as bytes, one message at a time"
    print(f"two DIME machines in one process, MTU {args.mtu}, source plane {how}: CPU per item (process time)")
    print(f"{'item':>7}  {'items':>9}  {'source DIME':>12}  {'sink DIME':>12}")
    for size in (int(s) for s in args.sizes.split(",")):
        n = max(2000, int(args.mb * 1e6 // size))
        s, k = run(size, n, args.mtu, args.driver, args.window)
        print(f"{size:>6}B  {n:>9,}  {s * 1e6:>9.2f} us  {k * 1e6:>9.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
