"""The generated C header px_codec.h on its own: it compiles freestanding (no libc, no Python),
a freestanding program linked with -nostdlib runs its encoders and decoder, and a hosted driver
built from nothing but the header agrees with the reference codec on every sample, malformed
sample, conformance vector and limit frame, error field and offset included."""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pxproto.errors import ProtocolError
from pxproto.wire import codec, gen_fastpath
from pxproto.wire.codes import FrameClass
from pxproto.wire.samples import malformed_samples, valid_samples
from tests.test_codec_limits import limit_frames

HERE = Path(__file__).resolve().parent
HEADER = gen_fastpath.FASTPATH_DIR / gen_fastpath.HEADER_NAME
CC = shutil.which("gcc") or shutil.which("cc")
FREESTANDING = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-ffreestanding", "-nostdlib", "-fno-builtin"]

needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")


def _cc(*args: str | Path) -> None:
    assert CC is not None
    out = subprocess.run([CC, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_header_needs_nothing_but_freestanding_headers() -> None:
    text = HEADER.read_text()
    assert set(re.findall(r"#include\s*<([^>]+)>", text)) == {"stddef.h", "stdint.h"}
    assert '#include "' not in text
    assert "Python.h" not in text and "Py_" not in text
    # no libc call: the only identifiers called are the header's own or C keywords
    code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    called = set(re.findall(r"\b([A-Za-z_]\w*)\s*\(", code))
    defined = set(re.findall(r"\b([A-Za-z_]\w*)\s*\([^;{]*\)\s*\{", code)) | set(re.findall(r"#define\s+(\w+)\(", code))
    keywords = {"if", "for", "while", "switch", "return", "sizeof", "defined"}
    assert called - defined - keywords == set()


@needs_cc
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_header_compiles_freestanding(tmp_path: Path, opt: str) -> None:
    _cc(*FREESTANDING, opt, f"-I{HEADER.parent}", "-c", HERE / "c" / "freestanding.c", "-o", tmp_path / "f.o")


@needs_cc
@pytest.mark.skipif(platform.machine() != "x86_64" or platform.system() != "Linux", reason="_start is x86-64 Linux")
def test_freestanding_program_links_without_libc_and_runs(tmp_path: Path) -> None:
    obj, exe = tmp_path / "f.o", tmp_path / "f"
    _cc(*FREESTANDING, "-O2", "-DPX_WITH_START", f"-I{HEADER.parent}", "-c", HERE / "c" / "freestanding.c", "-o", obj)
    _cc("-nostdlib", "-static", "-o", exe, obj)
    run = subprocess.run([str(exe)], timeout=30)
    assert run.returncode == 0, f"check {run.returncode} of tests/c/freestanding.c failed"


def _corpus() -> list[tuple[str, bytes]]:
    frames = [(name, raw) for name, raw in valid_samples()]
    frames += [(name, raw) for name, _field, _off, raw in malformed_samples()]
    frames += [(v["name"], bytes.fromhex(v["hex"])) for v in json.loads((HERE / "vectors" / "frames.json").read_text())]
    frames += limit_frames()
    frames += [("empty", b""), ("short", bytes(13)), ("eth only", bytes(12) + b"\xab\xba")]
    conformance = json.loads((HERE.parent / "docs" / "conformance.json").read_text())["vectors"]
    frames += [(v["name"], bytes.fromhex(v["hex"])) for v in conformance]  # encrypted frames of every class too
    return frames


def _reference(raw: bytes) -> str:
    try:
        f = codec.decode(raw)
    except ProtocolError as exc:
        return f"err {exc.field} {exc.offset}"
    return f"ok {int(f.cls)}"


@needs_cc
def test_c_header_agrees_with_the_reference_codec(tmp_path: Path) -> None:
    exe = tmp_path / "px_check"
    _cc("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", f"-I{HEADER.parent}", HERE / "c" / "px_check.c", "-o", exe)
    frames = _corpus()
    feed = "".join(raw.hex() + "\n" for _name, raw in frames)
    out = subprocess.run([str(exe)], input=feed, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(frames)
    wrong = []
    rebuilt = discovery = 0
    for (name, raw), line in zip(frames, lines, strict=True):
        want = _reference(raw)
        got = line.rsplit(" ", 1)[0] if line.startswith("ok") else line
        if got != want:
            wrong.append((name, raw.hex(), want, line))
        elif line.startswith("ok"):
            # a valid frame of any class rebuilt from its view by the C encoders is the same bytes
            assert line.endswith(" 1"), (name, line)
            rebuilt += 1
            discovery += line.startswith(f"ok {int(FrameClass.DISCOVERY)} ")
    assert wrong == []
    assert rebuilt >= 50
    assert discovery >= 3  # probes, announces and gratuitous announces went through px_encode_discovery


def test_one_error_table_for_python_the_header_and_the_compiled_module() -> None:
    from pxproto.fastpath import select
    from pxproto.wire import layout

    m = re.search(r"PX_ERROR_FIELDS\[\d+\] = \{(.*?)\};", HEADER.read_text(), re.S)
    assert m is not None
    block = m.group(1)
    assert tuple(re.findall(r'"([^"]*)"', block)) == layout.ERROR_FIELDS
    wirec = select.compiled("pxproto.fastpath.wirec")
    if wirec is not None:
        assert wirec.ERROR_FIELDS == layout.ERROR_FIELDS
