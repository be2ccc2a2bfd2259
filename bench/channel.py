"""Benchmark of the DIME data channel against what a user would pick instead, side by side in one run.

    PYTHONPATH=. python bench/channel.py [--sizes 16,1400,65536] [--seconds 3] [--only dime,dime-veth,zmq-tcp,...]
    PYTHONPATH=. python bench/channel.py --json      # last line: {"16": items/s, ...} of the DIME channel

It measures the pxproto it imports: an installed one, or this checkout with ``PYTHONPATH=.`` after
``python setup.py build_ext --inplace`` (bench/_common.py says which on stderr, and refuses the pure twin).

For each item size it streams items from one process to another and counts them at the receiver:
- ``dime``: a source MICE on one pxkernel server to a sink MICE on another, through pxswitch on the
  rootless UDP wire (the path of every service workflow), items/s at the sink DIME, and the CPU per
  item of each DIME loop (its FCAPS process; the MICE are separate processes); the source yields
  one item at a time;
- ``dime-batch``: the same with the MICE batch API: the source yields lists of 256 items, the sink takes
  a list per call (``@batch``; items of 1 KiB or more as views of the hand-over, no copy:
  ``@batch(views=True)``);
- ``dime-user``: the ``dime`` row with pxswitch's ports kept out of its in-kernel fast path (``kernel=false``):
  every frame through the switch process, as a switch without root runs (as root, the ``dime`` row's data
  between the two servers' loopback UDP ports is re-addressed inside the kernel);
- ``dime-veth``: the ``dime`` row on veth pairs joined by a bridge, AF_PACKET, no pxswitch
  (root; namespaces of its own, deleted after; ``--veth-mtu``, 1500 by default);
- ``zmq-tcp``/``zmq-ipc``: pyzmq PUSH -> PULL, one message per item, over tcp loopback and ipc;
- ``pipe``: a Unix pipe, each item written through a buffered file (the reader counts bytes).

Every figure is the median of ``--repeat`` runs; the ratio column compares with pyzmq tcp of the same
size in the same run. On a shared machine, compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()  # takes bench/ off the import path (kernel.py, loaded below, finds _common imported)

from pxproto import package  # noqa: E402
from pxproto.node.testbed import Cluster  # noqa: E402
from pxproto.wire.codes import CounterId, TlvType  # noqa: E402
from pxproto.wire.frame import Tlv  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_kernel", Path(__file__).with_name("kernel.py"))
assert _spec is not None and _spec.loader is not None
bk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bk)
_spec = importlib.util.spec_from_file_location("bench_veth", Path(__file__).with_name("_veth.py"))
assert _spec is not None and _spec.loader is not None
_veth = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_veth)

STAGES = """
from pxproto.node.mice import batch

def source(ctx):
    item = b"x" * ctx.params["size"]
    for _ in range(ctx.params["count"]):
        yield item

