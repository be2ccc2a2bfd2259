"""The orchestrator's durable plan: what must outlive any one orchestrator process.

The plan is a flat map of keys to small JSON values, made from the core by :func:`plan_of`:

- ``service/NAME``: the checked service spec, its package (digest, size, signature), the wanted
  replica counts and where each source stage resumes;
- ``placement/NAME/STAGE/MAC/DIME``: a replica's DIME, whether it runs, and while it is a repair not yet
  finished, the DIME it replaces (a new leader finishes the repair and reports it, and places no other);
- ``link/NAME/CHANNEL``: a data channel's two ends and whether both are wired;
- ``keyring``: the cluster key ring's version (the active key id);
- ``epoch/MAC/DIME``: the boot epoch seen from each DIME (a restarted DIME is not the one that was placed).

Liveness (heartbeats, suspicion, timings) is never in it: each orchestrator keeps that in memory from the wire.
:class:`PlanWriter` writes only the keys whose value changed since its last write, in batches, each batch
fenced by the writer's leadership (an etcd transaction that compares the leader key's create revision), so a
deposed leader cannot overwrite its successor's plan.  :class:`MemoryKv` keeps it in memory (``pxorch run``
without ``--etcd``, and the unit tests); :class:`EtcdKv` keeps it in a real etcd cluster through its v3 JSON
gateway (the ``etcd3gw`` client; see the README for why that one).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from pxproto.orch.core import End, Orchestrator, RState
from pxproto.orch.service import Regulator, ScalePolicy, ServiceSpec, StageSpec

PREFIX = "/pxorch/"
PLAN_PREFIX = PREFIX + "plan/"
"""The plan's keys; the leader key (:data:`pxproto.orch.leader.LEADER_KEY`) is beside it, never in it."""
RESUME_EVERY = 1.0
"""Seconds between writes of a source's resume point: it moves with every item, and an older one is safe (the
replacement re-yields a little more, and lineage drops the copies)."""


MVCC_COUNTERS = ("etcd_mvcc_put_total", "etcd_mvcc_delete_total", "etcd_mvcc_txn_total", "etcd_mvcc_range_total")
"""etcd's own counts of the keys it stored, deleted, the transactions and the reads it served."""


class KvError(Exception):
    """The store could not be reached or refused the request."""


@dataclass(frozen=True)
class Holder:
    """Who holds a key: its create revision (a leader key's: the leader epoch), its lease and its value."""

    revision: int
    lease: int
    value: bytes


class Watch(Protocol):
    """A watch on one key (:meth:`Kv.watch`); ``alive`` turns False when its stream broke (watch again)."""

    @property
    def alive(self) -> bool: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Fence:
    """A write is applied only while ``key`` exists with this create revision (the writer still leads)."""

    key: str
    revision: int


class Kv(Protocol):
    """The few operations of etcd's v3 API the orchestrator uses."""

    def range(self, prefix: str) -> dict[str, bytes]: ...
    def txn(self, puts: dict[str, bytes], deletes: list[str], fence: Fence | None = None) -> bool: ...
    def create(self, key: str, value: bytes, lease: int) -> tuple[bool, int]:
        """Create ``key`` bound to ``lease`` if absent; (created, the key's create revision or 0)."""
        ...

    def grant(self, ttl: int) -> int: ...
    def keepalive(self, lease: int) -> int:
        """Refresh a lease; its remaining TTL (0 or less: it had expired)."""
        ...

    def revoke(self, lease: int) -> None: ...
    def holder(self, key: str) -> Holder | None:
        """The key's create revision, lease and value, or None when it does not exist."""
        ...

    def watch(self, key: str, on_delete: Callable[[], None]) -> Watch:
        """Call ``on_delete`` (from any thread) each time ``key`` is deleted, e.g. when its lease expires."""
        ...


class _MemoryWatch:
    def __init__(self, kv: MemoryKv, key: str, fn: Callable[[], None]) -> None:
        self.kv, self.key, self.fn, self.alive = kv, key, fn, True

    def stop(self) -> None:
        self.alive = False
        if self in self.kv.watches:
            self.kv.watches.remove(self)


