"""pxswitch configuration: a TOML file or command-line port specs, checked with errors that say where.

A file::

    [switch]
    validation = "header"      # none | header | full
    malformed = "drop"         # drop | pass
    non_parallax = "pass"      # pass | drop
    fdb_capacity = 8192
    aging = 300.0              # seconds
    queue_data = 1024          # frames per output port
    queue_control = 4096
    max_macs = 2048            # table entries one port may learn (port security); 0: no limit
    mirror = "mirror.pcapng"   # optional
    control = "/run/user/1000/pxswitch.sock"   # default: $XDG_RUNTIME_DIR/pxswitch.sock, else /tmp/pxswitch-UID.sock
    realtime = 0               # 1..99: run under SCHED_FIFO at this priority (0: the normal scheduler)
    busy_poll = 0              # µs the AF_PACKET loop keeps polling after a frame before it sleeps
    busy_adaptive = 50         # µs: polls without sleeping while frames keep coming, sleeps after this long a silence
    busy_nap = 0               # µs a polling look that found nothing naps (a timer sleep; 0: looks again at once)
    slice = 0                  # µs (100..100000): the loop's EEVDF time slice (0: the kernel's, 1.4 ms here)
    workers = 1                # threads forwarding AF_PACKET ports' data (PACKET_FANOUT; more than 1: no mirror)

    [[port]]
    name = "vm1"
    type = "stream"            # udp | stream | tap | afpacket | vxlan
    address = "/tmp/vm1.sock"
    listen = true

    [[port]]
    name = "n1"
    type = "afpacket"
    interface = "veth0"
    rcvbuf = 1048576           # data socket receive buffer, bytes (it bounds the backlog, hence the latency)
    ring = 2                   # 2 (default): PACKET_MMAP TPACKET_V2 (a frame at once); 3: TPACKET_V3 (blocks,
                               # up to the 1 ms block timeout of latency for data); 0: recvmmsg
    offload = true             # PACKET_VNET_HDR: carry checksum/segmentation offloads (see the README)
    txring = true              # send through a PACKET_MMAP TX ring (false: sendmmsg; GSO segments always do)
    mtu = 1500                 # every port; default 65000 on udp/stream (the node's jumbo frames), an afpacket
                               # port's interface MTU, else 1500
    max_macs = 2048            # every port: table entries it may learn (default [switch] max_macs)

    [[port]]
    name = "uplink"
    type = "vxlan"
    remote = ["192.0.2.7"]
    vni = 42
    aging = 300.0              # seconds a learned MAC -> VTEP entry holds (default: the switch's aging)

On the command line a port is ``TYPE:key=value,key=value`` (``name=`` optional;
``remote=`` may repeat for a VXLAN port), e.g. ``afpacket:interface=veth0,ring=2``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pxproto.files import FileRefused, read_bounded
from pxproto.switch.core import ETH_OVERHEAD, FDB_CAPACITY_MAX, SwitchPolicy


def default_control() -> str:
    """The control socket's default path, per user: ``$XDG_RUNTIME_DIR/pxswitch.sock``, else
    ``/tmp/pxswitch-UID.sock`` (two users' switches never meet; a second live switch is refused anyway)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "pxswitch.sock")
    return f"/tmp/pxswitch-{os.geteuid()}.sock"


DEFAULT_CONTROL = default_control()

# type -> {option: (python type, required)}
PORT_OPTIONS: dict[str, dict[str, tuple[type, bool]]] = {
    "udp": {"local": (str, True), "remote": (str, False), "kernel": (bool, False)},
    "stream": {"address": (str, True), "listen": (bool, False)},
    "tap": {"interface": (str, True)},
    "afpacket": {
        "interface": (str, True),
        "rcvbuf": (int, False),
        "ring": (int, False),
        "offload": (bool, False),
        "txring": (bool, False),
        "kernel": (bool, False),
    },
    "vxlan": {"local": (str, False), "remote": (list, True), "vni": (int, True), "aging": (float, False)},
}
PORT_COMMON: dict[str, tuple[type, bool]] = {"mtu": (int, False), "max_macs": (int, False)}
"""Options every port takes: ``mtu`` (frames up to mtu + 18 bytes pass; default 65000, ``pxproto.link.VIRTUAL_MTU``,
on UDP and stream ports, which carry the node's jumbo frames, an AF_PACKET port's interface MTU, else 1500) and
``max_macs`` (table entries the port may learn; default the switch's ``max_macs``, 0: no limit)."""
for _opts in PORT_OPTIONS.values():
    _opts.update(PORT_COMMON)
SWITCH_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "validation": str,
    "malformed": str,
    "non_parallax": str,
    "fdb_capacity": int,
    "aging": (int, float),
    "queue_data": int,
    "queue_control": int,
    "mirror": str,
    "control": str,
    "realtime": int,
    "busy_poll": int,
    "busy_adaptive": int,
    "busy_nap": int,
    "slice": int,
    "workers": int,
    "max_macs": int,
}


