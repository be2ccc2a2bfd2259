"""A local test bed: a pxswitch, several pxkernel servers on its UDP ports, and a management client.

Used by the integration tests and bench/kernel.py; everything stays on loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pxproto.dime.endpoint import Address
from pxproto.dime.keys import fresh_keys, write_keyfile
from pxproto.dime.signaling import ResponseReceived
from pxproto.link import UdpPort, free_udp_ports
from pxproto.node.client import Client
from pxproto.procfind import find_dime, stop_all
from pxproto.signing import fresh_signing_key, write_verify_keys
from pxproto.wire import aead
from pxproto.wire.codes import Command, Direction, Status
from pxproto.wire.frame import Tlv, connect_params

ROOT = Path(__file__).resolve().parents[1]
KEY = fresh_keys()[1]
"""This run's cluster key: random per test process, written 0600 for the kernels."""
SIGNER = fresh_signing_key()
"""This run's package signing key; the kernels get only its public half (``--verify-key``)."""
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


class Cluster:
    """A pxswitch with one UDP port per kernel plus one for the test's client."""

    def __init__(
        self,
        tmp: Path,
        kernels: int,
        dimes: int,
        key: bool,
        chunks: int = 16,
        extra: tuple[str, ...] = (),
        stream: bool = False,
        encrypt: str = "",
        mirror: Path | None = None,
        two_switches: bool = False,
        switch_kernel: bool = True,
    ) -> None:
        """``stream``: the kernels attach with ``--port stream:PATH`` (UNIX stream sockets), not UDP.
        ``encrypt``: the frame classes the kernels and the client send encrypted (``pxkernel --encrypt``);
        ``mirror``: the switch writes every frame it receives to this pcapng file (a sniffer on the wire);
        ``two_switches``: the last kernel hangs off a second pxswitch (default header validation), linked to
        the first by a UDP port pair, so its frames cross two switch hops; ``switch_kernel=False``: the switch keeps
        its kernels' ports out of its in-kernel fast path (``kernel=false``), as a switch without root runs."""
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.ports = free_udp_ports(kernels + 1)
        self.procs: list[subprocess.Popen[bytes]] = []
        args = [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp / "sw.sock")]
        args += ["--validation", "none"]  # let hostile frames reach the kernels: they must reject them
        args += ["--mirror", str(mirror)] if mirror else []
        link = free_udp_ports(2) if two_switches else []
        self.switch2: subprocess.Popen[bytes] | None = None
        for i, p in enumerate(self.ports):
            if two_switches and i == kernels - 1:
                continue  # on the second switch
            if stream and i < kernels:
                args += ["--port", f"stream:address={tmp / f'k{i}.sock'},listen=true"]
            else:
                args += ["--port", f"udp:local=127.0.0.1:{p}" + ("" if switch_kernel else ",kernel=false")]
        if link:
            args += ["--port", f"udp:local=127.0.0.1:{link[0]},remote=127.0.0.1:{link[1]}"]
        self.switch = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if link:
            args2 = [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp / "sw2.sock")]
            args2 += ["--port", f"udp:local=127.0.0.1:{self.ports[kernels - 1]}"]  # default validation (header)
            args2 += ["--port", f"udp:local=127.0.0.1:{link[1]},remote=127.0.0.1:{link[0]}"]
            self.switch2 = subprocess.Popen(args2, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.store = tmp / "central"
        self.store.mkdir(parents=True)
        keyfile = tmp / "cluster.key"
        if key:
            write_keyfile(keyfile, {1: KEY})
            write_verify_keys(tmp / "verify.pub", [SIGNER])
        try:
            self._wait_switch(tmp / "sw.sock")
            if self.switch2 is not None:
                self._wait_switch(tmp / "sw2.sock", self.switch2)
        except BaseException:
            for sw in (self.switch, self.switch2):
                if sw is not None:
                    sw.kill()
                    sw.wait()
            raise
        self.logs: list[Path] = []
        for i in range(kernels):
            log = tmp / f"kernel{i}.log"
            self.logs.append(log)
            cmd = [
                sys.executable,
                "-m",
                "pxproto.node.cli",
                "--port",
                f"stream:{tmp / f'k{i}.sock'}" if stream else f"udp:127.0.0.1:{self.ports[i]}",
                "--dimes",
                str(dimes),
                "--memory-chunks",
                str(chunks),
                "--store",
                str(self.store),
                "--state-dir",
                str(tmp / f"state{i}"),
            ]
            cmd += ["--key", str(keyfile), "--verify-key", str(tmp / "verify.pub")] if key else ["--insecure"]
            cmd += ["--encrypt", encrypt] if encrypt else []
            cmd += list(extra)
            with open(log, "wb") as f:
                self.procs.append(subprocess.Popen(cmd, env=ENV, stdout=f, stderr=subprocess.STDOUT))
        self.client = Client(
            UdpPort("127.0.0.1", self.ports[-1]), keys={1: KEY} if key else None, encrypt=aead.parse_classes(encrypt)
        )
        self.servers: dict[int, bytes] = {}
        """Server index (kernel i, state dir ``state{i}``) -> its MAC, once discovery has seen it ready."""
        try:
            self._wait_ready(tmp, kernels, dimes)
        except BaseException:
            self.close()  # leave no kernel behind when the bed never came up
            raise

    def _wait_switch(self, control: Path, switch: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
        """Wait until the switch answers on its control socket: it opens that after every port is listening (on a
        host at load 27 the switch once took more than 20 s to get there)."""
        from pxproto.switch.control import query

        end = time.monotonic() + timeout
        while True:
            try:
                query(str(control), "stats", timeout=1.0)
                return
            except (OSError, ValueError):
                sw = switch or self.switch
                if sw.poll() is not None or time.monotonic() > end:
                    sw.kill()
                    raise RuntimeError(f"pxswitch did not come up (exit {sw.poll()})") from None
                time.sleep(0.02)

    def _wait_ready(self, tmp: Path, kernels: int, dimes: int) -> None:
        end = time.monotonic() + 60
        while len(self.servers) < kernels and time.monotonic() < end:
            ready = {
                mac
                for mac, ann in self.client.probe(0.3)
                if len(ann.dimes) == dimes and all(d.epoch for d in ann.dimes)
            }
            for i in range(kernels):
                mac_file = tmp / f"state{i}" / "mac"
                if i not in self.servers and mac_file.exists():
                    mac = bytes.fromhex(mac_file.read_text().strip().replace(":", ""))
                    if mac in ready:
                        self.servers[i] = mac
        assert len(self.servers) == kernels, self.log_text()

    def dime_pid(self, server: int, dime: int) -> int | None:
        """The pid of a DIME process of kernel ``server`` (found in /proc by its command line)."""
        return find_dime(self.servers[server], dime)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def dime(self, server: int, dime: int) -> Address:
        return Address(self.servers[server], dime, 0)

    def ask(self, dest: Address, cmd: Command, *params: Tlv) -> ResponseReceived:
        r = self.client.request(dest, cmd, params)
        assert isinstance(r, ResponseReceived), f"{cmd.name} to {dest}: timed out\n{self.log_text()}"
        return r

    def wire(self, dest: Address, direction: Direction, peer: Address, channel: int) -> None:
        """CONNECT one end of a data channel: ``dest``'s ``direction`` side to ``peer``."""
        r = self.ask(dest, Command.CONNECT, *connect_params(channel, direction, peer.mac, peer.dime))
        assert r.status is Status.OK, r

    def connect(self, up: Address, down: Address, channel: int) -> None:
        """Wire ``up``'s output to ``down``'s input on ``channel`` (both ends)."""
        self.wire(down, Direction.INPUT, up, channel)
        self.wire(up, Direction.OUTPUT, down, channel)

    def close(self) -> None:
        stop_all(self.procs)
        for sw in (self.switch, self.switch2):
            if sw is None:
                continue
            sw.terminate()
            try:
                sw.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a host loaded far past its cores: do not leave it behind
                sw.kill()
                sw.wait()
        self.client.wire.close()
