"""The forwarding table: where each MAC, and each (MAC, DIME), was last seen.

A key is one 64-bit integer: the 48-bit MAC in the low bits and the DIME id
above it; a plain MAC entry uses DIME id 0xffff (DIME_ALL, never a DIME's own
id).  Entries age out ``aging`` seconds after they were last refreshed; the
table never holds more than ``capacity`` entries (a new key is refused and
counted while it is full, so a flood of random source MACs cannot grow it),
and a port with a learning limit (:meth:`PyFdb.set_limit`) never holds more
than its limit, so one port's flood cannot fill the table for the others.

This is the pure-Python twin; ``pxproto.switch._fdb.Fdb`` is the compiled one
with the same interface, which the AF_PACKET loop also reaches at C level.
"""

from __future__ import annotations

from pxproto.wire.codes import DIME_ALL

LEARN_REFRESHED = 0
LEARN_NEW = 1
LEARN_MOVED = 2
LEARN_FULL = -1
LEARN_LIMIT = -2
"""The port has learned as many entries as its limit allows (port security)."""
NO_PORT = -1
MAX_PORT_ID = 256
"""Port ids the per-port learning limit covers (as in the compiled table)."""
FULL_SWEEP_PERIOD = 1.0


def fdb_key(mac: bytes, dime: int = DIME_ALL) -> int:
    """The table key of ``mac`` (6 bytes) and a DIME id."""
    return int.from_bytes(mac, "big") | (dime << 48)


def key_parts(key: int) -> tuple[bytes, int]:
    """(MAC bytes, DIME id) of a key."""
    return (key & 0xFFFFFFFFFFFF).to_bytes(6, "big"), key >> 48


class PyFdb:
    """MAC and (MAC, DIME) learning table with aging and a size cap."""

    def __init__(self, capacity: int = 8192, aging: float = 300.0) -> None:
        if capacity < 1:
            raise ValueError(f"fdb capacity {capacity}: must be at least 1")
        if aging <= 0:
            raise ValueError(f"fdb aging {aging}: must be positive")
        self.capacity = capacity
        self.aging = aging
        self._t: dict[int, list[float]] = {}  # key -> [port, last_seen]
        self.refused = 0
        self.moves = 0
        self.generation = 0
        """Bumped by every change of where a key goes (learned, moved, removed): a copy of the table knows when
        to look again."""
        self._count: dict[int, int] = {}
        self._limit: dict[int, int] = {}
        self._port_refused: dict[int, int] = {}
        self._full_sweep_at = float("-inf")

    def __len__(self) -> int:
        return len(self._t)

    def set_limit(self, port: int, limit: int) -> None:
        """At most ``limit`` entries learned on ``port`` (0: no limit); a new key past it is refused and counted."""
        if not 0 <= port < MAX_PORT_ID:
            raise ValueError(f"port id {port}: the learning limit covers ids below {MAX_PORT_ID}")
        if limit < 0:
            raise ValueError(f"learning limit {limit}: 0 (none) or more")
        self._limit[port] = limit

    def port_entries(self, port: int) -> int:
        return self._count.get(port, 0)

    def limit_refused(self, port: int) -> int:
        return self._port_refused.get(port, 0)

    def reset_port(self, port: int) -> None:
        self._limit.pop(port, None)
        self._port_refused.pop(port, None)

    def _at_limit(self, port: int) -> bool:
        limit = self._limit.get(port, 0)
        if limit and self._count.get(port, 0) >= limit:
            self._port_refused[port] = self._port_refused.get(port, 0) + 1
            return True
        return False

    def _recount(self, old: int, new: int) -> None:
        if old >= 0:
            self._count[old] -= 1
        if new >= 0:
            self._count[new] = self._count.get(new, 0) + 1

    def learn(self, key: int, port: int, now: float) -> int:
        e = self._t.get(key)
        if e is not None:
            fresh = now - e[1] <= self.aging
            if e[0] != port and self._at_limit(port):
                return LEARN_LIMIT  # the entry stays where it was
            e[1] = now
            if e[0] != port:
                self._recount(int(e[0]), port)
            if not fresh:
                self.generation += e[0] != port
                e[0] = port
                return LEARN_NEW
            if e[0] != port:
                e[0] = port
                self.moves += 1
                self.generation += 1
                return LEARN_MOVED
            return LEARN_REFRESHED
        if self._at_limit(port):
            return LEARN_LIMIT
        if len(self._t) >= self.capacity:
            # Sweep at most once a second: under a flood of new MACs a sweep per frame would be the attack.
            if now < self._full_sweep_at or not self._sweep_full(now):
                self.refused += 1
                return LEARN_FULL
        self._t[key] = [port, now]
        self._recount(-1, port)
        self.generation += 1
        return LEARN_NEW

    def _sweep_full(self, now: float) -> int:
        self._full_sweep_at = now + FULL_SWEEP_PERIOD
        return self.expire(now)

    def lookup(self, key: int, now: float) -> int:
        e = self._t.get(key)
        if e is None or now - e[1] > self.aging:
            return NO_PORT
        return int(e[0])

    def expire(self, now: float) -> int:
        """Remove aged entries; return how many."""
        old = [k for k, e in self._t.items() if now - e[1] > self.aging]
        for k in old:
            self._recount(int(self._t.pop(k)[0]), -1)
        self.generation += len(old)
        return len(old)

    def flush_port(self, port: int) -> int:
        gone = [k for k, e in self._t.items() if e[0] == port]
        for k in gone:
            self._recount(int(self._t.pop(k)[0]), -1)
        self.generation += len(gone)
        return len(gone)

    def entries(self, now: float) -> list[tuple[int, int, float]]:
        """(key, port, age in seconds) of every live entry."""
        return [(k, int(e[0]), now - e[1]) for k, e in self._t.items() if now - e[1] <= self.aging]
