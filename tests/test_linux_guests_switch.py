"""Two Linux guests (Debian's kernel, a busybox initramfs built here) under QEMU TCG on two ports of
one pxswitch: they ping each other and move 32 MiB over TCP through the switch, for each port type."""

from __future__ import annotations

import glob
import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_baremetal_switch import _can_tap, _has_link, _in_netns, _port

ROOT = Path(__file__).resolve().parents[1]
QEMU = shutil.which("qemu-system-x86_64")
BUSYBOX = shutil.which("busybox")
KERNELS = sorted(glob.glob("/boot/vmlinuz-*"))
NBYTES = 32 * 1024 * 1024
TIMEOUT = 600.0
TAP_PREFIX = "guesttap"
MODULES = ("kernel/drivers/virtio/virtio_pci.ko", "kernel/drivers/net/virtio_net.ko")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed (apt install qemu-system-x86)"),
    pytest.mark.skipif(not KERNELS, reason="no /boot/vmlinuz-* (apt install linux-image-cloud-amd64)"),
    pytest.mark.skipif(BUSYBOX is None, reason="no busybox (apt install busybox-static)"),
    pytest.mark.skipif(shutil.which("cpio") is None, reason="no cpio (apt install cpio)"),
]

INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /lib/$m; done
ip link set lo up
ip addr add 10.0.0.{me}/24 dev eth0
ip link set eth0 up
{role}
poweroff -f
"""
SERVER = """echo GUEST-READY
n=$(nc -l -p 5000 | wc -c)
echo "GUEST-RECEIVED $n"
"""
CLIENT = f"""echo GUEST-READY
i=0; until ping -c 1 -W 1 10.0.0.1 >/dev/null; do i=$((i+1)); [ $i -gt 120 ] && break; done
ping -c 3 10.0.0.1 && echo GUEST-PING-OK
sleep 2
t0=$(date +%s)
dd if=/dev/zero bs=65536 count={NBYTES // 65536} 2>/dev/null | nc 10.0.0.1 5000 &&
  echo "GUEST-SENT $(( $(date +%s) - t0 ))s"
"""


def _modules(kernel: str) -> list[Path]:
    """The module files virtio-net needs, in load order (deps first), from ``modules.dep``; [] when built in."""
    release = Path(kernel).name.removeprefix("vmlinuz-")
    config = Path(f"/boot/config-{release}")
    if config.exists() and "CONFIG_VIRTIO_NET=y" in config.read_text():
        return []
    base = Path(f"/lib/modules/{release}")
    deps = {}
    for line in (base / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    order: list[str] = []
    for mod in MODULES:
        for m in [*reversed(deps[mod]), mod]:
            if m not in order:
                order.append(m)
    return [base / m for m in order]


def _initramfs(tmp: Path, me: int, role: str, modules: list[Path]) -> Path:
    root = tmp / f"root{me}"
    for d in ("bin", "proc", "sys", "lib", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX or "", root / "bin/busybox")
    for applet in ("sh", "mount", "insmod", "ip", "ping", "nc", "dd", "wc", "date", "sleep", "poweroff", "echo"):
        (root / "bin" / applet).symlink_to("busybox")
    for m in modules:
        shutil.copy(m, root / "lib" / m.name)
    init = root / "init"
    init.write_text(INIT.format(modules=" ".join(m.name for m in modules), me=me, role=role))
    init.chmod(0o755)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    packed = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files,
                            capture_output=True, check=True).stdout  # fmt: skip
    out = tmp / f"initrd{me}.gz"
    out.write_bytes(gzip.compress(packed))
    return out


def _qemu(tmp: Path, me: int, initrd: Path, netdev: str, inside: list[str]) -> subprocess.Popen[bytes]:
    log = tmp / f"serial{me}.log"
    return subprocess.Popen(
        [*inside, QEMU or "", "-machine", "accel=tcg", "-m", "256", "-display", "none", "-no-reboot",
         "-monitor", "none",
         "-serial", f"file:{log}", "-kernel", KERNELS[-1], "-initrd", str(initrd),
         "-append", "console=ttyS0 quiet panic=-1", "-netdev", netdev,
         "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:00:00:0{me}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / f"qemu{me}.err", "w"),
    )  # fmt: skip


def _serial(tmp: Path, me: int) -> str:
    p = tmp / f"serial{me}.log"
    return p.read_text(errors="replace") if p.exists() else ""


def _wiring(tmp: Path, me: int, wire: str) -> tuple[str, str]:
    """(the switch's port, QEMU's -netdev) joining guest ``me`` to the switch over ``wire``."""
    if wire == "tap":
        tap = f"{TAP_PREFIX}{me}"
        return f"afpacket:interface={tap}", f"tap,id=n0,ifname={tap},script=no,downscript=no"
    if wire == "stream":
        sock = tmp / f"vm{me}.sock"
        return f"stream:address={sock},listen=true", f"stream,id=n0,server=off,addr.type=unix,addr.path={sock}"
    sw, vm = _port(), _port()
    netdev = (f"dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={vm},"
              f"remote.type=inet,remote.host=127.0.0.1,remote.port={sw}")  # fmt: skip
    return f"udp:local=127.0.0.1:{sw},remote=127.0.0.1:{vm}", netdev


def _wait_link(name: str) -> None:
    for _ in range(100):  # QEMU creates its tap device at start: the switch opens it after
        if _has_link(name):
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
            return
        time.sleep(0.1)
    raise AssertionError(f"QEMU did not create tap device {name}")


def _boot(tmp: Path, wire: str, initrds: dict[int, Path], inside: list[str]) -> list[subprocess.Popen[bytes]]:
    """Start the switch and both guests (``inside``: the ``ip netns exec`` prefix, or [])."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    wiring = {me: _wiring(tmp, me, wire) for me in (1, 2)}
    args = [*inside, sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp / "switch.sock"),
            "-p", wiring[1][0], "-p", wiring[2][0]]  # fmt: skip
    err = open(tmp / "switch.err", "w")
    procs: list[subprocess.Popen[bytes]] = []
    if wire == "tap":  # QEMU makes the devices, then the switch opens them
        procs = [_qemu(tmp, me, initrds[me], wiring[me][1], inside) for me in (1, 2)]
        for me in (1, 2):
            _wait_link(f"{TAP_PREFIX}{me}")
        return [*procs, subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)]
    procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err))
    for _ in range(100):  # the switch listens (stream) or binds (dgram) before QEMU starts
        if wire != "stream" or all((tmp / f"vm{me}.sock").exists() for me in (1, 2)):
            break
        time.sleep(0.1)
    time.sleep(0.5)
    return [*procs, *(_qemu(tmp, me, initrds[me], wiring[me][1], inside) for me in (1, 2))]