class MemoryKv:
    """An etcd in one process: revisions, leases (with the clock passed in), fenced transactions."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.data: dict[str, tuple[bytes, int, int]] = {}
        """key -> (value, create revision, lease)."""
        self.leases: dict[int, tuple[int, float]] = {}
        """lease -> (ttl, expiry)."""
        self.revision = 1
        self.writes = 0
        self.watches: list[_MemoryWatch] = []
        self._lock = threading.Lock()

    def _deleted(self, key: str) -> None:
        for w in list(self.watches):
            if w.key == key:
                w.fn()

    def _expire(self) -> None:
        now = self.clock()
        for lease, (_, until) in list(self.leases.items()):
            if until <= now:
                self._drop(lease)

    def _drop(self, lease: int) -> None:
        self.leases.pop(lease, None)
        for k in [k for k, v in self.data.items() if v[2] == lease]:
            del self.data[k]
            self.revision += 1
            self._deleted(k)

    def range(self, prefix: str) -> dict[str, bytes]:
        with self._lock:
            self._expire()
            return {k: v[0] for k, v in self.data.items() if k.startswith(prefix)}

    def txn(self, puts: dict[str, bytes], deletes: list[str], fence: Fence | None = None) -> bool:
        with self._lock:
            self._expire()
            if fence is not None:
                held = self.data.get(fence.key)
                if held is None or held[1] != fence.revision:
                    return False
            self.revision += 1
            for k, v in puts.items():
                old = self.data.get(k)
                self.data[k] = (v, old[1] if old else self.revision, 0)
            for k in deletes:
                if self.data.pop(k, None) is not None:
                    self._deleted(k)
            self.writes += len(puts) + len(deletes)
            return True

    def create(self, key: str, value: bytes, lease: int) -> tuple[bool, int]:
        with self._lock:
            self._expire()
            if key in self.data:
                return False, self.data[key][1]
            if lease not in self.leases:
                raise KvError(f"lease {lease:x} not found")
            self.revision += 1
            self.data[key] = (value, self.revision, lease)
            return True, self.revision

    def grant(self, ttl: int) -> int:
        with self._lock:
            lease = len(self.leases) + 1 + self.revision * 1000
            self.leases[lease] = (ttl, self.clock() + ttl)
            return lease

    def keepalive(self, lease: int) -> int:
        with self._lock:
            self._expire()
            if lease not in self.leases:
                return 0
            ttl = self.leases[lease][0]
            self.leases[lease] = (ttl, self.clock() + ttl)
            return ttl

    def revoke(self, lease: int) -> None:
        with self._lock:
            if lease not in self.leases:
                raise KvError(f"lease {lease:x} not found")
            self._drop(lease)

    def holder(self, key: str) -> Holder | None:
        with self._lock:
            self._expire()
            v = self.data.get(key)
            return None if v is None else Holder(v[1], v[2], v[0])

    def watch(self, key: str, on_delete: Callable[[], None]) -> Watch:
        w = _MemoryWatch(self, key, on_delete)
        self.watches.append(w)
        return w


class _EtcdWatch:
    """A watch stream on the JSON gateway, read by a daemon thread."""

    def __init__(self, kv: EtcdKv, key: str, fn: Callable[[], None]) -> None:
        import requests

        self.alive = True
        c = kv.clients[kv.current]
        body = {"create_request": {"key": _b64(key), "filters": ["NOPUT"]}}
        try:
            self._resp = requests.post(c.get_url("/watch"), json=body, stream=True, timeout=(kv.timeout, None))
        except requests.RequestException as exc:
            self.alive = False
            raise KvError(f"etcd watch {key}: {exc}") from exc
        self._thread = threading.Thread(target=self._read, args=(fn,), daemon=True, name=f"watch {key}")
        self._thread.start()

    def _read(self, fn: Callable[[], None]) -> None:
        try:
            for line in self._resp.iter_lines():
                if line and json.loads(line).get("result", {}).get("events"):
                    fn()  # NOPUT: every event is a deletion
        except Exception:  # the stream broke (etcd restarted, or stop()); the owner watches again
            pass
        self.alive = False

    def stop(self) -> None:
        # Closing the response while the reader thread is blocked in a read hangs: end the stream's socket
        # first, so the read returns and the thread ends.
        sock = getattr(getattr(getattr(getattr(self._resp.raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(1.0)
        self._resp.close()


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _range_end(prefix: str) -> str:
    b = bytearray(prefix.encode())
    b[-1] += 1
    return _b64(bytes(b))


def _endpoint(url: str) -> tuple[str, str, int]:
    """``[http[s]://]HOST:PORT`` as (protocol, host, port); KvError names the URL and what is wrong."""
    proto, _, rest = url.partition("://")
    if not rest:
        proto, rest = "http", url
    host, _, port = rest.rstrip("/").rpartition(":")
    if proto not in ("http", "https"):
        raise KvError(f"endpoint {url!r}: the scheme must be http or https")
    if not host or re.search(r"[\s/?#@]", host) or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise KvError(f"endpoint {url!r} is not [http[s]://]HOST:PORT (PORT 1..65535)")
    return proto, host, int(port)


class EtcdKv:
    """:class:`Kv` on a real etcd (v3.4+) through its JSON gateway; several endpoints are tried in turn."""

    MAX_OPS = 100
    """etcd refuses a transaction of more than 128 operations (``--max-txn-ops``)."""

    def __init__(self, urls: str | list[str], timeout: float = 0.5) -> None:
        from etcd3gw.client import Etcd3Client

        self.urls = [u.strip() for u in (urls.split(",") if isinstance(urls, str) else urls) if u.strip()]
        if not self.urls:
            raise KvError("no etcd endpoint given")
        self.clients = []
        for u in self.urls:
            proto, host, port = _endpoint(u)
            self.clients.append(Etcd3Client(host=host, port=port, protocol=proto, timeout=timeout,
                                            api_path="/v3/"))  # fmt: skip
        self.timeout = timeout
        self.current = 0
        self.writes = 0
        self.requests = 0

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from etcd3gw import exceptions

        last: Exception | None = None
        for i in range(len(self.clients)):
            c = self.clients[(self.current + i) % len(self.clients)]
            try:
                self.requests += 1
                reply: dict[str, Any] = c.post(c.get_url(path), json=body)
                self.current = (self.current + i) % len(self.clients)
                return reply
            except (exceptions.ConnectionFailedError, exceptions.ConnectionTimeoutError) as exc:
                last = exc
            except exceptions.Etcd3Exception as exc:
                raise KvError(f"etcd {path}: {exc}") from exc
        raise KvError(f"etcd unreachable ({', '.join(self.urls)}): {last}")

    def range(self, prefix: str) -> dict[str, bytes]:
        r = self._post("/kv/range", {"key": _b64(prefix), "range_end": _range_end(prefix)})
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")) for kv in r.get("kvs", [])}

    def txn(self, puts: dict[str, bytes], deletes: list[str], fence: Fence | None = None) -> bool:
        ops: list[dict[str, Any]] = [{"request_put": {"key": _b64(k), "value": _b64(v)}} for k, v in puts.items()]
        ops += [{"request_delete_range": {"key": _b64(k)}} for k in deletes]
        compare = []
        if fence is not None:
            compare = [{"key": _b64(fence.key), "target": "CREATE", "result": "EQUAL",
                        "create_revision": str(fence.revision)}]  # fmt: skip
        for i in range(0, max(1, len(ops)), self.MAX_OPS):
            r = self._post("/kv/txn", {"compare": compare, "success": ops[i : i + self.MAX_OPS]})
            if not r.get("succeeded", False):
                return False
        self.writes += len(ops)
        return True

    def create(self, key: str, value: bytes, lease: int) -> tuple[bool, int]:
        k = _b64(key)
        r = self._post("/kv/txn", {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": _b64(value), "lease": str(lease)}}],
            "failure": [{"request_range": {"key": k}}],
        })  # fmt: skip
        if r.get("succeeded", False):
            return True, int(r["header"]["revision"])
        kvs = r["responses"][0]["response_range"].get("kvs", [])
        return False, int(kvs[0]["create_revision"]) if kvs else 0

    def grant(self, ttl: int) -> int:
        return int(self._post("/lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def keepalive(self, lease: int) -> int:
        r = self._post("/lease/keepalive", {"ID": lease})
        return int(r.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        self._post("/kv/lease/revoke", {"ID": lease})

    def holder(self, key: str) -> Holder | None:
        kvs = self._post("/kv/range", {"key": _b64(key)}).get("kvs", [])
        if not kvs:
            return None
        kv = kvs[0]
        return Holder(int(kv["create_revision"]), int(kv.get("lease", 0)), base64.b64decode(kv.get("value", "")))

    def watch(self, key: str, on_delete: Callable[[], None]) -> Watch:
        return _EtcdWatch(self, key, on_delete)

    def metrics(self, names: tuple[str, ...] = MVCC_COUNTERS) -> dict[str, float]:
        """The member's own counters from its ``/metrics`` endpoint (the current endpoint's member): what etcd
        itself saw written, beside what this client counted."""
        import requests

        c = self.clients[self.current]
        url = c.get_url("/metrics").replace("/v3/metrics", "/metrics")
        try:
            text = requests.get(url, timeout=self.timeout * 4).text
        except requests.RequestException as exc:
            raise KvError(f"etcd metrics {url}: {exc}") from exc
        found = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in names:
                found[name] = float(value)
        return found


def _key(k: tuple[bytes, int]) -> str:
    return f"{k[0].hex(':')}/{k[1]}"


def plan_of(core: Orchestrator, keyring_version: int = 0) -> dict[str, str]:
    """The core's plan as flat keys and JSON values (no liveness; see the module docstring)."""
    plan: dict[str, str] = {"keyring": json.dumps(keyring_version)}
    for name, svc in core.services.items():
        plan[f"service/{name}"] = json.dumps({
            "spec": spec_record(svc.spec),
            "package": [svc.package.digest.hex(), svc.package.size, svc.package.sig.hex()],
            "want": svc.want,
        }, sort_keys=True)  # fmt: skip
        for stage, first in svc.resume.items():
            plan[f"resume/{name}/{stage}"] = json.dumps(first)
        for rep in svc.replicas:
            if rep.live:
                rec: dict[str, Any] = {"running": rep.state is RState.RUNNING, "first": rep.first}
                if rep.repair_of is not None and not rep.announced:  # a repair under way: its successor ends it
                    rec["repair_of"] = [_key(rep.repair_of), rep.repair_t0]
                plan[f"placement/{name}/{rep.stage.name}/{_key(rep.key)}"] = json.dumps(rec)
        for link in svc.links:
            wired = link.out is End.DONE and link.inp is End.DONE
            plan[f"link/{name}/{link.channel}"] = json.dumps([_key(link.up.key), _key(link.down.key), wired])
    for v in core.pool.dimes.values():
        plan[f"epoch/{_key(v.key)}"] = json.dumps(v.epoch)
    return plan


def spec_record(spec: ServiceSpec) -> dict[str, Any]:
    """A checked service spec as JSON-able data (a follower needs no copy of the file or the package)."""
    d = asdict(spec)
    d["package"] = None if spec.package is None else str(spec.package)
    return d


def spec_from_record(d: dict[str, Any]) -> ServiceSpec:
    stages = tuple(
        StageSpec(**{**st, "inputs": tuple(st["inputs"]), "scale": ScalePolicy(**st["scale"]) if st["scale"] else None})
        for st in d["stages"]
    )
    pkg = Path(d["package"]) if d["package"] else None
    return ServiceSpec(d["name"], d["id"], pkg, stages, Regulator(**d["regulator"]), d["source"])


class PlanWriter:
    """Writes a plan's changes to a :class:`Kv` under ``prefix``, fenced by ``fence`` when given."""

    def __init__(self, kv: Kv, prefix: str = PLAN_PREFIX) -> None:
        self.kv = kv
        self.prefix = prefix
        self.written: dict[str, str] = {}
        self.writes = 0
        self.batches = 0
        self.refused = 0
        self._resume_at = 0.0

    def load(self) -> dict[str, str]:
        """The plan as the store has it now (what a new leader starts from); it becomes the written baseline."""
        n = len(self.prefix)
        self.written = {k[n:]: v.decode() for k, v in self.kv.range(self.prefix).items()}
        return dict(self.written)

    def sync(self, plan: dict[str, str], now: float, fence: Fence | None = None) -> bool:
        """Write what changed since the last sync; False if the fence refused it (this writer no longer leads)."""
        resume_due = now >= self._resume_at
        puts = {}
        for k, v in plan.items():
            if self.written.get(k) != v and (resume_due or not k.startswith("resume/") or k not in self.written):
                puts[k] = v
        deletes = [k for k in self.written if k not in plan]
        if not puts and not deletes:
            return True
        if fence is not None and fence.revision <= 0:
            self.refused += 1
            return False
        if resume_due:
            self._resume_at = now + RESUME_EVERY
        ok = self.kv.txn({self.prefix + k: v.encode() for k, v in puts.items()},
                         [self.prefix + k for k in deletes], fence)  # fmt: skip
        if not ok:
            self.refused += 1
            return False
        self.written.update(puts)
        for k in deletes:
            del self.written[k]
        self.writes += len(puts) + len(deletes)
        self.batches += 1
        return True


__all__ = [
    "MVCC_COUNTERS",
    "PLAN_PREFIX",
    "PREFIX",
    "EtcdKv",
    "Fence",
    "Holder",
    "Kv",
    "KvError",
    "MemoryKv",
    "PlanWriter",
    "Watch",
    "plan_of",
]
