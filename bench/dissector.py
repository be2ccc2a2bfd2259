"""Per-frame cost of the generated Parallax dissector, next to plain tshark and a hand-written toy.

    python bench/dissector.py [COPIES] [RUNS] [--capture PATH] [--lua PATH] [--json]

Concatenates COPIES (default 5) copies of ``captures/demo.pcapng``, then times, in one run and
interleaved, tshark over it: with no Lua at all, with ``bench/toy_parallax.lua`` (20 lines,
four fields and an Info column on the same EtherTypes), and with the generated
``dissectors/parallax.lua``. Prints the best of RUNS (default 3) for each, frames/s, and each
dissector's cost per frame net of plain tshark as a ratio to the toy's (the issue's figure).
``--json`` adds the same three with ``-T json -V`` (every field and the full tree).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "dissectors" / "parallax.lua"
TOY = Path(__file__).resolve().parent / "toy_parallax.lua"
DEMO = ROOT / "captures" / "demo.pcapng"


def _time(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - t


def _count(tshark: str, cap: Path, env: dict[str, str]) -> int:
    out = subprocess.run([tshark, "-n", "-r", str(cap), "-T", "fields", "-e", "frame.number"], env=env,
                         capture_output=True, text=True, check=True).stdout
    return len(out.split())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("copies", type=int, nargs="?", default=5)
    ap.add_argument("runs", type=int, nargs="?", default=3)
    ap.add_argument("--capture", type=Path, default=DEMO)
    ap.add_argument("--lua", type=Path, default=LUA, help="the generated dissector to time")
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
            "generated parallax.lua": [*base, "-X", f"lua_script:{args.lua}"],
        }
        if args.json:
            for name, cmd in list(readers.items()):
                readers[name + " -T json -V"] = [*cmd, "-T", "json", "-V"]
        times: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.runs):  # interleaved, so a busy moment hits every reader alike
            for name, cmd in readers.items():
                times[name].append(_time(cmd, env))
    best = {name: min(ts) for name, ts in times.items()}
    print(f"{n:,} frames ({args.copies} x {args.capture.name}), best of {args.runs} runs")
    print(f"{'dissector':36} {'seconds':>8} {'frames/s':>10} {'us/frame net':>13} {'vs toy':>7}")
    for name, secs in best.items():
        plain = best["plain tshark -T json -V" if name.endswith("-V") else "plain tshark"]
        toy = best["hand-written toy -T json -V" if name.endswith("-V") else "hand-written toy"]
        net = (secs - plain) / n * 1e6
        ratio = f"{(secs - plain) / (toy - plain):6.1f}x" if name != plain and "plain" not in name else "     -"
        print(f"{name:36} {secs:8.2f} {n / secs:10,.0f} {net:13.2f} {ratio:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
