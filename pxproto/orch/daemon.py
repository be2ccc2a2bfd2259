"""``pxorch run``: the orchestrator as a long-running process, with a control socket.

The control socket (a UNIX stream socket) takes one JSON request per
connection and answers one JSON reply:

- ``{"cmd": "status"}`` -> ``{"rows": [...], "services": {...}, "pool": {...}, "events": [...]}``
- ``{"cmd": "deploy", "file": PATH}`` -> the service file is checked, its package packed into the
  central store (``--store``), signed under the cluster key, and deployed
- ``{"cmd": "scale", "service": S, "stage": T, "replicas": N}``

Errors come back as ``{"error": TEXT}``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any

from pxproto import package
from pxproto.orch.core import OrchConfig, Orchestrator, PackageRef
from pxproto.orch.driver import Driver
from pxproto.orch.events import OrchEvent
from pxproto.orch.leader import Leadership
from pxproto.orch.service import ServiceError, load_service
from pxproto.signing import SigningKey

DEFAULT_CONTROL = "/tmp/pxorch.sock"


class Daemon:
    """An orchestrator on a wire, answering a control socket, probing now and then."""

    def __init__(self, driver: Driver, control: str, store: str | None, probe_every: float = 2.0,
                 leadership: Leadership | None = None, signer: SigningKey | None = None) -> None:  # fmt: skip
        self.driver = driver
        self.leadership = leadership
        self.signer = signer
        """Signs deployed packages (Ed25519); only the orchestrator holds it, never a kernel."""
        self.store = store
        self.probe_every = probe_every
        self.stop = False
        if os.path.exists(control):
            os.unlink(control)
        self.control_path = control
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.bind(control)
        os.chmod(control, 0o600)
        self.control.listen(8)
        self.control.setblocking(False)

    @property
    def core(self) -> Orchestrator:
        return self.driver.core  # a takeover replaces it

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        cmd = req.get("cmd")
        if cmd in ("deploy", "scale") and self.leadership is not None and not self.leadership.leading:
            return {"error": "this orchestrator follows; ask the leader"}
        if cmd == "status":
            return {
                "rows": self.core.status(now),
                "pool": self.core.pool.counts(),
                "pool_refused": dict(self.core.pool.refused),
                "services": {name: self._replicas(name) for name in self.core.services},
                "events": [e.record() for e in list(self.core.log)[-int(req.get("events", 20)) :]],
                "counters": self.core.counters,
                "wire": self.driver.counters,
                "leader": self._leader(),
                "insecure": not self.driver.keyring.enabled,
            }
        if cmd == "deploy":
            try:
                spec = load_service(str(req.get("file")))
            except ServiceError as exc:
                return {"error": str(exc)}
            if self.store is None or spec.package is None:
                return {"error": "deploy needs --store (the central package store) and a package in the service file"}
            archive = package.pack(spec.package)
            digest = package.store_put(self.store, archive)
            if self.signer is None and self.driver.keyring.enabled:
                return {"error": "deploy needs --signing-key (kernels run only signed packages)"}
            ref = PackageRef(digest, len(archive), package.sign(archive, self.signer) if self.signer else b"")
            try:
                self.driver.send(self.core.deploy(spec, ref, now))
            except ValueError as exc:
                return {"error": str(exc)}
            return {"ok": f"deploying {spec.name} ({len(spec.stages)} stages, package {digest.hex()[:16]})"}
        if cmd == "scale":
            try:
                self.driver.send(
                    self.core.scale(str(req.get("service")), str(req.get("stage")), int(req.get("replicas", 0)), now)
                )
            except (KeyError, ValueError) as exc:
                return {"error": str(exc).strip("'\"")}
            return {"ok": f"scaling {req.get('service')}.{req.get('stage')} to {req.get('replicas')}"}
        return {"error": f"unknown command {cmd!r}: status, deploy or scale"}

    def _leader(self) -> dict[str, Any] | None:
        ha = self.leadership
        if ha is None:
            return None
        return {"leading": ha.leading, "epoch": ha.elector.epoch, "writes": ha.writer.writes,
                "batches": ha.writer.batches, "takeovers": ha.takeovers}  # fmt: skip

    def _replicas(self, name: str) -> dict[str, Any]:
        return {st: [f"{k[0].hex(':')}/{k[1]}" for k in keys] for st, keys in self.core.replicas(name).items()}

    def _answer(self) -> None:
        try:
            conn, _ = self.control.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2.0)
            try:
                raw = conn.recv(65536)
                try:
                    req = json.loads(raw)
                    reply = self.request(req) if isinstance(req, dict) else {"error": "a JSON object, please"}
                except json.JSONDecodeError as exc:
                    reply = {"error": f"bad JSON request: {exc}"}
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: setattr(self, "stop", True))
        next_probe = 0.0
        while not self.stop and not self.driver.gone:
            now = time.monotonic()
            if now >= next_probe:
                next_probe = now + self.probe_every
                self.driver.send(self.core.probe(now), even_muted=True)
            if self.leadership is not None:
                self.leadership.step(now)
            if self.driver.poll(0.05 if self.leadership else 0.2, [self.control]):
                self._answer()
        if self.leadership is not None:
            self.leadership.stop()
        self.control.close()
        os.unlink(self.control_path)
        return 0


def query(path: str, req: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Ask a running ``pxorch run`` over its control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode())
        chunks = []
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            chunks.append(b)
            if b.endswith(b"\n"):
                break
    reply: dict[str, Any] = json.loads(b"".join(chunks))
    return reply


def print_event(ev: OrchEvent) -> None:
    print(f"[{ev.t:10.3f}] {ev.text()}", flush=True)


def make_core(service_file: str | None) -> Orchestrator:
    """An orchestrator whose liveness follows a service file's regulator (or the defaults)."""
    mac = bytes([0x02]) + os.urandom(5)
    if service_file:
        spec = load_service(service_file)
        return Orchestrator(mac, OrchConfig.from_regulator(spec.regulator))
    return Orchestrator(mac)


__all__ = ["DEFAULT_CONTROL", "Daemon", "make_core", "print_event", "query"]
