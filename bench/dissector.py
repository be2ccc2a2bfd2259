"""Throughput of tshark with the generated Parallax dissector, next to pxdump and plain tshark.

    python bench/dissector.py [N_FRAMES] [RUNS]

Writes a capture of N frames (the canonical samples, repeated), then times, in one run,
each reader over it with output to /dev/null and prints medians, frames/s and ratios
against `tshark + parallax.lua`.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

from pxproto.capture.pcapng import PcapngWriter  # noqa: E402
from pxproto.wire import samples  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "dissectors" / "parallax.lua"


def _capture(path: Path, n: int) -> None:
    frames = [raw for _, raw in samples.valid_samples()]
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        for i in range(n):
            w.write(frames[i % len(frames)], 1_700_000_000_000_000_000 + i * 1000)
        w.flush()


def _time(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 100_000
    runs = int(argv[1]) if len(argv) > 1 else 3
    tshark = shutil.which("tshark")
    if tshark is None:
        print("tshark is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "bench.pcapng"
        _capture(cap, n)
        readers = {
            "tshark + parallax.lua": [tshark, "-n", "-X", f"lua_script:{LUA}", "-r", str(cap)],
            "tshark + parallax.lua -T json": [tshark, "-n", "-X", f"lua_script:{LUA}", "-r", str(cap), "-T", "json"],
            "tshark, no dissector": [tshark, "-n", "-r", str(cap)],
            "pxdump -r": [sys.executable, "-m", "pxproto.dump.cli", "-r", str(cap)],
        }
        results = {name: _time(cmd, runs) for name, cmd in readers.items()}
    base = results["tshark + parallax.lua"]
    print(f"{n} frames, median of {runs} runs")
    print(f"{'reader':32} {'seconds':>8} {'frames/s':>12} {'vs tshark+lua':>14}")
    for name, secs in results.items():
        print(f"{name:32} {secs:8.2f} {n / secs:12,.0f} {base / secs:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
