"""The demo workflow's sink records, read as they are committed: on every server, new bytes only.

A sink commits ``lineage u64 | monotonic time f64 | result`` records, length-prefixed, to the local store of
the server it runs on (``ctx.commit``: once per lineage on that server).  A replacement sink on another
server may commit a lineage its dead predecessor had committed and not yet completed upstream: the reader
keys the records by lineage (an idempotent record: the same lineage, the same result) and keeps the
earliest; ``absorbed`` counts the copies.  Two *different* results for one lineage stay visible, as a
duplicate line.  Each read parses only what was appended since the last one, so a progress poll costs the
new records, not the whole table.
"""

from __future__ import annotations

import struct
from pathlib import Path

LENGTH = struct.Struct("!I")
HEAD = struct.Struct("!Qd")
"""lineage, monotonic seconds: the head of a sink record (see workflows/wordcount/stages.py)."""
DUPLICATE = 1 << 63
"""Marks a second, different result for a lineage (no lineage has this bit: sources use 48 bits)."""


class SinkReader:
    """The records of object ``name`` in each server's local store (``WORKDIR/server{i}/store``)."""

    def __init__(self, workdir: Path, servers: int, name: str) -> None:
        self.paths = [workdir / f"server{i}" / "store" / "objects" / name for i in range(servers)]
        self.offsets = [0] * servers
        self.seen: list[set[int]] = [set() for _ in range(servers)]
        self.by_lineage: dict[int, tuple[int, float, bytes]] = {}
        self.absorbed = 0
        """Records committed again on another server for a lineage already held (kept once)."""

    def update(self) -> int:
        """Read what was appended since the last call; returns the number of lineages held."""
        for i, path in enumerate(self.paths):
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets[i])
                    raw = f.read()
            except FileNotFoundError:
                continue
            pos = 0
            while pos + LENGTH.size <= len(raw):
                (n,) = LENGTH.unpack_from(raw, pos)
                end = pos + LENGTH.size + n
                if end > len(raw):
                    break  # still being written: the rest next time
                if n >= HEAD.size:  # shorter: a torn write (the sink died mid-record), never committed
                    self._add(i, raw[pos + LENGTH.size : end])
                pos = end
            self.offsets[i] += pos
        return len(self.by_lineage)

    def _add(self, server: int, rec: bytes) -> None:
        lineage, t = HEAD.unpack_from(rec)
        if lineage in self.seen[server]:
            return  # the same server's sink keeps a lineage once (ctx.commit)
        self.seen[server].add(lineage)
        new = (lineage, t, rec[HEAD.size :])
        old = self.by_lineage.get(lineage)
        if old is not None:
            self.absorbed += 1
            if old[2] != new[2]:
                self.by_lineage[lineage ^ DUPLICATE] = new
            if t >= old[1]:
                return
        self.by_lineage[lineage] = new

    def records(self) -> list[tuple[int, float, bytes]]:
        """(lineage, time, result) of every lineage held, in commit-time order (after an :meth:`update`)."""
        self.update()
        return sorted(self.by_lineage.values(), key=lambda r: r[1])
