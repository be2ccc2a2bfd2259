"""The service file: a workflow (a DAG of MICE stages from a service package) and its regulator.

A service file is TOML.  It names a service package (the directory with the
kernel's ``service.toml`` manifest, see :mod:`pxproto.package`), says how its
stages connect and how many replicas each runs, and sets the regulator's
policies for the run::

    [service]
    name = "wordfreq"          # required: [A-Za-z0-9_.-]{1,64}
    id = 1                     # required: 1..4294967295, the SERVICE_ID on the wire
    package = "package"        # required: the package directory, relative to this file

    [regulator]                # optional; every field has a default
    heartbeat_ms = 50          # heartbeat period set on every DIME the service uses (SET_PARAM), 1..60000
    detector = "missed"        # missed | phi
    missed = 2.0               # missed: suspect after this many silent periods
    phi = 8.0                  # phi: suspect when phi reaches this
    confirm_ms = 8             # a suspicion is confirmed by a direct PING: retransmit interval (ms)
    confirm_tries = 5          # ... and how many times it is sent; dead after confirm_ms * confirm_tries
                               # with no answer and no heartbeat (5 tries: one lost frame in 20 cannot do it)
    repair = "replace"         # replace (allocate a new DIME from the pool) | none
    drain_ms = 500             # scale-in: longest wait for a retiring replica to empty its queues
    command_timeout_ms = 2000  # LOAD/START/CONNECT: give up (and retry elsewhere) after this long

    [[stage]]                  # one table per stage, in any order
    name = "parse"             # required: a stage of the package's manifest
    inputs = ["source"]        # upstream stages (none for a source)
    replicas = 1               # 1..64 at deployment
    memory_chunks = 2          # 2 MiB chunks per replica; default: the manifest's memory_chunks

    [stage.scale]              # optional, per stage: scaling by policy
    metric = "queue"           # queue (mean rx_queue of the replicas, from heartbeats) | cpu (permille)
    out_above = 64             # scale out by one when the metric stays above this ...
    in_below = 2               # ... in by one when it stays below this ...
    for_ms = 500               # ... for this long
    min = 1                    # never fewer replicas
    max = 4                    # never more
    cooldown_ms = 1000         # after a change, wait this long before the next

Every error names the file, the line and the field (``tomllib`` gives no line
numbers for values, so :class:`_Lines` finds them by scanning the source for
each table header and key).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_REPLICAS = 64


class ServiceError(ValueError):
    """A mistake in a service file; the message names the file, line and field."""


@dataclass(frozen=True)
class ScalePolicy:
    """When to add or remove a replica of one stage."""

    metric: str = "queue"
    out_above: float = 64.0
    in_below: float = 2.0
    for_s: float = 0.5
    min: int = 1
    max: int = 4
    cooldown_s: float = 1.0


@dataclass(frozen=True)
class StageSpec:
    """One stage of the workflow."""

    name: str
    index: int
    """Its index in the package manifest (the STAGE TLV)."""
    mice: str
    """The MICE name sent in LOAD (the manifest's stage name)."""
    inputs: tuple[str, ...] = ()
    replicas: int = 1
    memory_chunks: int = 1
    scale: ScalePolicy | None = None
    line: int = 0
    """Where it is defined in the service file."""


@dataclass(frozen=True)
class Regulator:
    """The service regulator's policies for the run."""

    heartbeat_ms: int = 50
    detector: str = "missed"
    missed: float = 2.0
    phi: float = 8.0
    confirm_ms: int = 8
    confirm_tries: int = 5
    repair: str = "replace"
    drain_ms: int = 500
    command_timeout_ms: int = 2000


@dataclass(frozen=True)
class ServiceSpec:
    """A parsed, checked service file."""

    name: str
    id: int
    package: Path | None
    stages: tuple[StageSpec, ...]
    regulator: Regulator = field(default_factory=Regulator)
    source: str = "<service>"

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"service {self.name} has no stage {name!r}")

    def downstream(self, name: str) -> list[StageSpec]:
        return [s for s in self.stages if name in s.inputs]

    def topo_order(self) -> list[StageSpec]:
        """Stages with every stage after its inputs."""
        done: list[StageSpec] = []
        seen: set[str] = set()
        pending = list(self.stages)
        while pending:
            for s in pending:
                if all(i in seen for i in s.inputs):
                    done.append(s)
                    seen.add(s.name)
                    pending.remove(s)
                    break
        return done


