"""The C heap of a long-running frame relay: large buffers are reused, not mapped and faulted in again per frame.

glibc returns the free top of its heap to the kernel once it exceeds ``M_TRIM_THRESHOLD`` (128 KiB at first), and
serves a request of ``M_MMAP_THRESHOLD`` or more (128 KiB at first) with a fresh mapping.  A process that receives
a burst of 64 KiB frames, relays them and frees them (pxkernel's relay, pxswitch) thus grows its heap by megabytes,
gives it back, and faults every page in again (zeroed by the kernel) on the next burst: measured with ``perf record``
during ``bench/channel.py`` at 1400 B items, 17% of the sink server's CPU and 6% of pxswitch's went to page faults
(``exc_page_fault``, ``clear_page_erms``), none with the settings below.

A DIME takes them too; the MICE it forks, which lives within its memory limit, goes back to glibc's first
thresholds (:func:`default_heap`), so freed memory is returned as before.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
TRIM_BYTES = 16 << 20
"""Free heap top kept, not returned to the kernel (a burst of 64 frames of 64 KiB is 4 MiB)."""
TOP_PAD_BYTES = 1 << 20
"""Extra heap asked of the kernel each time it grows."""
MMAP_BYTES = 4 << 20
"""Requests below this come from the heap (frames, record batches), not from a mapping of their own."""


GLIBC_FIRST = 128 << 10
"""glibc's first mmap and trim thresholds, and its default top pad."""


def _mallopt(settings: tuple[tuple[int, int], ...]) -> bool:
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all([mallopt(param, value) == 1 for param, value in settings])


def keep_heap() -> bool:
    """Set the thresholds above (glibc's ``mallopt``); False where there is no glibc or it refused one."""
    return _mallopt(((M_MMAP_THRESHOLD, MMAP_BYTES), (M_TRIM_THRESHOLD, TRIM_BYTES), (M_TOP_PAD, TOP_PAD_BYTES)))


def default_heap() -> bool:
    """Back to glibc's first thresholds (a forked MICE: what it frees goes back to the kernel, within its limit)."""
    return _mallopt(((M_MMAP_THRESHOLD, GLIBC_FIRST), (M_TRIM_THRESHOLD, GLIBC_FIRST), (M_TOP_PAD, GLIBC_FIRST)))
