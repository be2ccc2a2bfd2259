"""A DIME's memory: accounting in 2 MiB chunks, and the OS limit on its MICE.

The limit must count everything a stage can map, shared memory included: a
stage holding 64 anonymous ``mmap.mmap(-1, 2 MiB)`` blocks (``MAP_SHARED``, the
default) kept 128 MiB under the RLIMIT_DATA of 8 chunks this module used to
set, because RLIMIT_DATA counts private writable mappings only.  So, in order:

1. **a memory cgroup per MICE** (:mod:`pxproto.node.memcg`) where the DIME's
   own memory cgroup is writable (root, or a delegated subtree; v1 or v2)::

       memory limit = charged at join + limit_chunks * 2 MiB

   It counts pages really touched (heap, anonymous and shared mappings,
   copied-on-write pages), so "chunks used" is real memory; past it the OOM
   killer ends the MICE and the DIME reports FAULT_REPORT MEMORY_EXCEEDED
   (it reads the cgroup's ``oom_kill`` count when it reaps the child);
2. **RLIMIT_AS** where no cgroup can be had::

       RLIMIT_AS = VmSize at fork + limit_chunks * 2 MiB

   It counts every mapping, shared ones included, so a ``MAP_SHARED`` block
   past the limit is refused (``mmap`` fails with ENOMEM, allocations with
   MemoryError; the runtime reports MEMORY_EXCEEDED).  Its price: it counts
   address space, not pages, so a C extension's shared library or a thread
   stack spends chunks whether touched or not (``bench/kernel_memory.py``).

``pxkernel --mice-memory cgroup|rlimit|auto`` (default auto) picks one; cgroup
refuses to start when no memory cgroup is writable.

Measured (``bench/kernel_memory.py [--shared]``: a forked Python child with a limit of 8 chunks
over its baseline maps a 16 MiB file read-only, starts 4 threads, then allocates 1 MiB heap
blocks, or with ``--shared`` maps and touches 2 MiB MAP_SHARED blocks; Linux 6.18, Python 3.11,
load 16 on 2 cores):

=========================================  ===============  =======  ===========  ================
mechanism                                  16 MiB file map  threads  heap (16)    MAP_SHARED (16)
=========================================  ===============  =======  ===========  ================
RLIMIT_DATA (before issue 15)              ok               1/4      7 MiB        256 MiB, no limit
RLIMIT_AS, 1 MiB thread stacks (fallback)  refused          4/4      11 MiB       8 MiB, ENOMEM
cgroup v1 (charged pages)                  ok               4/4      14 MiB       12 MiB, killed
=========================================  ===============  =======  ===========  ================

Both rlimits count a thread's whole stack reservation (8 MiB = 4 chunks by
default), so the MICE runtime sets Python's thread stack size to
``MICE_THREAD_STACK`` (1 MiB): then 4 threads cost 2 chunks.

Chunks *used* by a MICE = ceil((usage - baseline) / 2 MiB), usage being the
cgroup's charge or VmSize, sampled with each heartbeat.  Until the child's
READY record brings its baseline the MICE has run no stage code and uses 0
(not the whole process, as the first beats used to say).  When the MICE
exits its chunks return to the DIME's pool and the accounting says so.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from dataclasses import dataclass, field

from pxproto.node.memcg import MiceCgroup
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


def limit_self(chunks: int, cg: MiceCgroup | None = None) -> int:
    """In the MICE child: small thread stacks, then the limit (``cg`` if it can be joined, else RLIMIT_AS);
    return the baseline the limit is counted from (bytes charged to ``cg``, or VmSize)."""
    threading.stack_size(MICE_THREAD_STACK)
    if cg is not None:
        try:
            cg.join()
            baseline = cg.usage()
            cg.set_limit(baseline + chunks * CHUNK_BYTES)
            return max(1, baseline)  # never 0: the DIME reads 0 as "no READY yet"
        except OSError as exc:
            print(f"MICE {os.getpid()}: memory cgroup {cg.path}: {exc}; RLIMIT_AS instead", file=sys.stderr, flush=True)
            cg.remove()  # gone before READY: the DIME reads that as "no cgroup" (left if we did join)
    baseline = proc_status().get("VmSize", 0)
    limit = baseline + chunks * CHUNK_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return baseline


def relimit(pid: int, baseline: int, chunks: int, cg: MiceCgroup | None = None) -> None:
    """Change a running MICE's limit (its cgroup's, or prlimit RLIMIT_AS on its pid)."""
    limit = baseline + chunks * CHUNK_BYTES
    if cg is not None:
        cg.set_limit(limit)
    else:
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))


def mice_chunks(pid: int, baseline: int, cg: MiceCgroup | None) -> int:
    """Chunks a MICE uses past its baseline: its cgroup's charge, or its VmSize.

    The one rule for "before READY" (baseline 0, on every path): the MICE has run no stage code, so it
    uses 0 chunks, and heartbeats say so from the first beat (never the whole process, never "unknown")."""
    if baseline == 0:
        return 0
    if cg is not None:
        return chunks_of(cg.usage() - baseline)
    return chunks_of(proc_status(pid).get("VmSize", baseline) - baseline)


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