def bsource(ctx):
    batch = [b"x" * ctx.params["size"]] * ctx.params["batch"]
    for _ in range(ctx.params["count"] // len(batch)):
        yield batch

def sink(item, ctx):
    return ()

@batch
def bsink(items, ctx):
    return None

@batch(views=True)
def vsink(items, ctx):
    return None

"""
KINDS = ("dime", "dime-batch", "dime-user", "dime-veth", "zmq-tcp", "zmq-ipc", "pipe")
DIME_KINDS = {
    "dime": ("source", "udp"),
    "dime-batch": ("bsource", "udp"),
    "dime-user": ("source", "udp-user"),
    "dime-veth": ("source", "veth"),
}
"""Each DIME row: the source stage it runs, and its wire (pxswitch UDP, or veth with AF_PACKET)."""
SINKS = {"source": (0, "sink"), "bsource": (1, "bsink")}
"""The sink stage (manifest index, name) each source runs with: the batch source with the batch sink."""
VIEWS_MIN = 1024
"""From this item size on, the batch source runs with the sink taking views (``vsink``, index 2): below it a view
per item costs the sink's MICE more than the copy it saves (2026-12-02, alternated pairs: 16 B 0.26-0.29 against
0.09-0.11 us per item; 64 KiB 10.0-10.4 against 14.4-14.6)."""
BATCH = 256
"""Items per list a ``bsource`` yields (the MICE batch API)."""


def manifest(sizes: list[int], count: int) -> str:
    out = ['[service]\nname = "chbench"\n']
    for sink in ("sink", "bsink", "vsink"):
        out.append(f'\n[[stage]]\nname = "{sink}"\nentry = "stages:{sink}"\n')
    for s in sizes:
        for entry in ("source", "bsource"):
            out.append(f'\n[[stage]]\nname = "{entry}{s}"\nentry = "stages:{entry}"\n')
            out.append(f"params = {{ count = {count}, size = {s}, batch = {BATCH} }}\n")
    return "".join(out)


def stage_of(sizes: list[int], size: int, entry: str) -> int:
    """The manifest index of ``entry`` (source or bsource) for ``size``."""
    return 3 + 2 * sizes.index(size) + (entry == "bsource")


# ---------------------------------------------------------------------- DIME channel


def dime_run(c: Any, archive: bytes, stage: int, name: str, limit: float) -> dict[str, float]:
    """Source (server 0, DIME 0) -> sink (server 1, DIME 1); items/s at the sink over ``limit`` seconds at most."""
    src, snk = c.dime(0, 0), c.dime(1, 1)
    kind = name.rstrip("0123456789")
    sink_stage, sink_name = SINKS[kind]
    if kind == "bsource" and int(name[len(kind) :]) >= VIEWS_MIN:
        sink_stage, sink_name = 2, "vsink"
    bk.load_start(c, archive, snk, sink_stage, sink_name)
    bk.load_start(c, archive, src, stage, name)
    cpu0 = bk.dime_cpu(c, src), bk.dime_cpu(c, snk)
    all0 = total_cpu(c, src), total_cpu(c, snk)
    srv0, sw0 = servers_cpu(c), switch_cpu(c)
    i0 = bk.counter(c, snk, CounterId.ITEMS_IN)
    f0 = bk.counter(c, src, CounterId.ITEM_FRAMES_TX)
    d0 = bk.counter(c, src, CounterId.TX_DROPPED) + bk.counter(c, snk, CounterId.TX_DROPPED)
    t0 = time.monotonic()
    bk.connect(c, src, snk, 1)
    done, last, t_last = 0, -1, t0
    while time.monotonic() - t0 < limit:
        c.client.wait_for(lambda: False, 0.1)
        done = bk.counter(c, snk, CounterId.ITEMS_IN) - i0
        if done != last:
            last, t_last = done, time.monotonic()
        elif time.monotonic() - t_last > 1.0:
            break  # the source ended (or stalled): count up to its last progress
    elapsed = t_last - t0
    srv, sw = servers_cpu(c) - srv0, switch_cpu(c) - sw0
    cpu = bk.dime_cpu(c, src) - cpu0[0], bk.dime_cpu(c, snk) - cpu0[1]
    mcpu = total_cpu(c, src) - all0[0] - cpu[0], total_cpu(c, snk) - all0[1] - cpu[1]
    frames = bk.counter(c, src, CounterId.ITEM_FRAMES_TX) - f0
    dropped = bk.counter(c, src, CounterId.TX_DROPPED) + bk.counter(c, snk, CounterId.TX_DROPPED) - d0
    for dest, st in ((src, stage), (snk, sink_stage)):
        c.ask(dest, bk.Command.STOP, Tlv(TlvType.SERVICE_ID, 1), Tlv(TlvType.STAGE, st))
    if done == 0:  # a row of zeros would read as a measurement: say what failed instead
        tail = c.log_text()[-2000:]
        raise SystemExit(f"bench/channel.py: {name}: no item reached the sink in {limit} s; kernel logs end:\n{tail}")
    report_faults(c, name)
    n = done
    return {
        "rate": done / elapsed if elapsed > 0 else 0.0,
        "src_us": cpu[0] / n * 1e6,
        "snk_us": cpu[1] / n * 1e6,
        "src_mice_us": mcpu[0] / n * 1e6,
        "snk_mice_us": mcpu[1] / n * 1e6,
        "srv_us": srv / n * 1e6,
        "sw_us": sw / n * 1e6,
        "per_frame": done / max(frames, 1),
        "dropped": dropped / elapsed if elapsed > 0 else 0.0,
    }


def report_faults(c: Any, name: str) -> None:
    """Say on stderr which FAULT lines the kernels logged during this run (a stall shows as a low figure only)."""
    lines = [ln for ln in c.log_text().splitlines() if "FAULT" in ln]
    new = lines[getattr(c, "bench_faults_seen", 0) :]
    c.bench_faults_seen = len(lines)
    for ln in new:
        print(f"bench/channel.py: {name}: {ln.strip()}", file=sys.stderr)


def servers_cpu(c: Any) -> float:
    """CPU seconds of the bed's kernel server processes themselves (their relays: the DIMEs are processes of
    their own), from /proc."""
    return procs_cpu(p.pid for p in c.procs)


def switch_cpu(c: Any) -> float:
    """CPU seconds of the bed's pxswitch processes (none on the veth bed)."""
    return procs_cpu(sw.pid for sw in (getattr(c, "switch", None), getattr(c, "switch2", None)) if sw is not None)


