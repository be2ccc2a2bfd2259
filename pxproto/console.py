"""The console scripts' entry points: every ``px*`` command runs its ``main`` through :func:`run`.

:func:`run` makes a closed pipe end the command quietly, as it ends ``cat`` or
``grep``: ``pxfuzz kinds | head`` prints its lines and no traceback.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable

EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""What a shell reports for a Unix tool killed by SIGPIPE."""


def run(main: Callable[[], int | None]) -> int:
    """``main()``'s exit status; a reader that went away ends it with :data:`EXIT_BROKEN_PIPE`, silently."""
    try:
        status = main()
        sys.stdout.flush()  # inside the try: a pipe closed under buffered output breaks here
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return status or 0


def _entry(module: str) -> Callable[[], None]:
    def entry() -> None:
        sys.exit(run(importlib.import_module(module).main))

    entry.__doc__ = f"The console script running {module}.main."
    return entry


pxdump = _entry("pxproto.dump.cli")
pxdissect = _entry("pxproto.dissect.cli")
pxswitch = _entry("pxproto.switch.cli")
pxkernel = _entry("pxproto.node.cli")
pxorch = _entry("pxproto.orch.cli")
pxfuzz = _entry("pxproto.fuzz.cli")