@pytest.mark.parametrize("wire", ["dgram", "stream", "tap"])
def test_two_linux_guests_move_32mib_through_pxswitch(wire: str, tmp_path: Path) -> None:
    if wire == "tap" and not _can_tap():
        pytest.skip("a tap port needs root, iproute2 and /dev/net/tun")
    modules = _modules(KERNELS[-1])
    initrds = {1: _initramfs(tmp_path, 1, SERVER, modules), 2: _initramfs(tmp_path, 2, CLIENT, modules)}
    netns = f"guests-{os.getpid() % 100000}" if wire == "tap" else ""
    inside = ["ip", "netns", "exec", netns] if netns else []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if netns:
            subprocess.run(["ip", "netns", "add", netns], check=True)
            with _in_netns(netns):
                procs = _boot(tmp_path, wire, initrds, inside)
        else:
            procs = _boot(tmp_path, wire, initrds, inside)
        started = time.monotonic()
        while time.monotonic() < started + TIMEOUT and any(p.poll() is None for p in procs):
            if "GUEST-RECEIVED" in _serial(tmp_path, 1):
                break
            time.sleep(1.0)
        server, client = _serial(tmp_path, 1), _serial(tmp_path, 2)
        sent = [line for line in client.splitlines() if line.startswith(("GUEST-SENT", "round-trip"))]
        print(f"{wire}: guests done in {time.monotonic() - started:.1f}s; {'; '.join(sent)}")
        switch_err = (tmp_path / "switch.err").read_text()
        shown = f"server:\n{server[-3000:]}\nclient:\n{client[-3000:]}\nswitch:\n{switch_err}"
        assert "GUEST-PING-OK" in client and " 0% packet loss" in client, shown
        assert f"GUEST-RECEIVED {NBYTES}" in server, shown
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if netns:
            subprocess.run(["ip", "netns", "del", netns], check=False)