def procs_cpu(pids: Any) -> float:
    """CPU seconds (user + system) of these processes so far, from /proc (one that is gone counts 0)."""
    total = 0.0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return total


def total_cpu(c: Any, dest: Any) -> float:
    """CPU seconds of a DIME process and its running MICE together (CPU_NS)."""
    v = c.ask(dest, bk.Command.COUNTERS, Tlv(TlvType.COUNTER_ID, CounterId.CPU_NS)).param(TlvType.VALUE)
    return (v if isinstance(v, int) else 0) / 1e9


def run_dime_rows(
    t: Path, archive: bytes, sizes: list[int], kinds: list[str], args: argparse.Namespace, res: dict[Any, Any]
) -> None:
    """The DIME rows of one wire, each size ``args.repeat`` times, on one test bed."""
    if not kinds:
        return
    veth = DIME_KINDS[kinds[0]][1] == "veth"
    if veth and _veth.why_not():
        print(f"dime-veth: skipped ({_veth.why_not()})", file=sys.stderr)
        return
    bed: Any
    if veth:
        store = t / "veth-store"
        store.mkdir()
        package.store_put(store, archive)
        bed = _veth.VethBed(t / "veth", store, mtu=args.veth_mtu)
    else:
        bed = Cluster(
            t / f"bed-{DIME_KINDS[kinds[0]][1]}",
            kernels=2,
            dimes=2,
            key=True,
            chunks=256,
            extra=("--no-pin",) if args.no_pin else (),
            switch_kernel=DIME_KINDS[kinds[0]][1] != "udp-user",
        )
        package.store_put(bed.store, archive)
    try:
        for _ in range(args.repeat):
            for size in sizes:
                for k in kinds:
                    entry = DIME_KINDS[k][0]
                    run = dime_run(bed, archive, stage_of(sizes, size, entry), f"{entry}{size}", args.seconds)
                    res.setdefault((k, size), []).append(run)
    finally:
        bed.close()


# ---------------------------------------------------------------------- peers


def _zmq_push(addr: str, item: bytes, count: int) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 100000)
    s.connect(addr)
    send = s.send
    for _ in range(count):
        send(item)
    s.close(linger=-1)
    ctx.term()


def zmq_run(addr: str, size: int, count: int) -> float:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 100000)
    if addr.startswith("tcp"):
        port = s.bind_to_random_port("tcp://127.0.0.1")
        addr = f"tcp://127.0.0.1:{port}"
    else:
        s.bind(addr)
    p = mp.get_context("fork").Process(target=_zmq_push, args=(addr, b"x" * size, count))
    p.start()
    recv = s.recv
    recv()
    t0 = time.perf_counter()
    for _ in range(count - 1):
        recv()
    dt = time.perf_counter() - t0
    p.join()
    s.close()
    ctx.term()
    return (count - 1) / dt


def _pipe_write(fd: int, item: bytes, count: int) -> None:
    with os.fdopen(fd, "wb", buffering=1 << 16) as f:
        write = f.write
        for _ in range(count):
            write(item)


