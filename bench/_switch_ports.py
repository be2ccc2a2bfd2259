"""bench/switch.py's second table: forwarding between the port types QEMU guests use.

In the switch's namespace, a receiver process sends one heartbeat (so the switch, or the bridge,
learns where its address is, as a guest's first answer would teach it), then a sender process pushes
60-byte DATA frames, with a heartbeat as one in every 256, into one port as fast as it can, and the
receiver counts what comes out of the other, for ``seconds`` (heartbeats lost under that saturation
are counted apart; on UDP, the datagrams the switch's ingress sockets dropped, from /proc/net/udp).
The receiver's address learned, pxswitch forwards the data in the kernel on tap and UDP ports (its
in-kernel fast path) and in its loop on stream ports:

- ``bridge-tap``: the Linux bridge between two tap devices (the sender writes frames into one tap's
  file descriptor, the receiver reads the other's: what QEMU guests on a bridge do);
- ``pxswitch-tap``: the same taps, as pxswitch AF_PACKET ports (QEMU's tap devices on pxswitch);
- ``pxswitch-udp``: two pxswitch UDP ports (QEMU ``-netdev dgram``); the endpoints use
  sendmmsg/recvmmsg batches;
- ``pxswitch-stream``: two pxswitch stream ports listening on UNIX sockets (QEMU ``-netdev stream``).

The endpoints are Python, one system call per frame on a tap and one per batch elsewhere, so the
rows compare whole pipelines, endpoints included, as a guest would see them. Standard library only at
import: bench/switch.py loads this before it checks which pxproto it measures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

MODES = ("bridge-tap", "pxswitch-tap", "pxswitch-udp", "pxswitch-stream")
TAPS = ("pxtA", "pxtB")

ENDPOINT = r"""
import fcntl, os, select, socket, struct, sys, time
kind, role, seconds, a, b = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
from pxproto.switch import _afpacket as fast
from pxproto.switch.frames import data, heartbeat
frame = data(bytes.fromhex("02000000bb01"), bytes.fromhex("02000000aa01"), size=60)
ctrl = heartbeat(bytes.fromhex("02000000aa01"), dime=2)  # one in every 256 frames: lost ones are counted
cet = ctrl[12:14]
def addr(t):
    h, p = t.rsplit(":", 1)
    return h, int(p)
if kind == "tap":
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", a.encode(), 0x0002 | 0x1000))  # TUNSETIFF: IFF_TAP|IFF_NO_PI
elif kind == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF if role == "recv" else socket.SO_SNDBUF, 1 << 22)
    s.bind(addr(a))
    if role == "send":
        s.connect(addr(b))
    fd = s.fileno()
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(100):
        try:
            s.connect(a)
            break
        except OSError:
            time.sleep(0.05)
    fd = s.fileno()
if role == "recv":  # one frame from the receiver first, as a guest would answer: the switch learns where it is
    teach = heartbeat(bytes.fromhex("02000000bb01"), dime=3)
    if kind == "tap":
        os.write(fd, teach)
    elif kind == "udp":
        s.sendto(teach, addr(b))
    else:
        s.sendall(struct.pack("!I", len(teach)) + teach)
print("ready", flush=True)
sys.stdin.readline()  # go
n = c = 0
end = time.monotonic() + seconds
if role == "send":
    batches, i = ([ctrl] + [frame] * 63, [frame] * 64), 0
    blob = b"".join(struct.pack("!I", len(f)) + f for f in [ctrl] + [frame] * 255)
    while time.monotonic() < end:
        if kind == "tap":
            os.write(fd, ctrl)
            for _ in range(255):
                os.write(fd, frame)
            n, c = n + 256, c + 1
        elif kind == "udp":
            k = fast.send_batch(fd, batches[i % 4 != 0])  # a heartbeat leads every fourth batch
            if k:
                n, c, i = n + k, c + (i % 4 == 0), i + 1
            else:
                select.select([], [fd], [], 0.01)
        else:
            s.sendall(blob)
            n, c = n + 256, c + 1
else:
    os.set_blocking(fd, False)
    buf, end = b"", end + 0.5  # the frames still in flight when the sender stops
    while time.monotonic() < end:
        if not select.select([fd], [], [], 0.05)[0]:
            continue
        try:
            if kind == "tap":
                while True:
                    f = os.read(fd, 2048)
                    n, c = n + 1, c + (f[12:14] == cet)
            elif kind == "udp":
                while (got := fast.recv_batch(fd)):
                    n, c = n + len(got), c + sum(f[12:14] == cet for f in got)
            else:
                while True:
                    buf += os.read(fd, 1 << 20)
                    pos = 0
                    while len(buf) - pos >= 4 and len(buf) - pos - 4 >= (ln := int.from_bytes(buf[pos:pos + 4], "big")):
                        n, c = n + 1, c + (buf[pos + 16:pos + 18] == cet)
                        pos += 4 + ln
                    buf = buf[pos:]
        except BlockingIOError:
            pass
