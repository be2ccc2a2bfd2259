"""What every benchmark does before it imports pxproto: make sure it measures the installed, compiled package.

Each script starts with::

    from _common import measure_installed  # bench/ is sys.path[0] when a script runs

    measure_installed()

- ``bench/`` is taken off ``sys.path``, so pxproto and everything else come from
  the environment (``pip install .``), never from a sibling script's name;
- when the pxproto imported is this source checkout (an editable install,
  ``PYTHONPATH=.``), it says so on stderr: the figures are the checkout's;
- when ``pxproto.fastpath`` is the pure twin (no compiled module, or
  ``PXPROTO_PURE=1``), it refuses to run: the figures would silently be the
  reference codec's.  ``--allow-pure`` (taken out of ``sys.argv`` here) runs anyway.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CHECKOUT = BENCH.parent
ALLOW_PURE = "--allow-pure"


def measure_installed() -> str:
    """Check the pxproto about to be measured; return a one-line description of it (also printed)."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    allow_pure = ALLOW_PURE in sys.argv
    sys.argv[:] = [a for a in sys.argv if a != ALLOW_PURE]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the fallback warning: said better below
        import pxproto
        import pxproto.fastpath as fp

    where = Path(pxproto.__file__).resolve().parent
    line = f"pxproto from {where} ({'compiled' if fp.COMPILED else 'PURE twin'} fast path)"
    print(line, file=sys.stderr)
    if where.is_relative_to(CHECKOUT):
        print(f"note: this is the source checkout {CHECKOUT}, not an installed copy", file=sys.stderr)
    if not fp.COMPILED and not allow_pure:
        sys.exit(
            f"{Path(sys.argv[0]).name}: pxproto.fastpath is the pure-Python twin (compiled module missing, or "
            f"{fp.PURE_ENV}=1): its figures would be the reference codec's. Install a built package "
            f"(pip install .) or pass {ALLOW_PURE} to measure the pure twin on purpose."
        )
    return line


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows of text cells (the first the header) in columns as wide as their widest cell."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
