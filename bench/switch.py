"""pxswitch against the Linux bridge and a naive Python switch, in one run.

Three namespaces (name prefix ``$PXS_BENCH_NS``, default pxs16): pxs16-src
--veth-- pxs16-sw --veth-- pxs16-dst.  trafgen (one core) sends 60-byte DATA
frames (64 on the wire with the FCS) from pxs16-src; pxs16-sw forwards with, in
turn, a Linux bridge, a naive Python switch (one recv and one send per frame)
and pxswitch (on the other core), once under the normal scheduler and once
under SCHED_FIFO (``pxswitch-rt``: the bridge forwards in softirq, ahead of
every task, so that is the like-for-like comparison on a busy host).
Measured: frames/s at saturation and the highest tried rate with zero loss;
the userspace switch's CPU time per forwarded frame at saturation (user and
system, with the softirq work that runs in its context: for pxswitch that
includes delivering each frame into the far veth; the figure a loaded host's
scheduler does not move much); one-way latency p50/p99 of probe DATA frames
at 50% of each switch's saturation rate (and how many probes were lost);
signaling/heartbeat frames lost while data saturates.  With ``--rounds N`` the
modes run side by side N times and a table of medians follows.  A pxswitch
mode takes variants after ``+``: port options (``pxswitch+kernel=false``: no in-kernel fast path, every frame
through the userspace loop; with it, the default, learned DATA frames are forwarded in the sender's softirq as the
bridge's are, and the CPU column counts only what reached the switch; ``pxswitch+ring=0``: recvmmsg
instead of the default TPACKET_V2 ring, ``+ring=3``: TPACKET_V3 blocks; ``+txring=false``: sendmmsg instead of
the PACKET_TX_RING; ``+offload=false``), ``busy=US`` (busy polling for US after every frame), ``adaptive=US``
(adaptive busy polling: sleep after US of silence, default 50; ``adaptive=0``: sleep after every batch), ``nap=US``
(a polling look that found nothing sleeps US on a timer),
``slice=US`` (the EEVDF slice the switch asks for; ``slice=0``: the kernel's default), ``workers=N``
(forwarding threads, PACKET_FANOUT),
``cpus=LIST`` (the switch's CPUs instead of ``--switch-cpu``, e.g. ``cpus=0-1``) or ``pythonpath=DIR``
(the switch imports pxproto from DIR: another build, side by side).

A second table (``--port-modes``, see ``_switch_ports.py``) forwards between
the port types QEMU guests use: the bridge between two taps, pxswitch AF_PACKET
ports on the same taps, pxswitch UDP ports (``-netdev dgram``) and stream ports
(``-netdev stream``).

    sudo python bench/switch.py [--seconds 3] [--rounds 5] \
        [--modes bridge,naive,pxswitch,pxswitch+kernel=false,pxswitch-rt]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO

import _switch_ports  # standard library only at import

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

PREFIX = os.environ.get("PXS_BENCH_NS", "pxs16")
"""Namespace name prefix (another run of this bench on the same host needs its own)."""
SRC, SW, DST = NS = (f"{PREFIX}-src", f"{PREFIX}-sw", f"{PREFIX}-dst")
SRC_MAC = "02:00:00:00:0a:01"
DST_MAC = "02:00:00:00:0b:01"
PROBE_MAC = "02:00:00:00:0a:02"
RT_PRIORITY = 10
CPUS = {"sender": "0", "switch": "1"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd: str, check: bool = True) -> str:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode:
        raise RuntimeError(f"{cmd}: {r.stderr.strip()}")
    return r.stdout


def nsx(ns: str, cmd: str) -> str:
    return f"ip netns exec {ns} {cmd}"


def setup() -> None:
    teardown()
    for ns in NS:
        sh(f"ip netns add {ns}")
        sh(nsx(ns, "ip link set lo up"))
        sh(nsx(ns, "sysctl -qw net.ipv6.conf.all.disable_ipv6=1"))
    sh(f"ip link add src0 netns {SRC} type veth peer name s0 netns {SW}")
    sh(f"ip link add dst0 netns {DST} type veth peer name s1 netns {SW}")
    sh(nsx(SRC, f"ip link set src0 address {SRC_MAC} up"))
    sh(nsx(DST, f"ip link set dst0 address {DST_MAC} up"))
    for i in ("s0", "s1"):
        sh(nsx(SW, f"ip link set {i} up"))


def teardown() -> None:
    for ns in NS:
        sh(f"ip netns del {ns}", check=False)


def counter(ns: str, dev: str, what: str) -> int:
    return int(sh(nsx(ns, f"cat /sys/class/net/{dev}/statistics/{what}")))


# ---------------------------------------------------------------- helpers run inside a namespace

NAIVE = r"""
import select, socket, sys
socks = []
for ifname in sys.argv[1:]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((ifname, 3))
    s.setsockopt(263, 23, 1)  # PACKET_IGNORE_OUTGOING
    socks.append(s)
