"""The one place that chooses a compiled module or its pure-Python twin.

Every driver (the fast path, pxdump, the node's RX and heartbeat loops, the switch,
the orchestrator) asks :func:`compiled` for its extension and falls back to its twin
when it gets ``None``.  Two environment switches, read at each call:

- ``PXPROTO_PURE=1``: always the twins (CI runs the suite both ways);
- ``PXPROTO_REQUIRE_COMPILED=1``: a missing extension, or one built from other sources
  than those beside it (its ``BUILD_HASH``, see :mod:`pxproto.fastpath.buildhash`), is an
  ImportError instead of a silent fallback, so CI cannot test a stale fast path.

Standard library only: pxproto.fastpath imports this module first.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from types import ModuleType

from pxproto.fastpath import buildhash

PURE_ENV = "PXPROTO_PURE"
REQUIRE_ENV = "PXPROTO_REQUIRE_COMPILED"


class StaleBuildError(ImportError):
    """A compiled module whose sources changed after it was built (or that carries no hash)."""


def pure_forced() -> bool:
    """``PXPROTO_PURE=1``: the pure twins everywhere."""
    return os.environ.get(PURE_ENV) == "1"


def compiled_required() -> bool:
    """``PXPROTO_REQUIRE_COMPILED=1`` (and not ``PXPROTO_PURE=1``): no silent fallback."""
    return os.environ.get(REQUIRE_ENV) == "1" and not pure_forced()


def stale(module: ModuleType) -> str:
    """Why a compiled module does not match the sources beside it ("" when it does, or when
    its sources are not there to compare)."""
    built = getattr(module, "BUILD_HASH", "")
    path = getattr(module, "__file__", None)
    if not path:
        return ""
    pyx = Path(path).parent / (module.__name__.rsplit(".", 1)[-1] + ".pyx")
    if not pyx.exists():
        return ""
    if not built:
        return f"{module.__name__} carries no BUILD_HASH (not built by setup.py)"
    want = buildhash.module_hash(pyx)
    if built != want:
        return f"{module.__name__} was built from other sources (hash {built}, sources {want}): rebuild it"
    return ""


def compiled(name: str, *, warn: bool = False, twin: str = "the pure twin") -> ModuleType | None:
    """The compiled module ``name`` (dotted), or None when its pure twin is to be used.

    None under ``PXPROTO_PURE=1`` or when the extension is not built (with a
    RuntimeWarning if ``warn``); under ``PXPROTO_REQUIRE_COMPILED=1`` a missing or
    stale extension raises ImportError (:class:`StaleBuildError` when stale)."""
    if pure_forced():
        return None
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        if compiled_required():
            raise ImportError(f"{REQUIRE_ENV}=1 but {name} is not built ({exc})") from exc
        if warn:
            warnings.warn(f"{name}: compiled extension unavailable ({exc}); using {twin}", RuntimeWarning, 3)
        return None
    if compiled_required():
        why = stale(module)
        if why:
            raise StaleBuildError(f"{REQUIRE_ENV}=1: {why}")
    return module
