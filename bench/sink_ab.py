"""Two checkouts' sink receive path side by side: ``bench/sink_rx.py`` of each, alternated, medians and their ratio.

    python bench/sink_ab.py OLD_TREE NEW_TREE [--sizes 16,1400,65536] [--mb 16] [--pairs 7]

Each run is a fresh process with the tree's own ``bench/sink_rx.py`` (its pxproto, its compiled modules), one
measure of the compiled wire loop's CPU per item (``sink_rx.run``); the trees alternate, so a change of load on the
machine falls on both.  The ratio is NEW / OLD (below 1: the new tree spends less CPU per item).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _common import measure_installed  # bench/ is sys.path[0]

measure_installed()  # (each tree's runs load their own pxproto; this one refuses a pure twin as the others do)

RUN = """
import gc, sys
sys.path.insert(0, "bench")
import sink_rx
from pxproto.fastpath import heap
from pxproto.node.dime import GC_GEN0
heap.keep_heap()
gc.freeze()
gc.set_threshold(GC_GEN0, 10, 10)
size, n = int(sys.argv[1]), int(sys.argv[2])
print(sink_rx.run(size, n, 65000, True) * 1e6)
"""
"""One measure, as ``sink_rx.main`` sets the process up (the heap kept, the collector as a DIME's): the compiled
wire loop only, microseconds of CPU per item, at full precision."""


def one(tree: Path, size: int, mb: float) -> float:
    """Microseconds of sink CPU per item, the compiled wire loop of ``tree`` (its own bench/sink_rx.py)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    n = max(20_000, int(mb * 1e6 // size))
    cmd = [sys.executable, "-c", RUN, str(size), str(n)]
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True, timeout=600).stdout
    try:
        return float(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"{tree}: no figure in the output of sink_rx.run:\n{out}") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--sizes", default="16,1400,65536")
    ap.add_argument("--mb", type=float, default=16.0, help="megabytes of items per run (20,000 items at least)")
    ap.add_argument("--pairs", type=int, default=7, help="alternated runs of each tree per size")
    args = ap.parse_args()
    print(f"sink DIME CPU per item (compiled wire loop), medians of {args.pairs} alternated runs; ratio new/old")
    print(f"old: {args.old}\nnew: {args.new}")
    print(f"{'item':>7}  {'old':>10}  {'new':>10}  {'ratio':>6}   (each run, old/new)")
    for size in (int(s) for s in args.sizes.split(",")):
        old, new = [], []
        for _ in range(args.pairs):
            old.append(one(args.old, size, args.mb))
            new.append(one(args.new, size, args.mb))
        o, n = statistics.median(old), statistics.median(new)
        runs = " ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(old, new, strict=True))
        print(f"{size:>6}B  {o:>7.3f} us  {n:>7.3f} us  {n / o:>5.2f}x   {runs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
