"""One place chooses compiled or pure (pxproto.fastpath.select), every driver asks it, and a
missing or stale build fails under PXPROTO_REQUIRE_COMPILED=1 instead of testing old code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import pxproto
import pxproto.fastpath as fp
from pxproto.fastpath import buildhash, select

ROOT = Path(pxproto.__file__).resolve().parent.parent
PACKAGE = ROOT / "pxproto"
EXTENSIONS = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in PACKAGE.rglob("*.pyx"))

# One line per driver: what it uses, printed as "name=compiled" or "name=pure".
DRIVERS = """
import os
import pxproto.fastpath as fp
from pxproto.wire import codec
from pxproto.node import beat, fastrx
from pxproto.switch import core, daemon
from pxproto.switch.fdb import PyFdb
from pxproto.dump import accel
from pxproto.orch import driver
from pxproto.fastpath import select
from pxproto.dime import channel, fastchannel

def say(name, compiled):
    print(f"{name}={'compiled' if compiled else 'pure'}")

say("fastpath", fp.COMPILED and fp.decode is not codec.decode)
say("fastrx", fastrx.COMPILED and fastrx.route is not fastrx.route_py)
say("beat", beat.COMPILED and beat.Beater is not beat.BeaterPy)
say("fdb", not isinstance(core.new_fdb(16, 1.0), PyFdb))
say("afpacket", select.compiled("pxproto.switch._afpacket") is not None)
say("accel", accel.compiled())
say("orch.driver", driver.decode is not codec.decode)
say("channel", fastchannel.COMPILED and fastchannel.ChannelSender is not channel.ChannelSender)
"""
NAMES = ("fastpath", "fastrx", "beat", "fdb", "afpacket", "accel", "orch.driver", "channel")


def _run(code: str, cwd: Path = ROOT, pythonpath: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PXPROTO_")}
    e.update(env)
    e["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=e, capture_output=True, text=True, timeout=120)


def _drivers(**env: str) -> dict[str, str]:
    out = _run(DRIVERS, **env)
    assert out.returncode == 0, out.stderr
    return dict(line.split("=") for line in out.stdout.split())


def test_pure_env_is_honoured_by_every_driver() -> None:
    assert _drivers(PXPROTO_PURE="1") == dict.fromkeys(NAMES, "pure")


def test_every_driver_uses_the_compiled_modules_when_built() -> None:
    if not fp.COMPILED:
        pytest.skip("the fast path is not built here")
    assert _drivers() == dict.fromkeys(NAMES, "compiled")


def test_pure_env_wins_over_require_compiled() -> None:
    assert _drivers(PXPROTO_PURE="1", PXPROTO_REQUIRE_COMPILED="1") == dict.fromkeys(NAMES, "pure")


def test_no_module_but_select_reads_the_switches_or_imports_an_extension() -> None:
    """The choice is made in one place: no driver reads PXPROTO_PURE or imports an extension itself."""
    names = "|".join(re.escape(e.rsplit(".", 1)[1]) for e in EXTENSIONS)
    direct = re.compile(
        rf"(environ[^\n]*PXPROTO_(PURE|REQUIRE)|^\s*(from\s+\S+\s+)?import\s+[^\n]*\b({names})\b)", re.M
    )
    offenders = [
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob("*.py")
        if p.name not in ("select.py", "buildhash.py") and direct.search(p.read_text())
    ]
    assert offenders == []


def test_select_returns_none_under_pure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPROTO_PURE", "1")
    assert select.compiled("pxproto.fastpath.wirec") is None


def test_a_missing_extension_falls_back_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PXPROTO_PURE", raising=False)
    monkeypatch.delenv("PXPROTO_REQUIRE_COMPILED", raising=False)
    with pytest.warns(RuntimeWarning, match="unavailable"):
        assert select.compiled("pxproto.fastpath._no_such_extension", warn=True) is None
    monkeypatch.setenv("PXPROTO_REQUIRE_COMPILED", "1")
    with pytest.raises(ImportError, match="is not built"):
        select.compiled("pxproto.fastpath._no_such_extension")


def test_stale_compares_the_embedded_hash_with_the_sources() -> None:
    fake = ModuleType("pxproto.fastpath.wirec")
    fake.__file__ = str(PACKAGE / "fastpath" / "wirec.cpython-311-x86_64-linux-gnu.so")
    fake.BUILD_HASH = buildhash.module_hash(PACKAGE / "fastpath" / "wirec.pyx")  # type: ignore[attr-defined]
    assert select.stale(fake) == ""
    fake.BUILD_HASH = "0" * 16  # type: ignore[attr-defined]
    assert "other sources" in select.stale(fake)
    fake.BUILD_HASH = ""  # type: ignore[attr-defined]
    assert "no BUILD_HASH" in select.stale(fake)


def test_the_hash_covers_the_generated_header_and_every_cimported_file() -> None:
    deps = {p.name for p in buildhash.dependencies(PACKAGE / "fastpath" / "wirec.pyx")}
    includes = {"_frames.pxi", "_view.pxi", "_builders.pxi", "_batch.pxi"}
    assert {"wirec.pyx", "wirec.pxd", "wiregen.pxd", "buildinfo.pxd", "px_codec.h", *includes} <= deps
    deps = {p.name for p in buildhash.dependencies(PACKAGE / "switch" / "_afpacket.pyx")}
    assert {"_afpacket.pyx", "_fdb.pxd", "wirec.pxd", "px_codec.h"} <= deps


def test_every_built_module_matches_its_sources() -> None:
    """The build under test is the build of these sources (CI: a stale build fails here)."""
    if not fp.COMPILED:
        pytest.skip("the fast path is not built here")
    out = _run(
        "import importlib\n"
        f"for name in {EXTENSIONS!r}:\n"
        "    m = importlib.import_module(name)\n"
        "    print(name, m.BUILD_HASH)\n",
        PXPROTO_REQUIRE_COMPILED="1",
    )
    assert out.returncode == 0, out.stderr
    built = dict(line.split() for line in out.stdout.splitlines())
    want = {name: buildhash.module_hash(ROOT / (name.replace(".", "/") + ".pyx")) for name in EXTENSIONS}
    assert built == want


@pytest.fixture
def copied_tree(tmp_path: Path) -> Path:
    """A copy of the package with its compiled modules, to make stale or missing."""
    if not fp.COMPILED:
        pytest.skip("the fast path is not built here")
    shutil.copytree(PACKAGE, tmp_path / "pxproto", ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.html"))
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    return tmp_path


def test_a_stale_build_fails_under_require_compiled(copied_tree: Path) -> None:
    probe = "import pxproto.fastpath as fp; print(fp.COMPILED)"
    ok = _run(probe, cwd=copied_tree, pythonpath=copied_tree, PXPROTO_REQUIRE_COMPILED="1")
    assert ok.returncode == 0 and ok.stdout.strip() == "True", ok.stderr
    header = copied_tree / "pxproto" / "fastpath" / "px_codec.h"
    header.write_text(header.read_text().replace("#define PX_TEXT_MAX 255", "#define PX_TEXT_MAX 254"))
    stale = _run(probe, cwd=copied_tree, pythonpath=copied_tree, PXPROTO_REQUIRE_COMPILED="1")
    assert stale.returncode != 0 and "StaleBuildError" in stale.stderr and "wirec" in stale.stderr
    # without the switch the stale module still loads (a developer's tree between edits)
    assert _run(probe, cwd=copied_tree, pythonpath=copied_tree).stdout.strip() == "True"


def test_a_missing_build_fails_under_require_compiled(copied_tree: Path) -> None:
    for so in (copied_tree / "pxproto" / "fastpath").glob("wirec.*.so"):
        so.unlink()
    probe = "import pxproto.fastpath as fp; print(fp.COMPILED)"
    missing = _run(probe, cwd=copied_tree, pythonpath=copied_tree, PXPROTO_REQUIRE_COMPILED="1")
    assert missing.returncode != 0 and "is not built" in missing.stderr
    fallback = _run(probe, cwd=copied_tree, pythonpath=copied_tree)
    assert fallback.stdout.strip() == "False" and "unavailable" in fallback.stderr


def test_setup_fails_without_cython_when_compiled_is_required(copied_tree: Path) -> None:
    fake = copied_tree / "no_cython" / "Cython"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('Cython is not installed')\n")
    (fake.parent / "sitecustomize.py").write_text("")
    code = "import runpy, sys; sys.argv = ['setup.py', '--name']; runpy.run_path('setup.py', run_name='__main__')"
    required = _run(code, cwd=copied_tree, pythonpath=fake.parent, PXPROTO_REQUIRE_COMPILED="1")
    assert required.returncode != 0 and "Cython is missing" in required.stderr
    lenient = _run(code, cwd=copied_tree, pythonpath=fake.parent)
    assert lenient.returncode == 0 and "WARNING: Cython missing" in lenient.stderr
