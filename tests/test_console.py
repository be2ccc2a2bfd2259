"""Every console script ends quietly when its reader goes away (``pxfuzz kinds | head``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from pxproto.console import EXIT_BROKEN_PIPE, run

ROOT = Path(__file__).resolve().parent.parent


def _into_closed_pipe(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run console script ``script`` with its stdout on a pipe nobody reads (the reader has exited)."""
    r, w = os.pipe()
    os.close(r)
    try:
        code = f"from pxproto.console import {script}; {script}()"
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        return subprocess.run(
            [sys.executable, "-c", code, *args], stdout=w, stderr=subprocess.PIPE, text=True, env=env, timeout=60
        )
    finally:
        os.close(w)


def test_pxfuzz_kinds_into_a_closed_pipe_ends_without_a_traceback() -> None:
    p = _into_closed_pipe("pxfuzz", "kinds")
    assert p.stderr == ""
    assert p.returncode == EXIT_BROKEN_PIPE


def test_pxswitch_stats_into_a_closed_pipe_ends_without_a_traceback(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")
    stats = {
        "ports": {f"udp{i}": {"up": True, "rx": i, "tx": i} for i in range(200)},
        "switch": {"forwarded": 1},
        "malformed": {},
    }
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def answer() -> None:  # one stats request, as a running switch's control socket answers it
        conn, _ = srv.accept()
        with conn:
            conn.recv(256)
            conn.sendall(json.dumps(stats).encode() + b"\n")

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        p = _into_closed_pipe("pxswitch", "stats", "--control", path)
    finally:
        t.join(5)
        srv.close()
    assert p.stderr == ""
    assert p.returncode == EXIT_BROKEN_PIPE


def test_run_passes_the_exit_status_through() -> None:
    assert run(lambda: 3) == 3
    assert run(lambda: None) == 0
