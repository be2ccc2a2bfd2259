"""A memory cgroup per MICE: the limit that counts everything a stage can map, shared memory included.

A DIME that can create a child of its own memory cgroup (root, or a delegated
subtree) gives each MICE one, ``<its cgroup>/pxmice-<DIME pid>-<n>``:

- the DIME creates the directory before ``fork``; the child freezes the
  interpreter's objects (``gc.collect(); gc.freeze()``, so later collections do
  not copy the pages it inherited), joins, reads what the cgroup holds then
  (its *baseline*, a few hundred KiB of page tables and stack) and sets the
  limit to ``baseline + chunks x 2 MiB``; swap is capped at the same figure
  (v1 ``memory.memsw.limit_in_bytes``) or at 0 (v2 ``memory.swap.max``), so
  pages cannot leave the count by going to swap;
- the cgroup charges every page the MICE touches: its heap, anonymous and
  shared (``MAP_SHARED``, shmem) mappings, the inherited pages it copies on
  write, socket buffers; not pages it only reads;
- past the limit the kernel's OOM killer SIGKILLs the MICE; the DIME reads the
  cgroup's ``oom_kill`` count when it reaps it and reports FAULT_REPORT
  MEMORY_EXCEEDED, then removes the directory.

v1 (``memory.limit_in_bytes``, ``memory.usage_in_bytes``, ``memory.oom_control``)
and v2 (``memory.max``, ``memory.current``, ``memory.events``) both work; v2
needs ``memory`` in the DIME cgroup's ``cgroup.subtree_control`` (it is tried).
Where neither is writable, :mod:`pxproto.node.memory` falls back to RLIMIT_AS.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass
from pathlib import Path

PREFIX = "pxmice-"


def _mounts() -> list[tuple[str, str, str, str]]:
    """(mount point, root within the hierarchy, fs type, super options) of each cgroup mount."""
    out = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) >= 5 and len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
                    out.append((fields[4], fields[3], rfields[0], rfields[2]))
    except OSError:
        return []
    return out


def _under(mount: str, root: str, path: str) -> Path:
    rel = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
    return Path(mount) if rel in ("", ".") else Path(mount) / rel


def own_memory_cgroup() -> tuple[Path, int] | None:
    """This process's memory cgroup directory and its version (1 or 2), if we may create children there."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    mounts = _mounts()
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            for mnt, root, fstype, opts in mounts:
                if fstype == "cgroup" and "memory" in opts.split(","):
                    d = _under(mnt, root, path)
                    if (d / "memory.limit_in_bytes").exists() and os.access(d, os.W_OK):
                        return d, 1
    for line in lines:
        hier, ctrls, path = line.split(":", 2)
        if hier == "0" and ctrls == "":
            for mnt, root, fstype, _ in mounts:
                if fstype != "cgroup2":
                    continue
                d2 = _under(mnt, root, path)
                if os.access(d2, os.W_OK) and _v2_memory_delegated(d2):
                    return d2, 2
    return None


def _v2_memory_delegated(d: Path) -> bool:
    """Whether children of ``d`` get the memory controller (enabling it in ``d`` if we may)."""
    try:
        if "memory" not in (d / "cgroup.controllers").read_text().split():
            return False
        if "memory" not in (d / "cgroup.subtree_control").read_text().split():
            (d / "cgroup.subtree_control").write_text("+memory")  # EBUSY when d holds processes (not the root)
        return True
    except OSError:
        return False


@dataclass
class MiceCgroup:
    """One MICE's memory cgroup (created by the DIME, joined by the MICE child)."""

    path: Path
    version: int

    @property
    def _files(self) -> tuple[str, str, str]:
        """(limit, usage, events) file names of this version."""
        if self.version == 1:
            return "memory.limit_in_bytes", "memory.usage_in_bytes", "memory.oom_control"
        return "memory.max", "memory.current", "memory.events"

    def join(self) -> None:
        """In the MICE child: stop the collector copying inherited pages, then move this process in."""
        gc.collect()
        gc.freeze()
        (self.path / "cgroup.procs").write_text("0")

    def usage(self) -> int:
        """Bytes the cgroup is charged now; 0 when it is gone."""
        try:
            return int((self.path / self._files[1]).read_text())
        except (OSError, ValueError):
            return 0

    def set_limit(self, nbytes: int) -> None:
        """Cap memory (and memory + swap) at ``nbytes``; OSError if the kernel refuses."""
        limit = self.path / self._files[0]
        if self.version == 1:
            memsw = self.path / "memory.memsw.limit_in_bytes"
            if not memsw.exists():
                limit.write_text(str(nbytes))
                return
            # memsw must stay >= the memory limit: raise memsw first when growing, lower it last when shrinking.
            old = int(limit.read_text())
            first, second = (memsw, limit) if nbytes >= old else (limit, memsw)
            first.write_text(str(nbytes))
            second.write_text(str(nbytes))
            return
        limit.write_text(str(nbytes))
        with contextlib.suppress(OSError):
            (self.path / "memory.swap.max").write_text("0")

    def oom_kills(self) -> int:
        """How many of its processes the OOM killer ended at the limit."""
        try:
            for line in (self.path / self._files[2]).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self) -> None:
        """Remove the directory (its MICE has been reaped); a leftover is swept by the next :func:`create`."""
        with contextlib.suppress(OSError):
            self.path.rmdir()


_serial = 0


def create(base: tuple[Path, int] | None) -> MiceCgroup | None:
    """A fresh cgroup for the next MICE under ``base`` (see :func:`own_memory_cgroup`); None if it cannot be made."""
    global _serial
    if base is None:
        return None
    parent, version = base
    _sweep(parent)
    _serial += 1
    cg = MiceCgroup(parent / f"{PREFIX}{os.getpid()}-{_serial}", version)
    try:
        cg.path.mkdir()
    except OSError:
        return None
    return cg


def _sweep(parent: Path) -> None:
    """Remove the empty cgroups of DIMEs that died without removing theirs."""
    with contextlib.suppress(OSError):
        for d in parent.iterdir():
            if d.name.startswith(PREFIX):
                owner = d.name[len(PREFIX) :].partition("-")[0]
                if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
                    with contextlib.suppress(OSError):
                        d.rmdir()
