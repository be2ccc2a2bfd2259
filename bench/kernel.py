"""Benchmark of the node kernel on rootless virtual wires (pxswitch UDP ports on loopback).

    python bench/kernel.py [--pings 2000] [--items 50000] [--only ping|data|bigdata|heartbeat|veth]

Prints one table:
- ping round trip p50/p99 from a client to a DIME (auth off: answered by the compiled ping path;
  auth on: the signed Python path), and to the server process itself;
- data through a channel: source MICE -> sink MICE on two servers, items per second at the sink,
  16-byte items (about 49 share a frame) and 1400-byte items (one per frame), with frames per
  second and the DIME loops' CPU per item and per frame (load-independent);
- heartbeat jitter at a 100 ms period, MICE idle vs. a MICE spinning on the same core: as a client
  sees it through pxswitch, as the DIME sent it (its lateness counter), and on a veth with kernel
  receive timestamps (root; no switch or observer wake-up in the figure).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# This file is named like a package it measures: _common takes bench/ off the import path.
from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

from pxproto import package  # noqa: E402
from pxproto.dime.endpoint import Address, frame_to  # noqa: E402
from pxproto.dime.signaling import ResponseReceived  # noqa: E402
from pxproto.link import ETH_P_ALL, PacketPort  # noqa: E402
from pxproto.node.client import Client  # noqa: E402
from pxproto.node.testbed import ENV, SIGNER, Cluster  # noqa: E402
from pxproto.wire import ethertypes  # noqa: E402
from pxproto.wire.codec import encode  # noqa: E402
from pxproto.wire.codes import (  # noqa: E402
    DIME_ALL,
    Command,
    CounterId,
    Direction,
    FrameClass,
    TlvType,
)
from pxproto.wire.frame import Signaling, Tlv, connect_params  # noqa: E402

SO_TIMESTAMPNS = 35
BIG = 1400
"""Bytes of a big item: with its lineage and record header it fills one 1500-byte frame alone."""

STAGES = """
def source(ctx):
    item = b"x" * ctx.params.get("size", 16)
    for _ in range(ctx.params["count"]):
        yield item

def sink(item, ctx):
    return ()

def spin(ctx):
    while True:
        pass
    yield b""