CONFIG_MAX = 1 << 20
"""Bytes a config file may hold: one larger (or /dev/zero, a FIFO, a directory) is refused, not read."""
MTU_RANGE = (68, 65535 - ETH_OVERHEAD)
"""A port's ``mtu``: the least IPv4 allows, the most a frame of 65535 bytes holds (Ethernet header, one tag)."""


class ConfigError(ValueError):
    """A configuration mistake; the message names the source, line (when known) and field."""


class PortValueError(ConfigError):
    """A port option's value of the wrong type or sign (``ring=v3``, ``mtu=-5``): that port cannot open, so
    ``pxswitch run`` stops with exit status 1, as for a port that fails when it opens (a misspelt type or
    option, one missing, is any other configuration mistake: exit status 2)."""


@dataclass(frozen=True)
class PortSpec:
    name: str
    type: str
    options: tuple[tuple[str, Any], ...]

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)


@dataclass
class SwitchConfig:
    policy: SwitchPolicy = field(default_factory=SwitchPolicy)
    ports: list[PortSpec] = field(default_factory=list)
    mirror: str | None = None
    control: str = DEFAULT_CONTROL
    realtime: int = 0
    """SCHED_FIFO priority (1..99) for the loop, 0 for the normal scheduler: the kernel bridge forwards in
    softirq, ahead of every task; a userspace switch on a busy host needs the same standing to keep its latency."""
    busy_poll: int = 0
    """Microseconds the AF_PACKET loop keeps polling after a frame before it sleeps (0: sleep at once)."""
    busy_adaptive: int = 50
    """Adaptive busy polling: frames that come within this many microseconds of the end of the last work keep
    the loop polling without sleeping, until this long a silence; a frame after a longer silence (heartbeats,
    a quiet network) is read and the loop sleeps at once (0: never).  A polling loop is on no wait queue, so the
    sender's CPU spends nothing on waking it."""
    busy_nap: int = 0
    """Microseconds a polling look (busy_poll, busy_adaptive) that found nothing sleeps on a timer before it looks
    again, 0 to look again at once: still on no wait queue, and the loop does not use its CPU share up polling."""
    slice: int = 0
    """Microseconds of time slice the loop asks the normal scheduler (EEVDF, sched_setattr) for, 0 for the
    kernel's default: a short slice is an early deadline, so a woken switch runs ahead of longer-slice tasks
    (a lower p99 at half load in bench/switch.py, frames/s no better: see the README)."""
    workers: int = 1
    """Threads that forward the AF_PACKET ports' data frames (pxproto.switch.workers), 1 to 8."""


