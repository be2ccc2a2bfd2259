"""pxdump's compiled hot paths, or None: each has a pure twin that prints the same bytes.

- ``index``: the module whose ``Indexer`` indexes pcap/pcapng: ``pxproto.fastpath._capindex``, or its
  twin :mod:`pxproto.fastpath.capindex` (never None: the pure twin is the fallback)
- ``lines``: ``_lines.write_lines``, one-line output (twin: :func:`pxproto.dump.oneline.render`)
- ``count``: ``_count.count_frames``, ``-q`` counting in one pass (twin: :meth:`pxproto.dump.stats.Stats.feed`)

``PXPROTO_PURE=1`` (as for :mod:`pxproto.fastpath`) or a missing build selects the twins.
Tests switch with :func:`use_compiled`.
"""

from __future__ import annotations

from types import ModuleType

from pxproto.fastpath import capindex as _pure_index
from pxproto.fastpath import select

index: ModuleType = _pure_index
lines: ModuleType | None = None
count: ModuleType | None = None
_loaded: tuple[ModuleType, ModuleType | None, ModuleType | None] = (_pure_index, None, None)


def _load() -> None:
    global index, lines, count, _loaded
    _index = select.compiled("pxproto.fastpath._capindex", warn=True)
    _lines = select.compiled("pxproto.dump._lines", warn=True)
    _count = select.compiled("pxproto.dump._count", warn=True)
    if _index is None or _lines is None or _count is None:
        return
    index, lines, count = _loaded = (_index, _lines, _count)


def compiled() -> bool:
    """Whether the compiled hot paths are in use."""
    return lines is not None


def use_compiled(on: bool) -> bool:
    """Switch between the compiled modules (when built) and the pure twins; returns the previous state."""
    global index, lines, count
    was = compiled()
    index, lines, count = _loaded if on else (_pure_index, None, None)
    return was


_load()
