"""The processes of a local test bed: pxkernel DIME processes found in /proc by their command line
(the test bed, the demo and the chaos run kill them by pid), and stopping a bed's processes. Shared
by the node's test bed and the orchestrator's demos, so the orchestrator needs nothing of the node
runtime's internals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path


def dime_identity(cmdline: list[bytes]) -> tuple[int, str] | None:
    """(DIME number, server MAC in hex) of a pxkernel DIME process, from its command line split at NULs:
    ``python -m pxproto.node.dime CONFIG_JSON`` or ``... - dime=N mac=HEX ...`` (its config on stdin);
    None for any other process, or one caught mid-exec (a partial command line)."""
    if len(cmdline) < 4 or cmdline[1:3] != [b"-m", b"pxproto.node.dime"]:
        return None
    try:
        if cmdline[3] == b"-":
            kv = dict(a.decode().split("=", 1) for a in cmdline[4:] if b"=" in a)
            return int(kv["dime"]), kv["mac"].replace(":", "")
        cfg = json.loads(cmdline[3])
        return int(cfg["dime"]), str(cfg["mac"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def find_dime(mac: bytes, dime: int, proc: Path = Path("/proc")) -> int | None:
    """The pid of the DIME process for (server ``mac``, ``dime``), found in /proc by its command line.

    Its MICE is a fork of it (the same command line): the DIME is the match whose parent is no match."""
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            args = (proc / entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if dime_identity(args) == (dime, mac.hex()):
            found.append(int(entry))
    return next((pid for pid in found if parent_pid(pid, proc) not in found), None)


def parent_pid(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The parent of process ``pid`` (None if it is gone)."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    return next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("PPid:")), None)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process still running, then reap each in turn (10 s, then SIGKILL)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
