"""pxdump against tcpdump: live capture on a veth flooded by trafgen, and reading one generated capture.

    python bench/pxdump.py --live [--rates full,500000,100000,20000] [--seconds 1.5] [--runs 3]
    python bench/pxdump.py [--frames 1000000] [--runs 5] [--capture PATH]

``--live`` (root): a veth pair between two namespaces it makes (``pxd13-*``, removed after);
trafgen sends 60-byte DATA frames from one end pinned to one CPU, the capture runs on the other
end pinned to another CPU and is stopped with SIGINT once the sender is done.  Round robin in the
same run, at each offered load: ``tcpdump -w /dev/null``, ``pxdump -w /dev/null``, ``pxdump -q``
and ``pxdump`` one line per frame (to /dev/null).  Prints the median share of sent frames each
captured and its ratio to tcpdump's share.

Without ``--live``:
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
import signal
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


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Veth:
    """Namespaces ``pxd13-cap-PID`` (``va``) and ``pxd13-snd-PID`` (``vb``) joined by a veth pair."""

    def __init__(self) -> None:
        tag = os.getpid() % 100000
        self.cap, self.snd = f"pxd13-cap-{tag}", f"pxd13-snd-{tag}"

    def __enter__(self) -> Veth:
        sh("ip", "netns", "add", self.cap)
        sh("ip", "netns", "add", self.snd)
        sh("ip", "link", "add", "va", "netns", self.cap, "type", "veth", "peer", "name", "vb", "netns", self.snd)
        for ns, dev in ((self.cap, "va"), (self.snd, "vb")):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"])
            sh("ip", "-n", ns, "link", "set", dev, "up")
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.cap, self.snd):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def small_data_frame() -> bytes:
    """A 60-byte DATA frame (the minimum Ethernet frame without FCS)."""
    mac_a, mac_b = bytes.fromhex("020000000003"), bytes.fromhex("020000000004")
    frame = encode(Frame(Data(1, 7, b"!", 1), Scope.DIME, 3, 1, 4, 1, 9, mac_b, mac_a))
    assert len(frame) == 60, len(frame)
    return frame


def captured_count(tool: str, err: str) -> int:
    """Frames the tool says it captured, from its closing counts on stderr."""
    key = " packets captured" if tool.startswith("tcpdump") else " frames captured"
    for line in err.splitlines():
        if line.endswith(key):
            return int(line.split()[0])
    raise SystemExit(f"{tool}: no count in its output: {err[-400:]}")


def live_once(
    veth: Veth, tool: str, cmd: list[str], frames: int, rate: int | None, cfg: Path, cpus: tuple[int, int]
) -> tuple[float, float, float]:
    """(share of the sent frames the tool captured, seconds from SIGINT to exit, frames/s on the wire
    from first to last frame (pxdump -q only, else nan)) for one flood."""
    env = dict(os.environ)  # pxdump runs from the same installed pxproto as this script
    full = ["taskset", "-c", str(cpus[1]), "ip", "netns", "exec", veth.cap, *cmd]
    quiet = "-q" in cmd  # its summary has the rate on the wire, from the capture's own time stamps
    out = subprocess.PIPE if quiet else subprocess.DEVNULL
    proc = subprocess.Popen(full, stdout=out, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if "listening on" not in line:
        raise SystemExit(f"{tool}: {line}{proc.stderr.read().decode()[-400:]}")
    time.sleep(0.3)
    send = ["taskset", "-c", str(cpus[0]), "ip", "netns", "exec", veth.snd]
    send += ["trafgen", "-o", "vb", "-i", str(cfg), "-n", str(frames), "-P", "1", "-C", "-Q"]
    if rate is not None:
        send += ["-b", f"{rate}pps"]
    subprocess.run(send, check=True, capture_output=True, timeout=600)
    time.sleep(1.2)  # past tcpdump's 1 s block timeout, so its last partial block is handed over
    t = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    stdout, err_b = proc.communicate(timeout=60)
    err = err_b.decode()
    rate_seen = float("nan")
    if quiet and b" frames/s, " in stdout:
        rate_seen = float(stdout.split(b" frames/s, ")[0].rsplit(b"(", 1)[1])
    stop = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{tool} exit {proc.returncode}: {err[-400:]}")
    return captured_count(tool, err) / frames, stop, rate_seen


def live_main(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise SystemExit("--live needs root (network namespaces, trafgen)")
    for tool in ("trafgen", "tcpdump", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"--live needs {tool}")
    cpus = (0, 1) if (os.cpu_count() or 1) > 1 else (0, 0)
    py = sys.executable
    pxdump = [py, "-m", "pxproto.dump.cli", "-i", "va", "-n"]
    tools: list[tuple[str, list[str]]] = [
        ("tcpdump -w /dev/null", ["tcpdump", "-i", "va", "-n", "-w", "/dev/null"]),
        ("pxdump -w /dev/null", [*pxdump, "-w", "/dev/null"]),
        ("pxdump -q", [*pxdump, "-q"]),
        ("pxdump (one line)", pxdump),
    ]
    rates: list[int | None] = [None if r == "full" else int(r) for r in args.rates.split(",")]
    frame = small_data_frame()
    med = statistics.median
    with tempfile.TemporaryDirectory() as tmp, Veth() as veth:
        cfg = Path(tmp) / "data.cfg"
        cfg.write_text("{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }\n")
        shares: dict[tuple[str, int | None], list[float]] = {}
        stops: dict[str, list[float]] = {name: [] for name, _ in tools}
        sent_rate: dict[int | None, list[float]] = {}
        for rate in rates:
            n = args.full_frames if rate is None else max(1000, int(rate * args.seconds))
            for _ in range(args.runs):
                for name, cmd in tools:
                    share, stop, seen = live_once(veth, name, cmd, n, rate, cfg, cpus)
                    shares.setdefault((name, rate), []).append(share)
                    if seen == seen:
                        sent_rate.setdefault(rate, []).append(seen)
                    stops[name].append(stop)
        print(
            f"load average: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs; "
            f"sender on CPU {cpus[0]}, capture on CPU {cpus[1]}"
        )
        print(f"60-byte DATA frames from trafgen over a veth; median of {args.runs} round-robin runs")
        print("share = frames captured / frames sent; ratio = share / tcpdump's share at the same load")
        head = f"{'capture':<24}"
        for rate in rates:
            head += f"{'full' if rate is None else f'{rate // 1000}k/s':>18}"
        print(head + f"{'SIGINT->exit median / max':>28}")
        row = f"{'(on the wire, k/s)':<24}"
        for rate in rates:
            row += f"{med(sent_rate[rate]) / 1000 if rate in sent_rate else float('nan'):>17.0f} "
        print(row)
        for name, _ in tools:
            row = f"{name:<24}"
            for rate in rates:
                s, base = med(shares[(name, rate)]), med(shares[("tcpdump -w /dev/null", rate)])
                ratio = s / base if base else float("nan")
                row += f"{s * 100:>9.1f}% {ratio:>6.2f}x"
            print(row + f"{med(stops[name]) * 1000:>15.0f} / {max(stops[name]) * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--live", action="store_true", help="live capture on a veth flooded by trafgen (root)")
    ap.add_argument("--rates", default="full,500000,100000,20000", help="offered loads in frames/s, or full")
    ap.add_argument("--seconds", type=float, default=1.5, help="length of each flood at a set rate")
    ap.add_argument("--full-frames", type=int, default=1_000_000, help="frames sent at full rate")
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=100_000, help="frames of the subset the slow readers get")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--capture", type=Path, help="keep the generated capture here (reused when it exists)")
    args = ap.parse_args()
    if args.live:
        live_main(args)
        return
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
