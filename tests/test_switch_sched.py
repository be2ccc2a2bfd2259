"""pxswitch's standing with the scheduler: the EEVDF slice it asks for (``slice``, ``--slice``), and the
configuration of its worker threads (``workers``, ``--workers``; their forwarding: test_switch_workers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pxproto.switch.cli import _parser, build_config
from pxproto.switch.config import ConfigError, load_text
from pxproto.switch.sched import set_slice

ROOT = str(Path(__file__).resolve().parents[1])


def _slice_ns(pid: int | str = "self") -> int | None:
    """se.slice of a task from /proc/PID/sched (None where the kernel does not show it)."""
    try:
        with open(f"/proc/{pid}/sched") as f:
            for line in f:
                if line.startswith("se.slice"):
                    return int(line.split(":")[1])
    except OSError:
        return None
    return None


needs_slice = pytest.mark.skipif(_slice_ns() is None, reason="no se.slice in /proc/self/sched (not EEVDF)")


@needs_slice
def test_set_slice_sets_the_tasks_slice() -> None:
    code = (
        "from pxproto.switch.sched import set_slice; import sys; why = set_slice(250); "
        "print(why or [l for l in open('/proc/self/sched') if l.startswith('se.slice')][0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": ROOT})
    if "Invalid argument" in out.stdout:
        pytest.skip("this kernel takes no custom slice for SCHED_OTHER (before 6.12)")
    assert int(out.stdout.split(":")[1]) == 250_000, out.stdout + out.stderr


def test_set_slice_names_why_it_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pxproto.switch.sched.SYS_SCHED_SETATTR", {})
    assert set_slice(200) == f"sched_setattr: not known on {os.uname().machine}"


@needs_slice
def test_a_running_switch_asks_for_its_slice(tmp_path: Path) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp_path / "c.sock"),
         "--port", "udp:name=u,local=127.0.0.1:0", "--slice", "300"],
        env={"PYTHONPATH": ROOT}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _slice_ns(p.pid) != 300_000 and p.poll() is None:
            time.sleep(0.1)
        assert _slice_ns(p.pid) == 300_000
    finally:
        p.terminate()
        _, err = p.communicate(timeout=10)
    assert "refused" not in err, err


def test_slice_in_the_file_and_on_the_command_line() -> None:
    assert load_text("[switch]\nslice = 200\n").slice == 200
    assert load_text("[switch]\nslice = 0\n").slice == 0
    assert load_text("").slice == 0
    with pytest.raises(ConfigError, match=r"line 2: switch.slice.*100..100000"):
        load_text("[switch]\nslice = 50\n")
    args = _parser().parse_args(["run", "--port", "udp:local=127.0.0.1:0", "--slice", "500"])
    assert build_config(args).slice == 500
    args = _parser().parse_args(["run", "--port", "udp:local=127.0.0.1:0", "--slice", "200000"])
    with pytest.raises(ConfigError, match="--slice 200000"):
        build_config(args)


def test_workers_in_the_file_and_on_the_command_line(tmp_path: Path) -> None:
    assert load_text("[switch]\nworkers = 2\n").workers == 2
    assert load_text("").workers == 1
    with pytest.raises(ConfigError, match=r"line 2: switch.workers.*1..8 threads"):
        load_text("[switch]\nworkers = 0\n")
    for bad in ("0", "9"):
        r = subprocess.run(
            [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp_path / "c.sock"),
             "--port", "udp:local=127.0.0.1:0", "--workers", bad],
            capture_output=True, text=True, env={"PYTHONPATH": ROOT},
        )  # fmt: skip
        assert r.returncode == 2 and f"--workers {bad}: 1..8 threads" in r.stderr


@pytest.mark.parametrize(("key", "default", "good", "bad", "says"), [
    ("busy_adaptive", 50, 200, 20000, "0..10000 microseconds"),
    ("busy_nap", 0, 10, 5000, "0..1000 microseconds"),
])  # fmt: skip
def test_polling_keys_in_the_file_and_on_the_command_line(
    key: str, default: int, good: int, bad: int, says: str
) -> None:
    assert getattr(load_text(""), key) == default
    assert getattr(load_text(f"[switch]\n{key} = {good}\n"), key) == good
    with pytest.raises(ConfigError, match=rf"line 2: switch.{key}.*{says}"):
        load_text(f"[switch]\n{key} = {bad}\n")
    flag = "--" + key.replace("_", "-")
    args = _parser().parse_args(["run", "--port", "udp:local=127.0.0.1:0", flag, str(good)])
    assert getattr(build_config(args), key) == good
    args = _parser().parse_args(["run", "--port", "udp:local=127.0.0.1:0", flag, str(bad)])
    with pytest.raises(ConfigError, match=f"{flag} {bad}"):
        build_config(args)


def test_the_daemon_hands_the_polling_keys_to_its_loop(tmp_path: Path) -> None:
    pytest.importorskip("pxproto.switch._afpacket")
    from pxproto.switch.config import SwitchConfig
    from pxproto.switch.daemon import Daemon

    d = Daemon(SwitchConfig(control=str(tmp_path / "c.sock"), busy_adaptive=120, busy_nap=7, busy_poll=3))
    try:
        assert d.fast is not None
        assert (round(d.fast.busy_adaptive * 1e6), round(d.fast.busy_nap * 1e6), round(d.fast.busy_poll * 1e6)) == (
            120, 7, 3)  # fmt: skip
    finally:
        d.close()
