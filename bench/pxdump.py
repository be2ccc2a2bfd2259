"""pxdump against tcpdump, tshark and a dpkt script on one generated capture.

    python bench/pxdump.py [--frames 1000000] [--runs 5] [--capture PATH]

Generates small Parallax frames with a realistic mix (heartbeats, signaling
request/response pairs, small DATA fragments, some discovery) into a pcapng,
then times, round robin in the same run, each reader with output to /dev/null:
``pxdump -r`` (one line per frame), ``pxdump -q``, a filtered ``pxdump -r`` and
``tcpdump -nr`` on the whole file; the slow readers (``tshark -r`` plain and with
the generated Lua dissector, a dpkt loop reading every frame's Parallax header)
on its first ``--small`` frames, beside pxdump and tcpdump on that subset.
Prints medians of wall time (process start included) and of CPU time
(user+sys, from wait4), frames/s, and ratios to tcpdump on the same file.
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

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads  # noqa: E402

measure_installed()

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


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one run, output to /dev/null."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.decode()[-400:]}")
    return wall, usage.ru_utime + usage.ru_stime


def subset(src: Path, dst: Path, frames: int) -> None:
    """The first ``frames`` frames of a capture (for the slow readers)."""
    from pxproto.capture.pcapng import read_packets

    with open(src, "rb") as f, open(dst, "wb") as out:
        w = PcapngWriter(out)
        for i, p in enumerate(read_packets(f)):
            if i == frames:
                break
            w.write(p.data, p.ts_ns, p.orig_len)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=100_000, help="frames of the subset the slow readers get")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--capture", type=Path, help="keep the generated capture here (reused when it exists)")
    args = ap.parse_args()
    env = dict(os.environ)  # pxdump runs from the same installed pxproto as this script
    with tempfile.TemporaryDirectory() as tmp:
        cap = args.capture or Path(tmp) / "bench.pcapng"
        t = time.perf_counter()
        if not cap.exists():
            generate(cap, args.frames)
        print(f"capture: {args.frames} frames, {cap.stat().st_size / 1e6:.1f} MB ({time.perf_counter() - t:.1f} s)")
        small = Path(tmp) / "small.pcapng"
        subset(cap, small, args.small)
        script = Path(tmp) / "dpkt_read.py"
        script.write_text(DPKT_SCRIPT)
        py = sys.executable
        pxdump = [py, "-m", "pxproto.dump.cli"]
        big, little = (str(cap), args.frames), (str(small), args.small)
        tools: list[tuple[str, list[str], int]] = [
            ("pxdump -r (one line)", [*pxdump, "-r", big[0]], big[1]),
            ("pxdump -q", [*pxdump, "-r", big[0], "-q"], big[1]),
            ("pxdump -r hb and dime 3", [*pxdump, "-r", big[0], "hb", "and", "dime", "3"], big[1]),
            ("tcpdump -nr", ["tcpdump", "-nr", big[0]], big[1]),
            ("pxdump -r (one line) [small]", [*pxdump, "-r", little[0]], little[1]),
            ("tcpdump -nr [small]", ["tcpdump", "-nr", little[0]], little[1]),
            ("dpkt script [small]", [py, str(script), little[0]], little[1]),
        ]
        if not args.no_tshark and shutil.which("tshark"):
            tools.append(("tshark -r [small]", ["tshark", "-n", "-r", little[0]], little[1]))
            lua = ROOT / "dissectors" / "parallax.lua"
            if lua.exists():
                tools.append(
                    (
                        "tshark + parallax.lua [small]",
                        ["tshark", "-n", "-X", f"lua_script:{lua}", "-r", little[0]],
                        little[1],
                    )
                )
        tools = [x for x in tools if shutil.which(x[1][0])]
        startup_cmd = [py, "-c", "import pxproto.dump.cli"]
        walls: dict[str, list[float]] = {name: [] for name, _, _ in tools}
        cpus: dict[str, list[float]] = {name: [] for name, _, _ in tools}
        start_wall: list[float] = []
        start_cpu: list[float] = []
        for _ in range(args.runs):  # round robin: every tool sees the same load drift
            for name, cmd, _n in tools:
                w, c = run_once(cmd, env)
                walls[name].append(w)
                cpus[name].append(c)
            w, c = run_once(startup_cmd, env)
            start_wall.append(w)
            start_cpu.append(c)
        med = statistics.median
        rate = {name: n / med(walls[name]) for name, _, n in tools}
        crate = {name: n / med(cpus[name]) for name, _, n in tools}
        base, cbase = rate["tcpdump -nr"], crate["tcpdump -nr"]
        sbase, csbase = rate["tcpdump -nr [small]"], crate["tcpdump -nr [small]"]
        print(f"load average before the runs: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
        print(
            f"median of {args.runs} round-robin runs; [small] = first {args.small} frames; ratio = frames/s vs tcpdump"
        )
        print("on the same file; wall includes start-up; cpu = user+sys of the process")
        print(f"{'tool':<32}{'frames':>9}{'wall s':>9}{'frames/s':>13}{'ratio':>8}", end="")
        print(f"{'cpu s':>8}{'frames/cpu-s':>14}{'ratio':>8}")
        for name, _, n in tools:
            b, cb = (sbase, csbase) if "[small]" in name else (base, cbase)
            print(
                f"{name:<32}{n:>9}{med(walls[name]):>9.3f}{rate[name]:>13,.0f}{rate[name] / b:>7.2f}x"
                f"{med(cpus[name]):>8.3f}{crate[name]:>14,.0f}{crate[name] / cb:>7.2f}x"
            )
        sw, sc = med(start_wall), med(start_cpu)
        print(f"\npxdump start-up (python + imports): wall {sw:.3f} s, cpu {sc:.3f} s; net of start-up:")
        for name, _, n in tools:
            if name.startswith("pxdump") and "[small]" not in name:
                w, c = med(walls[name]) - sw, med(cpus[name]) - sc
                fw, fc = n / w if w > 0 else float("inf"), n / c if c > 0 else float("inf")
                print(f"  {name:<30}{fw:>14,.0f} frames/s wall{fc:>14,.0f} frames/cpu-s")


if __name__ == "__main__":
    main()
