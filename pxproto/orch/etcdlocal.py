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
    """One etcd member; :meth:`start` again after :meth:`stop` keeps its data (an etcd restart).

    Alone by default; a member of :class:`LocalEtcdCluster` when given ``cluster`` (the initial cluster,
    ``name=peer-url,...``) and its peer port.  ``timing`` is etcd's raft heartbeat and election timeout (ms).
    """

    def __init__(self, workdir: Path, name: str = "pxorch-etcd", *, cluster: str | None = None,
                 peer_port: int | None = None, timing: tuple[int, int] = (10, 100)) -> None:  # fmt: skip
        self.binary = etcd_binary()
        if self.binary is None:
            raise FileNotFoundError("etcd is not installed (Debian: apt-get install etcd-server)")
        self.dir = workdir
        self.name = name
        self.client_port = free_port()
        self.peer_port = peer_port or free_port()
        self.cluster = cluster or f"{name}=http://127.0.0.1:{self.peer_port}"
        self.timing = timing
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 10.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process (a cluster's members all start before any of them can answer)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "etcd.log", "ab")
        peer = f"http://127.0.0.1:{self.peer_port}"
        # A 10 ms raft heartbeat and 100 ms election timeout bring etcd's smallest lease TTL down to 1 s.
        self.proc = subprocess.Popen(
            [self.binary or "etcd", "--name", self.name, "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", self.cluster, "--heartbeat-interval", str(self.timing[0]),
             "--election-timeout", str(self.timing[1]), "--logger", "zap", "--log-level", "error"],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        try:  # ahead of the DIMEs, like the orchestrators: a starved etcd looks like a lost lease
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, -10)
        except OSError:
            pass

    def wait_ready(self, timeout: float = 10.0) -> None:
        assert self.proc is not None
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

    def status(self) -> dict[str, str]:
        """This member's ``/v3/maintenance/status``: its own id (``header.member_id``) and the leader's."""
        import requests

        r = requests.post(f"{self.url}/v3/maintenance/status", json={}, timeout=1.0).json()
        return {"member": str(r["header"]["member_id"]), "leader": str(r.get("leader", "0"))}


class LocalEtcdCluster:
    """``n`` etcd members on loopback, each in a directory of its own (raft timing etcd's defaults, 100 ms and
    1 s, which a loaded host keeps up with); members can be killed and started again."""

    def __init__(self, workdir: Path, n: int = 3, timing: tuple[int, int] = (100, 1000)) -> None:
        ports = [free_port() for _ in range(n)]
        cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(ports))
        self.members = [LocalEtcd(workdir / f"m{i}", f"m{i}", cluster=cluster, peer_port=p, timing=timing)
                        for i, p in enumerate(ports)]  # fmt: skip

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self, timeout: float = 20.0) -> None:
        for m in self.members:
            m.spawn()
        for m in self.members:
            m.wait_ready(timeout)

    def leader(self) -> int | None:
        """The index of the member that leads the raft group now, as the running members report it."""
        for m in self.members:
            if m.proc is None:
                continue
            try:
                st = m.status()
            except (OSError, ValueError, KeyError):
                continue
            ids = {}
            for i, o in enumerate(self.members):
                if o.proc is not None:
                    try:
                        ids[o.status()["member"]] = i
                    except (OSError, ValueError, KeyError):
                        pass
            if st["leader"] in ids:
                return ids[st["leader"]]
        return None

    def stop(self) -> None:
        for m in self.members:
            m.stop()


__all__ = ["LocalEtcd", "LocalEtcdCluster", "etcd_binary", "free_port"]
