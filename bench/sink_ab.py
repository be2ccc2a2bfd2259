"""Two checkouts' sink receive path side by side: ``bench/sink_rx.py`` of each, alternated, medians and their ratio.

    python bench/sink_ab.py OLD_TREE NEW_TREE [--sizes 16,1400,65536] [--mb 16] [--pairs 7]

Each run is a fresh process of the tree's own ``bench/sink_rx.py`` (its pxproto, its compiled modules), one
measure of the compiled wire loop's CPU per item (``--repeat 1``); the trees alternate, so a change of load on the
machine falls on both.  The ratio is NEW / OLD (below 1: the new tree spends less CPU per item).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROW = re.compile(r"^\s*(\d+)B\s+[\d,]+\s+([\d.]+) us")


def one(tree: Path, size: int, mb: float) -> float:
    """Microseconds of sink CPU per item, the wirerx column of one run of ``tree``'s sink_rx."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "bench/sink_rx.py", "--sizes", str(size), "--mb", str(mb), "--repeat", "1"]
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True, timeout=600).stdout
    for line in out.splitlines():
        m = ROW.match(line)
        if m and int(m.group(1)) == size:
            return float(m.group(2))
    raise SystemExit(f"{tree}: no {size}-byte row in the output of sink_rx.py:\n{out}")


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
        runs = " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(old, new, strict=True))
        print(f"{size:>6}B  {o:>7.2f} us  {n:>7.2f} us  {n / o:>5.2f}x   {runs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
