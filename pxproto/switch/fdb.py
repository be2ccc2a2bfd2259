"""The forwarding table: where each MAC, and each (MAC, DIME), was last seen.

A key is one 64-bit integer: the 48-bit MAC in the low bits and the DIME id
above it; a plain MAC entry uses DIME id 0xffff (DIME_ALL, never a DIME's own
id).  Entries age out ``aging`` seconds after they were last refreshed; the
table never holds more than ``capacity`` entries (a new key is refused and
counted while it is full, so a flood of random source MACs cannot grow it).

This is the pure-Python twin; ``pxproto.switch._fdb.Fdb`` is the compiled one
with the same interface, which the AF_PACKET loop also reaches at C level.
"""

from __future__ import annotations

from pxproto.wire.codes import DIME_ALL

LEARN_REFRESHED = 0
LEARN_NEW = 1
LEARN_MOVED = 2
LEARN_FULL = -1
NO_PORT = -1
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
        self._full_sweep_at = float("-inf")

    def __len__(self) -> int:
        return len(self._t)

    def learn(self, key: int, port: int, now: float) -> int:
        e = self._t.get(key)
        if e is not None:
            fresh = now - e[1] <= self.aging
            e[1] = now
            if not fresh:
                e[0] = port
                return LEARN_NEW
            if e[0] != port:
                e[0] = port
                self.moves += 1
                return LEARN_MOVED
            return LEARN_REFRESHED
        if len(self._t) >= self.capacity:
            # Sweep at most once a second: under a flood of new MACs a sweep per frame would be the attack.
            if now < self._full_sweep_at or not self._sweep_full(now):
                self.refused += 1
                return LEARN_FULL
        self._t[key] = [port, now]
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
            del self._t[k]
        return len(old)

    def flush_port(self, port: int) -> int:
        gone = [k for k, e in self._t.items() if e[0] == port]
        for k in gone:
            del self._t[k]
        return len(gone)

    def entries(self, now: float) -> list[tuple[int, int, float]]:
        """(key, port, age in seconds) of every live entry."""
        return [(k, int(e[0]), now - e[1]) for k, e in self._t.items() if now - e[1] <= self.aging]
