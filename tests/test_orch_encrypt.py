"""``--encrypt CLASSES`` wherever the demo runs: ``pxorch chaos`` and ``pxorch demo --ha`` take it as
``pxorch run`` and ``pxorch demo`` do, hand it to every pxkernel and orchestrator they start, and a
short encrypted run is exact while its frames on the wire are sealed: the ENCRYPTED flag on every
DATA and signaling frame, no line of the corpus visible in any frame, and the key opens them."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pxproto.capture.pcapng import read_packets
from pxproto.orch import chaos, cli, demo_ha
from pxproto.orch.chaos import Chaos
from pxproto.orch.demo import SERVICE_FILE
from pxproto.orch.service import load_service
from pxproto.wire import aead, codec
from pxproto.wire.codes import FrameClass, HeaderFlag


def _record(monkeypatch: pytest.MonkeyPatch, module: Any) -> dict[str, Any]:
    got: dict[str, Any] = {}

    def fake_main(workdir: Path | None = None, **kw: Any) -> int:
        got.update(kw, workdir=workdir)
        return 0

    monkeypatch.setattr(module, "main", fake_main)
    return got


def test_chaos_and_ha_demo_take_encrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    got = _record(monkeypatch, chaos)
    assert cli.main(["chaos", "--kills", "2", "--encrypt", "data,signaling"]) == 0
    assert got["encrypt"] == "data,signaling" and got["kills"] == 2
    got = _record(monkeypatch, demo_ha)
    assert cli.main(["demo", "--ha", "--encrypt", "all"]) == 0
    assert got["encrypt"] == "all"


@pytest.mark.parametrize("argv", [["chaos", "--encrypt", "data,video"], ["demo", "--ha", "--encrypt", "x"]])
def test_unknown_class_is_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--encrypt: unknown frame class" in err, err


class _Popen:
    """Stands in for subprocess.Popen: records the command, runs nothing."""

    commands: ClassVar[list[list[str]]] = []

    def __init__(self, cmd: list[str], **kw: Any) -> None:
        _Popen.commands.append(cmd)

    def poll(self) -> int:
        return 0


def test_every_process_the_ha_demo_starts_gets_the_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _Popen.commands = []
    monkeypatch.setattr(subprocess, "Popen", _Popen)
    ha = demo_ha.HaDemo(None, workdir=tmp_path / "work", encrypt="signaling,data")
    ha.orch_ports = [5000]
    ha.etcd = type("Etcd", (), {"url": "http://127.0.0.1:1"})()  # type: ignore[assignment]
    ha.start_orch(0)
    ha.start_kernel(0, 5001, tmp_path / "store", tmp_path / "cluster.key")
    orch, kernel = _Popen.commands
    assert orch[orch.index("--encrypt") + 1] == "data,signaling" and "--key" in orch
    assert kernel[kernel.index("--encrypt") + 1] == "signaling,data"
    assert aead.parse_classes("data,signaling") == ha.encrypt
    plain = demo_ha.HaDemo(None, workdir=tmp_path / "plain")
    plain.orch_ports, plain.etcd = ha.orch_ports, ha.etcd
    plain.start_orch(0)
    assert "--encrypt" not in _Popen.commands[-1]


def _corpus_lines() -> list[bytes]:
    spec = load_service(SERVICE_FILE)
    assert spec.package is not None
    lines = (spec.package / "corpus.txt").read_text("utf-8").splitlines()
    return sorted({ln.encode() for ln in lines if len(ln) >= 24})


def check_sealed_wire(capture: Path, key: bytes) -> Counter[str]:
    """Every DATA and signaling frame of the capture is sealed and opens under ``key``; no corpus
    line is in any frame's bytes, and the opened DATA frames do hold corpus lines (so the search
    could find them)."""
    with capture.open("rb") as f:
        raws = [p.data for p in read_packets(f)]
    corpus = _corpus_lines()
    assert len(corpus) > 100
    seen: Counter[str] = Counter()
    found_in_clear = 0
    for raw in raws:
        try:
            frame = codec.decode(raw)
        except ValueError:
            continue
        if frame.cls not in (FrameClass.DATA, FrameClass.SIGNALING):
            continue
        seen[frame.cls.name] += 1
        assert frame.flags & HeaderFlag.ENCRYPTED, frame
        leaked = [ln for ln in corpus if ln in raw]
        assert not leaked, f"{frame.cls.name} frame shows {leaked[0]!r}"
        clear = aead.open_raw(raw, key)
        assert clear is not None, frame
        found_in_clear += any(ln in clear for ln in corpus)
    assert seen["DATA"] > 100 and seen["SIGNALING"] > 20, seen
    assert found_in_clear > 20, found_in_clear
    return seen


@pytest.mark.slow
def test_short_encrypted_chaos_run_is_exact_and_sealed(tmp_path: Path) -> None:
    c = Chaos(kills=2, plan=["transform", "server"], passes=1, rate=600, seed=3, quiet=True,
              workdir=tmp_path / "work", encrypt="data,signaling")  # fmt: skip
    c.mirror = True  # chaos records nothing by default: this run's wire is the point
    res = c.run()
    assert isinstance(res, chaos.ChaosResult)
    assert [k.kind for k in res.kills] == ["transform", "server"], res.notes
    assert res.lost == 0 and res.duplicated == 0 and res.wrong == 0 and res.distinct == res.lines, res
    assert res.ok, res
    check_sealed_wire(c.wd / "demo.pcapng", c.key)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
def test_encrypted_ha_demo_is_exact_and_sealed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("etcd3gw")
    ha: list[demo_ha.HaDemo] = []
    real = demo_ha.HaDemo.__init__

    def keep(self: demo_ha.HaDemo, *a: Any, **kw: Any) -> None:
        real(self, *a, **kw)
        ha.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo_ha.HaDemo, "__init__", keep)
        assert demo_ha.main(tmp_path / "work", quiet=True, encrypt="data,signaling") == 0
    out = capsys.readouterr().out
    assert "ANSWER EXACT" in out and "items lost: 0, duplicated: 0, wrong: 0" in out
    check_sealed_wire(ha[0].wd / "demo.pcapng", ha[0].key)
