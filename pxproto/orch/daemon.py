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

import errno
import json
import os
import signal
import socket
import stat
import time
from typing import Any

from pxproto import package
from pxproto.ctlsock import ReplyTooLong, ask
from pxproto.orch.core import OrchConfig, Orchestrator, PackageRef
from pxproto.orch.driver import Driver
from pxproto.orch.events import OrchEvent
from pxproto.orch.leader import Leadership
from pxproto.orch.service import ServiceError, load_service
from pxproto.signing import SigningKey

DEFAULT_CONTROL = "/tmp/pxorch.sock"


class ReplyError(ValueError):
    """What came back over the control socket is not a pxorch reply (nothing, not JSON, not an object)."""


class RequestError(ValueError):
    """A control request's field is missing, of the wrong type or out of range."""


def _show(v: Any, limit: int = 60) -> str:
    """A field's value for an error reply: its repr, cut short."""
    try:
        text = repr(v)
    except (ValueError, RecursionError):
        text = f"a {type(v).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _integer(req: dict[str, Any], key: str, default: int, low: int) -> int:
    v = req.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise RequestError(f"field {key!r} must be an integer, got {_show(v)}")
    if v < low:
        raise RequestError(f"field {key!r} must be at least {low}, got {v}")
    return v


def _text(req: dict[str, Any], key: str) -> str:
    v = req.get(key)
    if not isinstance(v, str) or not v:
        raise RequestError(f"field {key!r} must be text, got {_show(v)}")
    if "\0" in v:
        raise RequestError(f"field {key!r} holds a NUL byte: {_show(v)}")
    return v


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
        if os.path.lexists(control):  # a stale socket of an earlier run; anything else is not ours to remove
            if not stat.S_ISSOCK(os.lstat(control).st_mode):
                raise FileExistsError(errno.EEXIST, "exists and is not a socket", control)
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
        """The reply to one request; a field of the wrong type or range is an error reply naming it."""
        now = time.monotonic()
        cmd = req.get("cmd")
        if not isinstance(cmd, str):
            return {"error": f"field 'cmd' must be text (status, deploy or scale), got {_show(cmd)}"}
        if cmd in ("deploy", "scale") and self.leadership is not None and not self.leadership.leading:
            return {"error": "this orchestrator follows; ask the leader"}
        try:
            if cmd == "status":
                return self._status(now, _integer(req, "events", 20, 0))
            if cmd == "deploy":
                return self._deploy(_text(req, "file"), now)
            if cmd == "scale":
                service, stage = _text(req, "service"), _text(req, "stage")
                replicas = _integer(req, "replicas", 0, 0)
                try:
                    self.driver.send(self.core.scale(service, stage, replicas, now))
                except KeyError as exc:  # str() of a KeyError is the repr of its text
                    return {"error": str(exc.args[0] if exc.args else exc)}
                except ValueError as exc:
                    return {"error": str(exc)}
                return {"ok": f"scaling {service}.{stage} to {replicas}"}
        except RequestError as exc:
            return {"error": f"{cmd} request: {exc}"}
        return {"error": f"unknown command {_show(cmd)}: status, deploy or scale"}

    def _status(self, now: float, events: int) -> dict[str, Any]:
        log = list(self.core.log)
        return {
            "rows": self.core.status(now),
            "pool": self.core.pool.counts(),
            "pool_refused": dict(self.core.pool.refused),
            "services": {name: self._replicas(name) for name in self.core.services},
            "events": [e.record() for e in log[max(0, len(log) - events) :]],
            "counters": self.core.counters,
            "wire": self.driver.counters,
            "leader": self._leader(),
            "insecure": not self.driver.keyring.enabled,
        }

    def _deploy(self, file: str, now: float) -> dict[str, Any]:
        try:
            spec = load_service(file)
        except ServiceError as exc:
            return {"error": str(exc)}
        if self.store is None or spec.package is None:
            return {"error": "deploy needs --store (the central package store) and a package in the service file"}
        if self.signer is None and self.driver.keyring.enabled:
            return {"error": "deploy needs --signing-key (kernels run only signed packages)"}
        try:
            archive = package.pack(spec.package)
            digest = package.store_put(self.store, archive)
        except package.PackageError as exc:
            return {"error": str(exc)}
        except OSError as exc:
            where = exc.filename or self.store
            return {"error": f"cannot store the package of {file}: {exc.strerror or exc} ({where})"}
        ref = PackageRef(digest, len(archive), package.sign(archive, self.signer) if self.signer else b"")
        try:
            self.driver.send(self.core.deploy(spec, ref, now))
        except ValueError as exc:
            return {"error": str(exc)}
        return {"ok": f"deploying {spec.name} ({len(spec.stages)} stages, package {digest.hex()[:16]})"}

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
                reply = self._reply(conn.recv(65536))
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def _reply(self, raw: bytes) -> dict[str, Any]:
        """The reply to a request's bytes: whatever they hold, an error reply rather than an exception."""
        try:
            req = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return {"error": f"bad request: not UTF-8 (byte {exc.start})"}
        except RecursionError:
            return {"error": "bad JSON request: nested too deeply"}
        except json.JSONDecodeError as exc:
            return {"error": f"bad JSON request: {exc}"}
        except ValueError:  # an integer of more digits than int() takes (sys.get_int_max_str_digits)
            return {"error": "bad JSON request: a number with too many digits"}
        if not isinstance(req, dict):
            return {"error": "a JSON object, please"}
        try:
            return self.request(req)
        except Exception as exc:  # a bug must not take the orchestrator down with it: refuse, log, serve on
            print(f"pxorch: control request {_show(req.get('cmd'))} failed: {type(exc).__name__}: {exc}", flush=True)
            return {"error": f"internal error: {type(exc).__name__}: {exc}"}

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
    """Ask a running ``pxorch run`` over its control socket.  OSError when the socket fails or the reply does not
    come whole within ``timeout``; ReplyError for no reply, one past :data:`pxproto.ctlsock.REPLY_MAX` or one
    that is not a pxorch reply."""
    try:
        raw = ask(path, json.dumps(req).encode(), timeout, line=True)
    except ReplyTooLong as exc:
        raise ReplyError(str(exc)) from None
    if not raw:
        raise ReplyError("no reply (did `pxorch run` stop?)")
    try:
        reply = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested without end
        reply = None
    if not isinstance(reply, dict):
        raise ReplyError("not a pxorch reply")
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


__all__ = ["DEFAULT_CONTROL", "Daemon", "ReplyError", "make_core", "print_event", "query"]
