"""Vectorised text: numpy columns in, one line of bytes per row out.

A :class:`Seg` is a matrix of bytes, one left-justified piece per row, with
the piece's length per row; :func:`join` lays the segments of every row side
by side and drops the unused bytes in one boolean index, so a line costs a
few vector operations whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

_P10 = np.array([10**k for k in range(20)], np.uint64)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


@dataclass
class Seg:
    mat: np.ndarray
    """uint8, rows x width."""
    lens: np.ndarray
    """int64, bytes used in each row."""

    def when(self, mask: np.ndarray) -> Seg:
        """The same piece, present only where ``mask`` holds."""
        return Seg(self.mat, np.where(mask, self.lens, 0))


def lit(text: str, n: int) -> Seg:
    raw = np.frombuffer(text.encode(), np.uint8)
    return Seg(np.broadcast_to(raw, (n, len(raw))), np.full(n, len(raw), np.int64))


def dec(values: np.ndarray) -> Seg:
    """Unsigned integers in decimal, no padding."""
    v = values.astype(np.uint64)
    n = len(v)
    if n == 0:
        return Seg(np.zeros((0, 1), np.uint8), np.zeros(0, np.int64))
    nd = np.maximum(np.searchsorted(_P10, v, side="right"), 1).astype(np.int64)
    width = int(nd.max())
    exps = nd[:, None] - 1 - np.arange(width)[None, :]
    digits = (v[:, None] // _P10[np.clip(exps, 0, None)]) % np.uint64(10)
    return Seg((digits + np.uint64(48)).astype(np.uint8), nd)


def fixed(values: np.ndarray, width: int) -> Seg:
    """Unsigned integers in decimal, zero-padded to ``width`` digits."""
    v = values.astype(np.uint64) % _P10[width] if width < 20 else values.astype(np.uint64)
    digits = (v[:, None] // _P10[np.arange(width - 1, -1, -1)][None, :]) % np.uint64(10)
    return Seg((digits + np.uint64(48)).astype(np.uint8), np.full(len(v), width, np.int64))


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


def table(codes: np.ndarray, names: Mapping[int, str], size: int = 256) -> Seg:
    """Codes looked up in a name table; a code without a name prints as 0xNN."""
    words = [names.get(c, f"0x{c:02x}").encode() for c in range(size)]
    width = max(len(w) for w in words)
    tab = np.zeros((size, width), np.uint8)
    for c, w in enumerate(words):
        tab[c, : len(w)] = np.frombuffer(w, np.uint8)
    lens = np.array([len(w) for w in words], np.int64)
    idx = np.minimum(codes.astype(np.intp), size - 1)
    return Seg(tab[idx], lens[idx])


def join(segs: list[Seg], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows' pieces end to end: (bytes of every line back to back, line lengths)."""
    used = [s for s in segs if s.mat.shape[1] and s.lens.any()]
    if not used or n == 0:
        return np.zeros(0, np.uint8), np.zeros(n, np.int64)
    total = sum(s.mat.shape[1] for s in used)
    big = np.empty((n, total), np.uint8)
    keep = np.empty((n, total), bool)
    col = 0
    for s in used:
        w = s.mat.shape[1]
        big[:, col : col + w] = s.mat
        keep[:, col : col + w] = np.arange(w)[None, :] < s.lens[:, None]
        col += w
    return big[keep], keep.sum(axis=1)
