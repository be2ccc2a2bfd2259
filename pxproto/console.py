"""The console scripts' entry points: every ``px*`` command runs its ``main`` through :func:`run`.

:func:`run` makes a closed pipe end the command quietly, as it ends ``cat`` or
``grep``: ``pxfuzz kinds | head`` prints its lines and no traceback.  A bad environment
setting (:class:`pxproto.errors.SettingError`, e.g. ``PXPROTO_ETHERTYPES=bogus``, found when the
command's modules are imported) ends it with one line naming the variable and exit status 2.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable

from pxproto.errors import SettingError

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


EXIT_SETTING = 2
"""A bad environment setting: the exit status of a bad command-line option."""


def _entry(name: str, module: str) -> Callable[[], None]:
    def entry() -> None:
        try:
            main = importlib.import_module(module).main
            status = run(main)
        except SettingError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            status = EXIT_SETTING
        sys.exit(status)

    entry.__doc__ = f"The console script running {module}.main."
    return entry


pxdump = _entry("pxdump", "pxproto.dump.cli")
pxdissect = _entry("pxdissect", "pxproto.dissect.cli")
pxswitch = _entry("pxswitch", "pxproto.switch.cli")
pxkernel = _entry("pxkernel", "pxproto.node.cli")
pxorch = _entry("pxorch", "pxproto.orch.cli")
pxfuzz = _entry("pxfuzz", "pxproto.fuzz.cli")