"""


def manifest(count: int) -> str:
    return (
        '[service]\nname = "bench"\n\n[[stage]]\nname = "source"\nentry = "stages:source"\n'
        f'params = {{ count = {count} }}\n\n[[stage]]\nname = "sink"\nentry = "stages:sink"\n\n'
        '[[stage]]\nname = "spin"\nentry = "stages:spin"\n\n'
        '[[stage]]\nname = "bigsource"\nentry = "stages:source"\n'
        f"params = {{ count = {count}, size = {BIG} }}\n"
    )


def rtt_row(name: str, r: list[float]) -> tuple[str, str, str]:
    return (name, f"p50 {pct(r, 50) * 1e6:.0f} us", f"p99 {pct(r, 99) * 1e6:.0f} us (n={len(r)})")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def ping_rtts(c: Cluster, dest: Address, n: int, signed: bool) -> list[float]:
    """Sequential pings with a prebuilt frame (signed per send when ``signed``); client cost kept small."""
    cl = c.client
    sock = cl.wire.sock
    rtts = []
    for i in range(n):
        body = Signaling(Command.PING, req_id=(i + 1) | 1 << 30, params=(Tlv(TlvType.ECHO, b"bench"),))
        raw = encode(frame_to(cl.local, dest, body))
        if signed:
            raw = cl.keyring.sign_raw(raw)
        t0 = time.perf_counter()
        sock.send(raw)
        while True:
            r, _, _ = select.select([sock], [], [], 1.0)
            if not r:
                break
            got = sock.recv(65535)
            if got[:6] == cl.mac and got[12:14] == raw[12:14]:  # signaling back to us
                rtts.append(time.perf_counter() - t0)
                break
    return rtts


def load_start(c: Cluster, archive: bytes, dest: Address, stage: int, name: str) -> None:
    c.ask(
        dest,
        Command.LOAD,
        Tlv(TlvType.SERVICE_ID, 1),
        Tlv(TlvType.STAGE, stage),
        Tlv(TlvType.MICE_NAME, name),
        Tlv(TlvType.PACKAGE_DIGEST, package.digest(archive)),
        Tlv(TlvType.PACKAGE_SIZE, len(archive)),
        Tlv(TlvType.PACKAGE_SIG, package.sign(archive, SIGNER)),
    )
    c.ask(dest, Command.START, Tlv(TlvType.SERVICE_ID, 1), Tlv(TlvType.STAGE, stage))


def connect(c: Cluster, up: Address, down: Address, ch: int) -> None:
    for dest, d, peer in ((down, Direction.INPUT, up), (up, Direction.OUTPUT, down)):
        c.ask(dest, Command.CONNECT, *connect_params(ch, d, peer.mac, peer.dime))


def counter(c: Cluster, dest: Address, cid: int) -> int:
    v = c.ask(dest, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, cid)).param(TlvType.VALUE)
    return v if isinstance(v, int) else 0


def heartbeat_gaps(c: Cluster, dest: Address, seconds: float) -> list[float]:
    c.client.seen.heartbeats.clear()
    c.client.wait_for(lambda: False, seconds)
    times = [t for t, mac, d, _ in c.client.seen.heartbeats if (mac, d) == dest.peer]
    return [b - a for a, b in itertools.pairwise(times)]


def bench_ping(c: Cluster, rows: list[tuple[str, str, str]], n: int, signed: bool) -> None:
    d0 = c.dime(0, 0)
    ping_rtts(c, d0, 50, signed)
    if signed:
        rows.append(rtt_row("ping DIME, auth on (HMAC, Python)", ping_rtts(c, d0, n, True)))
        return
    rows.append(rtt_row("ping DIME, auth off (C path)", ping_rtts(c, d0, n, False)))
    rows.append(rtt_row("ping server 0xffff (Python)", ping_rtts(c, Address(c.servers[0], DIME_ALL, 0), n, False)))


def dime_cpu(c: Cluster, dest: Address) -> float:
    """CPU seconds of a DIME process (its FCAPS loop, not its MICE)."""
    v = c.ask(dest, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, CounterId.DIME_CPU_NS)).param(TlvType.VALUE)
    return (v if isinstance(v, int) else 0) / 1e9


def _user_sys(pid: int | None) -> tuple[float, float]:
    """User and system CPU seconds of a process (0, 0 when unknown)."""
    if pid is None:
        return 0.0, 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def bench_data(c: Cluster, rows: list[tuple[str, str, str]], archive: bytes, items: int, big: bool = False) -> None:
    package.store_put(c.store, archive)
    src, snk = c.dime(0, 0), c.dime(1, 1)  # different servers, different cores
    stage, name = (3, "bigsource") if big else (0, "source")
    label = f"{BIG}-byte items (one per frame)" if big else "16-byte items"
    load_start(c, archive, snk, 1, "sink")
    load_start(c, archive, src, stage, name)
    cpu0 = dime_cpu(c, src), dime_cpu(c, snk)
    src_pid = c.dime_pid(0, 0)
    us0 = _user_sys(src_pid)
    f0 = counter(c, snk, CounterId.FRAMES_RX)
    b0 = counter(c, src, CounterId.MICE_MESSAGES), counter(c, src, CounterId.ITEM_FRAMES_TX)
    i0 = counter(c, snk, CounterId.ITEMS_IN)
    t0 = time.monotonic()
    connect(c, src, snk, 1)
    done = 0
    while done < items and time.monotonic() - t0 < 120:
        c.client.wait_for(lambda: False, 0.1)
        done = counter(c, snk, CounterId.ITEMS_IN) - i0
    elapsed = time.monotonic() - t0
    frames = counter(c, snk, CounterId.FRAMES_RX) - f0
    cpu = dime_cpu(c, src) - cpu0[0], dime_cpu(c, snk) - cpu0[1]
    us1 = _user_sys(src_pid)
    batches = counter(c, src, CounterId.MICE_MESSAGES) - b0[0]
    item_frames = counter(c, src, CounterId.ITEM_FRAMES_TX) - b0[1]
    for dest, st in ((src, stage), (snk, 1)):
        c.ask(dest, Command.STOP, Tlv(TlvType.SERVICE_ID, 1), Tlv(TlvType.STAGE, st))
    rows.append(
        (
            f"data: source -> sink, {label}",
            f"{done / elapsed:,.0f} items/s",
            f"{done} items in {elapsed:.1f} s; {frames / elapsed:,.0f} frames/s rx at sink ({frames} frames)",
        )
    )
    rows.append(
        (
            f"data: {label}, per frame",
            f"{done / max(item_frames, 1):.1f} items",
            f"{item_frames} item frames sent; {done / max(batches, 1):.1f} items per source MICE batch",
        )
    )
    user, system = us1[0] - us0[0], us1[1] - us0[1]
    rows.append(
        (
            f"data: {label}, source DIME user/system",
            f"{user / max(user + system, 1e-9):.0%} user",
            f"{user:.2f} s user, {system:.2f} s system (sends on loopback carry the receiving side's work)",
        )
    )
    for who, secs in (("source", cpu[0]), ("sink", cpu[1])):
        rows.append(
            (
                f"data: {label}, {who} DIME CPU",
                f"{secs / max(done, 1) * 1e6:.2f} us/item",
                f"{secs / max(item_frames, 1) * 1e6:.1f} us/frame; {max(done, 1) / secs if secs else 0:,.0f} items "
                "per CPU-second of the DIME loop",
            )
        )


def bench_heartbeat(c: Cluster, rows: list[tuple[str, str, str]], archive: bytes) -> None:
    package.store_put(c.store, archive)
    hb = c.dime(1, 0)
    idle = heartbeat_gaps(c, hb, 3.0)
    load_start(c, archive, hb, 2, "spin")
    c.client.wait_for(lambda: False, 0.3)
    counter(c, hb, CounterId.HEARTBEAT_LATE_MAX_US)  # a new peak from here
    busy = heartbeat_gaps(c, hb, 3.0)
    late = counter(c, hb, CounterId.HEARTBEAT_LATE_MAX_US) / 1e3
    for name, gaps in (("idle MICE", idle), ("MICE at 100% CPU", busy)):
        dev = [abs(g - 0.1) for g in gaps]
        rows.append(
            (
                f"heartbeat 100 ms, {name}",
                f"jitter p50 {pct(dev, 50) * 1e3:.2f} ms",
                f"max {max(dev) * 1e3:.2f} ms = {max(dev) / 0.1:.1%} of period (n={len(gaps)}), seen by a client",
            )
        )
    rows.append(
        (
            "heartbeat 100 ms, MICE at 100% CPU",
            f"DIME sent late max {late:.2f} ms",
            f"= {late / 100:.1%} of period: the DIME's own lateness behind schedule (its counter)",
        )
    )


class _Bed:
    """Enough of a Cluster for load_start/counter over one client (the veth measure)."""

    def __init__(self, client: Client, log: Path) -> None:
        self.client = client
        self.log = log

    def ask(self, dest: Address, cmd: Command, *params: Tlv) -> ResponseReceived:
        r = self.client.request(dest, cmd, params)
        assert isinstance(r, ResponseReceived), f"{cmd.name} to {dest}: timed out\n{self.log.read_text()}"
        return r


def _setns(fd: int) -> None:
    import ctypes

    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")


def _kernel_stamped_gaps(sock: socket.socket, mac: bytes, dime: int, seconds: float) -> list[float]:
    """Gaps between one DIME's heartbeats by their kernel receive timestamps (no observer wake-up in them)."""
    stamps: list[float] = []
    hb_type = ethertypes.current().of(FrameClass.HEARTBEAT)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([sock], [], [], 0.1)
        if not r:
            continue
        data, anc, _, _ = sock.recvmsg(65535, 64)
        if data[6:12] != mac or int.from_bytes(data[12:14], "big") != hb_type or data[18:20] != dime.to_bytes(2, "big"):
            continue
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                stamps.append(sec + nsec * 1e-9)
    return [b - a for a, b in itertools.pairwise(stamps)]


