"""`pxorch demo` in short form: real pxkernel processes over pxswitch; the sink's answer must be exact."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pxproto.capture.pcapng import read_packets
from pxproto.orch.demo import Demo


def test_demo_short(tmp_path: Path) -> None:
    # A CI host may be far busier than its cores: a tolerant detector, so no DIME is declared dead by mistake.
    tolerant = {"heartbeat_ms": 100, "missed": 4, "confirm_ms": 100, "confirm_tries": 3}
    res = Demo(tmp_path / "out", rate=1200, passes=1, quiet=True, workdir=tmp_path / "work", regulator=tolerant).run()
    assert res.lost == 0 and res.duplicated == 0 and res.wrong == 0, res
    assert res.distinct == res.lines == 2400
    assert res.ok, res
    assert res.detection is not None and res.repair is not None and res.reborn, res
    with open(res.capture, "rb") as f:
        frames = list(read_packets(f))
    assert len(frames) > 1000


@pytest.mark.root
def test_demo_across_namespaces(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    tolerant = {"heartbeat_ms": 100, "missed": 4, "confirm_ms": 100, "confirm_tries": 3}
    demo = Demo(tmp_path / "out", rate=1200, passes=1, quiet=True, workdir=tmp_path / "work", regulator=tolerant,
                netns=True)  # fmt: skip
    res = demo.run()
    assert res.lost == 0 and res.duplicated == 0 and res.wrong == 0, res
    assert res.ok and res.distinct == 2400, res
    assert res.detection is not None and res.reborn, res
    # Every server and the orchestrator had an interface of its own (their MACs are the veth ends').
    with open(res.capture, "rb") as f:
        srcs = {bytes(p.data[6:12]) for p in read_packets(f)}
    assert len(srcs) >= 4 and b"\x02\x00\x00\x00\x0a\xfe" not in srcs
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert {ln for ln in after.splitlines() if "pxo" in ln} <= {ln for ln in before.splitlines() if "pxo" in ln}


@pytest.mark.slow
@pytest.mark.parametrize("run", range(3))
def test_demo_sink_killed_exactly_once(tmp_path: Path, run: int) -> None:
    # Real processes: the sink's DIME is SIGKILLed mid-stream. Items it committed and had not completed
    # upstream are replayed to its replacement; its keyed commit (ctx.commit) keeps each lineage once.
    tolerant = {"heartbeat_ms": 100, "missed": 4, "confirm_ms": 100, "confirm_tries": 3}
    demo = Demo(tmp_path / "out", rate=1200, passes=1, quiet=True, workdir=tmp_path / "work", regulator=tolerant,
                kill_stage="sink")  # fmt: skip
    res = demo.run()
    assert res.lost == 0 and res.duplicated == 0 and res.wrong == 0, res
    assert res.ok and res.distinct == res.lines == 2400, res
    assert res.detection is not None and res.repair is not None and res.reborn, res


def test_demo_rate_reaches_the_source(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "out", rate=0, passes=3, work_us=7, workdir=tmp_path / "work")
    pkg = demo._package(Path(__file__).resolve().parents[1] / "pxproto" / "orch" / "workflows" / "wordcount")
    text = (pkg / "service.toml").read_text()
    assert "rate = 0, passes = 3" in text and "work_us = 7" in text
