"""Per-frame cost of the generated Parallax dissector, next to plain tshark and a hand-written toy.

    python bench/dissector.py [COPIES] [RUNS] [--capture PATH] [--lua PATH ...] [--json]

Concatenates COPIES (default 5) copies of ``captures/demo.pcapng``, then times, in one run and
interleaved, tshark over it: with no Lua at all, with ``bench/toy_parallax.lua`` (20 lines,
four fields and an Info column on the same EtherTypes), and with the generated
``dissectors/parallax.lua``. Prints the best of RUNS (default 3) for each, frames/s, and each
dissector's cost per frame net of plain tshark as a ratio to the toy's (the issue's figure), and
the same from the median run.
``--json`` adds the same three with ``-T json -V`` (every field and the full tree).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "dissectors" / "parallax.lua"
TOY = Path(__file__).resolve().parent / "toy_parallax.lua"
DEMO = ROOT / "captures" / "demo.pcapng"


def _time(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+system) of one tshark run; CPU time is what a loaded
    machine disturbs least, so the ratios use it."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {' '.join(cmd)}")
    return wall, usage.ru_utime + usage.ru_stime


def _count(tshark: str, cap: Path, env: dict[str, str]) -> int:
    out = subprocess.run(
        [tshark, "-n", "-r", str(cap), "-T", "fields", "-e", "frame.number"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len(out.split())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("copies", type=int, nargs="?", default=5)
    ap.add_argument("runs", type=int, nargs="?", default=3)
    ap.add_argument("--capture", type=Path, default=DEMO)
    ap.add_argument(
        "--lua", type=Path, action="append", help="a generated dissector to time (repeat to compare; default: ours)"
    )
    ap.add_argument("--json", action="store_true", help="also time -T json -V (full tree)")
    args = ap.parse_args(argv)
    tshark, mergecap = shutil.which("tshark"), shutil.which("mergecap")
    if tshark is None or mergecap is None:
        print("tshark and mergecap are needed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        # An empty config dir: no installed copy of the dissector, no user preferences.
        env = {**os.environ, "HOME": tmp, "WIRESHARK_CONFIG_DIR": str(Path(tmp) / "ws")}
        cap = Path(tmp) / "bench.pcapng"
        subprocess.run([mergecap, "-a", "-w", str(cap)] + [str(args.capture)] * args.copies, check=True)
        n = _count(tshark, cap, env)
        base = [tshark, "-n", "-r", str(cap)]
        readers: dict[str, list[str]] = {
            "plain tshark": base,
            "hand-written toy": [*base, "-X", f"lua_script:{TOY}"],
        }
        for lua in args.lua or [LUA]:
            name = "generated parallax.lua" if lua == LUA else f"generated {lua.name}"
            readers[name] = [*base, "-X", f"lua_script:{lua}"]
        if args.json:
            for name, cmd in list(readers.items()):
                readers[name + " -T json -V"] = [*cmd, "-T", "json", "-V"]
        walls: dict[str, list[float]] = {name: [] for name in readers}
        cpus: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.runs):  # interleaved, so a busy moment hits every reader alike
            for name, cmd in readers.items():
                w, c = _time(cmd, env)
                walls[name].append(w)
                cpus[name].append(c)
    wall = {name: min(ts) for name, ts in walls.items()}
    best = {name: min(ts) for name, ts in cpus.items()}
    med = {name: statistics.median(ts) for name, ts in cpus.items()}
    print(f"{n:,} frames ({args.copies} x {args.capture.name}), best and median of {args.runs} runs")
    print(f"{'dissector':36} {'wall s':>7} {'CPU s':>7} {'frames/s':>10} {'CPU us/frame net':>17} {'vs toy':>7}"
          f" {'median CPU s':>13} {'vs toy':>7}")  # fmt: skip
    for name, secs in best.items():
        suffix = " -T json -V" if name.endswith("-V") else ""
        plain, toy = best["plain tshark" + suffix], best["hand-written toy" + suffix]
        mplain, mtoy = med["plain tshark" + suffix], med["hand-written toy" + suffix]
        net = (secs - plain) / n * 1e6
        ratio = "-" if name.startswith("plain") else f"{(secs - plain) / (toy - plain):.1f}x"
        mratio = "-" if name.startswith("plain") else f"{(med[name] - mplain) / (mtoy - mplain):.1f}x"
        print(f"{name:36} {wall[name]:7.2f} {secs:7.2f} {n / secs:10,.0f} {net:17.2f} {ratio:>7}"
              f" {med[name]:13.2f} {mratio:>7}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