def check_port(raw: dict[str, Any], index: int, where: Any) -> PortSpec:
    """A port table (from TOML or the command line) as a PortSpec; ``where(key)`` says where ``key`` is."""
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in PORT_OPTIONS:
        raise ConfigError(f"{where('type')}: port type {kind!r}, expected one of {', '.join(PORT_OPTIONS)}")
    allowed = PORT_OPTIONS[kind]
    name = raw.get("name", f"{kind}{index}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where('name')}: a port name is a non-empty string")
    opts: dict[str, Any] = {}

    def bad_value(key: str, why: str) -> PortValueError:
        return PortValueError(f"port {name} ({kind}): cannot open: {where(key)}: {why}")

    for key, value in raw.items():
        if key in ("type", "name"):
            continue
        if key not in allowed:
            raise ConfigError(f"{where(key)}: unknown option {key!r} for a {kind} port ({', '.join(allowed)})")
        want = allowed[key][0]
        if want is list and isinstance(value, str):
            value = [value]
        if want is list and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise bad_value(key, f"{key} is a list of strings")
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is not list and not isinstance(value, want):
            raise bad_value(key, f"{key} must be {want.__name__}, not {type(value).__name__} {value!r}")
        if want is int and value < 0:
            raise bad_value(key, f"{key} must be 0 or more, not {value}")
        if want is float and not (math.isfinite(value) and value > 0):
            raise bad_value(key, f"{key} must be a positive number of seconds, not {value}")
        if key == "mtu" and not MTU_RANGE[0] <= value <= MTU_RANGE[1]:
            raise bad_value(key, f"mtu {value}: {MTU_RANGE[0]}..{MTU_RANGE[1]}")
        if key == "max_macs" and value > FDB_CAPACITY_MAX:
            raise bad_value(key, f"max_macs {value}: 0 (no limit)..{FDB_CAPACITY_MAX}")
        opts[key] = tuple(value) if isinstance(value, list) else value
    for key, (_, required) in allowed.items():
        if required and key not in opts:
            raise ConfigError(f"{where('type')}: a {kind} port needs {key!r}")
    return PortSpec(name, kind, tuple(sorted(opts.items())))


SCHED_KEYS: dict[str, tuple[Callable[[int], bool], str]] = {
    "realtime": (lambda v: 0 <= v <= 99, "0 (off) or a SCHED_FIFO priority 1..99"),
    "busy_poll": (lambda v: 0 <= v <= 1_000_000, "0..1000000 microseconds"),
    "busy_adaptive": (lambda v: 0 <= v <= 10_000, "0..10000 microseconds"),
    "busy_nap": (lambda v: 0 <= v <= 1000, "0..1000 microseconds"),
    "slice": (lambda v: v == 0 or 100 <= v <= 100_000, "0 (the kernel's) or 100..100000 microseconds"),
    "workers": (lambda v: 1 <= v <= 8, "1..8 threads"),
}
"""The [switch] keys that set how the loop is scheduled (the same as `pxswitch run` options): their ranges."""


def sched_value(key: str, value: int, where: str) -> int:
    """``value`` for the scheduling key ``key`` if in its range, else ConfigError "WHEREVALUE: range"."""
    ok, allowed = SCHED_KEYS[key]
    if not ok(value):
        raise ConfigError(f"{where}{value}: {allowed}")
    return value


