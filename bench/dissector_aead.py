"""What opening encrypted frames costs the generated dissector (its plain-Lua AES-256-GCM).

    python bench/dissector_aead.py [RUNS] [--frames N]

Builds, from ``captures/demo.pcapng``, N frames (default 2,000) in clear and the same frames sealed
(AEAD mode, under a random key, one sender per frame's source), plus 200 DATA frames of 1,400 and
200 of 8,000 payload bytes, clear and sealed.  Times tshark over each capture, interleaved: clear
frames, sealed frames without the key (opaque, as before) and sealed frames with ``-o px.key``.
Prints the median CPU seconds of RUNS (default 5) and the cost per frame net of the clear capture,
and per kilobyte of body for the large DATA frames.  The clear frames' own path is
``bench/dissector.py``'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

from pxproto.capture import read_packets  # noqa: E402
from pxproto.capture.pcapng import PcapngWriter  # noqa: E402
from pxproto.errors import ProtocolError  # noqa: E402
from pxproto.wire import aead, codec  # noqa: E402
from pxproto.wire.codes import Scope  # noqa: E402
from pxproto.wire.frame import Data, Frame  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "dissectors" / "parallax.lua"
DEMO = ROOT / "captures" / "demo.pcapng"


def _write(path: Path, raws: list[bytes]) -> None:
    with path.open("wb") as f:
        w = PcapngWriter(f)
        for i, raw in enumerate(raws):
            w.write(raw, 1000 * (i + 1))


def _frames(n: int) -> list[Frame]:
    out = []
    with DEMO.open("rb") as f:
        for p in read_packets(f):
            try:
                frame = codec.decode(p.data)
            except ProtocolError:
                continue
            out.append(dataclasses.replace(frame, auth=None, padding=0))
            if len(out) == n:
                break
    return out


def _big(size: int, count: int) -> list[Frame]:
    src, dst = bytes.fromhex("020000000a01"), bytes.fromhex("020000000b01")
    return [
        Frame(Data(3, i + 1, os.urandom(size), size), Scope.DIME, 1, 0, 2, 0, i + 1, dst, src) for i in range(count)
    ]


def _cpu(cmd: list[str], env: dict[str, str]) -> float:
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=int, nargs="?", default=5)
    ap.add_argument("--frames", type=int, default=2000)
    args = ap.parse_args(argv)
    tshark = shutil.which("tshark")
    if tshark is None:
        print("tshark is needed", file=sys.stderr)
        return 1
    key = os.urandom(32)
    sets = {"demo frames": _frames(args.frames), "DATA 1400 B": _big(1400, 200), "DATA 8000 B": _big(8000, 200)}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HOME": tmp, "WIRESHARK_CONFIG_DIR": str(Path(tmp) / "ws")}
        base = [tshark, "-n", "-X", f"lua_script:{LUA}", "-r"]
        runs: dict[str, list[str]] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for name, frames in sets.items():
            clear = [codec.encode(f) for f in frames]
            sealed = [aead.seal(f, 1, (1 << 32) + i + 1, key) for i, f in enumerate(frames)]
            _write(Path(tmp) / f"{name}.clear.pcapng", clear)
            _write(Path(tmp) / f"{name}.sealed.pcapng", sealed)
            body = sum(len(f.body.payload) if isinstance(f.body, Data) else 0 for f in frames)
            sizes[name] = (len(frames), body)
            runs[f"{name}: clear"] = [*base, str(Path(tmp) / f"{name}.clear.pcapng")]
            runs[f"{name}: sealed, no key"] = [*base, str(Path(tmp) / f"{name}.sealed.pcapng")]
            runs[f"{name}: sealed, key"] = [*runs[f"{name}: sealed, no key"], "-o", f"px.key:{key.hex()}"]
        cpus: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.runs):  # interleaved: a busy moment hits every run alike
            for name, cmd in runs.items():
                cpus[name].append(_cpu(cmd, env))
    med = {name: statistics.median(ts) for name, ts in cpus.items()}
    print(f"median CPU of {args.runs} runs, tshark -n with dissectors/parallax.lua")
    print(f"{'capture':32} {'frames':>7} {'CPU s':>7} {'net us/frame':>13} {'net us/KB body':>15}")
    for name, secs in med.items():
        group = name.split(":")[0]
        n, body = sizes[group]
        net = secs - med[f"{group}: clear"]
        per_kb = (
            f"{net / (body / 1024) * 1e6:15.0f}"
            if group.startswith("DATA") and name.endswith(", key")
            else f"{'-':>15}"
        )
        print(f"{name:32} {n:7} {secs:7.2f} {net / n * 1e6:13.0f} {per_kb}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
