"""A DIME's memory: accounting in 2 MiB chunks, and the OS limit on its MICE.

The limit is enforced with ``RLIMIT_DATA`` on the MICE child process, set in
the child right after ``fork`` from its own baseline::

    RLIMIT_DATA = VmData at fork + limit_chunks * 2 MiB

so the MICE may grow by exactly its chunks whatever the interpreter already
holds.  Since Linux 4.7 RLIMIT_DATA counts every private writable mapping
(brk heap and anonymous mmap, which is where CPython's allocators get
memory), so a MICE that allocates past it gets ``MemoryError`` (or ENOMEM
from a C extension) and its process ends: the DIME lives on and reports
FAULT_REPORT MEMORY_EXCEEDED.  We chose it over RLIMIT_AS because RLIMIT_AS
also counts read-only file mappings (shared libraries) and the 8 MiB
reserved per thread stack and per malloc arena, which makes a chunk budget
mean different things on different hosts; and over a cgroup because a cgroup
is not writable rootless.  MEM_LIMIT and SET_PARAM MEM_LIMIT_CHUNKS change a
running MICE's limit with ``prlimit``.

Chunks *used* by a MICE = ceil((VmData - baseline) / 2 MiB), sampled with
each heartbeat; when the MICE exits they return to the DIME's pool and the
accounting says so.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

from pxproto.wire.codes import CHUNK_BYTES


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The kB figures of /proc/PID/status (VmData, VmRSS, ...), in bytes; {} if the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0]) * 1024
    except OSError:
        return {}
    return out


def chunks_of(nbytes: int) -> int:
    return max(0, -(-nbytes // CHUNK_BYTES))


def limit_self(chunks: int) -> int:
    """In the MICE child: cap the data segment at baseline + chunks; return the baseline (bytes)."""
    baseline = proc_status().get("VmData", 0)
    limit = baseline + chunks * CHUNK_BYTES
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return baseline


def relimit(pid: int, baseline: int, chunks: int) -> None:
    """Change a running MICE's limit (prlimit on its pid)."""
    limit = baseline + chunks * CHUNK_BYTES
    resource.prlimit(pid, resource.RLIMIT_DATA, (limit, limit))


@dataclass
class MemoryAccount:
    """The chunks of one DIME: its limit, what signaling reserved, and what its MICE uses."""

    limit: int
    """The DIME's limit in chunks (MEM_LIMIT)."""
    reserved: int = 0
    """Chunks reserved with MEM_ALLOC (and not freed)."""
    mice_used: int = 0
    """Chunks the running MICE uses over its baseline (last sample)."""
    peak: int = 0
    returned: int = 0
    """Chunks given back by MICE that ended."""
    history: list[tuple[float, int]] = field(default_factory=list)
    """(time, chunks used) samples, the last 600."""

    @property
    def used(self) -> int:
        return max(self.reserved, self.mice_used)

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)

    def sample(self, now: float, mice_used: int) -> None:
        self.mice_used = mice_used
        self.peak = max(self.peak, self.used)
        self.history.append((now, self.used))
        del self.history[:-600]

    def mice_exited(self, now: float) -> int:
        """The MICE ended: its chunks go back to the pool; return how many."""
        back = self.mice_used
        self.returned += back
        self.mice_used = 0
        self.history.append((now, self.used))
        return back
