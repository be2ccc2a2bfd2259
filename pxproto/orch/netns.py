"""``pxorch demo --netns``: the switch, each server and the orchestrator in network namespaces of their own,
wired to the switch's namespace by veth pairs (root, iproute2)."""

from __future__ import annotations

import os
import subprocess

from pxproto.link import PacketPort


class NetnsError(RuntimeError):
    """The namespaces could not be made (not root, no iproute2); the message says which command failed."""


class Namespaces:
    """The ``--netns`` layout: a namespace for the switch, one per server and one for the orchestrator, each
    wired to the switch's namespace by a veth pair (names carry a random tag, so runs do not collide)."""

    def __init__(self) -> None:
        tag = os.urandom(3).hex()
        self.tag = tag
        self.switch_ns = f"pxosw{tag}"
        self.server_ns: list[str] = []
        self.server_ends: list[str] = []
        self.switch_ends: list[str] = []
        self.orch_ns = f"pxoo{tag}"
        self.orch_end = f"o{tag}"
        self.made: list[str] = []

    @staticmethod
    def _ip(*args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip()} (--netns needs root and iproute2)")

    def _pair(self, ns: str, end: str, switch_end: str) -> None:
        self._ip("link", "add", end, "netns", ns, "type", "veth", "peer", "name", switch_end, "netns", self.switch_ns)
        self._ip("-n", ns, "link", "set", end, "up")
        self._ip("-n", self.switch_ns, "link", "set", switch_end, "up")
        self.switch_ends.append(switch_end)

    def create(self, servers: int) -> None:
        if os.geteuid() != 0:
            raise NetnsError("--netns needs root (network namespaces, veth, AF_PACKET)")
        for ns in (self.switch_ns, self.orch_ns, *(f"pxos{i}{self.tag}" for i in range(servers))):
            self._ip("netns", "add", ns)
            self.made.append(ns)
            self._ip("-n", ns, "link", "set", "lo", "up")
        for i in range(servers):
            ns, end = f"pxos{i}{self.tag}", f"s{i}{self.tag}"
            self._pair(ns, end, f"w{i}{self.tag}")
            self.server_ns.append(ns)
            self.server_ends.append(end)
        self._pair(self.orch_ns, self.orch_end, f"wo{self.tag}")

    def orchestrator_wire(self) -> PacketPort:
        """An AF_PACKET socket on the orchestrator's veth end, opened inside its namespace (this process stays
        where it is: a socket keeps the namespace it was made in)."""
        target = os.open(f"/run/netns/{self.orch_ns}", os.O_RDONLY)
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            _setns(target)
            try:
                wire = PacketPort(self.orch_end)
                # /sys shows this process's namespace, not the veth's: ask the socket for the interface's MAC.
                wire.mac = wire.sock.getsockname()[4]
                return wire
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)

    def delete(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.made.clear()


def _setns(fd: int) -> None:
    """Enter a network namespace (os.setns arrived in Python 3.12)."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")
