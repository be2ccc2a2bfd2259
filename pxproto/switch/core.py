"""The switch's forwarding logic, with no I/O: frames and ``now`` in; queued frames, counters, timers out.

A driver calls :meth:`Switch.receive` for each frame a port hands it, then
takes frames to send from :meth:`Switch.peek` / :meth:`Switch.consume` per
port (strict priority: signaling, discovery and heartbeat before data), and
calls :meth:`Switch.handle_timer` when :meth:`Switch.next_timer` is due.

Forwarding: learn the source MAC (and the source (MAC, DIME) of a Parallax
frame) on the ingress port; flood broadcast, multicast and unknown
destinations; send a DIME-scope frame where its (MAC, DIME) was learned, else
where its MAC was; a system-scope frame goes where its MAC (the server) was.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal

from pxproto.errors import ProtocolError
from pxproto.fastpath import select
from pxproto.switch.fdb import LEARN_LIMIT, LEARN_MOVED, NO_PORT, PyFdb, key_parts
from pxproto.switch.peek import VALIDATIONS, Validation, peek
from pxproto.wire.codes import DIME_ALL, FrameClass
from pxproto.wire.frame import mac_text

CLASS_NAMES = ("other", "signaling", "data", "discovery", "heartbeat")
"""Counter index of each class; 0 is a non-Parallax frame (or a malformed one passed on)."""
CONTROL_CLASSES = frozenset({int(FrameClass.SIGNALING), int(FrameClass.DISCOVERY), int(FrameClass.HEARTBEAT)})
MAC_ONLY = DIME_ALL << 48
PORT_COUNTERS = (
    "rx",
    "rx_bytes",
    "tx",
    "tx_bytes",
    "rx_malformed",
    "rx_non_parallax_dropped",
    "tx_queue_drop",
    "tx_queue_drop_control",
    "rx_oversize",
    "tx_oversize",
)
"""Per-port counters; the last two are refusals: frames longer than the port's MTU allows, in and out (the
third refusal, ``learn_refused``, is the table's count of keys a port's learning limit refused)."""
DEFAULT_MTU = 1500
ETH_OVERHEAD = 18
"""Ethernet header and one VLAN tag: a port with MTU m takes frames of up to m + 18 bytes (no FCS)."""
FDB_CAPACITY_MAX = 1 << 24
"""The largest ``fdb_capacity`` (and ``max_macs``, which cannot usefully exceed it): the compiled table takes
two slots of 24 bytes per entry, so this is 768 MiB at most."""


def new_fdb(capacity: int, aging: float) -> Any:
    """The compiled table when it is built (unless PXPROTO_PURE=1), else the Python twin."""
    compiled = select.compiled("pxproto.switch._fdb")
    return compiled.Fdb(capacity, aging) if compiled is not None else PyFdb(capacity, aging)


@dataclass
class SwitchPolicy:
    """What the switch does with each kind of frame, and how much it may hold."""

    validation: Validation = "header"
    malformed: Literal["drop", "pass"] = "drop"
    non_parallax: Literal["pass", "drop"] = "pass"
    fdb_capacity: int = 8192
    aging: float = 300.0
    queue_data: int = 1024
    """Data frames an output port may hold."""
    queue_control: int = 4096
    """Signaling, discovery and heartbeat frames an output port may hold (a separate lane)."""
    mirror: bool = False
    mirror_queue: int = 8192
    max_macs: int = 2048
    """Table entries one port may learn (port security), unless the port sets its own; 0: no limit."""

    def __post_init__(self) -> None:
        if self.validation not in VALIDATIONS:
            raise ValueError(f"validation {self.validation!r}: one of {', '.join(VALIDATIONS)}")
        if self.malformed not in ("drop", "pass"):
            raise ValueError(f"malformed {self.malformed!r}: drop or pass")
        if self.non_parallax not in ("drop", "pass"):
            raise ValueError(f"non_parallax {self.non_parallax!r}: drop or pass")
        for name in ("fdb_capacity", "queue_data", "queue_control", "mirror_queue"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be at least 1")
        if not (math.isfinite(self.aging) and self.aging > 0):  # (nan > 0 is false, but so is nan <= 0)
            raise ValueError(f"aging {self.aging}: a positive number of seconds")
        if int(self.fdb_capacity) > FDB_CAPACITY_MAX:
            raise ValueError(f"fdb_capacity {self.fdb_capacity}: 1..{FDB_CAPACITY_MAX}")
        if not 0 <= int(self.max_macs) <= FDB_CAPACITY_MAX:
            raise ValueError(f"max_macs {self.max_macs}: 0 (no limit)..{FDB_CAPACITY_MAX}")


@dataclass
class OutputQueue:
    """Two bounded lanes; control frames never wait behind, nor get dropped for, data."""

    control_limit: int
    data_limit: int
    control: deque[tuple[int, bytes]] = field(default_factory=deque)
    data: deque[tuple[int, bytes]] = field(default_factory=deque)

    def __len__(self) -> int:
        return len(self.control) + len(self.data)


@dataclass
class PortState:
    name: str
    queue: OutputQueue
    up: bool = True
    mtu: int = DEFAULT_MTU
    max_macs: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PORT_COUNTERS, 0))
    rx_class: list[int] = field(default_factory=lambda: [0] * len(CLASS_NAMES))
    tx_class: list[int] = field(default_factory=lambda: [0] * len(CLASS_NAMES))


class Switch:
    """A Parallax-aware learning switch, sans I/O."""

    def __init__(self, policy: SwitchPolicy | None = None, fdb: Any = None) -> None:
        self.policy = policy or SwitchPolicy()
        self.fdb = fdb if fdb is not None else new_fdb(self.policy.fdb_capacity, self.policy.aging)
        self.ports: dict[int, PortState] = {}
        self._next_id = 0
        self.malformed: dict[str, int] = {}
        """Malformed frames by the field the error names (``length``, ``flags``, ...)."""
        switch_keys = ("flooded", "unknown_unicast", "filtered_same_port", "learned", "moved", "mirror_dropped")
        self.counters: dict[str, int] = dict.fromkeys((*switch_keys, "busy_spins", "poll_waits"), 0)
        """The switch's counters; the compiled loop's busy polling adds ``busy_spins`` (looks that found nothing
        while polling) and ``poll_waits`` (polls that could sleep)."""
        self.mirror: deque[tuple[float, int, bytes]] = deque()
        """(now, ingress port, frame) of every frame received, when the policy mirrors."""
        self._sweep_at: float | None = None

    # ------------------------------------------------------------- ports

    def add_port(self, name: str, mtu: int = DEFAULT_MTU, max_macs: int | None = None) -> int:
        """A new port (the lowest free id); it takes and sends frames of up to ``mtu`` + 18 bytes and learns
        at most ``max_macs`` table entries (default: the policy's; 0: no limit)."""
        if any(p.name == name for p in self.ports.values()):
            raise ValueError(f"port {name!r} exists")
        if not 68 <= mtu <= 65535 - ETH_OVERHEAD:
            raise ValueError(f"port {name}: mtu {mtu}: 68..{65535 - ETH_OVERHEAD}")
        limit = self.policy.max_macs if max_macs is None else max_macs
        if limit < 0:
            raise ValueError(f"port {name}: max_macs {limit}: 0 (no limit) or more")
        pid = 0
        while pid in self.ports:
            pid += 1
        self.fdb.reset_port(pid)
        if limit:
            self.fdb.set_limit(pid, limit)
        self.ports[pid] = PortState(
            name, OutputQueue(self.policy.queue_control, self.policy.queue_data), mtu=mtu, max_macs=limit
        )
        return pid

    def port_id(self, name: str) -> int:
        for pid, p in self.ports.items():
            if p.name == name:
                return pid
        raise KeyError(name)

    def set_up(self, port: int, up: bool) -> None:
        """A port that goes down loses its queue and its table entries."""
        st = self.ports[port]
        st.up = up
        if not up:
            st.queue.control.clear()
            st.queue.data.clear()
            self.fdb.flush_port(port)

    def remove_port(self, port: int) -> None:
        self.set_up(port, False)
        del self.ports[port]

    # ------------------------------------------------------------- forwarding

    def receive(self, port: int, frame: bytes, now: float) -> None:
        """Take one frame from ``port`` and queue it on its output port(s)."""
        st = self.ports[port]
        c = st.counters
        c["rx"] += 1
        c["rx_bytes"] += len(frame)
        if len(frame) > st.mtu + ETH_OVERHEAD:
            c["rx_oversize"] += 1
            return
        pol = self.policy
        if self._sweep_at is None:
            self._sweep_at = now + self._sweep_period()
        try:
            p = peek(frame, pol.validation)
            ci = int(p.cls) if p.cls is not None else 0
        except ProtocolError as exc:
            c["rx_malformed"] += 1
            self.malformed[exc.field] = self.malformed.get(exc.field, 0) + 1
            if pol.malformed == "drop" or len(frame) < 14:
                return
            p = None
            ci = 0
        st.rx_class[ci] += 1
        if ci == 0 and p is not None and pol.non_parallax == "drop":
            c["rx_non_parallax_dropped"] += 1
            return
        if pol.mirror:
            if len(self.mirror) < pol.mirror_queue:
                self.mirror.append((now, port, frame))
            else:
                self.counters["mirror_dropped"] += 1
        src = int.from_bytes(frame[6:12], "big")
        if not frame[6] & 1:
            self._learn(src | MAC_ONLY, port, now)
            if p is not None and p.cls is not None and p.src_dime != DIME_ALL:
                self._learn(src | (p.src_dime << 48), port, now)
        out = NO_PORT
        if not frame[0] & 1:
            dst = int.from_bytes(frame[0:6], "big")
            if p is not None and p.dime_scope:
                out = self.fdb.lookup(dst | (p.dst_dime << 48), now)
            if out == NO_PORT:
                out = self.fdb.lookup(dst | MAC_ONLY, now)
            if out == NO_PORT:
                self.counters["unknown_unicast"] += 1
        if out == NO_PORT:
            self.counters["flooded"] += 1
            for pid, o in self.ports.items():
                if pid != port and o.up:
                    self._enqueue(o, frame, ci)
        elif out == port:
            self.counters["filtered_same_port"] += 1
        else:
            dest = self.ports.get(out)
            if dest is not None and dest.up:
                self._enqueue(dest, frame, ci)

    def _learn(self, key: int, port: int, now: float) -> None:
        r = self.fdb.learn(key, port, now)
        if r == LEARN_LIMIT:
            return  # counted by the table, per port (the fast loop learns into it too)
        if r == LEARN_MOVED:
            self.counters["moved"] += 1
        elif r > 0:
            self.counters["learned"] += 1

    def forward(self, port: int, routed: list[tuple[int, bytes, int]], now: float) -> None:
        """Queue frames from ``port`` that a compiled loop decided (learned, counted and mirrored there): each
        (output port, or -1 for a flood, frame, class index)."""
        if self._sweep_at is None:
            self._sweep_at = now + self._sweep_period()
        for out, frame, ci in routed:
            if out >= 0:
                o = self.ports.get(out)
                if o is not None and o.up:
                    self._enqueue(o, frame, ci)
                continue
            for pid, o in self.ports.items():
                if pid != port and o.up:
                    self._enqueue(o, frame, ci)

    def enqueue(self, port: int, frame: bytes, ci: int) -> None:
        """Queue ``frame`` (class index ``ci``) on ``port`` directly: a fast path hands back what its wire refused."""
        o = self.ports.get(port)
        if o is not None and o.up:
            self._enqueue(o, frame, ci)

    def _enqueue(self, o: PortState, frame: bytes, ci: int) -> None:
        if len(frame) > o.mtu + ETH_OVERHEAD:
            o.counters["tx_oversize"] += 1
            return
        q = o.queue
        if ci in CONTROL_CLASSES:
            if len(q.control) < q.control_limit:
                q.control.append((ci, frame))
                return
            o.counters["tx_queue_drop_control"] += 1
        elif len(q.data) < q.data_limit:
            q.data.append((ci, frame))
            return
        o.counters["tx_queue_drop"] += 1

    # ------------------------------------------------------------- output

    def pending(self, port: int) -> int:
        return len(self.ports[port].queue)

    def peek(self, port: int, n: int) -> list[bytes]:
        """Up to ``n`` frames to send on ``port``, control frames first; they stay queued until consumed."""
        q = self.ports[port].queue
        out = [f for _, f in islice(q.control, n)]
        if len(out) < n:
            out.extend(f for _, f in islice(q.data, n - len(out)))
        return out

    def consume(self, port: int, k: int) -> None:
        """The first ``k`` frames :meth:`peek` gave were sent."""
        st = self.ports[port]
        q = st.queue
        for _ in range(k):
            lane = q.control if q.control else q.data
            ci, frame = lane.popleft()
            st.counters["tx"] += 1
            st.counters["tx_bytes"] += len(frame)
            st.tx_class[ci] += 1

    def take_mirror(self) -> list[tuple[float, int, bytes]]:
        out = list(self.mirror)
        self.mirror.clear()
        return out

    # ------------------------------------------------------------- timers

    def _sweep_period(self) -> float:
        return min(self.policy.aging / 2, 10.0)

    def next_timer(self) -> float | None:
        return self._sweep_at

    def handle_timer(self, now: float) -> None:
        if self._sweep_at is not None and now >= self._sweep_at:
            self.fdb.expire(now)
            self._sweep_at = now + self._sweep_period()

    # ------------------------------------------------------------- views

    def stats(self) -> dict[str, Any]:
        """Every counter, JSON-ready."""
        ports = {}
        for pid, p in self.ports.items():
            ports[p.name] = {
                "id": pid,
                "up": p.up,
                **p.counters,
                "queued": len(p.queue),
                "mtu": p.mtu,
                "max_macs": p.max_macs,
                "fdb_entries": self.fdb.port_entries(pid),
                "learn_refused": self.fdb.limit_refused(pid),
                "rx_class": dict(zip(CLASS_NAMES, p.rx_class, strict=True)),
                "tx_class": dict(zip(CLASS_NAMES, p.tx_class, strict=True)),
            }
        return {
            "ports": ports,
            "switch": {**self.counters, "fdb_entries": len(self.fdb), "fdb_refused": self.fdb.refused},
            "malformed": dict(sorted(self.malformed.items())),
        }

    def fdb_table(self, now: float) -> list[dict[str, Any]]:
        rows = []
        for key, port, age in sorted(self.fdb.entries(now)):
            mac, dime = key_parts(key)
            rows.append(
                {
                    "mac": mac_text(mac),
                    "dime": None if dime == DIME_ALL else dime,
                    "port": self.ports[port].name if port in self.ports else str(port),
                    "age": round(age, 3),
                }
            )
        return rows
