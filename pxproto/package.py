"""Service packages: the manifest, the deterministic archive, the content-addressed store, the local store.

A service package is a directory holding ``service.toml`` and the Python
modules its stages name::

    [service]
    name = "wordcount"            # required, text
    version = "1"                 # optional, text

    [[stage]]                     # one table per stage; STAGE on the wire = index in this list (0-based)
    name = "source"               # required, unique, [A-Za-z0-9_.-]{1,64}; LOAD's MICE_NAME must equal it
    entry = "wc:source"           # required, "module:function"; module is a file in the package
    memory_chunks = 4             # optional (default 1): 2 MiB chunks the stage needs
    params = { lines = 1000 }     # optional table, handed to the MICE as ctx.params

Packing (:func:`pack`) makes a gzip'd tar of every regular file under the
directory, sorted by path, with mtime, uid, gid and owner names zeroed, mode
0644, and a zero gzip timestamp: the same tree always gives the same bytes.

Identity and integrity:

- ``PACKAGE_DIGEST`` = SHA-256 of the archive bytes (32 bytes);
- ``PACKAGE_SIZE`` = archive length in bytes;
- ``PACKAGE_SIG`` = signing key id + Ed25519 signature of the archive bytes,
  66 bytes (:mod:`pxproto.signing`): the operator's signing key makes it, the
  kernels' ``--verify-key`` public keys check it.  A kernel with no verification
  key runs no package, unless it was started ``--insecure``.

The central store (the orchestrator's, ``pxkernel --store DIR``) is a directory
of ``<sha256 hex>.tar.gz`` files; :func:`store_put` writes one atomically
(temp file + rename).  A kernel only reads it: on LOAD it opens
``<digest>.tar.gz``, checks size, digest and signature, and unpacks into its
local store under ``packages/<digest>/`` (:func:`fetch_tree`).  Nothing from the
package is imported before all three checks pass.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import os
import re
import stat
import struct
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pxproto.files import FileRefused, read_bounded
from pxproto.signing import SigningKey, VerifyKeys

MANIFEST = "service.toml"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ENTRY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
MAX_PACKAGE = 64 << 20
"""Largest archive a kernel accepts (bytes)."""
MAX_MANIFEST = 1 << 20
"""Bytes a manifest may hold (as a service file): a larger one, or /dev/zero, is refused, not read whole."""


class PackageError(ValueError):
    """A package is malformed or fails a check; the message says which file, line and field."""


@dataclass(frozen=True)
class Stage:
    """One stage of a service: a MICE entry point and its resource needs."""

    index: int
    """Its position in the manifest (the STAGE TLV)."""
    name: str
    entry: str
    """``module:function``."""
    memory_chunks: int = 1
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.entry.partition(":")[0]

    @property
    def function(self) -> str:
        return self.entry.partition(":")[2]


@dataclass(frozen=True)
class Manifest:
    """A parsed ``service.toml``."""

    name: str
    version: str
    stages: tuple[Stage, ...]

    def stage(self, index: int) -> Stage:
        if not 0 <= index < len(self.stages):
            raise PackageError(f"{MANIFEST}: no stage {index} (the package has {len(self.stages)})")
        return self.stages[index]


def _line_of(text: str, needle: str, nth: int = 0) -> int:
    """The 1-based line of the ``nth`` occurrence of ``needle`` (0 if absent): for error messages."""
    seen = -1
    for no, line in enumerate(text.splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == nth:
                return no
    return 0


def parse_manifest(text: str, where: str = MANIFEST) -> Manifest:
    """Parse and check a manifest; errors name the file, line and field."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PackageError(f"{where}: {exc}") from None
    svc = doc.get("service")
    if not isinstance(svc, dict):
        raise PackageError(f"{where}: missing [service] table")
    name = svc.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise PackageError(f"{where} line {_line_of(text, 'name')}: service.name must match {NAME_RE.pattern}")
    version = svc.get("version", "0")
    if not isinstance(version, str):
        raise PackageError(f"{where} line {_line_of(text, 'version')}: service.version must be text")
    raw = doc.get("stage")
    if not isinstance(raw, list) or not raw:
        raise PackageError(f"{where}: at least one [[stage]] table is needed")
    stages = []
    names: set[str] = set()
    for i, st in enumerate(raw):
        line = _line_of(text, "[[stage]]", i)
        where_i = f"{where} line {line} (stage {i})"
        if not isinstance(st, dict):
            raise PackageError(f"{where_i}: not a table")
        unknown = set(st) - {"name", "entry", "memory_chunks", "params"}
        if unknown:
            raise PackageError(f"{where_i}: unknown field {sorted(unknown)[0]!r}")
        sname = st.get("name")
        if not isinstance(sname, str) or not NAME_RE.fullmatch(sname):
            raise PackageError(f"{where_i}: field 'name' must match {NAME_RE.pattern}")
        if sname in names:
            raise PackageError(f"{where_i}: field 'name' {sname!r} repeats an earlier stage")
        names.add(sname)
        entry = st.get("entry")
        if not isinstance(entry, str) or not ENTRY_RE.fullmatch(entry):
            raise PackageError(f"{where_i}: field 'entry' must be 'module:function', got {entry!r}")
        chunks = st.get("memory_chunks", 1)
        if not isinstance(chunks, int) or isinstance(chunks, bool) or not 1 <= chunks <= 1 << 20:
            raise PackageError(f"{where_i}: field 'memory_chunks' must be an integer >= 1, got {chunks!r}")
        params = st.get("params", {})
        if not isinstance(params, dict):
            raise PackageError(f"{where_i}: field 'params' must be a table")
        stages.append(Stage(i, sname, entry, chunks, params))
    return Manifest(name, version, tuple(stages))


