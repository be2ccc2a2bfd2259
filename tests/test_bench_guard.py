"""Benchmarks measure a compiled pxproto: on the pure twin they refuse to run unless asked (``--allow-pure``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(
    p for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_") and p.name != "kernel_memory.py"
)


def _run(script: Path, *args: str, pure: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if pure:
        env["PXPROTO_PURE"] = "1"
    else:
        env.pop("PXPROTO_PURE", None)
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, cwd="/", timeout=120
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_every_benchmark_refuses_the_pure_twin(script: Path) -> None:
    p = _run(script, "--help", pure=True)
    assert p.returncode != 0 and "--allow-pure" in p.stderr, p.stderr
    assert "PURE twin" in p.stderr and "source checkout" in p.stderr  # says what it would have measured


def test_allow_pure_runs_anyway() -> None:
    p = _run(ROOT / "bench" / "codec.py", "--help", "--allow-pure", pure=True)
    assert p.returncode == 0, p.stderr
    assert "usage" in p.stdout
