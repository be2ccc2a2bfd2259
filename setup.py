"""Build the Cython extensions (the fast path); the package still installs without them."""

from __future__ import annotations

import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


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
        if os.environ.get("PXPROTO_REQUIRE_COMPILED") == "1":
            raise exc
        print(f"WARNING: pxproto fast path not compiled ({exc}); the reference codec will be used", file=sys.stderr)


def extensions() -> list:  # type: ignore[type-arg]
    sources = sorted(glob.glob("pxproto/**/*.pyx", recursive=True))
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("WARNING: Cython missing; the fast path is not compiled", file=sys.stderr)
        return []
    try:
        return cythonize(
            sources,
            compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False, "cdivision": True},
            quiet=True,
        )
    except Exception as exc:  # a Cython compile error: same policy as a C compiler failure
        if os.environ.get("PXPROTO_REQUIRE_COMPILED") == "1":
            raise
        print(f"WARNING: Cython failed ({exc}); the fast path is not compiled", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
