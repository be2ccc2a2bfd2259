"""Backpressure with real processes: a slow sink under a much faster source loses nothing and bounds memory.

Two pxkernel servers through pxswitch (rootless UDP wire).  The source yields its items as fast as it can; the
sink sleeps per item, so it runs at a tenth of the source's rate or less.  Credit has to slow the source down:
the items the source has made and the sink has not yet committed stay bounded by the queues' limits (not by
the stream's length), every item reaches the sink exactly once, and the memory of both DIMEs stays within the
DIME's chunk limit: the DIME process's growth (VmRSS over its idle size) plus the chunks its MICE used (as the
heartbeats report them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.dime.endpoint import Address
from pxproto.node.testbed import Cluster
from pxproto.package import LocalStore, keyed_records
from pxproto.wire.codes import CHUNK_BYTES, Command, CounterId, TlvType
from pxproto.wire.frame import Tlv
from tests._helpers import manifest, packaged_cluster, start

CHUNKS = 64
"""Each DIME's chunk limit (2 MiB chunks): 128 MiB."""

STAGES_PY = """
import time

def source(ctx):
    pad = b"x" * (ctx.params["size"] - 8)
    for i in range(ctx.params["count"]):
        yield i.to_bytes(8, "big") + pad

def sink(item, ctx):
    time.sleep(ctx.params["sleep_us"] / 1e6)
    ctx.commit("bp", item[:8])
    return ()
"""

CASES = {
    # size: (items, the sink's sleep per item in microseconds): the sink takes at most 2,000 and 67 items/s; a free
    # source makes 24,000-68,000 items/s of 1400 B and 700-1,800 of 64 KiB (bench/channel.py, load 9-14 on 2 cores)
    # 60,000 of 1000 B: the queues between source and sink hold about 18,000 of them (a 4 MiB credit window, the
    # sink's 4,096 items in its MICE, the shared-memory hand-over rings), so half the stream ahead means unbounded
    1000: (60_000, 500),
    65536: (2_500, 15_000),
}


def _toml(size: int) -> str:
    count, sleep_us = CASES[size]
    params = {"source": {"count": count, "size": size}, "sink": {"sleep_us": sleep_us}}
    return manifest("bp", ["source", "sink"], params=params)


@pytest.fixture(params=sorted(CASES), ids=lambda s: f"{s}B")
def bed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Cluster, int]]:
    size = request.param
    c = packaged_cluster(tmp_path, _toml(size), STAGES_PY, kernels=2, dimes=2, chunks=CHUNKS)
    yield c, size
    c.close()


def _rss(pid: int | None) -> int:
    """VmRSS of a process, bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _counter(c: Cluster, dest: Address, cid: int) -> int:
    v = c.ask(dest, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, cid)).param(TlvType.VALUE)
    return v if isinstance(v, int) else 0


def _mice_chunks(c: Cluster, dest: Address) -> int:
    """The most chunks the MICE of ``dest`` used in any heartbeat seen (each one must be within its limit)."""
    most = 0
    for _, mac, dime, hb in c.client.seen.heartbeats:
        if (mac, dime) == dest.peer and hb.mem_limit:
            assert hb.mem_used <= hb.mem_limit, hb
            most = max(most, hb.mem_used)
    return most


@pytest.mark.slow
def test_a_slow_sink_slows_the_source_loses_nothing_and_bounds_memory(bed: tuple[Cluster, int]) -> None:
    c, size = bed
    count = CASES[size][0]
    ends = {"source": c.dime(0, 0), "sink": c.dime(1, 1)}
    pids = {"source": c.dime_pid(0, 0), "sink": c.dime_pid(1, 1)}
    base = {k: _rss(p) for k, p in pids.items()}
    start(c, ends["sink"], 1, 1, "sink")
    start(c, ends["source"], 1, 0, "source")
    c.connect(ends["source"], ends["sink"], 1)
    store = LocalStore(c.tmp / "state1" / "store")
    peak = {"ahead": 0, "retained": 0, "source": 0, "sink": 0}
    c.client.seen.heartbeats.clear()
    t0 = time.monotonic()
    done, last, t_last = 0, -1, t0
    while done < count and time.monotonic() - t_last < 30:
        c.client.wait_for(lambda: False, 0.25)
        done = len(store.records("bp"))
        if done != last:
            last, t_last = done, time.monotonic()
        made = _counter(c, ends["source"], CounterId.ITEMS_OUT)
        peak["ahead"] = max(peak["ahead"], made - done)
        peak["retained"] = max(peak["retained"], _counter(c, ends["source"], CounterId.RETAINED))
        for k, pid in pids.items():
            peak[k] = max(peak[k], _rss(pid) - base[k])
    elapsed = time.monotonic() - t0
    c.client.wait_for(lambda: False, 0.5)  # a duplicate, if any, would be committed now
    chunks = {k: _mice_chunks(c, d) for k, d in ends.items()}
    recs = store.records("bp")
    got = sorted(int.from_bytes(data, "big") for _, data in keyed_records(recs))
    detail = (
        f"{size} B: {done}/{count} items in {elapsed:.1f} s; peaks: source ahead of the sink {peak['ahead']} items, "
        f"retained {peak['retained']}; DIME growth (VmRSS) source {peak['source'] >> 20} MiB, sink "
        f"{peak['sink'] >> 20} MiB; MICE chunks source {chunks['source']}, sink {chunks['sink']}"
    )
    print(detail)
    assert got == list(range(count)), f"lost {count - len(set(got))}; {detail}"
    assert len(recs) == count, f"{len(recs) - count} duplicated; {detail}"
    # Slowed: a source running free at ten times the sink's rate would be 90% of the stream ahead of it.
    assert peak["ahead"] <= count // 2 and peak["retained"] <= count // 2, detail
    limit = CHUNKS * CHUNK_BYTES
    for k in ends:
        used = peak[k] + chunks[k] * CHUNK_BYTES
        assert used <= limit, f"the {k} DIME and its MICE use {used >> 20} MiB, over {limit >> 20}; {detail}"
