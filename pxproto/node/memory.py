"""A DIME's memory: accounting in 2 MiB chunks, and the OS limit on its MICE.

The limit is enforced with ``RLIMIT_DATA`` on the MICE child process, set in
the child right after ``fork`` from its own baseline::

    RLIMIT_DATA = VmData at fork + limit_chunks * 2 MiB

so the MICE may grow by exactly its chunks whatever the interpreter already
holds.  Since Linux 4.7 RLIMIT_DATA counts every private writable mapping
(brk heap and anonymous mmap, which is where CPython's allocators get
memory), so a MICE that allocates past it gets ``MemoryError`` (or ENOMEM
from a C extension) and its process ends: the DIME lives on and reports
FAULT_REPORT MEMORY_EXCEEDED.  MEM_LIMIT and SET_PARAM MEM_LIMIT_CHUNKS
change a running MICE's limit with ``prlimit``.

Why RLIMIT_DATA, measured (``bench/kernel_memory.py``: a forked Python child
with a limit of baseline + N chunks maps a 16 MiB file read-only, starts 4
threads, then allocates 1 MiB blocks; Linux 6.18, Python 3.11):

=============================  ===============  =======  ==============  ===========
mechanism                      16 MiB file map  threads  8 chunks (16)   32 chunks
=============================  ===============  =======  ==============  ===========
RLIMIT_AS                      refused          1/4      7 MiB           31 MiB
RLIMIT_DATA                    ok               1/4      7 MiB           31 MiB
RLIMIT_DATA + 1 MiB stacks     ok               4/4      11 MiB          59 MiB
cgroup v1 memory.limit         ok               4/4      14 MiB, killed  62 MiB, killed
=============================  ===============  =======  ==============  ===========

- RLIMIT_AS counts every mapping: a C extension's shared library (the file
  map) spends the MICE's chunks, so the same budget means different things
  depending on what the stage imports.
- Both rlimits count a thread's whole stack reservation (8 MiB = 4 chunks by
  default) whether touched or not, so the MICE runtime sets Python's thread
  stack size to ``MICE_THREAD_STACK`` (1 MiB): then 4 threads cost 2 chunks.
- A memory cgroup counts only pages really touched (the closest to "chunks
  used"), but its refusal is the OOM killer's SIGKILL, not a MemoryError the
  runtime can report with a reason; it needs root and a writable hierarchy
  (here v1 only; the v2 hierarchy has no memory controller) and a cgroup per
  MICE.  So: RLIMIT_DATA, with the DIME reading VmData for the accounting.

Chunks *used* by a MICE = ceil((VmData - baseline) / 2 MiB), sampled with
each heartbeat; when the MICE exits they return to the DIME's pool and the
accounting says so.
"""

from __future__ import annotations

import os
import resource
import threading
from dataclasses import dataclass, field

from pxproto.wire.codes import CHUNK_BYTES

MICE_THREAD_STACK = 1 << 20
"""Stack size of threads a MICE starts: an 8 MiB default would cost 4 chunks of its limit per thread."""


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


def proc_cpu_ns(pid: int) -> int:
    """CPU time (user + system) of a process, from /proc/PID/stat; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0


def chunks_of(nbytes: int) -> int:
    return max(0, -(-nbytes // CHUNK_BYTES))


def limit_self(chunks: int) -> int:
    """In the MICE child: small thread stacks, the data segment capped at baseline + chunks; return the baseline."""
    threading.stack_size(MICE_THREAD_STACK)
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
