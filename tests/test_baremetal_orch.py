"""The same orchestrator discovers the bare-metal server, and sees it die.

pxorch (unchanged) on a pxswitch port, a 2-vCPU guest on another: both DIMEs join the pool
through signed announces and heartbeats; killing the VM (the whole server) makes them dead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import test_baremetal_net as net
from tests.test_baremetal_switch import SwitchedGuest

pytestmark = net.pytestmark


def _status(sock: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "pxproto.orch.cli", "status", "--json", "--control", str(sock)],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(net.ROOT)},
    )  # fmt: skip
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else {}


def _wait(sock: Path, ok: Any, timeout: float) -> dict[str, Any]:
    end, st = time.monotonic() + timeout, {}
    while time.monotonic() < end:
        st = _status(sock)
        if st and ok(st):
            return st
        time.sleep(0.5)
    raise AssertionError(f"orchestrator status never matched: {st}")


@pytest.fixture()
def orchestrated(tmp_path: Path) -> Iterator[tuple[SwitchedGuest, Path]]:
    net.build()
    (tmp_path / "key").write_text(f"{net.KEY_ID} {net.KEY.hex()}\n")
    (tmp_path / "key").chmod(0o600)  # pxorch refuses a key file others can read
    g = SwitchedGuest(tmp_path, f"key={net.KEY_ID}:{net.KEY.hex()} hb=100")
    sock = tmp_path / "orch.sock"
    orch = subprocess.Popen(
        [sys.executable, "-m", "pxproto.orch.cli", "run", "--port", f"udp:127.0.0.1:{g.switch_test}",
         "--key", str(tmp_path / "key"), "--control", str(sock)],
        env={**os.environ, "PYTHONPATH": str(net.ROOT)}, stdout=open(tmp_path / "orch.log", "w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield g, sock
    finally:
        orch.kill()
        orch.wait()
        g.close()


def test_pxorch_discovers_the_bare_metal_dimes_and_sees_the_vm_die(orchestrated: tuple[SwitchedGuest, Path]) -> None:
    g, sock = orchestrated

    def dimes(s: dict[str, Any]) -> list[tuple[int, int, str, str]]:
        rows = [r for r in s.get("rows", []) if r["server"] == net.GUEST_MAC.hex(":")]
        return sorted((r["dime"], r["core"], r["health"], r["state"]) for r in rows)  # status lists in any order

    # alive and free (on a loaded host a late heartbeat may make one briefly suspect: wait it out)
    st = _wait(sock, lambda s: dimes(s) == [(0, 0, "alive", "free"), (1, 1, "alive", "free")], 90)
    rejected = {k: v for k, v in st.get("wire", {}).items() if k.startswith("rejected") or k == "malformed"}
    assert not any(rejected.values()), rejected  # every frame of the guest verified under the key
    g.proc.kill()  # the whole server dies
    g.proc.wait()
    st = _wait(sock, lambda s: s.get("pool", {}).get("free") == 0, 30)
    health = {r["dime"]: r["health"] for r in st["rows"] if r["server"] == net.GUEST_MAC.hex(":")}
    assert set(health.values()) <= {"dead", "suspect"}, health
