"""`pxorch demo` in short form: real pxkernel processes over pxswitch; the sink's answer must be exact."""

from __future__ import annotations

from pathlib import Path

from pxproto.capture.pcapng import read_packets
from pxproto.orch.demo import Demo


def test_demo_short(tmp_path: Path) -> None:
    # A CI host may be far busier than its cores: a tolerant detector, so no DIME is declared dead by mistake.
    tolerant = {"heartbeat_ms": 100, "missed": 4, "confirm_ms": 100, "confirm_tries": 3}
    res = Demo(tmp_path / "out", rate=1200, quiet=True, workdir=tmp_path / "work", regulator=tolerant).run()
    assert res.lost == 0 and res.duplicated == 0 and res.wrong == 0, res
    assert res.distinct == res.lines == 2400
    assert res.ok, res
    assert res.detection is not None and res.repair is not None and res.reborn, res
    with open(res.capture, "rb") as f:
        frames = list(read_packets(f))
    assert len(frames) > 1000