def read_regular(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """A regular file of at most ``limit`` bytes, read whole.  Anything else (a FIFO, a device, a directory,
    a path with a NUL) or a larger file is a PackageError naming ``what`` and the path: no hang, no read without end."""
    try:
        return read_bounded(path, limit)
    except FileRefused as exc:
        if exc.kind == "nul":
            raise PackageError(f"{what} {str(path)!r}: {exc.reason}") from None
        raise PackageError(f"{what} {path}: {exc.reason}") from None


def load_manifest(directory: str | os.PathLike[str]) -> Manifest:
    path = Path(directory) / MANIFEST
    data = read_regular(path, MAX_MANIFEST, "manifest")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageError(f"{path}: {exc}") from None
    return parse_manifest(text, str(path))


def pack(directory: str | os.PathLike[str]) -> bytes:
    """The deterministic tar.gz of a package directory (its manifest is checked first)."""
    root = Path(directory)
    load_manifest(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for p in files:
                rel = p.relative_to(root).as_posix()
                data = read_regular(p, MAX_PACKAGE, "package file")
                info = tarfile.TarInfo(rel)
                info.size = len(data)
                info.mtime = 0
                info.mode = 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
                if buf.tell() > MAX_PACKAGE:  # early, not exact: the compressor holds some back
                    raise PackageError(f"package {root}: the archive is over the {MAX_PACKAGE}-byte limit at {rel}")
    if buf.tell() > MAX_PACKAGE:
        raise PackageError(f"package {root}: the archive is over the {MAX_PACKAGE}-byte limit (a kernel refuses it)")
    return buf.getvalue()


def digest(archive: bytes) -> bytes:
    """PACKAGE_DIGEST: SHA-256 of the archive."""
    return hashlib.sha256(archive).digest()


def sign(archive: bytes, key: SigningKey) -> bytes:
    """PACKAGE_SIG: the signing key id and the Ed25519 signature of the archive."""
    return key.sign(archive)


def store_put(store: str | os.PathLike[str], archive: bytes) -> bytes:
    """Write an archive into a content-addressed store; return its digest."""
    d = digest(archive)
    root = Path(store)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{d.hex()}.tar.gz"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".put-")
        with os.fdopen(fd, "wb") as f:
            f.write(archive)
        os.replace(tmp, target)
    return d


def verify(archive: bytes, want_digest: bytes, want_size: int, sig: bytes, key: VerifyKeys | None) -> None:
    """Check size, digest and (``key`` None only for an insecure kernel) signature; PackageError names the failure."""
    if len(archive) != want_size:
        raise PackageError(f"PACKAGE_SIZE says {want_size} bytes, the archive has {len(archive)}")
    if not hmac.compare_digest(digest(archive), want_digest):
        raise PackageError("PACKAGE_DIGEST does not match the archive's SHA-256")
    if key is not None and not key.verify(archive, sig):
        raise PackageError("PACKAGE_SIG is not an Ed25519 signature of the archive by a verification key")


def file_digests(archive: bytes) -> dict[str, bytes]:
    """SHA-256 of every member of a verified archive, by relative path: what the unpacked tree must hold."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for m in tar.getmembers():
                src = tar.extractfile(m) if m.isfile() else None
                if src is not None:
                    out[Path(m.name).as_posix()] = hashlib.sha256(src.read()).digest()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PackageError(f"archive: {exc}") from None
    return out


def verify_tree(root: str | os.PathLike[str], want: dict[str, bytes]) -> None:
    """Check an unpacked package holds exactly ``want`` (path -> SHA-256), regular files only.

    Run before every import: a file added (a planted module or ``__pycache__``), changed or
    removed since the verified unpack, or any symlink, fails with PackageError.
    """
    top = Path(root)
    seen: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = p.relative_to(top).as_posix()
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise PackageError(f"package file {rel!r}: not a regular file")
            seen[rel] = hashlib.sha256(p.read_bytes()).digest()
    extra = sorted(set(seen) - set(want))
    if extra:
        raise PackageError(f"package file {extra[0]!r} is not in the signed archive")
    for rel, d in want.items():
        if rel not in seen:
            raise PackageError(f"package file {rel!r} is missing")
        if not hmac.compare_digest(seen[rel], d):
            raise PackageError(f"package file {rel!r} does not match the signed archive")


def unpack(archive: bytes, dest: str | os.PathLike[str]) -> Manifest:
    """Unpack a verified archive into ``dest`` (regular files only, no path escapes); return its manifest.

    An existing ``dest`` is never trusted: the archive goes into a fresh private temporary
    directory, is checked, then renamed into place atomically (the old tree is moved aside first),
    unless ``dest`` already verifies, file for file, against this archive.
    """
    root = Path(dest)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for m in tar.getmembers():
                if not m.isfile():
                    raise PackageError(f"archive member {m.name!r}: only regular files are allowed")
                rel = Path(m.name)
                if rel.is_absolute() or ".." in rel.parts:
                    raise PackageError(f"archive member {m.name!r}: path leaves the package")
                out = tmp / rel
                out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                src = tar.extractfile(m)
                assert src is not None
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(src.read())
        manifest = load_manifest(tmp)
        want = file_digests(archive)
        verify_tree(tmp, want)
        if root.is_dir() and not root.is_symlink():
            try:  # the same verified tree already in place (another DIME of this server unpacked it): keep it,
                verify_tree(root, want)  # so a MICE verifying or importing from it is never pulled from under
                _rmtree(tmp)
                return manifest
            except PackageError:
                pass
        if root.exists() or root.is_symlink():
            aside = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-old-"))
            os.replace(root, aside / "tree")
            _rmtree(aside)
        os.replace(tmp, root)
        return manifest
    except (tarfile.TarError, OSError, EOFError) as exc:
        _rmtree(tmp)
        raise PackageError(f"archive: {exc}") from None
    except PackageError:
        _rmtree(tmp)
        raise


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def fetch_tree(
    store: str | os.PathLike[str],
    local: str | os.PathLike[str],
    want_digest: bytes,
    want_size: int,
    sig: bytes,
    key: VerifyKeys | None,
) -> tuple[Path, Manifest, dict[str, bytes]]:
    """Read ``<digest>.tar.gz`` from the central store, verify it, unpack it under the local store.

    Returns the tree, its manifest, and each file's SHA-256 (for :func:`verify_tree` before every import).
    """
    if want_size > MAX_PACKAGE:
        raise PackageError(f"PACKAGE_SIZE {want_size} is over the {MAX_PACKAGE}-byte limit")
    path = Path(store) / f"{want_digest.hex()}.tar.gz"
    archive = read_regular(path, MAX_PACKAGE, "central store")
    verify(archive, want_digest, want_size, sig, key)
    dest = Path(local) / "packages" / want_digest.hex()
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    manifest = unpack(archive, dest)
    return dest, manifest, file_digests(archive)


# ---------------------------------------------------------------- the local store (per server)

OBJECT_RE = re.compile(r"^[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,199}$")


class LocalStore:
    """Named objects in the server's local store, shared by its DIMEs (a directory of files).

    Names are relative paths of ``[A-Za-z0-9_.-/]`` without ``..``.  Writes are atomic
    (temp file + rename); :meth:`append` adds length-prefixed records.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root) / "objects"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        if not OBJECT_RE.fullmatch(name) or ".." in name.split("/"):
            raise ValueError(f"store object name {name!r} is not allowed")
        return self.root / name

    def get(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, name: str, data: bytes) -> None:
        p = self._path(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)

    def append(self, name: str, data: bytes) -> None:
        p = self._path(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "ab") as f:
            f.write(struct.pack("!I", len(data)) + data)

    def appender(self, name: str) -> Callable[[bytes], None]:
        """:meth:`append` for one object with its file kept open: each record one unbuffered ``write``, in
        the file when the call returns (a process killed after it loses nothing), without the open, mkdir
        and close that cost ``append`` about 20 times as much per record."""
        p = self._path(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        f = open(p, "ab", buffering=0)  # kept open for the life of the process

        def add(data: bytes) -> None:
            rec = memoryview(struct.pack("!I", len(data)) + data)
            while rec:
                rec = rec[f.write(rec) :]

        return add

    def records(self, name: str) -> list[bytes]:
        raw = self.get(name) or b""
        out, pos = [], 0
        while pos + 4 <= len(raw):
            (n,) = struct.unpack_from("!I", raw, pos)
            out.append(raw[pos + 4 : pos + 4 + n])
            pos += 4 + n
        return out

    def names(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())


def keyed_records(records: Iterable[bytes]) -> list[tuple[int, bytes]]:
    """(lineage, data) of keyed records (``lineage u64 | data``, see ``Context.commit`` in
    :mod:`pxproto.node.mice`), the first record of each lineage only."""
    out: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    for rec in records:
        if len(rec) < 8:
            continue  # a torn write (the process died mid-record): never committed
        (lin,) = struct.unpack_from("!Q", rec)
        if lin not in seen:
            seen.add(lin)
            out.append((lin, rec[8:]))
    return out
