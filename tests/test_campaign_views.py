"""pxdump and the Wireshark dissector, fed the pcapng a pxfuzz campaign saved.

Every frame the campaign sent is shown, none crashes either tool, and each
one the reference decoder rejects is marked malformed with the same field:
pxdump's ``--json`` gives ``_malformed.field``; tshark with
dissectors/parallax.lua gives a ``px.malformed.*`` expert (and no Lua error).
Frames too short for Ethernet or with a foreign EtherType are not Parallax
frames to either tool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pxproto.errors import ProtocolError
from pxproto.fuzz import Campaign, FrameGenerator, FunctionWire, load_cases
from pxproto.fuzz.verdict import OK
from pxproto.wire.codec import decode

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "dissectors" / "parallax.lua"
TSHARK = shutil.which("tshark")
NOT_PARALLAX = ("eth", "eth.type")


@pytest.fixture(scope="module")
def campaign_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved campaign: 3,000 frames of every mutator, as pxfuzz run -w writes them."""
    path = tmp_path_factory.mktemp("views") / "campaign.pcapng"
    report = Campaign(FunctionWire(lambda raw: None), FrameGenerator(21), count=3000, burst=500, save=path).run()
    assert report.sent == 3000 and report.rejected > 1500
    return path


def test_pxdump_shows_every_frame_and_marks_every_malformed_one(campaign_pcap: Path) -> None:
    cases = load_cases(campaign_pcap)
    p = subprocess.run(
        [sys.executable, "-m", "pxproto.dump.cli", "-r", str(campaign_pcap), "--json", "--reference"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    # pxdump prints one object per Parallax frame (frames too short for Ethernet count as malformed ones).
    shown = [c for c in cases if c.verdict != "eth.type" or len(c.raw) < 14]
    assert len(lines) == len(shown)
    for c, obj in zip(shown, lines, strict=True):
        if c.verdict == OK:
            assert "_malformed" not in obj and obj["px.seq"] == int.from_bytes(c.raw[26:34], "big"), c
        else:
            assert obj["_malformed"]["field"] == c.verdict, (c, obj)


@pytest.mark.skipif(TSHARK is None or not LUA.exists(), reason="tshark or the generated dissector is missing")
def test_tshark_with_the_dissector_marks_every_malformed_frame_and_raises_no_lua_error(
    campaign_pcap: Path, tmp_path: Path
) -> None:
    assert TSHARK is not None
    env = {**os.environ, "HOME": str(tmp_path), "WIRESHARK_CONFIG_DIR": str(tmp_path / "ws")}
    cmd = [TSHARK, "-n", "-X", f"lua_script:{LUA}", "-r", str(campaign_pcap), "-T", "json", "-J", "px"]
    p = subprocess.run(cmd, capture_output=True, env=env, timeout=600, check=False)
    err = "\n".join(x for x in p.stderr.decode().splitlines() if "could be dangerous" not in x)
    assert p.returncode == 0, err
    assert "Lua" not in err and "lua" not in err.lower(), err
    out = p.stdout.decode("utf-8")
    assert "_ws.lua.error" not in out and "px.dissector_bug" not in out
    packets = [pkt["_source"]["layers"] for pkt in json.loads(out)]
    cases = load_cases(campaign_pcap)
    assert len(packets) == len(cases)
    marked = 0
    for c, layers in zip(cases, packets, strict=True):
        text = json.dumps(layers.get("px", {}))
        if c.verdict in NOT_PARALLAX:
            assert "px" not in layers, c
        elif c.verdict == OK:
            assert "px.malformed." not in text, c
        else:
            try:
                decode(c.raw)
            except ProtocolError as exc:
                assert "px.malformed." in text and json.dumps(str(exc)) in text, (c, exc, text[:800])
            else:
                raise AssertionError(f"{c}: the saved verdict says malformed, the codec accepts it")
            assert "_ws.malformed" in json.dumps(layers), c
            marked += 1
    assert marked == sum(1 for c in cases if c.verdict not in (OK, *NOT_PARALLAX))
