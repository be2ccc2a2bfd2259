"""``pxorch demo`` writes into a work directory, a fresh one by default, named on its last line: never into the
checkout (a clone stays clean after a run)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from pxproto.orch import demo
from pxproto.orch.demo import WORKDIR_PREFIX, Demo, Result, choose_workdir

ROOT = Path(__file__).resolve().parent.parent


def test_a_fresh_directory_by_default_outside_the_checkout() -> None:
    a, b = choose_workdir(None), choose_workdir(None)
    try:
        assert a != b and a.is_dir() and b.is_dir()
        assert a.name.startswith(WORKDIR_PREFIX) and a.parent == Path(tempfile.gettempdir())
        assert not a.resolve().is_relative_to(ROOT)
        assert not any(a.iterdir())
    finally:
        a.rmdir()
        b.rmdir()


def test_a_given_directory_is_made_and_used(tmp_path: Path) -> None:
    wd = tmp_path / "a" / "b"
    assert choose_workdir(wd) == wd and wd.is_dir()
    d = Demo(workdir=wd, quiet=True)
    assert d.wd == wd and d.out_dir == wd  # capture and timeline go beside the state and logs
    assert Demo(tmp_path / "out", workdir=wd, quiet=True).out_dir == tmp_path / "out"


def test_main_names_the_work_dir_on_its_last_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_run(self: Demo) -> Result:  # the real run is test_orch_demo.py's
        return Result(ok=True, capture=str(self.out_dir / "demo.pcapng"), notes=["a note"])

    monkeypatch.setattr(Demo, "run", fake_run)
    assert demo.main(workdir=tmp_path / "wd", quiet=True) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"workdir: {tmp_path / 'wd'}"
    assert f"capture: {tmp_path / 'wd' / 'demo.pcapng'}" in lines


def test_the_cli_default_writes_nothing_into_captures(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_main(out_dir: str | None = None, workdir: Path | None = None, **kw: object) -> int:
        seen.update(out_dir=out_dir, workdir=workdir)
        return 0

    monkeypatch.setattr(demo, "main", fake_main)
    from pxproto.orch.cli import main as pxorch

    assert pxorch(["demo"]) == 0
    assert seen == {"out_dir": None, "workdir": None}
