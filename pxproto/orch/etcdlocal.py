"""A throw-away local etcd (one member on free loopback ports, in a directory of its own): for
``pxorch demo --ha`` and the tests.  Debian's ``etcd-server`` package provides the binary."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def etcd_binary() -> str | None:
    """The etcd server binary, or None when it is not installed."""
    return shutil.which("etcd") or next((p for p in ("/usr/bin/etcd",) if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalEtcd:
    """One etcd member; :meth:`start` again after :meth:`stop` keeps its data (an etcd restart)."""

    def __init__(self, workdir: Path, name: str = "pxorch-etcd") -> None:
        self.binary = etcd_binary()
        if self.binary is None:
            raise FileNotFoundError("etcd is not installed (Debian: apt-get install etcd-server)")
        self.dir = workdir
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 10.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "etcd.log", "ab")
        peer = f"http://127.0.0.1:{self.peer_port}"
        # A 10 ms raft heartbeat and 100 ms election timeout bring etcd's smallest lease TTL down to 1 s.
        self.proc = subprocess.Popen(
            [self.binary or "etcd", "--name", self.name, "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"{self.name}={peer}", "--heartbeat-interval", "10",
             "--election-timeout", "100", "--logger", "zap", "--log-level", "error"],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        try:  # ahead of the DIMEs, like the orchestrators: a starved etcd looks like a lost lease
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, -10)
        except OSError:
            pass
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {self.dir / 'etcd.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.2):
                    pass
                from pxproto.orch.store import EtcdKv, KvError

                try:
                    EtcdKv(self.url).range("/pxorch-ready")
                    return
                except KvError:
                    pass
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd did not answer within {timeout} s; see {self.dir / 'etcd.log'}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


__all__ = ["LocalEtcd", "etcd_binary", "free_port"]