class _Lines:
    """Line numbers of table headers and keys in a TOML source, found by scanning it."""

    HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\" -]+?)\s*\]\]?\s*(#.*)?$")
    KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")

    def __init__(self, text: str) -> None:
        self.keys: dict[tuple[str, int, str], int] = {}
        self.tables: dict[tuple[str, int], int] = {}
        counts: dict[str, int] = {}
        table, index = "", 0
        for no, line in enumerate(text.splitlines(), 1):
            m = self.HEADER.match(line)
            if m:
                name = m.group(2).replace('"', "").replace(" ", "")
                if m.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                    table, index = name, counts[name]
                else:
                    table = name
                    parent = name.rpartition(".")[0]
                    index = counts.get(parent, 0) if parent in counts else 0
                self.tables.setdefault((table, index), no)
                continue
            k = self.KEY.match(line)
            if k:
                self.keys.setdefault((table, index, k.group(1)), no)

    def of(self, table: str, index: int, key: str | None = None) -> int:
        if key is not None and (table, index, key) in self.keys:
            return self.keys[(table, index, key)]
        return self.tables.get((table, index), 0)


class _Checker:
    def __init__(self, text: str, where: str) -> None:
        self.lines = _Lines(text)
        self.where = where

    def fail(self, table: str, index: int, key: str | None, msg: str) -> ServiceError:
        line = self.lines.of(table, index, key)
        at = f"{self.where}:{line}" if line else self.where
        label = f"[{table}]" if table != "stage" and not table.startswith("stage.") else f"[{table} {index}]"
        fld = f" field '{key}'" if key else ""
        return ServiceError(f"{at}: {label}{fld}: {msg}")

    def table(self, doc: dict[str, Any], name: str, index: int = 0, required: bool = False) -> dict[str, Any]:
        v = doc.get(name.rpartition(".")[2])
        if v is None:
            if required:
                raise ServiceError(f"{self.where}: missing [{name}] table")
            return {}
        if not isinstance(v, dict):
            raise self.fail(name, index, None, "must be a table")
        return v

    def unknown(self, t: dict[str, Any], table: str, index: int, allowed: set[str]) -> None:
        for k in t:
            if k not in allowed:
                raise self.fail(table, index, k, f"unknown field (expected one of {', '.join(sorted(allowed))})")

    def integer(self, t: dict[str, Any], table: str, index: int, key: str, lo: int, hi: int, default: int) -> int:
        v = t.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise self.fail(table, index, key, f"must be an integer {lo}..{hi}, got {v!r}")
        return v

    def number(self, t: dict[str, Any], table: str, index: int, key: str, lo: float, default: float) -> float:
        v = t.get(key, default)
        if not isinstance(v, int | float) or isinstance(v, bool) or not v >= lo:
            raise self.fail(table, index, key, f"must be a number >= {lo}, got {v!r}")
        return float(v)

    def choice(self, t: dict[str, Any], table: str, index: int, key: str, options: tuple[str, ...]) -> str:
        v = t.get(key, options[0])
        if v not in options:
            raise self.fail(table, index, key, f"must be one of {', '.join(options)}, got {v!r}")
        return str(v)

    def name(self, t: dict[str, Any], table: str, index: int, key: str = "name") -> str:
        v = t.get(key)
        if not isinstance(v, str) or not NAME_RE.fullmatch(v):
            raise self.fail(table, index, key, f"must match {NAME_RE.pattern}, got {v!r}")
        return v


