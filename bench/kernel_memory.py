"""How a DIME could cap its MICE's memory: RLIMIT_AS vs RLIMIT_DATA vs a memory cgroup, measured.

    python bench/kernel_memory.py [--chunks 8] [--shared]

For each mechanism a forked child (a Python process like a MICE) gets a limit
of its baseline + CHUNKS x 2 MiB, then
- maps 16 MiB of a file read-only (what importing a C extension does),
- starts 4 threads (each reserves an 8 MiB stack mapping by default),
- allocates 1 MiB blocks until refused (``--shared``: maps and touches 2 MiB ``mmap.mmap(-1, ...)``
  blocks, MAP_SHARED as Python makes them, the case of issue 15 that RLIMIT_DATA does not count),
and the table reports: what the baseline counts, whether the threads started,
how many MiB it got past its baseline against the CHUNKS x 2 MiB it was promised,
and how the refusal came (MemoryError the MICE runtime can report, or a kill).
The cgroup rows run only where a memory cgroup is writable (root; v1 or v2).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from _common import print_table  # bench/ is sys.path[0] when a script runs

CHUNK = 2 << 20
MICE_THREAD_STACK = 1 << 20
V1 = Path("/sys/fs/cgroup/memory")
V2_CANDIDATES = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


def status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def allocate(shared: bool) -> object:
    """One block: 1 MiB of heap, or (``shared``) 2 MiB of shared anonymous memory, every page touched."""
    if not shared:
        return bytearray(1 << 20)
    import mmap

    m = mmap.mmap(-1, 2 << 20)
    m.write(b"x" * (2 << 20))
    return m


def child(report: int, apply: str, chunks: int, cg: str, shared: bool = False) -> None:
    """In the forked child: apply the limit, start threads, allocate; write 'threads mib how' to ``report``."""
    if apply in ("DATA+", "AS+"):  # small thread stacks in the MICE, as pxproto.node.memory sets them
        threading.stack_size(MICE_THREAD_STACK)
        apply = apply[:-1]
    if apply == "AS":
        base = status("VmSize")
        resource.setrlimit(resource.RLIMIT_AS, (base + chunks * CHUNK,) * 2)
    elif apply == "DATA":
        base = status("VmData")
        resource.setrlimit(resource.RLIMIT_DATA, (base + chunks * CHUNK,) * 2)
    else:  # a cgroup: move in, its limit was set from our RSS by the parent
        Path(cg, "cgroup.procs").write_text(str(os.getpid()))
    lib = mapped_file(report)
    started = 0
    stop = threading.Event()
    for _ in range(4):
        try:
            threading.Thread(target=stop.wait, daemon=True).start()
            started += 1
        except RuntimeError:
            break
    os.write(report, f"{lib} {started} ".encode())
    blocks = []
    how = "no limit hit (256 MiB)"
    step = 2 if shared else 1
    try:
        for _ in range(256 // step):
            blocks.append(allocate(shared))
            os.write(report, b"+" * step)  # progress (MiB) survives a kill
    except MemoryError:
        how = "MemoryError"
    except OSError as exc:  # mmap refused
        how = f"OSError {exc.strerror}"
    os.write(report, f" {how}\n".encode())
    stop.set()
    os._exit(0)


def mapped_file(report: int) -> str:
    """Map 16 MiB of a file read-only, as loading a C extension's shared library does: 'ok' or 'refused'."""
    import mmap
    import tempfile

    with tempfile.TemporaryFile() as f:
        f.truncate(16 << 20)
        try:
            m = mmap.mmap(f.fileno(), 16 << 20, prot=mmap.PROT_READ)
        except OSError:
            return "refused"
        m.close()
        return "ok"


def cgroup_dirs() -> list[tuple[str, Path, str]]:
    """(name, new cgroup dir, limit file) for every writable memory cgroup hierarchy."""
    out = []
    tag = f"pxkmem-{uuid.uuid4().hex[:6]}"
    if (V1 / "memory.limit_in_bytes").exists():
        with contextlib.suppress(OSError):
            d = V1 / tag
            d.mkdir()
            out.append(("cgroup v1 memory.limit_in_bytes", d, "memory.limit_in_bytes"))
    for root in V2_CANDIDATES:
        ctl = root / "cgroup.controllers"
        if ctl.exists() and "memory" in ctl.read_text().split():
            with contextlib.suppress(OSError):
                d = root / tag
                d.mkdir()
                if (d / "memory.max").exists():
                    out.append(("cgroup v2 memory.max", d, "memory.max"))
                else:
                    d.rmdir()
            break
    return out


def run(
    name: str, apply: str, chunks: int, cg: Path | None = None, limit_file: str = "", shared: bool = False
) -> tuple[str, ...]:
    r, w = os.pipe()
    if cg is not None:
        # A new cgroup counts the pages charged to it from when the child joins (v1 does not move
        # the charge of pages it already had): the chunks are the whole budget.
        (cg / limit_file).write_text(str(chunks * CHUNK))
        with contextlib.suppress(OSError):
            (cg / "memory.swap.max").write_text("0")
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            child(w, apply, chunks, str(cg or ""), shared)
        finally:
            os._exit(1)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    _, st = os.waitpid(pid, 0)
    mib = data.count(b"+")
    tail = data.replace(b"+", b"").decode().split(maxsplit=2)
    lib = tail[0] if tail else "?"
    threads = tail[1] if len(tail) > 1 else "?"
    how = tail[2].strip() if len(tail) > 2 else f"killed by {signal.Signals(os.WTERMSIG(st)).name}"
    if cg is not None:
        with contextlib.suppress(OSError):
            time.sleep(0.05)
            cg.rmdir()
    base = {"AS": "VmSize (every mapping)", "DATA": "VmData (private writable)"}.get(apply.rstrip("+"), "charged pages")
    return name, base, lib, f"{threads}/4", f"{mib} MiB of {chunks * 2} MiB promised", how


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--shared", action="store_true", help="allocate 2 MiB MAP_SHARED blocks, not heap")
    args = ap.parse_args()
    sh = args.shared
    what = "shared mapped past baseline" if sh else "allocated past baseline"
    rows = [
        ("mechanism", "limit counts", "16 MiB file map", "threads", what, "how it ended"),
        run("RLIMIT_AS", "AS", args.chunks, shared=sh),
        run("RLIMIT_AS, 1 MiB thread stacks (fallback)", "AS+", args.chunks, shared=sh),
        run("RLIMIT_DATA (before issue 15)", "DATA", args.chunks, shared=sh),
        run("RLIMIT_DATA, 1 MiB thread stacks", "DATA+", args.chunks, shared=sh),
    ]
    if os.geteuid() == 0:
        for name, d, f in cgroup_dirs():
            rows.append(run(name, "CG", args.chunks, d, f, shared=sh))
    else:
        rows.append(("cgroup", "-", "-", "-", "-", "not writable without root"))
    print(f"load average {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}; {os.uname().release}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