def pipe_run(size: int, count: int) -> float:
    r, w = os.pipe()
    p = mp.get_context("fork").Process(target=_pipe_write, args=(w, b"x" * size, count))
    p.start()
    os.close(w)
    total, want = 0, size * count
    first = os.read(r, 1 << 16)
    total += len(first)
    t0 = time.perf_counter()
    while total < want:
        b = os.read(r, 1 << 16)
        if not b:
            break
        total += len(b)
    dt = time.perf_counter() - t0
    os.close(r)
    p.join()
    return (total - len(first)) / size / dt if dt > 0 else 0.0


def peer_count(size: int, seconds: float) -> int:
    """Items for roughly ``seconds`` of a peer at about 1 GB/s or 1 M items/s, whichever is slower."""
    return int(seconds * min(1_000_000, 1_000_000_000 // size))


# ---------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="16,1400,65536")
    ap.add_argument("--seconds", type=float, default=3.0, help="about how long each measure runs")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measure (the median is shown)")
    ap.add_argument("--only", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}")
    ap.add_argument("--json", action="store_true", help="last line: the DIME channel's items/s by size")
    ap.add_argument("--no-pin", action="store_true", help="the rootless bed's kernels do not pin DIMEs to cores")
    ap.add_argument("--veth-mtu", type=int, default=1500, help="MTU of the veth bed (dime-veth; root)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = [k for k in args.only.split(",") if k]
    load = os.getloadavg()
    res: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for rep in range(args.repeat):
            for size in sizes:
                n = peer_count(size, args.seconds)
                if "zmq-tcp" in kinds:
                    res.setdefault(("zmq-tcp", size), []).append({"rate": zmq_run("tcp", size, n)})
                if "zmq-ipc" in kinds:
                    addr = f"ipc://{t}/zmq-{rep}-{size}"
                    res.setdefault(("zmq-ipc", size), []).append({"rate": zmq_run(addr, size, n)})
                if "pipe" in kinds:
                    res.setdefault(("pipe", size), []).append({"rate": pipe_run(size, n)})
        dime_kinds = [k for k in kinds if k in DIME_KINDS]
        if dime_kinds:
            pkg = t / "pkg"
            pkg.mkdir()
            (pkg / "service.toml").write_text(manifest(sizes, 10_000_000))
            (pkg / "stages.py").write_text(STAGES)
            archive = package.pack(pkg)
            for wire in ("udp", "udp-user", "veth"):
                run_dime_rows(t, archive, sizes, [k for k in dime_kinds if DIME_KINDS[k][1] == wire], args, res)

    def med(kind: str, size: int, key: str = "rate") -> float:
        runs = res.get((kind, size))
        return statistics.median(r[key] for r in runs) if runs else 0.0

    print(f"load average before the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    print(f"median of {args.repeat} runs, items/s at the receiver (x: ratio to pyzmq tcp of the same size)")
    head = f"{'item':>7}  " + "  ".join(f"{k:>22}" for k in kinds)
    print(head)
    for size in sizes:
        ref = med("zmq-tcp", size)
        cells = []
        for k in kinds:
            r = med(k, size)
            cells.append(f"{r:>12,.0f} ({r / ref:5.2f}x)" if ref else f"{r:>22,.0f}")
        print(f"{size:>6}B  " + "  ".join(f"{c:>22}" for c in cells))
    if any(k in DIME_KINDS for k in kinds):
        print(
            "DIME channel detail (medians; CPU per item of each DIME's loop process, of its MICE, of the servers, "
            "of pxswitch):"
        )
        for k in (k for k in kinds if k in DIME_KINDS):
            for size in sizes:
                if (k, size) not in res:
                    continue
                print(
                    f"  {k:>10} {size:>6} B: {med(k, size) * size / 1e6:8.1f} MB/s; source DIME "
                    f"{med(k, size, 'src_us'):.2f} us/item (MICE {med(k, size, 'src_mice_us'):.2f}), sink DIME "
                    f"{med(k, size, 'snk_us'):.2f} us/item (MICE {med(k, size, 'snk_mice_us'):.2f}); "
                    f"both servers {med(k, size, 'srv_us'):.2f} us/item; pxswitch {med(k, size, 'sw_us'):.2f} us/item; "
                    f"{med(k, size, 'per_frame'):.1f} items per data frame; "
                    f"{med(k, size, 'dropped'):,.0f} frames/s dropped at the servers' relays (TX_DROPPED)"
                )
    if args.json:
        print(json.dumps({str(s): round(med("dime", s)) for s in sizes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
