"""The MICE's per-item loops in one process: the pure twins against the compiled loops, side by side.

    python bench/mice_loop.py [--items N] [--repeat R] [--sizes 16,1400]

- ``source``: a source generator of N items (one bytes object, yielded N times, as ``bench/channel.py``'s source)
  through the source emit loop (``mice._emit_source_py`` / ``_emit_source_c``) into a Batcher whose hand-over
  link only counts the bytes: the clock per item, the run, the packing, the batches.
- ``sink``: hand-over messages of 256 ITEM records (as the DIME gives them), each run through an item stage that
  yields nothing (``return ()``, as the bench's sink) the way the child does (``mice._run_link_py``: lists, then the
  pure loop; ``lists+C``: the same lists, then the compiled item loop; ``_run_link_c``: one compiled pass, no
  lists), the DONE records packed and flushed to the counting link.

Prints, per loop and item size, the median CPU ns per item (this thread's CPU time: a loaded host's time slicing
does not count) of each variant and its ratio to the pure one, the runs alternated so all see the same load.
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
    t = time.thread_time_ns()
    n = emit(out, gen, ctx, 0)
    out.flush()
    dt = time.thread_time_ns() - t
    if n != count or link.bytes != count * (mice.REC.size + size):
        raise SystemExit(f"source loop sent {n} items, {link.bytes} bytes: wrong")
    return dt / count


def sink(item: bytes, ctx: mice.Context) -> tuple[()]:
    return ()


class MessageLink:
    """A hand-over link that gives prepared record batches one by one (as views), counting the releases."""

    def __init__(self, msgs: list[bytes]) -> None:
        self.msgs = iter(msgs)
        self.released = 0

    def recv(self) -> memoryview | None:
        msg = next(self.msgs, None)
        return None if msg is None else memoryview(msg)

    def done(self) -> None:
        self.released += 1


def time_sink(run: Callable[..., tuple[int, bool]], size: int, count: int) -> float:
    """ns per item of ``run`` (``mice._run_link_*``: one hand-over message through the stage, as the child does)
    over ``count`` items in messages of 256."""
    per = 256
    msgs = [
        mice.pack_records(mice.ITEM, [(mice.source_lineage(0, b * per + i), b"y" * size) for i in range(per)])
        for b in range(max(1, count // per))
    ]
    link = MessageLink(msgs)
    sent = CountingLink()
    out = mice.Batcher(None, sent)  # type: ignore[arg-type]
    ctx = mice.Context(1, 1, "sink", 1, 1)
    t = time.thread_time_ns()
    while run(out, sink, link, ctx)[0]:
        out.flush()
    dt = time.thread_time_ns() - t
    n = len(msgs) * per
    if sent.bytes != n * mice.REC.size or link.released != len(msgs):
        raise SystemExit(f"sink loop sent {sent.bytes} bytes of DONE records for {n} items: wrong")
    return dt / n


def _lists_then(run_items: Callable[..., None]) -> Callable[..., tuple[int, bool]]:
    """``mice._run_link_py`` with the item loop ``run_items`` (the pure one, or the compiled one on the lists that
    ``_run_link_c`` does without)."""

    def run(out: mice.Batcher, fn: Callable[..., Any], link: Any, ctx: Any) -> tuple[int, bool]:
        lineages, items, stop, size = mice._link_items(link)
        if size:
            run_items(out, fn, lineages, items, ctx)
        return size, stop

    return run


_lists_then_run_items_py = _lists_then(mice._run_items_py)
_lists_then_run_items_c = _lists_then(mice._run_items_c)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--sizes", default="16,1400")
    args = ap.parse_args()
    if not mice.LOOP_COMPILED:
        sys.exit("pxproto.node._miceloop is not built: nothing to compare the twins with")
    sizes = [int(s) for s in args.sizes.split(",")]
    loops: dict[str, tuple[Callable[..., float], list[tuple[str, Callable[..., Any]]]]] = {
        "source": (time_source, [("pure", mice._emit_source_py), ("compiled", mice._emit_source_c)]),
        "sink": (
            time_sink,
            [("pure", _lists_then_run_items_py), ("lists+C", _lists_then_run_items_c), ("compiled", mice._run_link_c)],
        ),
    }
    rows = [["loop", "size", "variant", "ns/item", "pure / this"]]
    for name, (timer, variants) in loops.items():
        for size in sizes:
            for _, fn in variants:
                timer(fn, size, 10_000)  # warm up
            got: dict[str, list[float]] = {v: [] for v, _ in variants}
            for _ in range(args.repeat):  # alternated: all see the same load
                for v, fn in variants:
                    got[v].append(timer(fn, size, args.items))
            base = statistics.median(got["pure"])
            for v, _ in variants:
                med = statistics.median(got[v])
                rows.append([name, f"{size} B", v, f"{med:.1f}", f"{base / med:.2f}x"])
    print(f"medians of {args.repeat} alternated runs of {args.items} items")
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
