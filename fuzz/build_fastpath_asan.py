"""Build pxproto.fastpath.wirec with AddressSanitizer and libFuzzer coverage, for atheris.

    CC=clang python fuzz/build_fastpath_asan.py

Writes fuzz/build/wirec*.so (and leaves the normal in-tree build alone); the fuzz
target loads that file in place of the regular extension.  Flags as the atheris
documentation gives for native extensions: -fsanitize=address,fuzzer-no-link.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "build"
FLAGS = ["-fsanitize=address,fuzzer-no-link", "-fno-omit-frame-pointer", "-g", "-O1"]


def main() -> int:
    os.chdir(ROOT)
    os.environ.setdefault("CC", "clang")
    os.environ["LDSHARED"] = f"{os.environ['CC']} -shared"
    ext = Extension(
        "pxproto.fastpath.wirec",
        ["pxproto/fastpath/wirec.pyx"],
        extra_compile_args=FLAGS,
        extra_link_args=["-fsanitize=address,fuzzer-no-link"],
    )
    modules = cythonize([ext], build_dir=str(OUT / "c"), compiler_directives={"language_level": "3"}, quiet=True)
    dist = Distribution({"ext_modules": modules})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(OUT / "lib")
    cmd.build_temp = str(OUT / "tmp")
    cmd.force = True
    cmd.ensure_finalized()
    cmd.run()
    built = next((OUT / "lib" / "pxproto" / "fastpath").glob("wirec*.so"))
    target = OUT / built.name
    shutil.copy(built, target)
    print(f"built {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
