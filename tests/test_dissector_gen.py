"""pxdissect: the committed dissector is what the spec generates, and the CLI works."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pxproto.dissect import cli
from pxproto.dissect.install import PLUGIN_NAME
from pxproto.wire import samples
from pxproto.wire.codec import decode
from pxproto.wire.codes import TlvType
from pxproto.wire.ethertypes import EtherTypeMap
from pxproto.wire.gen_lua import AEAD_CRYPTO, EXTRA_FIELDS, TEMPLATE_NAMES, field_list, field_types, generate

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "dissectors" / "parallax.lua"


def test_committed_dissector_is_not_stale() -> None:
    fresh = generate(EtherTypeMap())
    committed = COMMITTED.read_text(encoding="utf-8")
    assert committed == fresh, "dissectors/parallax.lua is stale: run `pxdissect -o dissectors/parallax.lua`"


def test_generation_is_deterministic() -> None:
    assert generate(EtherTypeMap()) == generate(EtherTypeMap())


def test_every_to_dict_key_is_a_dissector_field() -> None:
    types = field_types()
    seen: set[str] = set()
    for _, raw in samples.valid_samples():
        for key, value in decode(raw).to_dict().items():
            seen.add(key)
            if key.startswith("px.tlv.t") and key.removeprefix("px.tlv.t").isdigit():
                continue  # unknown TLV types: px.tlv.unknown + px.tlv.type
            assert key in types, key
            if isinstance(value, list):
                value = value[0]
            if isinstance(value, bool):
                assert types[key] == "bool", key
            elif isinstance(value, int):
                assert types[key].startswith("uint"), key
            else:  # a name, text, or the hex or MAC text of a bytes/ether field
                assert isinstance(value, str)
                assert types[key] in ("string", "bytes", "ether"), key
    # The samples reach every TLV type, so the comparison above covered all TLV fields.
    assert {f"px.tlv.{t.name.lower()}" for t in TlvType} <= seen
    assert set(types) - seen <= set(EXTRA_FIELDS), sorted(set(types) - seen - set(EXTRA_FIELDS))
    assert not set(EXTRA_FIELDS) & seen


def test_no_bitwise_operators_or_bit32() -> None:
    """Lua 5.2 (Wireshark 4.0) has no & | ~ << >> operators, Lua 5.4 (4.4+) has no bit32.  The one
    exception is the AEAD crypto chunk's guarded lookup: bit32 where there is one, else the native
    operators compiled from a string, else LuaBitOp (tests/test_dissector_aead.py runs it on each)."""
    code = "\n".join(line.split("--", 1)[0] for line in generate(EtherTypeMap()).splitlines())
    code = re.sub(r'"(\\.|[^"\\])*"', '""', code)
    start, end = code.index("local B = bit32\n"), code.index("B = B or {}\n")
    assert code.count("local B = bit32\n") == 1 and start < end
    code = code[:start] + code[end:]
    assert "bit32" not in code and "bit." not in code
    assert not re.search(r"<<|>>|[^~=<>]~[^=]|[^&]&[^&]|\|", code)


def test_cli_stdout_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--ethertypes", "signaling=0xabba"]) == 0
    out = capsys.readouterr().out
    assert out == generate(EtherTypeMap())
    target = tmp_path / "sub" / "px.lua"
    assert cli.main(["-o", str(target)]) == 0
    assert target.read_text() == generate()
    assert cli.main(["--check", str(target)]) == 0
    target.write_text(target.read_text() + "-- edited\n")
    assert cli.main(["--check", str(target)]) == 1
    assert "stale" in capsys.readouterr().err


def test_cli_ethertypes_become_preference_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--ethertypes", "signaling=0x88b5,data=0x88b6"]) == 0
    out = capsys.readouterr().out
    assert "signaling = 0x88b5, data = 0x88b6, discovery = 0xabbc, heartbeat = 0xabbd" in out
    assert out != generate(EtherTypeMap())


@pytest.mark.parametrize("bad", ["signaling=0x0800", "nonsense", "data=zz", "signaling=0xabbb"])
def test_cli_bad_ethertypes(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--ethertypes", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pxdissect: --ethertypes: ") and "Traceback" not in err


def test_cli_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("APPDATA", raising=False)
    assert cli.main(["--install"]) == 0
    installed = tmp_path / ".local" / "lib" / "wireshark" / "plugins" / PLUGIN_NAME
    assert installed.read_text() == generate()


def test_cli_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["-o", str(blocker / "px.lua")]) == 1
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("luac", ["luac5.1", "luac5.2", "luac5.3", "luac5.4"])
def test_lua_syntax(luac: str, tmp_path: Path) -> None:
    """The file parses as Lua 5.1 to 5.4 when those compilers exist (test_dissector_lua.py runs it under each)."""
    exe = shutil.which(luac)
    if exe is None:
        pytest.skip(f"{luac} not installed")
    p = subprocess.run([exe, "-p", str(COMMITTED)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr


def test_cli_fields_lists_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--fields"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [name for name, _, _ in field_list()]
    assert set(field_types()) | {"px.malformed.len", "px.malformed.disc.count"} <= set(names)


def test_field_list_is_documented() -> None:
    """docs/DISSECTOR.md names every field and expert `pxdissect --fields` prints, and no other."""
    doc = (ROOT / "docs" / "DISSECTOR.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(px\.[\w.]+)` \|", doc, re.M))
    assert documented == {name for name, _, _ in field_list()}


def test_readme_filter_names_exist() -> None:
    """Every display-filter name the README quotes (`px.NAME` or `px.NAME == ...`) is one the dissector registers."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quoted = set(re.findall(r"`(px\.[\w.]+)(?: ==[^`]*)?`", readme))
    assert "px.malformed.len" in quoted
    assert quoted - {name for name, _, _ in field_list()} == set()


def test_template_files_are_documented() -> None:
    """docs/DISSECTOR.md names the template's files in the order the generator reads them, and the AEAD slot's."""
    doc = (ROOT / "docs" / "DISSECTOR.md").read_text(encoding="utf-8")
    named = re.findall(r"`(pxproto/\w+/[\w]+\.lua\.in)`", doc)
    paths = [f"{pkg.replace('.', '/')}/{name}" for pkg, name in (*TEMPLATE_NAMES, AEAD_CRYPTO)]
    assert named[: len(paths)] == paths
    assert all((ROOT / p).is_file() for p in paths)


def test_template_is_package_data() -> None:
    """The Lua template ships beside its generator (pyproject package-data), not as a Python string."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"pxproto.wire" = ["*.lua.in"]' in pyproject
    assert '"pxproto.dissect" = ["*.lua.in"]' in pyproject
    assert all((ROOT / pkg.replace(".", "/") / name).is_file() for pkg, name in (*TEMPLATE_NAMES, AEAD_CRYPTO))
    assert len((ROOT / "pxproto" / "wire" / "gen_lua.py").read_text().splitlines()) < 450
