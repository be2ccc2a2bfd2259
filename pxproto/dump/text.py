"""Vectorised text: numpy columns in, one line of bytes per row out.

A :class:`Seg` is one piece of text for some rows (all, or an index array):
a matrix of bytes with, per row, where the piece starts in its matrix row and
how long it is.  :func:`join` writes every row's pieces end to end, in the
order of the list, straight into one output buffer; the cost is a few vector
operations per piece plus a pass over the output bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


@dataclass
class Seg:
    mat: np.ndarray
    """uint8, (rows x width), or (1 x width) for the same text on every row."""
    lens: np.ndarray
    """int64, bytes used in each row."""
    start: np.ndarray | None = None
    """Column where each row's piece starts (None: column 0)."""
    rows: np.ndarray | None = None
    """The rows (of the whole batch) this piece belongs to; None: every row."""

    def when(self, mask: np.ndarray) -> Seg:
        """The same piece, present only where ``mask`` (over this piece's rows) holds."""
        return Seg(self.mat, np.where(mask, self.lens, 0), self.start, self.rows)

    def at(self, rows: np.ndarray | None) -> Seg:
        return Seg(self.mat, self.lens, self.start, rows)


def lit(text: str, n: int) -> Seg:
    raw = np.frombuffer(text.encode(), np.uint8)
    return Seg(raw[None, :], np.full(n, len(raw), np.int64))


def dec(values: np.ndarray) -> Seg:
    """Unsigned integers in decimal, no padding."""
    n = len(values)
    if n == 0:
        return Seg(np.zeros((0, 1), np.uint8), np.zeros(0, np.int64))
    top = int(values.max())
    v: np.ndarray = values.astype(np.uint32 if top < 2**32 else np.uint64)
    width = len(str(top))
    mat = np.empty((n, width), np.uint8)
    nd = np.ones(n, np.int64)
    ten: Any = v.dtype.type(10)
    for j in range(width - 1, -1, -1):
        mat[:, j] = v % ten
        v = v // ten
        if j:
            nd += v > 0
    mat += 48
    return Seg(mat, nd, width - nd)


def fixed(values: np.ndarray, width: int) -> Seg:
    """Unsigned integers in decimal, zero-padded (or cut) to ``width`` digits."""
    v = values.astype(np.uint64)
    mat = np.empty((len(v), width), np.uint8)
    ten = np.uint64(10)
    for j in range(width - 1, -1, -1):
        mat[:, j] = v % ten
        v = v // ten
    mat += 48
    return Seg(mat, np.full(len(v), width, np.int64))


def hexnum(values: np.ndarray, width: int) -> Seg:
    """Unsigned integers in lower-case hex, zero-padded to ``width`` digits."""
    v = values.astype(np.uint64)
    shifts = (4 * np.arange(width - 1, -1, -1)).astype(np.uint64)
    nib = (v[:, None] >> shifts[None, :]) & np.uint64(15)
    return Seg(_HEX[nib.astype(np.intp)], np.full(len(v), width, np.int64))


def mac(values: np.ndarray) -> Seg:
    """48-bit integers as aa:bb:cc:dd:ee:ff."""
    h = hexnum(values, 12).mat
    out = np.full((len(values), 17), ord(":"), np.uint8)
    for k in range(6):
        out[:, 3 * k : 3 * k + 2] = h[:, 2 * k : 2 * k + 2]
    return Seg(out, np.full(len(values), 17, np.int64))


@lru_cache(maxsize=64)
def _table(names: tuple[tuple[int, str], ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    known = dict(names)
    words = [known.get(c, f"0x{c:02x}").encode() for c in range(size)]
    width = max(len(w) for w in words)
    tab = np.zeros((size, width), np.uint8)
    for c, w in enumerate(words):
        tab[c, : len(w)] = np.frombuffer(w, np.uint8)
    return tab, np.array([len(w) for w in words], np.int64)


def table(codes: np.ndarray, names: Mapping[int, str], size: int = 256) -> Seg:
    """Codes looked up in a name table; a code without a name prints as 0xNN."""
    tab, lens = _table(tuple(sorted(names.items())), size)
    idx = np.minimum(codes.astype(np.intp), size - 1)
    return Seg(tab[idx], lens[idx])


def join(segs: list[Seg], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's pieces end to end: (bytes of all lines back to back, each line's length)."""
    line = np.zeros(n, np.int64)
    for s in segs:
        if s.rows is None:
            line += s.lens
        else:
            line[s.rows] += s.lens  # a piece's rows are distinct
    pos = np.cumsum(line) - line
    out = np.empty(int(line.sum()), np.uint8)
    for s in segs:
        rows = np.arange(n) if s.rows is None else s.rows
        lens = s.lens
        if not len(rows) or not lens.any():
            continue
        w = s.mat.shape[1]
        here = pos[rows]
        if s.start is None and not ((lens > 0) & (lens < w)).any():
            # Whole-width piece (or absent) on every row: one 2-D copy.
            on = lens == w
            mat = s.mat if s.mat.shape[0] == 1 or on.all() else s.mat[on]
            out[here[on][:, None] + np.arange(w)[None, :]] = mat
        else:
            total = int(lens.sum())
            which = np.repeat(np.arange(len(rows)), lens)
            k = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
            col = k if s.start is None else s.start[which] + k
            src = s.mat[0, col] if s.mat.shape[0] == 1 else s.mat[which, col]
            out[here[which] + k] = src
        pos[rows] += lens
    return out, line