def bench_veth_heartbeat(rows: list[tuple[str, str, str]], archive: bytes, tmp: Path) -> None:
    """Heartbeat jitter on a veth, observed with kernel RX timestamps: the DIME's jitter without a switch hop."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        rows.append(("heartbeat on veth", "skipped", "needs root and iproute2"))
        return
    tag = uuid.uuid4().hex[:6]
    ns_a, ns_b = f"pxka{tag}", f"pxkb{tag}"
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    proc = None
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        run(["ip", "netns", "add", ns_a])
        run(["ip", "netns", "add", ns_b])
        run(["ip", "link", "add", f"va{tag}", "netns", ns_a, "type", "veth", "peer", "name", f"vb{tag}", "netns", ns_b])
        run(["ip", "-n", ns_a, "link", "set", f"va{tag}", "up"])
        run(["ip", "-n", ns_b, "link", "set", f"vb{tag}", "up"])
        store = tmp / "veth-store"
        store.mkdir()
        package.store_put(store, archive)
        log = tmp / "veth-kernel.log"
        cmd = [
            "ip",
            "netns",
            "exec",
            ns_a,
            sys.executable,
            "-m",
            "pxproto.node.cli",
            "--iface",
            f"va{tag}",
            "--dimes",
            "1",
        ]
        cmd += ["--store", str(store), "--state-dir", str(tmp / "veth-state"), "--memory-chunks", "64", "--insecure"]
        with open(log, "wb") as f:
            proc = subprocess.Popen(cmd, env=ENV, stdout=f, stderr=subprocess.STDOUT)
        fd = os.open(f"/run/netns/{ns_b}", os.O_RDONLY)
        try:
            _setns(fd)
            wire = PacketPort(f"vb{tag}")
            stamped = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            stamped.bind((f"vb{tag}", 0))
        finally:
            _setns(own)
            os.close(fd)
        stamped.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        client = Client(wire)
        bed = _Bed(client, log)
        found: list[bytes] = []
        end = time.monotonic() + 20
        while not found and time.monotonic() < end:
            found = [mac for mac, ann in client.probe(0.3) if ann.dimes and all(d.epoch for d in ann.dimes)]
        assert found, log.read_text()
        dest = Address(found[0], 0, 0)
        client.keep_heartbeats = False
        idle = _kernel_stamped_gaps(stamped, found[0], 0, 3.0)
        load_start(bed, archive, dest, 2, "spin")  # type: ignore[arg-type]
        client.wait_for(lambda: False, 0.3)
        cpu0 = counter(bed, dest, CounterId.CPU_NS) - counter(bed, dest, CounterId.DIME_CPU_NS)  # type: ignore[arg-type]
        t0 = time.monotonic()
        busy = _kernel_stamped_gaps(stamped, found[0], 0, 3.0)
        cpu1 = counter(bed, dest, CounterId.CPU_NS) - counter(bed, dest, CounterId.DIME_CPU_NS)  # type: ignore[arg-type]
        mice_share = (cpu1 - cpu0) / 1e9 / (time.monotonic() - t0)
        for name, gaps in (("idle MICE", idle), ("MICE at 100% CPU", busy)):
            dev = [abs(g - 0.1) for g in gaps]
            rows.append(
                (
                    f"heartbeat 100 ms on veth, {name}",
                    f"jitter p50 {pct(dev, 50) * 1e3:.2f} ms",
                    f"max {max(dev) * 1e3:.2f} ms = {max(dev) / 0.1:.1%} of period (n={len(gaps)}), kernel RX stamps"
                    + (f"; MICE used {mice_share:.0%} of a CPU" if gaps is busy else ""),
                )
            )
        wire.close()
        stamped.close()
    finally:
        os.close(own)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns_a], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns_b], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--items", type=int, default=50000)
    ap.add_argument(
        "--only",
        choices=("ping", "data", "bigdata", "heartbeat", "veth"),
        action="append",
        help="run only these parts",
    )
    args = ap.parse_args()
    parts = set(args.only or ("ping", "data", "bigdata", "heartbeat", "veth"))
    rows: list[tuple[str, str, str]] = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        pkg = t / "pkg"
        pkg.mkdir()
        (pkg / "service.toml").write_text(manifest(args.items))
        (pkg / "stages.py").write_text(STAGES)
        archive = package.pack(pkg)
        if "ping" in parts:  # auth off: the compiled answer, and the server process
            c = Cluster(t / "a", kernels=1, dimes=1, key=False)
            try:
                bench_ping(c, rows, args.pings, False)
            finally:
                c.close()
        c = Cluster(t / "b", kernels=2, dimes=2, key=True, chunks=64)
        try:
            if "ping" in parts:
                bench_ping(c, rows, args.pings, True)
            if "data" in parts:
                bench_data(c, rows, archive, args.items)
            if "bigdata" in parts:
                bench_data(c, rows, archive, max(1000, args.items // 10), big=True)
            if "heartbeat" in parts:
                bench_heartbeat(c, rows, archive)
        finally:
            c.close()
        if "veth" in parts:
            bench_veth_heartbeat(rows, archive, t)
    w = max(len(r[0]) for r in rows)
    print(f"load average before the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'measure':<{w}}  {'median':<22}  detail")
    for a, b, d in rows:
        print(f"{a:<{w}}  {b:<22}  {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
