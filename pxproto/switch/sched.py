"""The switch loop's standing with the scheduler: SCHED_FIFO (``realtime``) or a short EEVDF slice.

Under the normal scheduler (EEVDF, Linux 6.6 and later) a task's virtual deadline is its
eligible time plus its slice: a task that asks for a short slice (``sched_setattr`` with
``sched_runtime`` on a SCHED_OTHER task, Linux 6.12 and later, no privilege needed) is picked
sooner when it wakes, and may preempt a longer-slice task at once.  Over time it gets the same
share of the CPU as before: the slice moves latency, not throughput.
"""

from __future__ import annotations

import ctypes
import os
import struct

SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
SCHED_ATTR = struct.Struct("IIQiIQQQ")
"""struct sched_attr up to sched_period (SCHED_ATTR_SIZE_VER0, 48 bytes)."""


def set_slice(us: int) -> str | None:
    """Ask for a ``us`` microsecond slice under SCHED_OTHER for this thread: None, or why it was refused."""
    nr = SYS_SCHED_SETATTR.get(os.uname().machine)
    if nr is None:
        return f"sched_setattr: not known on {os.uname().machine}"
    attr = ctypes.create_string_buffer(
        SCHED_ATTR.pack(SCHED_ATTR.size, os.SCHED_OTHER, 0, os.getpriority(os.PRIO_PROCESS, 0), 0, us * 1000, 0, 0)
    )
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(nr, 0, attr, 0) != 0:
        return f"sched_setattr: {os.strerror(ctypes.get_errno())}"
    return None


def set_realtime(prio: int) -> str | None:
    """SCHED_FIFO at ``prio``: None, or why it was refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
