"""Every console script ends quietly when its reader goes away (``pxfuzz kinds | head``), and with
one line when PXPROTO_ETHERTYPES is bad."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

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


def _with_env(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full, timeout=60)


@pytest.mark.parametrize("script", ["pxdump", "pxdissect", "pxswitch", "pxkernel", "pxorch", "pxfuzz"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("bogus", "expected CLASS=VALUE"),
        ("signaling=0xabbb", "two classes the same value"),
        ("signaling=0x88b5,signaling=0x88b7", "class signaling is given twice"),
    ],
)
def test_a_bad_ethertype_map_in_the_environment_is_one_line(script: str, value: str, reason: str) -> None:
    """PXPROTO_ETHERTYPES is read at import: a bad value ends every tool with one line naming it, exit status 2."""
    p = _with_env(["-c", f"from pxproto.console import {script}; {script}()", "--help"], PXPROTO_ETHERTYPES=value)
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.startswith(f"{script}: PXPROTO_ETHERTYPES={value!r}: ")
    assert reason in p.stderr and p.stderr.count("\n") == 1


def test_a_bad_ethertype_map_ends_python_m_tools_with_one_line() -> None:
    p = _with_env(["-m", "pxproto.wire", str(ROOT / "captures" / "all.pcapng")], PXPROTO_ETHERTYPES="data=zz")
    assert p.returncode == 1
    assert p.stderr == "pxproto: PXPROTO_ETHERTYPES='data=zz': EtherType map item 1 'data=zz': 'zz' is not a number\n"


def test_a_good_ethertype_map_in_the_environment_is_in_force() -> None:
    code = "from pxproto.wire import ethertypes; print(hex(ethertypes.current().signaling))"
    p = _with_env(["-c", code], PXPROTO_ETHERTYPES="signaling=0x88b5")
    assert (p.returncode, p.stdout, p.stderr) == (0, "0x88b5\n", "")
