"""Kernel C code run on the host: a driver (tests/c/NAME.c) built with the host gcc beside some of
kernel/'s sources, then fed one command a line on stdin, answering one line each."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernel"


class HostDriver:
    """A running driver: :meth:`ask` writes a line and returns its answer line."""

    def __init__(self, workdir: Path, name: str, *kernel_sources: str) -> None:
        exe = workdir / name
        subprocess.run(
            ["gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{KERNEL}",
             str(ROOT / "tests" / "c" / f"{name}.c"), *(str(KERNEL / src) for src in kernel_sources), "-o", str(exe)],
            check=True,
        )  # fmt: skip
        self.name = name
        self.p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, line: str) -> str:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        got = self.p.stdout.readline().strip()
        assert got, f"{self.name} ended on {line[:40]!r}"
        return got

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.wait(timeout=10)