table = {}
while True:
    for s in select.select(socks, [], [])[0]:
        frame = s.recv(65535)
        table[frame[6:12]] = s
        out = table.get(frame[0:6])
        for o in ([out] if out is not None else socks):
            if o is not s:
                try:
                    o.send(frame)
                except OSError:
                    pass
"""

SENDER = r"""
import socket, struct, sys, time
from pxproto.switch.frames import data, heartbeat, signaling
ifname, mode, n, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((ifname, 3))
src, dst, probe = (bytes.fromhex(m.replace(":", "")) for m in sys.argv[5:8])
gap = 1.0 / rate
# one probe frame built ahead (building one costs about 130 µs, which at 2000/s took half a CPU from the
# switch or from trafgen): each send only stamps its last 8 bytes
template = bytearray(data(dst, probe, seq=0, size=60))
print("ready", flush=True)
t = time.monotonic()
for i in range(n):
    if mode == "probe":
        template[-8:] = struct.pack("!Q", time.clock_gettime_ns(time.CLOCK_REALTIME))
        f = bytes(template)
    else:
        f = signaling(dst, src, dst_dime=1, seq=i) if i % 2 else heartbeat(src, dime=2, seq=i)
    while True:
        try:
            s.send(f)
            break
        except OSError:
            time.sleep(0.0001)
    t += gap
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)
"""

RECEIVER = r"""
import socket, struct, sys, time, ctypes, json
ifname, mode, seconds, key = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
if mode == "probe":   # frames from the probe MAC: ld [8] == last 4 bytes of the MAC
    k = int.from_bytes(bytes.fromhex(key.replace(":", ""))[2:], "big")
    prog = [(0x20, 0, 0, 8), (0x15, 0, 1, k), (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]
else:                 # control EtherTypes
    ets = [int(x, 0) for x in key.split(",")]
    prog = [(0x28, 0, 0, 12)] + [(0x15, len(ets) - i, 0, e) for i, e in enumerate(ets)]
    prog += [(6, 0, 0, 0), (6, 0, 0, 0xFFFF)]
code = b"".join(struct.pack("HBBI", *p) for p in prog)
buf = ctypes.create_string_buffer(code, len(code))
s.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", len(prog), ctypes.addressof(buf)))
s.bind((ifname, 3))
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.settimeout(0.2)
print("ready", flush=True)
lat, n, end, last = [], 0, time.monotonic() + seconds, 0.0
while time.monotonic() < end and not (n and time.monotonic() - last > 1.0):  # until the sender has long stopped
    try:
        data, anc, _, _ = s.recvmsg(2048, 64)
    except socket.timeout:
        continue
    n += 1
    last = time.monotonic()
    if mode == "probe":
        for lvl, typ, val in anc:
            if typ == 35:  # SCM_TIMESTAMPNS
                sec, ns = struct.unpack("qq", val[:16])
                lat.append((sec * 10**9 + ns - struct.unpack("!Q", data[-8:])[0]) / 1000.0)
print(json.dumps({"n": n, "lat_us": lat}), flush=True)
"""


def env() -> dict[str, str]:
    return dict(os.environ)  # the subprocesses import the same installed pxproto as this script


class Mode:
    def __init__(self, name: str, port_opts: str = "", extra: tuple[str, ...] = (), cpus: str = "") -> None:
        self.name = name
        self.cpus = cpus or CPUS["switch"]
        self.port_opts = f",{port_opts}" if port_opts else ""
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmp = tempfile.mkdtemp(prefix="pxs16-")
        self.err: IO[str] = open(os.devnull, "w+")

    def start(self) -> None:
        if self.name == "bridge":
            sh(nsx(SW, "ip link add br0 type bridge stp_state 0 forward_delay 0"))
            sh(nsx(SW, "ip link set s0 master br0"))
            sh(nsx(SW, "ip link set s1 master br0"))
            sh(nsx(SW, "ip link set br0 up"))
        else:
            if self.name == "naive":
                script = os.path.join(self.tmp, "naive.py")
                with open(script, "w") as f:
                    f.write(NAIVE)
                cmd = [sys.executable, script, "s0", "s1"]
            else:
                cmd = [
                    sys.executable,
                    "-m",
                    "pxproto.switch.cli",
                    "run",
                    "--port",
                    f"afpacket:interface=s0,name=s0{self.port_opts}",
                    "--port",
                    f"afpacket:interface=s1,name=s1{self.port_opts}",
                    "--control",
                    os.path.join(self.tmp, "c.sock"),
                    *self.extra,
                ]
            self.err = open(os.path.join(self.tmp, "stderr"), "w+")
            paths = [a.partition("=")[2] for a in self.extra if a.startswith("PYTHONPATH=")]
            cmd = [a for a in cmd if not a.startswith("PYTHONPATH=")]
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", SW, "taskset", "-c", self.cpus, *cmd],
                env={**env(), "PYTHONPATH": paths[-1]} if paths else env(),
                stdout=subprocess.DEVNULL,
                stderr=self.err,
            )
        time.sleep(1.0)
        self.check()
        # Teach every switch where the destination is (one frame from it).
        send(DST, "dst0", "control", 2, 1000, DST_MAC, SRC_MAC)
        time.sleep(0.2)

    def check(self) -> None:
        """Stop the bench with the switch's own last words when it has exited (a mistyped variant, say)."""
        if self.proc is None or self.proc.poll() is None:
            return
        self.err.seek(0)
        lines = [ln for ln in self.err.read().splitlines() if ln.strip()]
        why = lines[-1] if lines else "no message"
        raise SystemExit(f"bench/switch.py: mode {self.name}: the switch exited ({self.proc.returncode}): {why}")

    def cpu_seconds(self) -> float:
        return _switch_ports.cpu_seconds(self.proc)

    def stats(self) -> dict | None:
        if not self.name.startswith("pxswitch"):
            return None
        out = sh(
            nsx(SW, f"{sys.executable} -m pxproto.switch.cli stats --json --control {self.tmp}/c.sock"),
            check=False,
        )
        return json.loads(out) if out.strip() else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.name == "bridge":
            sh(nsx(SW, "ip link del br0"), check=False)
        self.err.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def send(ns: str, dev: str, mode: str, n: int, rate: float, src: str, dst: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, dev, mode, str(n), str(rate), src, dst, PROBE_MAC],
        env=env(),
        stdout=subprocess.PIPE,
    )
    assert p.stdout is not None
    p.stdout.readline()  # its imports are done: the load may start
    if mode == "control" and n <= 2:
        p.wait()
    return p