print(n, c, flush=True)
"""


def run(mode: str, seconds: float, sh: Callable[..., str], ns: str, cpus: dict[str, str]) -> dict[str, float]:
    """One row: frames/s sent and received, and the switch's CPU ns per received frame (nan for the bridge).
    A pxswitch mode takes `pxswitch run` options after ``+``: ``pxswitch-udp+slice=0`` adds ``--slice 0``."""
    tmp = tempfile.mkdtemp(prefix="pxs16p-")
    nsx = ["ip", "netns", "exec", ns]
    sw: subprocess.Popen[bytes] | None = None
    mode, *variants = mode.split("+")
    extra = [a for v in variants for a in (f"--{v.partition('=')[0].replace('_', '-')}", v.partition("=")[2])]
    kind = mode.split("-")[1]
    try:
        if kind == "tap":
            for t in TAPS:
                sh(f"ip netns exec {ns} ip tuntap add dev {t} mode tap")
                sh(f"ip netns exec {ns} ip link set {t} up")
        if mode == "bridge-tap":
            sh(f"ip netns exec {ns} ip link add pxbr0 type bridge stp_state 0 forward_delay 0")
            for t in TAPS:
                sh(f"ip netns exec {ns} ip link set {t} master pxbr0")
            sh(f"ip netns exec {ns} ip link set pxbr0 up")
        ports, ends = _ports(kind, tmp)
        if mode != "bridge-tap":
            cmd = [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", f"{tmp}/c.sock", *extra]
            for spec in ports:
                cmd += ["-p", spec]
            sw = subprocess.Popen([*nsx, "taskset", "-c", cpus["switch"], *cmd], stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        procs: list[subprocess.Popen[str]] = []
        for role, (a, b) in zip(("recv", "send"), ends, strict=True):  # the receiver connects first
            p = subprocess.Popen(
                [*nsx, "taskset", "-c", cpus["sender"], sys.executable, "-c", ENDPOINT, kind, role, str(seconds), a, b],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert p.stdout is not None
            p.stdout.readline()
            procs.append(p)
            time.sleep(0.2)
        cpu0 = cpu_seconds(sw)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
        (rx, crx), (tx, ctx) = (map(int, p.communicate(timeout=seconds + 30)[0].split()[-2:]) for p in procs)
        cpu = cpu_seconds(sw) - cpu0
        drops = udp_drops(sh(f"ip netns exec {ns} cat /proc/net/udp")) if kind == "udp" else {}
        return {
            "sw_drops": drops.get(47100, float("nan")),  # the ingress port's data + control sockets overflowed
            "sent_fps": tx / seconds,
            "fps": rx / seconds,
            "cpu_ns": cpu * 1e9 / rx if sw and rx else float("nan"),
            "ctrl_sent": ctx,
            "ctrl_lost": max(0, ctx - crx),
        }
    finally:
        if sw is not None:
            sw.terminate()
            sw.wait()
        sh(f"ip netns exec {ns} ip link del pxbr0", check=False)
        for t in TAPS:
            sh(f"ip netns exec {ns} ip link del {t}", check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def _ports(kind: str, tmp: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The switch's two ports and the endpoints' (receiver, sender) arguments."""
    if kind == "tap":
        return [f"afpacket:interface={t}" for t in TAPS], [(TAPS[1], ""), (TAPS[0], "")]
    if kind == "udp":
        a, b, snd, rcv = (f"127.0.0.1:{47100 + i}" for i in range(4))
        return [f"udp:local={a},remote={snd}", f"udp:local={b},remote={rcv}"], [(rcv, b), (snd, a)]
    return [f"stream:address={tmp}/{x}.sock,listen=true" for x in "ab"], [(f"{tmp}/b.sock", ""), (f"{tmp}/a.sock", "")]


def udp_drops(table: str) -> dict[int, int]:
    """Datagrams each UDP socket of a /proc/net/udp text dropped (a full receive buffer), by local port."""
    out: dict[int, int] = {}
    for line in table.splitlines()[1:]:
        f = line.split()
        if len(f) >= 13:
            port = int(f[1].rsplit(":", 1)[1], 16)
            out[port] = out.get(port, 0) + int(f[-1])
    return out


def cpu_seconds(proc: subprocess.Popen[bytes] | None) -> float:
    """CPU time of a userspace switch so far (user + system, with the softirq work that ran in its context:
    for pxswitch that includes delivering each frame into the far device); 0 without one (the bridge)."""
    if proc is None:
        return 0.0
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
