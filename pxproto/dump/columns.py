"""A batch of captured frames as numpy columns: what every pxdump view reads.

A :class:`Batch` holds one buffer with the frames back to back, their offsets
and lengths, capture times, and one column per fixed-width field of the spec
(named ``<struct>.<field>`` after :mod:`pxproto.wire.layout`, header fields
bare).  Validity comes from a decoder: :func:`pxproto.fastpath` when it is
built, else the reference codec frame by frame (:func:`from_packets`).  Field
values are read at the layout's byte offsets, so they are defined for every
frame long enough to hold them, valid or not, exactly as a BPF filter sees them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from pxproto.capture.pcapng import Packet
from pxproto.errors import ProtocolError
from pxproto.wire import ethertypes, layout, spec
from pxproto.wire.codec import decode
from pxproto.wire.codes import FrameClass

KIND_OTHER = 0
"""``kind`` of a frame whose EtherType is not a Parallax one."""

_DTYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32, 6: np.uint64, 8: np.uint64}


@dataclass(frozen=True)
class FieldColumn:
    """Where a column's value sits in the frame."""

    name: str
    offset: int
    """Byte offset from the start of the Ethernet frame."""
    size: int
    cls: FrameClass | None
    """The class whose body holds it; None for Ethernet and header fields."""
    values: dict[int, str] = field(default_factory=dict)


def _field_columns() -> dict[str, FieldColumn]:
    out: dict[str, FieldColumn] = {}
    tables = layout.struct_tables()
    for prefix, base in layout.PREFIX_BASE.items():
        for f in tables[prefix][1]:
            if f.size not in _DTYPES:
                continue
            name = f"{prefix}.{f.name}" if prefix else f.name
            out[name] = FieldColumn(name, base + f.offset, f.size, layout.PREFIX_CLASS.get(prefix), f.values)
    return out


FIELDS = _field_columns()
"""Every fixed field pxdump keeps a column of: eth.*, header, sig.*, data.*, disc.*, hb.*."""


@dataclass
class Batch:
    """Frames ``i`` in ``buf[offset[i] : offset[i] + caplen[i]]`` with their columns."""

    buf: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray
    kind: np.ndarray
    """0 for a non-Parallax EtherType, else the FrameClass value."""
    valid: np.ndarray
    errors: dict[int, ProtocolError]
    """Why each invalid Parallax frame failed (row -> error); filled lazily by :meth:`error`."""
    cols: dict[str, np.ndarray] = field(default_factory=dict)
    first: int = 0
    """Number of the first frame of the batch within the whole capture (0-based)."""
    numbers: np.ndarray | None = None
    """1-based frame numbers in the capture, when rows were taken out of order or filtered."""

    def __len__(self) -> int:
        return len(self.offset)

    def frame_numbers(self) -> np.ndarray:
        """Each row's 1-based frame number in the whole capture."""
        if self.numbers is not None:
            return self.numbers
        return self.first + 1 + np.arange(len(self), dtype=np.int64)

    @property
    def malformed(self) -> np.ndarray:
        """Parallax frames the decoder rejected, and frames too short for an Ethernet header."""
        return ((self.kind != KIND_OTHER) & ~self.valid) | (self.caplen < spec.ETH_LEN)

    def frame(self, i: int) -> bytes:
        o = int(self.offset[i])
        return self.buf[o : o + int(self.caplen[i])].tobytes()

    def col(self, name: str) -> np.ndarray:
        """A field column, read from the frames on first use."""
        c = self.cols.get(name)
        if c is None:
            c = self.cols[name] = gather(self.buf, self.offset, self.caplen, FIELDS[name])
        return c

    def col_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """A field column at some rows only (cheaper than the whole column for wide fields)."""
        c = self.cols.get(name)
        if c is not None:
            return c[rows]
        return gather(self.buf, self.offset[rows], self.caplen[rows], FIELDS[name])

    def error(self, i: int) -> ProtocolError:
        e = self.errors.get(i)
        if e is None:
            try:
                decode(self.frame(i))
                e = ProtocolError("frame", 0, "the batch decoder rejected it, the reference codec accepts it")
            except ProtocolError as exc:
                e = exc
            self.errors[i] = e
        return e

    def take(self, rows: np.ndarray) -> Batch:
        """The rows selected by a boolean mask or an index array, as a new batch."""
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows
        remap = {int(j): k for k, j in enumerate(idx)}
        return Batch(
            self.buf,
            self.offset[idx],
            self.caplen[idx],
            self.wirelen[idx],
            self.ts_ns[idx],
            self.kind[idx],
            self.valid[idx],
            {remap[i]: e for i, e in self.errors.items() if i in remap},
            {k: v[idx] for k, v in self.cols.items()},
            self.first,
            self.frame_numbers()[idx],
        )


def gather(buf: np.ndarray, offset: np.ndarray, caplen: np.ndarray, f: FieldColumn) -> np.ndarray:
    """A big-endian field of every frame; 0 where the frame is too short to hold it."""
    dtype = _DTYPES[f.size]
    present = caplen >= f.offset + f.size
    base = np.where(present, offset + f.offset, 0).astype(np.int64)
    if len(buf) < f.size:
        return np.zeros(len(offset), dtype)
    base = np.minimum(base, len(buf) - f.size)
    out = np.zeros(len(offset), dtype)
    for k in range(f.size):
        out = (out << dtype(8)) | buf[base + k].astype(dtype)
    out[~present] = 0
    return out


