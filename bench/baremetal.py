"""Benchmark of the bare-metal DIME kernel beside a Linux node DIME (pxkernel), both signing.

    PYTHONPATH=. python bench/baremetal.py [--pings 500] [--smp 2] [--no-linux]
    PYTHONPATH=. python bench/baremetal.py --busy BASELINE_ELF [--work-us 20000] [--items 300] [--rounds 3]

Prints one table, bare metal (QEMU, TCG here: no usable KVM) and Linux side by side:
- time from start (QEMU launch / pxkernel launch) to the first heartbeat on the wire;
- signed PING round trip p50/p99 to DIME 0 (the bare-metal guest's wire is a UDP datagram pipe
  straight to this process; the Linux node's is a pxswitch UDP port);
- heartbeat period jitter at 100 ms (p50/p99 of |gap - period|), DIME idle;
- data-channel items/s through the demo's transform stage (300 us of work an item: the C
  built-in on bare metal, the Python stage in a MICE process on Linux) and through its parse
  stage (no work), DIME 0 between two channel ends of this process (the Workflow of
  tests/test_baremetal_plane.py: pxproto's ChannelSender upstream, ChannelReceiver downstream,
  completions back), the same package (pxproto.baremetal.builtin) LOADed on both;
- heartbeat jitter while the transform streams, with the DIME's CPU load from its heartbeats.
The driver is one Python process: where it, not the DIME, is the bottleneck the CPU column says so.

``--busy BASELINE_ELF`` instead compares two builds of the kernel side by side, each booted in turn (in
``--rounds`` alternating rounds) with ``work=US`` (every item of the transform costs US us of CPU, so the
stage runs at 100%) while ``--items`` stream through DIME 0: heartbeat jitter (|gap - period|, medians of
the rounds' p50/p99/max) and items/s, the baseline (e.g. a build from before the MICE left the DIME loop)
against this checkout's, with their ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the QEMU harness lives in the checkout's tests/

from pxproto.wire.auth import sign  # noqa: E402
from pxproto.wire.codes import Command, Op, Status, TlvType  # noqa: E402
from pxproto.wire.frame import Heartbeat, Signaling, Tlv  # noqa: E402
from tests.test_baremetal_net import IMAGE, KEY, KEY_ID, VK, Guest, build, request  # noqa: E402

PERIOD_MS = 100


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def _kernel_bench(name: str = "kernel") -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bare_metal(pings: int, smp: int, items: int) -> dict[str, str]:
    build()
    t0 = time.monotonic()
    g = Guest(smp=smp, append=f"key={KEY_ID}:{KEY.hex()} {VK} hb={PERIOD_MS}", logdir=Path(tempfile.mkdtemp()))
    out: dict[str, str] = {}
    try:
        g.expect(lambda f: isinstance(f.body, Heartbeat), timeout=120)
        out["first"] = f"{(time.monotonic() - t0) * 1e3:.0f} ms"
        g.wait_serial(f"boot: {smp} DIME(s) up", 60)
        rtts: list[float] = []
        for i in range(pings):
            raw = sign(request(Command.PING, 0, 10_000 + i, Tlv(TlvType.ECHO, b"bench")), KEY_ID, g.counter, KEY)
            g.counter += 1
            t = time.perf_counter()
            g.send_raw(raw)
            for frame, _ in g.frames(2.0):
                b = frame.body
                if isinstance(b, Signaling) and b.op is Op.RESPONSE and b.req_id == 10_000 + i:
                    assert b.status is Status.OK
                    rtts.append(time.perf_counter() - t)
                    break
        out["ping"] = f"p50 {pct(rtts, 50) * 1e6:.0f} / p99 {pct(rtts, 99) * 1e6:.0f} us (n={len(rtts)})"
        arrivals: list[float] = []
        for frame, _ in g.frames(5.0):
            if isinstance(frame.body, Heartbeat) and frame.src_dime == 0:
                arrivals.append(time.monotonic())
        dev = [abs((b - a) * 1e3 - PERIOD_MS) for a, b in itertools.pairwise(arrivals)]
        out["jitter"] = f"p50 {pct(dev, 50):.1f} / p99 {pct(dev, 99):.1f} ms (n={len(dev)})"
        out.update(_kernel_bench("_baremetal_stream").bare_metal_stream(g, items, PERIOD_MS))
    finally:
        g.close()
    return out


def linux(pings: int, items: int) -> dict[str, str]:
    kb = _kernel_bench()
    from pxproto.node.testbed import Cluster

    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        c = Cluster(Path(tmp), kernels=1, dimes=1, key=True, extra=("--heartbeat-ms", str(PERIOD_MS)))
        try:
            d0 = c.dime(0, 0)
            c.client.wait_for(lambda: any(d == 0 for _, _, d, _ in c.client.seen.heartbeats), 60)
            out["first"] = f"{(time.monotonic() - t0) * 1e3:.0f} ms"
            rtts = kb.ping_rtts(c, d0, pings, True)  # type: ignore[attr-defined]
            out["ping"] = f"p50 {pct(rtts, 50) * 1e6:.0f} / p99 {pct(rtts, 99) * 1e6:.0f} us (n={len(rtts)})"
            gaps = kb.heartbeat_gaps(c, d0, 5.0)  # type: ignore[attr-defined]
            dev = [abs(g * 1e3 - PERIOD_MS) for g in gaps]
            out["jitter"] = f"p50 {pct(dev, 50):.1f} / p99 {pct(dev, 99):.1f} ms (n={len(dev)})"
            out.update(_kernel_bench("_baremetal_stream").linux_stream(c, items, PERIOD_MS))
        finally:
            c.close()
    return out


def busy_round(image: Path, work_us: int, items: int) -> dict[str, float]:
    """One guest of ``image``, its transform at work_us an item: heartbeat jitter and items/s while n stream."""
    stream = _kernel_bench("_baremetal_stream")
    append = f"key={KEY_ID}:{KEY.hex()} {VK} hb={PERIOD_MS} chunks=8 work={work_us}"
    with Guest(smp=1, append=append, logdir=Path(tempfile.mkdtemp()), image=image) as g:
        g.booted(1)
        rate, dev, cpu = stream.measure(stream.guest_workflow(g), items, PERIOD_MS)
    return {"p50": pct(dev, 50), "p99": pct(dev, 99), "max": max(dev, default=float("nan")), "rate": rate,
            "cpu": pct(cpu, 50), "n": float(len(dev))}  # fmt: skip


def busy(baseline: Path, work_us: int, items: int, rounds: int) -> int:
    build()
    images = {"baseline": baseline, "this build": IMAGE}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in images}
    for _ in range(rounds):
        for label, image in images.items():  # alternating, so both see the same host load
            runs[label].append(busy_round(image, work_us, items))
    med = {k: {m: pct([r[m] for r in v], 50) for m in v[0]} for k, v in runs.items()}
    load = os.getloadavg()
    print(f"load average after the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    print(f"heartbeat every {PERIOD_MS} ms, transform at {work_us} us an item, {items} items, medians of {rounds}")
    print(f"baseline: {baseline}")
    rows = {"p50": "hb jitter p50 (ms)", "p99": "hb jitter p99 (ms)", "max": "hb jitter max (ms)",
            "rate": "items/s", "cpu": "DIME CPU median (%)", "n": "heartbeat gaps seen"}  # fmt: skip
    w = max(len(n) for n in rows.values())
    print(f"{'measure':<{w}}  {'baseline':>10}  {'this build':>10}  {'this/baseline':>13}")
    for key, name in rows.items():
        a, b = med["baseline"][key], med["this build"][key]
        print(f"{name:<{w}}  {a:>10.1f}  {b:>10.1f}  {b / a if a else float('nan'):>12.2f}x")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pings", type=int, default=500)
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--items", type=int, default=3000, help="items streamed through each stage")
    ap.add_argument("--no-linux", action="store_true")
    ap.add_argument("--busy", type=Path, metavar="BASELINE_ELF", help="compare heartbeat jitter, stage at 100%%")
    ap.add_argument("--work-us", type=int, default=20000, help="--busy: CPU per item of the transform")
    ap.add_argument("--rounds", type=int, default=3, help="--busy: alternating rounds per build")
    args = ap.parse_args()
    if args.busy:
        return busy(args.busy, args.work_us, args.items if args.items != 3000 else 300, args.rounds)
    load = os.getloadavg()
    bm = bare_metal(args.pings, args.smp, args.items)
    lx = {} if args.no_linux else linux(args.pings, args.items)
    print(f"load average before the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    names = {"first": "start to first heartbeat", "ping": "signed PING to DIME 0", "jitter": "heartbeat jitter",
             "transform": "items/s, transform (300 us)", "parse": "items/s, parse",
             "jitter_load": "hb jitter, transform streaming", "cpu_load": "DIME CPU, transform streaming"}  # fmt: skip
    w = max(len(n) for n in names.values())
    print(f"{'measure':<{w}}  {'bare metal (QEMU TCG, -smp ' + str(args.smp) + ')':<36}  Linux pxkernel")
    for key, name in names.items():
        print(f"{name:<{w}}  {bm.get(key, '-'):<36}  {lx.get(key, '-')}")
    for key in ("transform", "parse"):
        b, lx_rate = bm.get(key + "_rate"), lx.get(key + "_rate")
        if b and lx_rate:
            print(f"{'ratio ' + key + ' bare/Linux':<{w}}  {float(b) / float(lx_rate):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
