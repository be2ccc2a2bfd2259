"""The MICE's per-item loops in one process: the pure twins against the compiled loops, side by side.

    python bench/mice_loop.py [--items N] [--repeat R] [--sizes 16,1400]

- ``source``: a source generator of N items (one bytes object, yielded N times, as ``bench/channel.py``'s source)
  through the source emit loop (``mice._emit_source_py`` / ``_emit_source_c``) into a Batcher whose hand-over
  link only counts the bytes: the clock per item, the run, the packing, the batches.
- ``sink``: record batches of 256 ITEM records (as the DIME hands them over), each turned into lists
  (``mice.item_lists``) and run through an item stage that yields nothing (``return ()``, as the bench's sink)
  by ``mice._run_items_py`` / ``_run_items_c``, the DONE records packed and flushed to the counting link.

Prints, per loop and item size, the median ns per item of each and the ratio (pure / compiled), the runs
alternated so both see the same load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from _common import measure_installed, print_table  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

from pxproto.node import mice  # noqa: E402


class CountingLink:
    """A hand-over link that keeps nothing: counts the messages and bytes it is sent."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def send(self, msg: Any) -> None:
        self.messages += 1
        self.bytes += len(msg) if isinstance(msg, bytes) else sum(len(p) for p in msg)


def source_gen(size: int, count: int) -> Callable[[mice.Context], Iterator[bytes]]:
    def source(ctx: mice.Context) -> Iterator[bytes]:
        item = b"x" * size
        for _ in range(count):
            yield item

    return source


def time_source(emit: Callable[..., int], size: int, count: int) -> float:
    """ns per item of ``emit`` over a ``count``-item source."""
    link = CountingLink()
    out = mice.Batcher(None, link)  # type: ignore[arg-type]
    ctx = mice.Context(1, 0, "src", 0, 1)
    gen = source_gen(size, count)(ctx)
    t = time.perf_counter_ns()
    n = emit(out, gen, ctx, 0)
    out.flush()
    dt = time.perf_counter_ns() - t
    if n != count or link.bytes != count * (mice.REC.size + size):
        raise SystemExit(f"source loop sent {n} items, {link.bytes} bytes: wrong")
    return dt / count


def sink(item: bytes, ctx: mice.Context) -> tuple[()]:
    return ()


def time_sink(run: Callable[..., None], size: int, count: int) -> float:
    """ns per item of ``run`` (with the lists made from each batch) over ``count`` items in batches of 256."""
    per = 256
    msgs = [
        mice.pack_records(mice.ITEM, [(mice.source_lineage(0, b * per + i), b"y" * size) for i in range(per)])
        for b in range(max(1, count // per))
    ]
    link = CountingLink()
    out = mice.Batcher(None, link)  # type: ignore[arg-type]
    ctx = mice.Context(1, 1, "sink", 1, 1)
    t = time.perf_counter_ns()
    for msg in msgs:
        lineages, items, _ = mice.item_lists(msg, mice.ITEM, mice.STOP)
        run(out, sink, lineages, items, ctx)
        out.flush()
    dt = time.perf_counter_ns() - t
    n = len(msgs) * per
    if link.bytes != n * mice.REC.size:
        raise SystemExit(f"sink loop sent {link.bytes} bytes of DONE records for {n} items: wrong")
    return dt / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--sizes", default="16,1400")
    args = ap.parse_args()
    if not mice.LOOP_COMPILED:
        sys.exit("pxproto.node._miceloop is not built: nothing to compare the twins with")
    sizes = [int(s) for s in args.sizes.split(",")]
    loops: dict[str, tuple[Callable[..., float], Callable[..., Any], Callable[..., Any]]] = {
        "source": (time_source, mice._emit_source_py, mice._emit_source_c),
        "sink": (time_sink, mice._run_items_py, mice._run_items_c),
    }
    rows = [["loop", "size", "pure ns/item", "compiled ns/item", "pure/compiled"]]
    for name, (timer, pure, comp) in loops.items():
        for size in sizes:
            timer(pure, size, 10_000)  # warm up both
            timer(comp, size, 10_000)
            a: list[float] = []
            b: list[float] = []
            for _ in range(args.repeat):  # alternated: both see the same load
                a.append(timer(pure, size, args.items))
                b.append(timer(comp, size, args.items))
            pa, pb = statistics.median(a), statistics.median(b)
            rows.append([name, f"{size} B", f"{pa:.1f}", f"{pb:.1f}", f"{pa / pb:.2f}x"])
    print(f"medians of {args.repeat} alternated runs of {args.items} items")
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