def parse_service(text: str, where: str = "<service>", base: Path | None = None, manifest: Any = None) -> ServiceSpec:
    """Parse and check a service file's text.

    ``base`` is the directory the package path is relative to; ``manifest``
    (a :class:`pxproto.package.Manifest`) is what stage names are checked
    against; without one, the package is read from ``base / package`` when
    ``base`` is given, else stage indexes are their order in the file.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ServiceError(f"{where}: {exc}") from None
    c = _Checker(text, where)
    c.unknown(doc, "", 0, {"service", "regulator", "stage"})
    svc = c.table(doc, "service", required=True)
    c.unknown(svc, "service", 0, {"name", "id", "package"})
    name = c.name(svc, "service", 0)
    sid = c.integer(svc, "service", 0, "id", 1, 0xFFFFFFFF, 0)
    pkg_text = svc.get("package")
    package: Path | None = None
    if pkg_text is not None:
        if not isinstance(pkg_text, str) or not pkg_text:
            raise c.fail("service", 0, "package", f"must be a directory path, got {pkg_text!r}")
        if "\0" in pkg_text:
            raise c.fail("service", 0, "package", f"a path cannot hold a NUL byte, got {pkg_text!r}")
        package = (base / pkg_text) if base is not None else Path(pkg_text)
        if manifest is None and base is not None:
            from pxproto.package import PackageError, load_manifest

            try:
                manifest = load_manifest(package)
            except PackageError as exc:
                raise c.fail("service", 0, "package", str(exc)) from None
    regulator = _regulator(c, c.table(doc, "regulator"))
    raw = doc.get("stage")
    if not isinstance(raw, list) or not raw:
        raise ServiceError(f"{where}: at least one [[stage]] table is needed")
    stages = [_stage(c, st, i, manifest) for i, st in enumerate(raw)]
    _check_dag(c, stages)
    return ServiceSpec(name, sid, package, tuple(stages), regulator, where)


SERVICE_MAX = 1 << 20
"""Bytes a service file may hold: one larger (or /dev/zero) is refused, not read whole."""


def load_service(path: str | Path) -> ServiceSpec:
    """Read and check a service file (and its package's manifest)."""
    if "\0" in str(path):
        raise ServiceError(f"{str(path)!r}: a path cannot hold a NUL byte")
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(SERVICE_MAX + 1)
        if len(data) > SERVICE_MAX:
            raise ServiceError(f"{p}: larger than {SERVICE_MAX} bytes: not a service file")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ServiceError(f"{p}: {exc}") from None
    return parse_service(text, str(p), p.parent)


HEARTBEAT_MS = (1, 60000)
"""The range of ``heartbeat_ms`` (and of ``pxorch demo --heartbeat-ms``)."""
CONFIRM_MS = (1, 60000)
"""The range of ``confirm_ms`` (and of ``pxorch demo --confirm-ms``)."""
MISSED_MIN = 1.0
"""The least ``missed`` (and ``pxorch demo --missed``): fewer silent periods than one is no detector."""


def _regulator(c: _Checker, t: dict[str, Any]) -> Regulator:
    c.unknown(t, "regulator", 0, {f for f in Regulator.__dataclass_fields__})
    r = "regulator"
    return Regulator(
        heartbeat_ms=c.integer(t, r, 0, "heartbeat_ms", *HEARTBEAT_MS, 50),
        detector=c.choice(t, r, 0, "detector", ("missed", "phi")),
        missed=c.number(t, r, 0, "missed", MISSED_MIN, 2.0),
        phi=c.number(t, r, 0, "phi", 0.5, 8.0),
        confirm_ms=c.integer(t, r, 0, "confirm_ms", *CONFIRM_MS, 8),
        confirm_tries=c.integer(t, r, 0, "confirm_tries", 1, 20, 5),
        repair=c.choice(t, r, 0, "repair", ("replace", "none")),
        drain_ms=c.integer(t, r, 0, "drain_ms", 0, 600000, 500),
        command_timeout_ms=c.integer(t, r, 0, "command_timeout_ms", 10, 600000, 2000),
    )


def _stage(c: _Checker, st: Any, i: int, manifest: Any) -> StageSpec:
    if not isinstance(st, dict):
        raise c.fail("stage", i, None, "must be a table")
    c.unknown(st, "stage", i, {"name", "inputs", "replicas", "memory_chunks", "scale"})
    name = c.name(st, "stage", i)
    index, default_chunks = i, 1
    if manifest is not None:
        found = [s for s in manifest.stages if s.name == name]
        if not found:
            names = ", ".join(s.name for s in manifest.stages)
            raise c.fail("stage", i, "name", f"{name!r} is not a stage of package {manifest.name} ({names})")
        index, default_chunks = found[0].index, found[0].memory_chunks
    inputs = st.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        raise c.fail("stage", i, "inputs", f"must be a list of stage names, got {inputs!r}")
    if len(set(inputs)) != len(inputs):
        raise c.fail("stage", i, "inputs", "names a stage twice")
    replicas = c.integer(st, "stage", i, "replicas", 1, MAX_REPLICAS, 1)
    chunks = c.integer(st, "stage", i, "memory_chunks", 1, 1 << 20, default_chunks)
    scale = None
    if "scale" in st:
        t = st["scale"]
        if not isinstance(t, dict):
            raise c.fail("stage", i, "scale", "must be a table")
        scale = _scale(c, t, i, replicas)
    line = c.lines.of("stage", i)
    return StageSpec(name, index, name, tuple(inputs), replicas, chunks, scale, line)


def _scale(c: _Checker, t: dict[str, Any], i: int, replicas: int) -> ScalePolicy:
    s = "stage.scale"
    c.unknown(t, s, i, {"metric", "out_above", "in_below", "for_ms", "min", "max", "cooldown_ms"})
    p = ScalePolicy(
        metric=c.choice(t, s, i, "metric", ("queue", "cpu")),
        out_above=c.number(t, s, i, "out_above", 0.0, 64.0),
        in_below=c.number(t, s, i, "in_below", 0.0, 2.0),
        for_s=c.integer(t, s, i, "for_ms", 0, 3_600_000, 500) / 1000.0,
        min=c.integer(t, s, i, "min", 1, MAX_REPLICAS, 1),
        max=c.integer(t, s, i, "max", 1, MAX_REPLICAS, max(4, replicas)),
        cooldown_s=c.integer(t, s, i, "cooldown_ms", 0, 3_600_000, 1000) / 1000.0,
    )
    if p.min > p.max:
        raise c.fail(s, i, "min", f"min {p.min} is above max {p.max}")
    if p.in_below >= p.out_above:
        raise c.fail(s, i, "in_below", f"in_below {p.in_below} must be below out_above {p.out_above}")
    if not p.min <= replicas <= p.max:
        raise c.fail("stage", i, "replicas", f"{replicas} is outside the scale policy's {p.min}..{p.max}")
    return p


def _check_dag(c: _Checker, stages: list[StageSpec]) -> None:
    names = [s.name for s in stages]
    for i, s in enumerate(stages):
        if s.name in names[:i]:
            raise c.fail("stage", i, "name", f"{s.name!r} is already the name of stage {names.index(s.name)}")
        for up in s.inputs:
            if up not in names:
                raise c.fail("stage", i, "inputs", f"no stage named {up!r}")
            if up == s.name:
                raise c.fail("stage", i, "inputs", "a stage cannot feed itself")
    # Cycles: peel stages whose inputs are all placed.
    placed: set[str] = set()
    left = list(range(len(stages)))
    while left:
        ready = [i for i in left if all(u in placed for u in stages[i].inputs)]
        if not ready:
            raise c.fail("stage", left[0], "inputs", "the stages form a cycle: " + " -> ".join(names[i] for i in left))
        for i in ready:
            placed.add(stages[i].name)
            left.remove(i)
    if not any(not s.inputs for s in stages):
        raise ServiceError(f"{c.where}: no stage without inputs (a source) in the workflow")
