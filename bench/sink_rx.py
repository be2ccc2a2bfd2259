"""CPU per item of a sink DIME's receive path, with and without the compiled wire loop (``_fastrx.WireRx``).

    PYTHONPATH=. python bench/sink_rx.py [--sizes 16,1400,65536] [--mb 64] [--repeat 5] [--mtu 65000]

One process: a source DimeMachine (sans I/O, untimed) sends its data frames over UDP loopback to a sink
:class:`pxproto.node.dime.Dime` reading its own wire socket, which hands the items to a MICE through a real shared
ring (:mod:`pxproto.node.shmring`); this script plays the MICE (untimed: it reads each batch and answers DONE
into the ring).  Timed, in process CPU time (user and system, so the receive syscalls and the copies count):
what the sink's loop does on each turn, as ``Dime.run`` does it (``_from_wire``, the held acks, the hand-over,
the MICE's DONEs, the completions), not the wait for events or the wake-ups.  ``wirerx`` and ``per-frame`` (the
same Dime with ``wire_rx`` off) alternate, fresh each run; the table gives medians and their ratio.  Process
time is little moved by other load on the machine, so the ratio holds on a busy host.
"""

from __future__ import annotations

import argparse
import gc
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dime_loop import SNK, SRC, connect, machine  # bench/ is sys.path[0]; it checks pxproto before it loads

from pxproto.fastpath import heap
from pxproto.node import fastrx, mice, shmring
from pxproto.node.dime import GC_GEN0, Dime, DimeConfig
from pxproto.node.machine import DimeMachine
from pxproto.wire.codes import Direction


class Sink:
    """The sink Dime on a UDP socket connected to the source's, with a shared ring to a MICE played here."""

    def __init__(self, tmp: str, mtu: int, compiled: bool) -> None:
        self.src_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.src_sock.bind(("127.0.0.1", 0))
        self.src_sock.setblocking(False)
        wire = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        wire.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        wire.bind(("127.0.0.1", 0))
        wire.connect(self.src_sock.getsockname())
        self.src_sock.connect(wire.getsockname())
        self.srv, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfg = DimeConfig(
            dime=SNK.dime, core=0, mac=SNK.mac.hex(), fd=theirs.fileno(), state_dir=tmp,
            local_store=str(Path(tmp) / "store"), mtu=mtu, pin=False, wire_fd=wire.detach(), wire_rx=True,
        )  # fmt: skip
        self.d = d = Dime(cfg, theirs)
        if compiled and getattr(d, "wire_rx", None) is None:
            raise SystemExit("pxproto.node._fastrx.WireRx is not built here")
        if not compiled:
            d.wire_rx = None  # (an older tree has no such attribute: its Dime reads every frame this way)
        assert d.wire is not None
        d.wire.setblocking(False)
        self.link, self.mice = shmring.Link.pair()
        d.start_mice = lambda *a: 1  # type: ignore[method-assign,assignment]
        d.mice_link, d.mice_sock = self.link, self.link.sock
        m = d.m
        m.start(10.0)
        m.loaded = machine(SNK, 0, mtu).loaded
        m.start_mice(0)
        connect(m, SNK, Direction.INPUT, SRC)

    def close(self) -> None:
        assert self.d.wire is not None
        for s in (self.d.wire, self.d.sock, self.srv, self.src_sock):
            s.close()
        self.link.close()
        self.mice.close()


