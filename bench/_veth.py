"""A test bed on veth pairs (root): two pxkernel servers on AF_PACKET, no pxswitch, for bench/channel.py.

Four network namespaces of this run's own (``dp`` + a random tag): one per kernel, one for the
management client, and one holding a Linux bridge that joins their veth pairs. It offers what
bench/channel.py's ``dime_run`` uses of a :class:`pxproto.node.testbed.Cluster`: ``dime``, ``ask``,
``client`` and ``close`` (which deletes the namespaces).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from pxproto.dime.endpoint import Address
from pxproto.dime.keys import write_keyfile
from pxproto.dime.signaling import ResponseReceived
from pxproto.link import PacketPort
from pxproto.node.client import Client
from pxproto.node.testbed import ENV, KEY, SIGNER
from pxproto.procfind import stop_all
from pxproto.signing import write_verify_keys
from pxproto.wire.codes import Command
from pxproto.wire.frame import Tlv

CLONE_NEWNET = 0x40000000


def why_not() -> str:
    """Why a veth bed cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return ""


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class VethBed:
    """Two kernels of ``dimes`` DIMEs each, and a client, on one bridge of veth pairs with the given MTU."""

    def __init__(self, tmp: Path, store: Path, dimes: int = 2, chunks: int = 256, mtu: int = 1500) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = [f"dpk0{tag}", f"dpk1{tag}", f"dpcl{tag}", f"dpbr{tag}"]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.client: Client | None = None
        try:
            self._up(tmp, store, tag, dimes, chunks, mtu)
        except BaseException:
            self.close()
            raise

    def _up(self, tmp: Path, store: Path, tag: str, dimes: int, chunks: int, mtu: int) -> None:
        for ns in self.ns:
            _ip("netns", "add", ns)
        br_ns = self.ns[3]
        _ip("-n", br_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", br_ns, "link", "set", "br0", "up")
        for i, ns in enumerate(self.ns[:3]):
            end, peer = f"dpv{i}{tag}", f"dpp{i}{tag}"
            _ip("link", "add", end, "netns", ns, "mtu", str(mtu), "type", "veth", "peer", "name", peer, "netns", br_ns)
            _ip("-n", br_ns, "link", "set", peer, "mtu", str(mtu), "master", "br0", "up")
            _ip("-n", ns, "link", "set", end, "up")
        tmp.mkdir(parents=True, exist_ok=True)
        keyfile = tmp / "veth.key"
        write_keyfile(keyfile, {1: KEY})
        write_verify_keys(tmp / "verify.pub", [SIGNER])  # bench/kernel.py signs its package with SIGNER
        for i in range(2):
            log = tmp / f"veth-kernel{i}.log"
            self.logs.append(log)
            cmd = ["ip", "netns", "exec", self.ns[i], sys.executable, "-m", "pxproto.node.cli"]
            cmd += ["--iface", f"dpv{i}{tag}", "--dimes", str(dimes), "--memory-chunks", str(chunks)]
            cmd += ["--store", str(store), "--state-dir", str(tmp / f"veth-state{i}"), "--key", str(keyfile)]
            cmd += ["--verify-key", str(tmp / "verify.pub")]
            with open(log, "wb") as f:
                self.procs.append(subprocess.Popen(cmd, env=ENV, stdout=f, stderr=subprocess.STDOUT))
        own = "/proc/self/ns/net"
        keep = os.open(own, os.O_RDONLY)
        try:
            _setns(f"/run/netns/{self.ns[2]}")
            wire = PacketPort(f"dpv2{tag}")
        finally:
            ctypes.CDLL(None, use_errno=True).setns(keep, CLONE_NEWNET)
            os.close(keep)
        self.client = Client(wire, keys={1: KEY})
        found: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(found) < 2 and time.monotonic() < deadline:
            anns = self.client.probe(0.3)
            found = sorted({mac for mac, ann in anns if len(ann.dimes) == dimes and all(d.epoch for d in ann.dimes)})
        if len(found) < 2:
            raise RuntimeError(f"veth bed: {len(found)} of 2 kernels ready\n{self.log_text()}")
        self.servers = found

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def dime(self, server: int, dime: int) -> Address:
        return Address(self.servers[server], dime, 0)

    def ask(self, dest: Address, cmd: Command, *params: Tlv) -> ResponseReceived:
        assert self.client is not None
        r = self.client.request(dest, cmd, params)
        assert isinstance(r, ResponseReceived), f"{cmd.name} to {dest}: timed out\n{self.log_text()}"
        return r

    def close(self) -> None:
        stop_all(self.procs)
        if self.client is not None:
            self.client.wire.close()
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
