"""Columnar decode results: one numpy array per field, one row per frame.

Both the compiled batch decoder and the pure fallback fill the arrays named
in :data:`COLUMNS`; :class:`Columns` wraps them with field-name error lookup
and a filter.  ``ethertype`` is filled for every row of 14 bytes or more; the
header columns when the row has a Parallax EtherType and a whole header (also
on invalid rows, so malformed traffic can still be filtered by address); the
body, trailer and ``padding`` columns only on valid rows, and only those of the
row's class.  Every other cell is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from pxproto.wire.layout import ERROR_CODES, ERROR_FIELDS

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("offset", "i8", "byte offset of the frame in the buffer"),
    ("length", "u4", "captured length of the frame"),
    ("ts_ns", "i8", "capture time in ns (0 when unknown)"),
    ("cls", "u1", "FrameClass 1..4, 0 = not a Parallax frame (EtherType, short, or not Ethernet)"),
    ("valid", "?", "the frame passes every rule of the codec"),
    ("error", "u1", "error code, index into ERROR_FIELDS (0 = valid)"),
    ("error_offset", "i4", "byte offset of the offending field"),
    ("ethertype", "u2", "Ethernet type"),
    ("version", "u1", "header version"),
    ("flags", "u1", "header flags byte"),
    ("scope", "u1", "0 SYSTEM, 1 DIME"),
    ("body_len", "u2", "header length field (body bytes)"),
    ("src_dime", "u2", ""),
    ("src_thread", "u2", ""),
    ("dst_dime", "u2", ""),
    ("dst_thread", "u2", ""),
    ("seq", "u8", ""),
    ("has_auth", "?", "an authentication trailer follows the body"),
    ("padding", "u2", "zero padding bytes"),
    ("req_id", "u4", "signaling"),
    ("cmd", "u1", "signaling Command code"),
    ("op", "u1", "signaling Op code"),
    ("status", "u1", "signaling Status code"),
    ("tlv_count", "u1", "signaling"),
    ("channel", "u2", "data"),
    ("data_flags", "u1", "data flags (ACK 1, FIN 2)"),
    ("msg_id", "u4", "data"),
    ("msg_len", "u4", "data"),
    ("frag_offset", "u4", "data"),
    ("frag_index", "u2", "data"),
    ("frag_count", "u2", "data"),
    ("ack", "u4", "data"),
    ("credit", "u2", "data"),
    ("payload_len", "u4", "data payload bytes"),
    ("disc_op", "u1", "discovery DiscoveryOp code"),
    ("state_filter", "u1", "discovery"),
    ("disc_count", "u2", "discovery: DIME records"),
    ("probe_id", "u4", "discovery"),
    ("hb_epoch", "u4", "heartbeat"),
    ("hb_state", "u1", "heartbeat DimeState code"),
    ("hb_period_ms", "u2", "heartbeat"),
    ("hb_cpu_permille", "u2", "heartbeat"),
    ("hb_stage", "u2", "heartbeat"),
    ("hb_service", "u4", "heartbeat"),
    ("auth_key_id", "u2", "trailer"),
    ("auth_counter", "u8", "trailer"),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)


def empty(n: int) -> dict[str, np.ndarray]:
    """Zeroed arrays for ``n`` frames."""
    return {name: np.zeros(n, dtype=dt) for name, dt, _ in COLUMNS}


class Columns:
    """Decoded fields of many frames, one numpy array per field (see COLUMNS)."""

    offset: np.ndarray
    length: np.ndarray
    ts_ns: np.ndarray
    cls: np.ndarray
    valid: np.ndarray
    error: np.ndarray
    error_offset: np.ndarray

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        missing = set(COLUMN_NAMES) - set(arrays)
        if missing:
            raise ValueError(f"missing columns: {sorted(missing)}")
        self.arrays = arrays
        for name in COLUMN_NAMES:
            setattr(self, name, arrays[name])

    def __len__(self) -> int:
        return len(self.arrays["offset"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __getattr__(self, name: str) -> Any:  # only reached for names not set in __init__ (keeps mypy quiet)
        raise AttributeError(name)

    @property
    def errors(self) -> np.ndarray:
        """The ProtocolError.field of each row ("" for a valid row), as a numpy str array."""
        return np.asarray(ERROR_FIELDS, dtype=object)[self.error]

    def error_field(self, i: int) -> str:
        return ERROR_FIELDS[int(self.error[i])]

    def take(self, rows: np.ndarray | slice) -> Columns:
        """The rows selected by a boolean mask, an index array or a slice."""
        return Columns({k: v[rows] for k, v in self.arrays.items()})

    def mask(self, **conditions: Any) -> np.ndarray:
        """Rows where every condition holds; see :func:`filter_mask`."""
        return filter_mask(self, **conditions)

    def filter(self, **conditions: Any) -> Columns:
        return self.take(self.mask(**conditions))


def filter_mask(cols: Columns, **conditions: Any) -> np.ndarray:
    """A boolean mask over ``cols``: each keyword names a column (or ``error`` with a field
    name) and gives a value (equality; enums work), a collection (any of), a ``(lo, hi)``
    range given as a ``slice(lo, hi)`` (hi exclusive), or a callable taking the array::

        cols.mask(cls=FrameClass.SIGNALING, cmd=[Command.PING, Command.RESET], valid=True)
        cols.mask(error="tlv.length")
        cols.mask(seq=slice(100, 200), src_dime=lambda a: a % 2 == 0)
    """
    out = np.ones(len(cols), dtype=bool)
    for name, want in conditions.items():
        if name not in cols.arrays:
            raise KeyError(f"no column {name!r}; columns are {', '.join(COLUMN_NAMES)}")
        col = cols.arrays[name]
        if name == "error":
            want = _error_codes(want)
        out &= _match(col, want)
    return out


def _error_codes(want: Any) -> Any:
    if isinstance(want, str):
        if want not in ERROR_CODES:
            raise KeyError(f"no error field {want!r}")
        return ERROR_CODES[want]
    if isinstance(want, list | tuple | set | frozenset):
        return [_error_codes(w) for w in want]
    return want


def _match(col: np.ndarray, want: Any) -> np.ndarray:
    if callable(want) and not isinstance(want, type):
        return np.asarray(want(col), dtype=bool)
    if isinstance(want, slice):
        m = np.ones(len(col), dtype=bool)
        if want.start is not None:
            m &= col >= want.start
        if want.stop is not None:
            m &= col < want.stop
        return m
    if isinstance(want, Iterable) and not isinstance(want, str | bytes):
        return np.isin(col, [int(w) for w in want])
    return col == int(want)


Predicate = Callable[[np.ndarray], np.ndarray]