def run(size: int, n: int, mtu: int, compiled: bool) -> float:
    """Sink CPU seconds per item for ``n`` items of ``size`` bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        sink = Sink(tmp, mtu, compiled)
        try:
            return _run(sink, size, n, mtu)
        finally:
            sink.close()


def _run(sink: Sink, size: int, n: int, mtu: int) -> float:
    d, m = sink.d, sink.d.m
    src = machine(SRC, 1, mtu)
    src.credit_window = m.credit_window
    connect(src, SRC, Direction.OUTPUT, SNK)
    item = b"x" * size
    per_msg = max(1, mice.BATCH_BYTES // (mice.REC.size + size))
    clock = time.process_time
    cpu = 0.0
    made = got = idle = 0
    now = 11.0
    while got < n:
        now += 0.0005
        idle += 1
        if idle > 20_000:
            raise SystemExit(f"{size}-byte items: none arrived for 20,000 turns (got {got} of {n})")
        made = _source_mice(src, made, n, item, per_msg, now)
        src.handle_timer(now)
        src.plane.coalesce_completions(now)
        for raw, _ in src.take_outbox():
            sink.src_sock.send(raw)
        t0 = clock()
        d._from_wire(now)  # one loop turn of Dime.run for the wire, then its timers and hand-over
        d.rx_run = 0
        m.plane.flush_acks(now)
        d._flush()
        m.handle_timer(now)
        m.plane.coalesce_completions(now)
        m.plane.feed_mice(now)
        d._flush()
        cpu += clock() - t0
        dones = []  # the MICE: each batch read, answered with DONE
        while (view := sink.mice.recv_view()) is not None:
            dones += [(lin, b"") for _, lin, _ in mice.records(bytes(view))]
            sink.mice.done()
        got += len(dones)
        idle = 0 if dones else idle
        if dones:
            sink.mice.send(mice.pack_records(mice.DONE, dones))
            t0 = clock()
            d._mice_readable(now)
            m.plane.coalesce_completions(now)
            d._flush()
            cpu += clock() - t0
        while True:  # what the sink sent back: acks, completions
            try:
                raw = sink.src_sock.recv(65536)
            except BlockingIOError:
                break
            src.on_frame_guarded(raw, now)
        src.plane.flush_acks()
    return cpu / n


def _source_mice(src: DimeMachine, made: int, n: int, item: bytes, per_msg: int, now: float) -> int:
    """The source's MICE: batches of OUT records while its DIME queues fewer than four; how many it made so far."""
    while made < n and not src.plane.output_backlogged() and src.plane.flow.queued < 4 * per_msg:
        batch = [item] * min(n - made, per_msg)
        msg, _ = mice.pack_run(mice.OUT, 1 << 48 | made + 1, batch, 0, 1 << 30, mice.MAX_ITEM)
        src.mice_message(msg, now)
        src.mice_batch_done(now)
        made += len(batch)
    return made


def main() -> int:
    heap.keep_heap()  # as a DIME process does (pxproto.node.dime.main)
    gc.freeze()
    gc.set_threshold(GC_GEN0, 10, 10)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="16,1400,65536")
    ap.add_argument("--mb", type=float, default=64.0, help="megabytes of items per run (at least 20,000 items)")
    ap.add_argument("--mtu", type=int, default=65000, help="the rootless wire's (jumbo) by default")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each variant per size (medians shown)")
    args = ap.parse_args()
    has_wirerx = hasattr(fastrx, "wire_rx") and fastrx.wire_rx() is not None
    print(f"sink DIME receive path, MTU {args.mtu}: CPU per item (process time), medians of {args.repeat}")
    print(f"{'item':>7}  {'items':>9}  {'wirerx':>10}  {'per-frame':>10}  {'ratio':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        n = max(20_000, int(args.mb * 1e6 // size))
        fast, slow = [], []
        for _ in range(args.repeat):
            if has_wirerx:
                fast.append(run(size, n, args.mtu, True))
            slow.append(run(size, n, args.mtu, False))
        s = statistics.median(slow)
        if not has_wirerx:
            print(f"{size:>6}B  {n:>9,}  {'-':>10}  {s * 1e6:>7.2f} us  {'-':>6}")
            continue
        f = statistics.median(fast)
        print(f"{size:>6}B  {n:>9,}  {f * 1e6:>7.2f} us  {s * 1e6:>7.2f} us  {f / s:>5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