def parse_port_arg(text: str, index: int) -> PortSpec:
    """``TYPE:key=value,...`` from the command line."""
    kind, _, rest = text.partition(":")
    raw: dict[str, Any] = {"type": kind.strip()}
    for item in filter(None, (i.strip() for i in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--port {text!r}: {item!r} is not key=value")
        key = key.strip()
        typed: Any = value
        if value.lower() in ("true", "false"):
            typed = value.lower() == "true"
        elif value.removeprefix("-").isdigit():
            if not value.isascii():  # '1²00': isdigit() says yes, int() says no
                raise ConfigError(f"--port {text!r} ({key}): {value!r} is not a number (digits are 0-9)")
            typed = int(value)
        if key == "remote" and kind.strip() == "vxlan":
            raw.setdefault("remote", []).append(value)
        else:
            raw[key] = typed
    return check_port(raw, index, lambda key: f"--port {text!r} ({key})")


def _line_locator(text: str, source: str) -> Any:
    """A function (section, index, key) -> 'source line N: section[index].key'."""
    lines = text.splitlines()

    def where(section: str, index: int | None, key: str) -> str:
        label = f"{section}[{index}].{key}" if index is not None else f"{section}.{key}"
        start, seen = None, -1
        header = re.compile(
            r"^\s*\[\[\s*" + re.escape(section) + r"\s*\]\]"
            if index is not None
            else r"^\s*\[\s*" + re.escape(section) + r"\s*\]"
        )
        for i, line in enumerate(lines):
            if header.match(line):
                seen += 1
                if index is None or seen == index:
                    start = i
                    break
        if start is None:
            return f"{source}: {label}"
        keyre = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i in range(start + 1, len(lines)):
            if re.match(r"^\s*\[", lines[i]):
                break
            if keyre.match(lines[i]):
                return f"{source} line {i + 1}: {label}"
        return f"{source} line {start + 1}: {label}"

    return where


def load_text(text: str, source: str = "<config>") -> SwitchConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    where = _line_locator(text, source)
    for key in doc:
        if key not in ("switch", "port"):
            raise ConfigError(f"{source}: unknown table {key!r} (expected [switch] and [[port]])")
    sw = doc.get("switch", {})
    if not isinstance(sw, dict):
        raise ConfigError(f"{source}: 'switch' must be a table")
    cfg = SwitchConfig()
    pol: dict[str, Any] = {}
    for key, value in sw.items():
        want = SWITCH_OPTIONS.get(key)
        if want is None:
            raise ConfigError(f"{where('switch', None, key)}: unknown option (one of {', '.join(SWITCH_OPTIONS)})")
        if not isinstance(value, want) or isinstance(value, bool):
            raise ConfigError(f"{where('switch', None, key)}: {value!r} has the wrong type")
        if key == "mirror":
            cfg.mirror = str(value)
        elif key == "control":
            cfg.control = str(value)
        elif key in SCHED_KEYS:
            assert isinstance(value, int)
            setattr(cfg, key, sched_value(key, value, f"{where('switch', None, key)}: "))
        else:
            pol[key] = value
    try:
        cfg.policy = SwitchPolicy(**pol)
    except ValueError as exc:
        field_name = str(exc).split(" ", 1)[0]
        raise ConfigError(f"{where('switch', None, field_name)}: {exc}") from None
    ports = doc.get("port", [])
    if not isinstance(ports, list):
        raise ConfigError(f"{source}: 'port' must be an array of tables ([[port]])")
    for i, raw in enumerate(ports):
        if not isinstance(raw, dict):
            raise ConfigError(f"{_key_line(text, source, 'port')}[{i}]: must be a table ([[port]]), not {raw!r}")
        cfg.ports.append(check_port(raw, i, lambda key, i=i: where("port", i, key)))
    _check_unique(cfg.ports, source)
    return cfg


def _key_line(text: str, source: str, key: str) -> str:
    """'source line N: key' for the first line that sets a top-level ``key`` (else 'source: key')."""
    keyre = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
    for i, line in enumerate(text.splitlines()):
        if keyre.match(line):
            return f"{source} line {i + 1}: {key}"
    return f"{source}: {key}"


def _check_unique(ports: list[PortSpec], source: str) -> None:
    seen: set[str] = set()
    for p in ports:
        if p.name in seen:
            raise ConfigError(f"{source}: two ports are named {p.name!r}")
        seen.add(p.name)


def load_file(path: str) -> SwitchConfig:
    """Read and check a config file: a regular file of at most CONFIG_MAX bytes (never waited on: a FIFO is
    refused, not opened for reading; :func:`pxproto.files.read_bounded`)."""
    try:
        data = read_bounded(path, CONFIG_MAX)
    except FileRefused as exc:
        reason = "Is a directory" if exc.kind == "dir" else exc.reason
        tail = ": not a pxswitch config" if exc.kind == "large" else ""
        raise ConfigError(f"{path}: {reason}{tail}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: byte {exc.start} is not UTF-8") from None
    return load_text(text, path)