def receiver(mode: str, seconds: float, key: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        ["ip", "netns", "exec", DST, sys.executable, "-c", RECEIVER, "dst0", mode, str(seconds), key],
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    p.stdout.readline()
    return p


def trafgen_conf(path: str) -> None:
    from pxproto.switch.frames import data

    f = data(bytes.fromhex(DST_MAC.replace(":", "")), bytes.fromhex(SRC_MAC.replace(":", "")), size=60)
    with open(path, "w") as fh:
        fh.write("{ " + ", ".join(f"0x{b:02x}" for b in f) + " }\n")


def blast(conf: str, seconds: float, rate: int | None) -> tuple[float, int, int]:
    """trafgen on the sender CPU for ``seconds``; (duration, sent, received at dst0)."""
    tx0, rx0 = counter(SRC, "src0", "tx_packets"), counter(DST, "dst0", "rx_packets")
    args = [
        "ip",
        "netns",
        "exec",
        SRC,
        "taskset",
        "-c",
        CPUS["sender"],
        "trafgen",
        "-o",
        "src0",
        "-i",
        conf,
        "-P",
        "1",
        "-q",
        "-C",
        "-Q",
    ]
    if rate:
        args += ["-b", f"{rate}pps"]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(seconds)
    os.killpg(p.pid, signal.SIGINT)  # trafgen forks its sender: signal the whole group
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    time.sleep(0.3)  # let the switch drain
    dt = time.monotonic() - t0
    tx, rx = counter(SRC, "src0", "tx_packets") - tx0, counter(DST, "dst0", "rx_packets") - rx0
    return dt, tx, rx


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_mode(
    name: str, conf: str, seconds: float, ctrl_ets: str, port_opts: str, extra: tuple[str, ...], cpus: str
) -> dict:
    m = Mode(name, port_opts, extra, cpus)
    res: dict = {"mode": name}
    try:
        m.start()
        cpu0 = m.cpu_seconds()
        _, tx, rx = blast(conf, seconds, None)
        m.check()
        cpu = m.cpu_seconds() - cpu0
        res.update(sat_fps=rx / seconds, sent_fps=tx / seconds, sat_loss=1 - rx / tx if tx else 0)
        res["cpu_ns"] = cpu * 1e9 / rx if rx and m.proc is not None else float("nan")
        sat = rx / seconds
        # zero-loss rate: the highest of a few fractions of the saturation rate that loses nothing
        res["zero_loss_fps"] = 0.0
        for frac in (0.9, 0.75, 0.5, 0.25):
            _, tx, rx = blast(conf, min(seconds, 2.0), int(sat * frac))
            if tx and rx >= tx:
                res["zero_loss_fps"] = tx / min(seconds, 2.0)
                break
        # latency at 50% of saturation: probe frames (2000/s) beside the load
        r = receiver("probe", seconds + 20, PROBE_MAC)
        probe = send(SRC, "src0", "probe", int(2000 * seconds), 2000, SRC_MAC, DST_MAC)
        blast(conf, seconds, int(sat * 0.5))
        probe.wait()
        out = json.loads(r.communicate()[0].splitlines()[-1])
        n_probe = int(2000 * seconds)
        res.update(
            p50_us=pct(out["lat_us"], 0.5),
            p99_us=pct(out["lat_us"], 0.99),
            probe_lost=max(0, n_probe - len(out["lat_us"])),
        )
        # control frames while data saturates
        n_ctrl = int(1000 * seconds)
        r = receiver("control", seconds + 20, ctrl_ets)
        c = send(SRC, "src0", "control", n_ctrl, 1000, SRC_MAC, DST_MAC)
        blast(conf, seconds, None)
        c.wait()
        got = json.loads(r.communicate()[0].splitlines()[-1])["n"]
        res.update(ctrl_sent=n_ctrl, ctrl_lost=max(0, n_ctrl - got))
        m.check()
        res["stats"] = m.stats()
    finally:
        m.stop()
    return res


def median(xs: list[float]) -> float:
    xs = sorted(x for x in xs if x == x)
    if not xs:
        return float("nan")
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


COLUMNS = (
    ("sat fps", "sat_fps", "{:.0f}"),
    ("sent fps", "sent_fps", "{:.0f}"),
    ("CPU ns/frame", "cpu_ns", "{:.0f}"),
    ("zero-loss fps", "zero_loss_fps", "{:.0f}"),
    ("p50 µs@50%", "p50_us", "{:.1f}"),
    ("p99 µs@50%", "p99_us", "{:.1f}"),
    ("probes lost", "probe_lost", "{:.0f}"),
    ("ctrl lost", "ctrl_lost", "{:.0f}"),
)


def table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    hdr = ("mode", *(c[0] for c in COLUMNS), "vs bridge", "vs naive")
    print("".join(f"{h:>15}" for h in hdr))
    by = {r["mode"]: r for r in rows}
    for r in rows:
        vb = r["sat_fps"] / by["bridge"]["sat_fps"] if "bridge" in by and by["bridge"]["sat_fps"] else float("nan")
        vn = r["sat_fps"] / by["naive"]["sat_fps"] if "naive" in by and by["naive"]["sat_fps"] else float("nan")
        cells = (r["mode"], *(fmt.format(r[key]) for _, key, fmt in COLUMNS), f"{vb:.2f}", f"{vn:.2f}")
        print("".join(f"{c:>15}" for c in cells))


PORT_COLUMNS = (
    ("sent fps", "sent_fps", "{:.0f}"),
    ("fps", "fps", "{:.0f}"),
    ("CPU ns/frame", "cpu_ns", "{:.0f}"),
    ("ctrl sent", "ctrl_sent", "{:.0f}"),
    ("ctrl lost", "ctrl_lost", "{:.0f}"),
    ("sw drops", "sw_drops", "{:.0f}"),
)


def port_table(rows: list[dict], title: str) -> None:
    """The second table: each port-type row against the bridge between taps."""
    print(f"\n{title}")
    print("".join(f"{h:>17}" for h in ("mode", *(c[0] for c in PORT_COLUMNS), "vs bridge-tap")))
    base = next((r["fps"] for r in rows if r["mode"] == "bridge-tap"), 0.0)
    for r in rows:
        cells = (
            r["mode"],
            *(fmt.format(r.get(key, float("nan"))) for _, key, fmt in PORT_COLUMNS),
            f"{r['fps'] / base:.2f}" if base else "nan",
        )
        print("".join(f"{c:>17}" for c in cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=1, help="run every mode this many times; print medians")
    ap.add_argument(
        "--modes",
        default="bridge,naive,pxswitch,pxswitch+kernel=false,pxswitch-rt",
        help="comma-separated; a pxswitch mode takes variants after '+': port options or busy=US",
    )
    ap.add_argument(
        "--port-modes",
        default=",".join(_switch_ports.MODES),
        help="the second table, between the port types QEMU guests use (comma-separated; empty: none)",
    )
    ap.add_argument("--port-opts", default="", help="options added to each pxswitch port, e.g. rcvbuf=1048576")
    ap.add_argument("--switch-args", default="", help="more `pxswitch run` arguments, e.g. '--validation full'")
    ap.add_argument("--sender-cpu", default="0", help="CPU for trafgen (the bridge forwards on it too)")
    ap.add_argument("--switch-cpu", default="1", help="CPU for the userspace switches")
    args = ap.parse_args()
    CPUS.update(sender=args.sender_cpu, switch=args.switch_cpu)
    if os.geteuid() != 0:
        print("bench/switch.py needs root (network namespaces)", file=sys.stderr)
        return 2
    from pxproto.wire import ethertypes

    m = ethertypes.current()
    ctrl_ets = ",".join(hex(x) for x in (m.signaling, m.discovery, m.heartbeat))
    conf = tempfile.mktemp(suffix=".cfg", prefix="pxs16-")
    trafgen_conf(conf)
    modes = [m for m in args.modes.split(",") if m]
    port_modes = [m for m in args.port_modes.split(",") if m]
    unknown = [m for m in port_modes if m.split("+")[0] not in _switch_ports.MODES]
    if unknown:
        print(f"--port-modes: unknown {', '.join(unknown)} (known: {', '.join(_switch_ports.MODES)}; empty for none)",
              file=sys.stderr)  # fmt: skip
        return 2
    rounds: list[list[dict]] = []
    port_rounds: list[list[dict]] = []
    loads = [os.getloadavg()[0]]
    try:
        setup()
        for k in range(args.rounds):
            results = []
            for name in modes:
                extra = tuple(args.switch_args.split())
                if name.split("+")[0].endswith("-rt"):
                    extra += ("--realtime", str(RT_PRIORITY))
                opts = [args.port_opts] if args.port_opts else []
                cpus = CPUS["switch"]
                for variant in name.split("+")[1:]:  # pxswitch+ring=3+busy=50: port options, or busy-poll µs
                    key, _, value = variant.partition("=")
                    if key == "busy":
                        extra += ("--busy-poll", value)
                    elif key == "adaptive":
                        extra += ("--busy-adaptive", value)
                    elif key == "nap":
                        extra += ("--busy-nap", value)
                    elif key in ("slice", "workers"):
                        extra += (f"--{key}", value)
                    elif key == "cpus":
                        cpus = value
                    elif key == "pythonpath":  # another build of pxproto, side by side with this one
                        extra += ("PYTHONPATH=" + value,)
                    else:
                        opts.append(variant)
                results.append(run_mode(name, conf, args.seconds, ctrl_ets, ",".join(opts), extra, cpus))
                print(f"round {k + 1}: done {name}", file=sys.stderr, flush=True)
            prs = []
            for name in port_modes:
                prs.append({"mode": name, **_switch_ports.run(name, args.seconds, sh, SW, CPUS)})
                print(f"round {k + 1}: done {name}", file=sys.stderr, flush=True)
            loads.append(os.getloadavg()[0])
            rounds.append(results)
            port_rounds.append(prs)
            if results:
                table(results, f"round {k + 1} (1-min load average now {loads[-1]:.1f})")
            if prs:
                port_table(prs, f"round {k + 1}, between QEMU's port types (load average now {loads[-1]:.1f})")
    finally:
        teardown()
        os.unlink(conf)
    print(
        f"\n60-byte DATA frames (64 on the wire), trafgen on CPU {CPUS['sender']}, userspace switches on CPU"
        f" {CPUS['switch']}, {args.seconds} s runs;"
        f" pxswitch-rt runs under SCHED_FIFO {RT_PRIORITY}; 1-min load average"
        f" {min(loads):.1f}..{max(loads):.1f}"
    )
    if args.rounds > 1 and modes:
        med = [
            {"mode": name, **{key: median([r[i][key] for r in rounds]) for _, key, _ in COLUMNS}}
            for i, name in enumerate(modes)
        ]
        table(med, f"medians of {args.rounds} rounds (each column separately; ratios of the median sat fps)")
    if args.rounds > 1 and port_modes:
        med = [
            {
                "mode": name,
                **{key: median([r[i].get(key, float("nan")) for r in port_rounds]) for _, key, _ in PORT_COLUMNS},
            }
            for i, name in enumerate(port_modes)
        ]
        port_table(med, f"medians of {args.rounds} rounds, between QEMU's port types (ratios of the medians)")
    for r in rounds[-1]:
        if r.get("stats"):
            s = r["stats"]
            counters = {
                k: {kk: v.get(kk) for kk in ("rx", "tx", "tx_queue_drop", "tx_queue_drop_control", "kernel_drops")}
                for k, v in s["ports"].items()
            }
            print(f"\n{r['mode']} counters (last round):", json.dumps(counters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
