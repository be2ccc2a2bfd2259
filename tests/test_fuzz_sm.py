"""The coverage-guided state-machine targets (fuzz/sm_*.py) run, and their findings stay fixed.

Each finding of a fuzz run is a test here, named after what it found; the
input that found it is kept beside it when it is a script for a target.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from pxproto.dime.endpoint import Address
from pxproto.dime.heartbeat import HeartbeatEmitter

ROOT = Path(__file__).resolve().parents[1]
TARGETS = sorted(p.name for p in (ROOT / "fuzz").glob("sm_*.py") if p.name != "sm_common.py")


STUB_DRIVER = """
import contextlib, importlib, random, sys, types
stub = types.ModuleType("atheris")
stub.instrument_imports = contextlib.nullcontext
sys.modules["atheris"] = stub  # run the targets' scripts without libFuzzer
sys.path[:0] = [{root!r}, {fuzz!r}]
for name in {targets!r}:
    target = importlib.import_module(name[:-3])
    rng = random.Random(7)
    for _ in range({n}):
        target.one_input(rng.randbytes(rng.randrange(400)))
    print(name, "ok")
"""


def test_every_target_takes_random_scripts_cleanly() -> None:
    code = STUB_DRIVER.format(root=str(ROOT), fuzz=str(ROOT / "fuzz"), targets=TARGETS, n=150)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [w for t in TARGETS for w in (t, "ok")]


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_a_target_runs_under_libfuzzer(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "sm_signaling.py"),
            "-runs=50",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 50 runs" in proc.stderr


def test_f1_heartbeat_emitter_timer_is_after_now_when_it_skips_late_periods() -> None:
    # Period 45 ms; the driver comes late twice.  (0.72 - 0.54) / 0.045 is 3.9999999 in floating point,
    # so the emitter skipped one period too few and asked to be called again at 0.72, i.e. now: a
    # second heartbeat at the same instant, the burst the code means to avoid.
    e = HeartbeatEmitter(Address(b"\x02\x00\x00\x00\x00\x01", 1), 1, period=0.045)
    e.start(0.0)
    e.handle_timer(0.52)
    out = e.handle_timer(0.72)
    assert len(out.frames) == 1
    assert out.timer is not None and out.timer > 0.72
    assert e.handle_timer(0.72).frames == []


def test_f2_rotating_back_to_the_key_in_its_grace_period_leaves_a_usable_signing_key() -> None:
    from pxproto.dime.replay import KeyStore

    ks = KeyStore()
    ks.install(1, b"a" * 32)
    ks.install(2, b"b" * 32)
    ks.rotate(2, 0.0, grace=1.0)
    # Back to key 1 before key 2's rotation completed: rotate() completes the pending rotation first,
    # which retires key 1, and then makes the retired key 1 current: signing_key() raises KeyError.
    ks.rotate(1, 0.1, grace=1.0)
    key_id, key = ks.signing_key()
    assert key_id not in ks.retired and key
