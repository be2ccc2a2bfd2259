"""The fast path: compiled codecs derived from the spec, with a pure-Python twin.

Single frames (same results as :mod:`pxproto.wire`, exactly)::

    decode(buf) -> Frame          # the reference Frame dataclasses; ProtocolError with the same field/offset
    encode(frame) -> bytes        # same bytes; ProtocolError where pxproto.wire.encode raises
    view(buf) -> FrameView        # lazy: validated, fields read on access; == Frame, to_dict() identical
    check(buf) -> (field, offset) # ("", 0) when valid; no Frame built

Batch (no Python object per frame; pxdump, the switch)::

    idx = index_capture(buf)                      # whole pcap/pcapng file in memory (compiled indexer)
    # -> CaptureIndex(offsets, lengths, ts_ns, linktype, wirelens), numpy arrays, one row per frame;
    #    a damaged file raises pxproto.capture.CaptureError (field, offset) with .partial = the
    #    CaptureIndex of the frames before the damage.
    ix = Indexer()                                # the same, fed in pieces (a pipe)
    off, lengths, wirelens, ts_ns, linktypes, consumed = ix.feed(data, final)
    #    data = the bytes after what was consumed so far; a record cut by the end of data waits
    #    for the next call unless final; ix.error = (field, offset, reason) once damage stops it.
    cols = decode_columns(buf, idx.offsets, idx.lengths, ts_ns=idx.ts_ns, linktypes=idx.linktype)
    cols = decode_capture(buf)                    # the two steps above in one
    # -> Columns: numpy arrays as attributes (cols.cls, cols.valid, cols.seq, cols.cmd, ...; the list
    #    is columns.COLUMNS), cols.errors (ProtocolError.field per row, "" if valid), cols.error_field(i)
    ping = cols.filter(cls=FrameClass.SIGNALING, cmd=Command.PING, valid=True)   # filter_mask()
    decode_columns(block, offsets, lengths, out=cols)   # refill preallocated columns (ring blocks)

``cls`` is 0 for a row that is not a Parallax frame (EtherType, too short, or
link type not Ethernet); ``error`` is an index into ERROR_FIELDS.

C level: the codec is plain C, ``pxproto/fastpath/px_codec.h``, generated from the spec
(``python -m pxproto.wire.gen_fastpath``) and freestanding (a bare-metal program #includes
it).  Cython: ``from pxproto.fastpath.wirec cimport PxView, px_view, px_put_*`` and
``from pxproto.fastpath.wiregen cimport *`` (see wirec.pxd).

``COMPILED`` says which implementation is in use, as chosen by
:func:`pxproto.fastpath.select.compiled`: ``PXPROTO_PURE=1`` forces the pure one; a
missing extension falls back to it with one warning, or fails under
``PXPROTO_REQUIRE_COMPILED=1`` (as does a stale one).  The C copy of
the EtherType map follows :func:`pxproto.wire.ethertypes.configure`.
"""

from __future__ import annotations

from typing import Any

from pxproto.fastpath import capindex as _pure_capindex
from pxproto.fastpath import select
from pxproto.fastpath.capindex import CaptureIndex, index_with
from pxproto.fastpath.columns import COLUMN_NAMES, COLUMNS, Columns, empty, filter_mask
from pxproto.wire.layout import ERROR_CODES, ERROR_FIELDS

PURE_ENV = select.PURE_ENV
_TWIN = "the reference codec"
_impl: Any = select.compiled("pxproto.fastpath.wirec", warn=True, twin=_TWIN)
_index_impl: Any = select.compiled("pxproto.fastpath._capindex", warn=True, twin=_TWIN) if _impl else None
COMPILED = _impl is not None and _index_impl is not None
if not COMPILED:
    from pxproto.fastpath import pure as _impl

    _index_impl = _pure_capindex  # not named _capindex: that would shadow the submodule

decode = _impl.decode
encode = _impl.encode
view = _impl.view
check = _impl.check
Indexer = _index_impl.Indexer
"""The incremental capture indexer in use (compiled, or the pure twin :class:`capindex.Indexer`)."""


def index_capture(buf: Any) -> CaptureIndex:
    """Index every frame of a whole pcap/pcapng file in memory; CaptureError (with ``.partial``) on damage."""
    return index_with(Indexer(), buf)


def decode_columns(
    buf: Any,
    offsets: Any,
    lengths: Any,
    *,
    ts_ns: Any = None,
    linktypes: Any = None,
    out: Columns | None = None,
) -> Columns:
    """Decode the frames ``buf[offsets[i] : offsets[i] + lengths[i]]`` into columns.

    ``out`` reuses preallocated columns of the same length (they are cleared first)."""
    n = len(offsets)
    if out is None:
        arrays = empty(n)
    else:
        if len(out) != n:
            raise ValueError(f"out has {len(out)} rows, there are {n} frames")
        arrays = out.arrays
        for a in arrays.values():
            a.fill(0)
    if ts_ns is not None:
        arrays["ts_ns"][:] = ts_ns
    _impl.decode_columns_into(buf, offsets, lengths, arrays, linktypes)
    return out if out is not None else Columns(arrays)


def decode_capture(buf: Any) -> Columns:
    """Index and decode a whole pcap/pcapng file in memory (CaptureError as index_capture)."""
    idx = index_capture(buf)
    return decode_columns(buf, idx.offsets, idx.lengths, ts_ns=idx.ts_ns, linktypes=idx.linktype)


def error_field(code: int) -> str:
    """The ProtocolError.field of a batch error code."""
    return ERROR_FIELDS[code]


__all__ = [
    "COLUMNS",
    "COLUMN_NAMES",
    "COMPILED",
    "ERROR_CODES",
    "ERROR_FIELDS",
    "CaptureIndex",
    "Columns",
    "Indexer",
    "check",
    "decode",
    "decode_capture",
    "decode_columns",
    "encode",
    "error_field",
    "filter_mask",
    "index_capture",
    "view",
]
