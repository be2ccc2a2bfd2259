"""pxorch's demo, chaos and check against hostile options and paths: one line and a non-zero exit,
no traceback, nothing started.  Before: ``chaos --kills -1`` or ``--loss 200`` started a run that
never ended, ``--workdir /dev/full`` ended in a FileExistsError traceback, ``check /dev/zero`` read
the device whole (MemoryError), ``demo --heartbeat-ms 0`` hung after discovery (the reason only in a
server's log), ``demo --ha --passes 3`` ran 8 passes without a word."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pxorch(*args: str) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pxproto.orch.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60, preexec_fn=limit, check=False)  # fmt: skip


@pytest.mark.parametrize(
    "args,text",
    [
        (("chaos", "--kills", "-1"), "argument --kills: -1 is below 0"),
        (("chaos", "--loss", "200"), "argument --loss: 200.0 is not in 0..100 (exclusive)"),
        (("chaos", "--loss", "100"), "argument --loss: 100.0 is not in 0..100 (exclusive)"),
        (("chaos", "--loss", "nan%"), "argument --loss: 'nan%' is not a number"),
        (("chaos", "--rate", "-5"), "argument --rate: -5 is below 0"),
        (("chaos", "--passes", "0"), "argument --passes: 0 is below 1"),
        (("demo", "--passes", "0"), "argument --passes: 0 is below 1"),
        (("demo", "--work-us", "-1"), "argument --work-us: -1 is below 0"),
        (
            ("demo", "--heartbeat-ms", "0"),
            "--heartbeat-ms: 0 is not in 1..60000 (as heartbeat_ms in a service file)",
        ),
        (
            ("demo", "--heartbeat-ms", "60001"),
            "--heartbeat-ms: 60001 is not in 1..60000 (as heartbeat_ms in a service file)",
        ),
        (("demo", "--missed", "0.5"), "argument --missed: 0.5 is below 1.0 (as missed in a service file)"),
        (("demo", "--missed", "nan"), "argument --missed: 'nan' is not a number"),
        (
            ("demo", "--confirm-ms", "-3"),
            "--confirm-ms: -3 is not in 1..60000 (as confirm_ms in a service file)",
        ),
        (
            ("demo", "--ha", "--passes", "3", "--out-dir", "/tmp"),
            "--ha takes only --rate, --workdir, --quiet and --encrypt; leave --out-dir, --passes",
        ),
        (
            ("demo", "--ha", "--bare-metal"),
            "--ha takes only --rate, --workdir, --quiet and --encrypt; leave --bare-metal",
        ),
        (
            ("demo", "--ha", "--no-kill", "--kill-stage", "sink", "--work-us", "5", "--missed", "3"),
            "leave --work-us, --no-kill, --kill-stage, --missed",
        ),
        (("run", "--port", "udp:127.0.0.1:1", "--insecure", "--lease-ttl", "0"), "argument --lease-ttl: 0 is below 1"),
        (("chaos", "--workdir", "/dev/null"), "--workdir /dev/null: exists and is not a directory"),
        (("demo", "--ha", "--workdir", "/dev/null"), "--workdir /dev/null: exists and is not a directory"),
        (("demo", "--out-dir", "/dev/null"), "--out-dir /dev/null: exists and is not a directory"),
        (("check", "/dev/zero"), "/dev/zero: larger than 1048576 bytes: not a service file"),
    ],
)
def test_bad_option_or_path_is_one_line(args: tuple[str, ...], text: str) -> None:
    p = _pxorch(*args)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("usage:") and not ln.startswith("  ")]
    assert len(lines) == 1 and lines[0].endswith(text), p.stderr


def test_a_work_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = _pxorch("chaos", "--kills", "1", "--workdir", str(blocker / "sub"))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr == f"pxorch chaos: Not a directory ({blocker / 'sub'})\n", p.stderr
