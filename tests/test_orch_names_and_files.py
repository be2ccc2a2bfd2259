"""Names end where they end, and a manifest or package file is a bounded regular file.

Before: ``NAME_RE`` was used with ``re.match``, whose ``$`` also matches before a final newline, so a
service, stage, manifest or store-object name of ``"wordcount\\n"`` passed; ``package = "word\\0count"``
ended ``pxorch check`` in a ``ValueError`` traceback; a manifest that was a symlink to /dev/zero (or a
FIFO) was read without end (or waited for a writer), and the package's files and the central store's
archive were read whole whatever their size.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pxproto import package
from pxproto.orch.service import ServiceError, load_service, parse_service

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = '[service]\nname = "p"\n[[stage]]\nname = "src"\nentry = "m:f"\n'
SERVICE = '[service]\nname = "s"\nid = 1\npackage = "pkg"\n\n[[stage]]\nname = "src"\n'


def _package(tmp_path: Path, manifest: str = MANIFEST) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "service.toml").write_text(manifest)
    (pkg / "m.py").write_text("def f(ctx): pass\n")
    (tmp_path / "s.toml").write_text(SERVICE)
    return pkg


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ('name = "s"', 'name = "s\\n"', "g.toml:2: [service] field 'name'"),
        ('name = "src"', 'name = "src\\n"', "g.toml:6: [stage 0] field 'name'"),
    ],
)
def test_service_names_with_a_final_newline_are_refused(old: str, new: str, where: str) -> None:
    with pytest.raises(ServiceError) as err:
        parse_service(SERVICE.replace('package = "pkg"\n', "").replace(old, new, 1), "g.toml")
    assert str(err.value).startswith(where), err.value


@pytest.mark.parametrize(
    ("old", "new", "text"),
    [
        ('name = "p"', 'name = "p\\n"', "line 2: service.name must match"),
        ('name = "src"', 'name = "src\\n"', "(stage 0): field 'name' must match"),
        ('entry = "m:f"', 'entry = "m:f\\n"', "(stage 0): field 'entry' must be 'module:function'"),
    ],
)
def test_manifest_names_with_a_final_newline_are_refused(old: str, new: str, text: str) -> None:
    with pytest.raises(package.PackageError, match=text.replace("(", r"\(").replace(")", r"\)")):
        package.parse_manifest(MANIFEST.replace(old, new, 1))


def test_store_object_name_with_a_final_newline_is_refused(tmp_path: Path) -> None:
    store = package.LocalStore(tmp_path)
    store.put("ok", b"x")
    with pytest.raises(ValueError, match="is not allowed"):
        store.put("ok\n", b"x")


def test_nul_in_the_package_path_names_the_field(tmp_path: Path) -> None:
    _package(tmp_path)
    (tmp_path / "s.toml").write_text(SERVICE.replace('"pkg"', '"p\\u0000kg"'))
    with pytest.raises(ServiceError, match=r"s.toml:4: \[service\] field 'package': a path cannot hold a NUL byte"):
        load_service(tmp_path / "s.toml")
    with pytest.raises(ServiceError, match="a path cannot hold a NUL byte"):
        load_service(str(tmp_path / "s\0.toml"))
    with pytest.raises(package.PackageError, match="a path cannot hold a NUL byte"):
        package.load_manifest(str(tmp_path / "p\0kg"))


def test_check_refuses_a_nul_and_a_newline_in_one_line(tmp_path: Path) -> None:
    """The reproducers of the report, through the command line: one line, exit 1, no traceback."""
    _package(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for text, want in (
        (SERVICE.replace('"pkg"', '"p\\u0000kg"'), "field 'package': a path cannot hold a NUL byte"),
        (SERVICE.replace('name = "s"', 'name = "s\\n"'), "field 'name': must match"),
    ):
        (tmp_path / "s.toml").write_text(text)
        p = subprocess.run([sys.executable, "-m", "pxproto.orch.cli", "check", str(tmp_path / "s.toml")],
                           capture_output=True, text=True, env=env, timeout=60, check=False)  # fmt: skip
        assert p.returncode == 1 and p.stdout == "" and p.stderr.count("\n") == 1, p.stderr
        assert want in p.stderr and "Traceback" not in p.stderr, p.stderr


def _bounded(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command under a 2 GiB address-space limit and a timeout: a read without end fails, not the host."""

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=60,
                          preexec_fn=limit, check=False)  # fmt: skip


@pytest.mark.parametrize("kind", ["device", "fifo", "directory", "large"])
def test_manifest_must_be_a_bounded_regular_file(tmp_path: Path, kind: str) -> None:
    pkg = _package(tmp_path)
    manifest = pkg / "service.toml"
    manifest.unlink()
    if kind == "device":
        manifest.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(manifest)
    elif kind == "directory":
        manifest.mkdir()
    else:
        manifest.write_text(MANIFEST + "#" * package.MAX_MANIFEST)
    want = f"larger than {package.MAX_MANIFEST} bytes" if kind == "large" else "not a regular file"
    p = _bounded("-m", "pxproto.orch.cli", "check", str(tmp_path / "s.toml"))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr == f"pxorch: {tmp_path / 's.toml'}:4: [service] field 'package': manifest {manifest}: {want}\n"


def test_pack_refuses_an_archive_over_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _package(tmp_path)
    assert package.pack(pkg)
    monkeypatch.setattr(package, "MAX_PACKAGE", 4096)
    (pkg / "big.bin").write_bytes(os.urandom(4097))
    with pytest.raises(package.PackageError, match=r"package file .*big.bin: larger than 4096 bytes"):
        package.pack(pkg)
    (pkg / "big.bin").write_bytes(os.urandom(3000))
    (pkg / "big2.bin").write_bytes(os.urandom(3000))
    with pytest.raises(package.PackageError, match="the archive is over the 4096-byte limit"):
        package.pack(pkg)


def test_fetch_refuses_a_store_entry_that_is_not_a_regular_file(tmp_path: Path) -> None:
    store = tmp_path / "central"
    store.mkdir()
    os.mkfifo(store / f"{bytes(32).hex()}.tar.gz")
    code = (
        "import sys\nfrom pxproto import package\n"
        "for d in (bytes(32), bytes([1]) * 32):\n"
        "    try:\n"
        "        package.fetch_tree(sys.argv[1], sys.argv[2], d, 10, b'', None)\n"
        "    except package.PackageError as exc:\n"
        "        print(exc)\n"
    )
    p = _bounded("-c", code, str(store), str(tmp_path / "local"))
    assert p.returncode == 0 and p.stderr == "", p.stderr
    fifo, missing = (store / f"{d.hex()}.tar.gz" for d in (bytes(32), bytes([1]) * 32))
    assert p.stdout == f"central store {fifo}: not a regular file\ncentral store {missing}: No such file or directory\n"
