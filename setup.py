"""Build the Cython extensions (the fast path); the package still installs without them.

Every extension is compiled against the generated C codec (pxproto/fastpath/px_codec.h)
and embeds the hash of its sources (pxproto/fastpath/buildhash.py), so an old compiled
module left beside changed sources is refused at import under PXPROTO_REQUIRE_COMPILED=1.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
FASTPATH_DIR = "pxproto/fastpath"


def require_compiled() -> bool:
    return os.environ.get("PXPROTO_REQUIRE_COMPILED") == "1"


def _buildhash():  # type: ignore[no-untyped-def]
    # by path: pxproto itself (numpy, construct) need not be importable while building
    spec = importlib.util.spec_from_file_location("_pxproto_buildhash", HERE / FASTPATH_DIR / "buildhash.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class OptionalBuildExt(build_ext):
    """Compile what can be compiled; warn once and go on when a compiler is missing,
    unless PXPROTO_REQUIRE_COMPILED=1 (CI) asks for a hard failure."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # a missing compiler surfaces as several error types
            self._fail(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if require_compiled():
            raise exc
        print(f"WARNING: pxproto fast path not compiled ({exc}); the reference codec will be used", file=sys.stderr)


def extensions() -> list:  # type: ignore[type-arg]
    sources = sorted(glob.glob("pxproto/**/*.pyx", recursive=True))
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if require_compiled():
            raise SystemExit("PXPROTO_REQUIRE_COMPILED=1 but Cython is missing: no fast path can be built") from None
        print("WARNING: Cython missing; the fast path is not compiled", file=sys.stderr)
        return []
    try:
        exts = cythonize(
            sources,
            compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False, "cdivision": True},
            quiet=True,
        )
    except Exception as exc:  # a Cython compile error: same policy as a C compiler failure
        if require_compiled():
            raise
        print(f"WARNING: Cython failed ({exc}); the fast path is not compiled", file=sys.stderr)
        return []
    buildhash = _buildhash()
    for ext in exts:
        pyx = HERE / (ext.name.replace(".", "/") + ".pyx")
        if FASTPATH_DIR not in ext.include_dirs:
            ext.include_dirs.append(FASTPATH_DIR)
        ext.define_macros.append(("PXPROTO_BUILD_HASH", f'"{buildhash.module_hash(pyx, HERE)}"'))
        # the hash changes whenever a dependency does; make setuptools rebuild on the same files
        ext.depends.extend(str(p.relative_to(HERE)) for p in buildhash.dependencies(pyx, HERE))
    return exts


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
