"""The service file format: the bundled one parses; every mistake names the file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxproto.orch.cli import main
from pxproto.orch.service import ServiceError, load_service, parse_service

BUNDLED = Path(__file__).resolve().parents[1] / "pxproto/orch/workflows/wordcount.service.toml"

GOOD = """\
[service]
name = "svc"
id = 3

[regulator]
heartbeat_ms = 50

[[stage]]
name = "src"

[[stage]]
name = "work"
inputs = ["src"]
replicas = 2

[stage.scale]
metric = "queue"
out_above = 10
in_below = 1
max = 3

[[stage]]
name = "sink"
inputs = ["work"]
"""


def test_bundled_service_file_and_its_package() -> None:
    spec = load_service(BUNDLED)
    assert [s.name for s in spec.topo_order()] == ["source", "parse", "transform", "sink"]
    assert spec.stage("transform").replicas == 2
    assert spec.stage("sink").index == 3 and spec.stage("sink").memory_chunks == 8
    assert spec.regulator.heartbeat_ms == 50


def test_good_file() -> None:
    spec = parse_service(GOOD, "g.toml")
    work = spec.stage("work")
    assert work.inputs == ("src",) and work.scale is not None and work.scale.max == 3
    assert work.line == 11
    assert [s.name for s in spec.downstream("src")] == ["work"]


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("replicas = 2", 'replicas = "two"', "g.toml:14: [stage 1] field 'replicas'"),
        ("replicas = 2", "replicas = 0", "g.toml:14: [stage 1] field 'replicas'"),
        ("id = 3", "id = -1", "g.toml:3: [service] field 'id'"),
        ('name = "svc"', 'name = "a b"', "g.toml:2: [service] field 'name'"),
        ("heartbeat_ms = 50", "heartbeat_ms = 0", "g.toml:6: [regulator] field 'heartbeat_ms'"),
        ("heartbeat_ms = 50", "heartbeat = 50", "g.toml:6: [regulator] field 'heartbeat'"),
        ('inputs = ["work"]', 'inputs = ["nope"]', "g.toml:24: [stage 2] field 'inputs'"),
        ('inputs = ["src"]', 'inputs = ["sink"]', "field 'inputs': the stages form a cycle"),
        ("max = 3", "max = 1", "g.toml:14: [stage 1] field 'replicas'"),
        ("in_below = 1", "in_below = 20", "g.toml:19: [stage.scale 1] field 'in_below'"),
        ('metric = "queue"', 'metric = "vibes"', "g.toml:17: [stage.scale 1] field 'metric'"),
        ('name = "sink"', 'name = "src"', "g.toml:23: [stage 2] field 'name'"),
    ],
)
def test_errors_name_line_and_field(old: str, new: str, where: str) -> None:
    bad = GOOD.replace(old, new, 1)
    assert bad != GOOD
    with pytest.raises(ServiceError) as err:
        parse_service(bad, "g.toml")
    assert where in str(err.value), str(err.value)


def test_syntax_error_and_missing_tables() -> None:
    with pytest.raises(ServiceError, match=r"g.toml: .*line 2"):
        parse_service("[service]\nname = \n", "g.toml")
    with pytest.raises(ServiceError, match="missing \\[service\\]"):
        parse_service('[[stage]]\nname = "a"\n', "g.toml")
    with pytest.raises(ServiceError, match="at least one"):
        parse_service('[service]\nname = "a"\nid = 1\n', "g.toml")


def test_stage_names_are_checked_against_the_package(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "service.toml").write_text('[service]\nname = "p"\n[[stage]]\nname = "src"\nentry = "m:f"\n')
    f = tmp_path / "s.toml"
    f.write_text('[service]\nname = "s"\nid = 1\npackage = "pkg"\n\n[[stage]]\nname = "other"\n')
    with pytest.raises(ServiceError, match=r"s.toml:7: \[stage 0\] field 'name': 'other' is not a stage of package p"):
        load_service(f)
    f.write_text('[service]\nname = "s"\nid = 1\npackage = "missing"\n\n[[stage]]\nname = "src"\n')
    with pytest.raises(ServiceError, match=r"s.toml:4: \[service\] field 'package'"):
        load_service(f)


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(BUNDLED)]) == 0
    assert "source -> parse -> transform -> sink" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("replicas = 2", "replicas = 99"))
    assert main(["check", str(bad)]) == 1
    assert "bad.toml:14: [stage 1] field 'replicas'" in capsys.readouterr().err