def classify(ethertype: np.ndarray) -> np.ndarray:
    """``kind`` from EtherTypes under the map in force."""
    kind = np.zeros(len(ethertype), np.uint8)
    for name, value in ethertypes.current().as_dict().items():
        kind[ethertype == value] = FrameClass[name.upper()]
    return kind


_U64 = 0xFFFF_FFFF_FFFF_FFFF


def from_packets(packets: Iterable[Packet], first: int = 0) -> Batch:
    """A batch decoded by the reference codec, frame by frame (the slow, exact path)."""
    datas: list[bytes] = []
    ts: list[int] = []
    wire: list[int] = []
    for p in packets:
        datas.append(p.data)
        ts.append(p.ts_ns & _U64)  # past int64 ns (the year 2262) it wraps, as CaptureIndex documents
        wire.append(p.orig_len)
    lengths = np.fromiter((len(d) for d in datas), np.int64, len(datas))
    offset = np.zeros(len(datas), np.int64)
    if len(datas):
        offset[1:] = np.cumsum(lengths)[:-1]
    buf = np.frombuffer(b"".join(datas), np.uint8)
    batch = Batch(
        buf,
        offset,
        lengths,
        np.asarray(wire, np.int64),
        np.asarray(ts, np.uint64).view(np.int64),
        np.zeros(len(datas), np.uint8),
        np.zeros(len(datas), bool),
        {},
        first=first,
    )
    batch.kind = classify(batch.col("eth.type"))
    batch.kind[lengths < spec.ETH_LEN] = KIND_OTHER
    for i in np.flatnonzero(batch.kind):
        try:
            decode(datas[i])
            batch.valid[i] = True
        except ProtocolError as exc:
            batch.errors[int(i)] = exc
    return batch


def concat(batches: list[Batch]) -> Batch:
    """Several batches as one (their buffers copied into one)."""
    if len(batches) == 1:
        return batches[0]
    bufs = [b.buf for b in batches]
    base = np.cumsum([0] + [len(b) for b in bufs[:-1]])
    rows = np.cumsum([0] + [len(b) for b in batches[:-1]])
    errors = {int(r) + i: e for b, r in zip(batches, rows, strict=True) for i, e in b.errors.items()}
    names = set.intersection(*(set(b.cols) for b in batches)) if batches else set()
    return Batch(
        np.concatenate(bufs) if bufs else np.zeros(0, np.uint8),
        np.concatenate([b.offset + o for b, o in zip(batches, base, strict=True)]),
        np.concatenate([b.caplen for b in batches]),
        np.concatenate([b.wirelen for b in batches]),
        np.concatenate([b.ts_ns for b in batches]),
        np.concatenate([b.kind for b in batches]),
        np.concatenate([b.valid for b in batches]),
        errors,
        {n: np.concatenate([b.cols[n] for b in batches]) for n in names},
        batches[0].first if batches else 0,
        np.concatenate([b.frame_numbers() for b in batches]),
    )


# ------------------------------------------------------------------ fast path

FASTPATH_NAMES = {
    "eth.type": "ethertype",
    "version": "version",
    "flags": "flags",
    "length": "body_len",
    "src_dime": "src_dime",
    "src_thread": "src_thread",
    "dst_dime": "dst_dime",
    "dst_thread": "dst_thread",
    "seq": "seq",
    "sig.req_id": "req_id",
    "sig.cmd": "cmd",
    "sig.op": "op",
    "sig.status": "status",
    "sig.tlv_count": "tlv_count",
    "data.channel": "channel",
    "data.flags": "data_flags",
    "data.msg_id": "msg_id",
    "data.msg_len": "msg_len",
    "data.frag_offset": "frag_offset",
    "data.frag_index": "frag_index",
    "data.frag_count": "frag_count",
    "data.ack": "ack",
    "data.credit": "credit",
    "disc.op": "disc_op",
    "disc.state_filter": "state_filter",
    "disc.count": "disc_count",
    "disc.probe_id": "probe_id",
    "hb.epoch": "hb_epoch",
    "hb.state": "hb_state",
    "hb.period_ms": "hb_period_ms",
    "hb.cpu_permille": "hb_cpu_permille",
    "hb.stage": "hb_stage",
    "hb.service": "hb_service",
}
"""pxdump column -> pxproto.fastpath column.  The fast path fills body fields
on rows of their class only; pxdump reads fields of valid rows only, where
both agree.  Columns it lacks (MACs, hb.mem_used, ...) are gathered here."""


def fastpath_available() -> bool:
    try:
        from pxproto import fastpath
    except ImportError:
        return False
    return bool(getattr(fastpath, "COMPILED", False))


def from_fastpath(buf: np.ndarray, offset: np.ndarray, caplen: np.ndarray, ts_ns: np.ndarray, first: int) -> Batch:
    """A batch decoded by the compiled fast path (rows are frames of one capture buffer)."""
    from pxproto import fastpath

    c = fastpath.decode_columns(buf, offset, caplen, ts_ns=ts_ns)
    cols = {mine: c[theirs] for mine, theirs in FASTPATH_NAMES.items()}
    return Batch(buf, offset, caplen, caplen, ts_ns, c["cls"], c["valid"], {}, cols, first)
