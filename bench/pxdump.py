"""pxdump against tcpdump, tshark and a dpkt script on one generated capture.

    python bench/pxdump.py [--frames 1000000] [--runs 5] [--capture PATH]

Generates small Parallax frames with a realistic mix (heartbeats, signaling
request/response pairs, small DATA fragments, some discovery) into a pcapng,
then times, in the same run, each reader over the same file with output to
/dev/null: ``pxdump -r`` (one line per frame), ``pxdump -q``, ``tcpdump -nr``,
``tshark -r`` (plain, and with the generated Lua dissector when it exists) and
a dpkt loop that reads every frame and its Parallax header.  Prints medians of
wall time (process start included) and frames/s, and ratios to tcpdump.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pxproto.capture.pcapng import PcapngWriter  # noqa: E402
from pxproto.wire import encode  # noqa: E402
from pxproto.wire.codes import Command, DimeState, DiscoveryOp, Op, Scope, Status, TlvType  # noqa: E402
from pxproto.wire.frame import Data, DimeInfo, Discovery, Frame, Heartbeat, Signaling, Tlv  # noqa: E402

MACS = [bytes.fromhex(f"0200000001{i:02x}") for i in range(1, 9)]
ORCH = bytes.fromhex("020000000001")


def templates(rng: random.Random, n: int) -> list[bytes]:
    """``n`` distinct small frames in the mix (about 35% data, 30% heartbeat, 30% signaling, 5% discovery)."""
    out: list[bytes] = []
    req_id = 1
    while len(out) < n:
        r = rng.random()
        server = rng.randrange(len(MACS))
        dime = server * 8 + rng.randrange(8)
        if r < 0.35:
            payload = rng.randbytes(rng.randrange(8, 64))
            body = Data(rng.randrange(1, 16), rng.randrange(1 << 20), payload, len(payload))
            out.append(
                encode(Frame(body, Scope.DIME, dime, 1, dime + 1, 1, len(out), MACS[(server + 1) % 8], MACS[server]))
            )
        elif r < 0.65:
            hb = Heartbeat(rng.randrange(1, 9), DimeState.BUSY, 100, rng.randrange(1001), 1, 4, 16)
            out.append(encode(Frame(hb, Scope.SYSTEM, dime, 0, 0xFFFF, 0, len(out), b"\xff" * 6, MACS[server])))
        elif r < 0.95:
            cmd = rng.choice([Command.PING, Command.GET_PARAM, Command.USAGE, Command.MEM_ALLOC])
            params = (Tlv(TlvType.ECHO, b"12345678"),) if cmd is Command.PING else ()
            req = Signaling(cmd, Op.REQUEST, req_id, Status.OK, params)
            out.append(encode(Frame(req, Scope.DIME, 0xFFFF, 0, dime, 0, len(out), MACS[server], ORCH)))
            resp = Signaling(cmd, Op.RESPONSE, req_id, rng.choice([Status.OK] * 9 + [Status.BUSY]), params)
            out.append(encode(Frame(resp, Scope.DIME, dime, 0, 1, 0, len(out), ORCH, MACS[server])))
            req_id += 1
        else:
            d = Discovery(
                DiscoveryOp.ANNOUNCE, 7, 0x100, 1, 0xFF, (DimeInfo(dime, dime % 8, DimeState.FREE, 16, 8, 1),)
            )
            out.append(encode(Frame(d, Scope.SYSTEM, 0xFFFF, 0, 0xFFFF, 0, len(out), b"\xff" * 6, MACS[server])))
    return out


def generate(path: Path, frames: int) -> None:
    rng = random.Random(4)
    pool = templates(rng, 4096)
    t0 = 1_700_000_000_000_000_000
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        for i in range(frames):
            w.write(pool[i % len(pool)], t0 + i * 10_000)


DPKT_SCRIPT = """
import sys, dpkt, struct
n = 0
classes = {0xabba: 0, 0xabbb: 0, 0xabbc: 0, 0xabbd: 0}
with open(sys.argv[1], "rb") as f:
    for ts, buf in dpkt.pcapng.Reader(f):
        eth = dpkt.ethernet.Ethernet(buf)
        if eth.type in classes:
            classes[eth.type] += 1
            version, flags, length, sd, st, dd, dt, seq = struct.unpack_from(">BBHHHHHQ", eth.data)
            print(ts, eth.type, sd, st, dd, dt, seq, length)
        n += 1
print(n, classes)
"""


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.decode()[-400:]}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--capture", type=Path, help="keep the generated capture here (reused when it exists)")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        cap = args.capture or Path(tmp) / "bench.pcapng"
        t = time.perf_counter()
        if not cap.exists():
            generate(cap, args.frames)
        print(f"generated {args.frames} frames, {cap.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s")
        script = Path(tmp) / "dpkt_read.py"
        script.write_text(DPKT_SCRIPT)
        py = sys.executable
        tools: list[tuple[str, list[str]]] = [
            ("pxdump -r (one line)", [py, "-m", "pxproto.dump.cli", "-r", str(cap)]),
            ("pxdump -q", [py, "-m", "pxproto.dump.cli", "-r", str(cap), "-q"]),
            ("pxdump -r hb and dime 3", [py, "-m", "pxproto.dump.cli", "-r", str(cap), "hb", "and", "dime", "3"]),
            ("tcpdump -nr", ["tcpdump", "-nr", str(cap)]),
            ("dpkt script", [py, str(script), str(cap)]),
        ]
        if not args.no_tshark and shutil.which("tshark"):
            tools.append(("tshark -r", ["tshark", "-n", "-r", str(cap)]))
            lua = ROOT / "dissectors" / "parallax.lua"
            if lua.exists():
                tools.append(("tshark -r + parallax.lua", ["tshark", "-n", "-X", f"lua_script:{lua}", "-r", str(cap)]))
        results = []
        for name, cmd in tools:
            if shutil.which(cmd[0]) is None:
                continue
            runs = args.runs if not name.startswith("tshark") else max(1, min(args.runs, 3))
            results.append((name, timed(cmd, runs, env)))
        base = dict(results).get("tcpdump -nr")
        print(f"\n{args.frames} frames, median of {args.runs} runs (tshark: up to 3), wall time incl. start-up")
        print(f"{'tool':<28}{'seconds':>10}{'frames/s':>14}{'vs tcpdump':>12}")
        for name, sec in results:
            ratio = f"{base / sec:.2f}x" if base else "-"
            print(f"{name:<28}{sec:>10.3f}{args.frames / sec:>14,.0f}{ratio:>12}")
        startup = timed([py, "-c", "import pxproto.dump.cli"], args.runs, env)
        print(f"\npxdump start-up (python + imports): {startup:.3f} s; frames/s net of start-up:")
        for name, sec in results:
            if name.startswith("pxdump") and sec > startup:
                print(f"  {name:<26}{args.frames / (sec - startup):>14,.0f}")


if __name__ == "__main__":
    main()
