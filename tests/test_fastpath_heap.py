"""pxproto.fastpath.heap: with its settings, relaying bursts of large frames stops faulting pages in each time."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from pxproto.fastpath import heap

BURSTS = """
import resource, sys
from pxproto.fastpath import heap
kept = heap.keep_heap() if sys.argv[1] in ("keep", "reset") else None
if sys.argv[1] == "reset":  # a MICE forked from a DIME: back to glibc's first thresholds
    kept = heap.default_heap()
def burst():  # a relay's receive: 64 frames of 64 KiB held at once, then freed
    frames = [bytes(65_000) + b"x" for _ in range(64)]
    del frames
burst()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    burst()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", BURSTS, mode], capture_output=True, text=True, check=True, timeout=60)
    kept, n = out.stdout.split()
    return kept, int(n)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_kept_heap_faults_far_fewer_pages_per_burst() -> None:
    kept, with_settings = faults("keep")
    _, without = faults("plain")
    assert kept == "True"
    assert without > 50 * 64 * 65_000 // 4096 // 2  # the default heap faults most pages of every burst in again
    assert with_settings < without // 20, (with_settings, without)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_default_heap_undoes_keep_heap() -> None:
    """A forked MICE returns what it frees again (its memory limit counts what its heap keeps)."""
    kept, reset = faults("reset")
    _, kept_faults = faults("keep")
    assert kept == "True"
    assert reset > 50 * 64 * 65_000 // 4096 // 2, (reset, kept_faults)


def test_keep_heap_says_false_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert heap.keep_heap() is False
