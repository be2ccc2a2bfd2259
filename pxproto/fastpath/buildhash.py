"""The source hash each compiled module embeds, so a stale build is caught at import.

``setup.py`` computes :func:`module_hash` for every ``.pyx`` and passes it to the C
compiler as ``PXPROTO_BUILD_HASH``; each compiled module exposes it as ``BUILD_HASH``
(through ``pxproto/fastpath/buildinfo.pxd``).  :mod:`pxproto.fastpath.select` computes
the hash again from the sources beside the module and, under
``PXPROTO_REQUIRE_COMPILED=1``, refuses a module whose sources changed after it was
built.  The hash covers what the Cython dependency tracker rebuilds on: the ``.pyx``,
its own ``.pxd``, every file it ``include``s, every ``pxproto`` ``.pxd`` it ``cimport``s
(transitively) and every quoted header it declares ``extern`` (px_codec.h).

Standard library only: setup.py loads this file by path, before pxproto is importable.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
"""The directory that holds the ``pxproto`` package."""

_CIMPORT = re.compile(r"^\s*(?:from\s+(pxproto(?:\.\w+)+)\s+cimport|cimport\s+(pxproto(?:\.\w+)+))", re.M)
_INCLUDE = re.compile(r'^\s*include\s+"([^"]+)"', re.M)
_EXTERN = re.compile(r'^\s*cdef\s+extern\s+from\s+"([^"<>]+)"', re.M)


def dependencies(source: Path, root: Path = PACKAGE_ROOT) -> list[Path]:
    """The files a Cython source depends on inside the package, itself first, in a stable order."""
    seen: dict[Path, None] = {}
    todo = [source.resolve()]
    own_pxd = source.with_suffix(".pxd")
    if source.suffix == ".pyx" and own_pxd.exists():
        todo.append(own_pxd.resolve())
    while todo:
        path = todo.pop(0)
        if path in seen or not path.exists():
            continue
        seen[path] = None
        if path.suffix == ".h":
            continue
        text = path.read_text()
        for m in _CIMPORT.finditer(text):
            dotted = m.group(1) or m.group(2)
            todo.append((root / Path(*dotted.split("."))).with_suffix(".pxd"))
        for m in _INCLUDE.finditer(text):
            todo.append(path.parent / m.group(1))
        for m in _EXTERN.finditer(text):
            # quoted headers are found beside the including file or in pxproto/fastpath (setup.py's -I)
            for where in (path.parent, root / "pxproto" / "fastpath"):
                if (where / m.group(1)).exists():
                    todo.append(where / m.group(1))
                    break
    return list(seen)


def module_hash(source: Path, root: Path = PACKAGE_ROOT) -> str:
    """16 hex digits over the names and bytes of :func:`dependencies`."""
    h = hashlib.sha256()
    for path in dependencies(source, root):
        h.update(path.resolve().relative_to(root.resolve()).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
