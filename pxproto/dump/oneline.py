"""The default view: one line per frame, built from the batch columns in bulk.

Line shapes (``-e`` inserts the MACs and EtherType after the time)::

    12:00:00.000001 SIG 3.1 > 7.0 GET_PARAM request id 42 tlvs 1 seq 5 len 62
    12:00:00.000002 SIG 7.0 > 3.1 GET_PARAM response BAD_PARAM id 42 tlvs 0 rtt 0.120ms seq 6 len 58
    12:00:00.000003 DATA 3.1 > 7.2 ch 4 msg 17 frag 2/3 off 1400 bytes 1400 ACK 12 credit 8 FIN seq 9 len 1480
    12:00:00.000004 DISC *.0 > *.0 ANNOUNCE probe 5 dimes 4 seq 1 len 130
    12:00:00.000005 HB 3.0 > *.0 epoch 7 BUSY cpu 53.2% mem 4/8 GAP 350.000ms seq 9 len 83
    12:00:00.000006 DATA 3.1 > 7.2 encrypted auth seq 10 len 1506
    12:00:00.000006 ether 00:11:22:33:44:55 > ff:ff:ff:ff:ff:ff type 0x0800 len 98
    12:00:00.000007 SIG [malformed: status at byte 40: unknown status 0x22] len 60

DIME 0xffff (the whole server) prints as ``*``.  The time is the time of day
(local), nothing with ``-t``, seconds since the epoch with ``-tt``, as tcpdump.

Two implementations print the same bytes: the compiled writer
(``accel.lines``, formatting from the frame bytes into a C buffer) and the
numpy renderer below, its pure twin.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from pxproto.dump import accel, text
from pxproto.dump.columns import KIND_OTHER, Batch
from pxproto.dump.text import Seg, dec, fixed, lit
from pxproto.wire import spec
from pxproto.wire.codes import DIME_ALL, Command, DataFlag, DimeState, DiscoveryOp, FrameClass, HeaderFlag, Op, Status

CLASS_TAGS = {
    KIND_OTHER: "ether",
    FrameClass.SIGNALING: "SIG",
    FrameClass.DATA: "DATA",
    FrameClass.DISCOVERY: "DISC",
    FrameClass.HEARTBEAT: "HB",
}
DATA_FIXED = spec.DataFixed.sizeof()


TIME_OF_DAY = 0
TIME_NONE = 1
TIME_EPOCH = 2
"""Time stamp styles: the ``-t`` count (tcpdump's meaning); the compiled writer uses the same numbers."""


@dataclass
class LineOptions:
    ether: bool = False
    """-e: MACs and EtherType on every Parallax line."""
    time: int = TIME_OF_DAY
    """TIME_OF_DAY (default), TIME_NONE (-t) or TIME_EPOCH (-tt)."""
    utc_offset_s: int = 0
    """Local time zone offset applied to the time of day."""


def local_utc_offset() -> int:
    return -time.timezone if not time.localtime().tm_isdst else -time.altzone


def timestamps(ts_ns: np.ndarray, opts: LineOptions) -> list[Seg]:
    """The time and the space after it (nothing with -t)."""
    us = (ts_ns // 1000) % 1_000_000
    sec = ts_ns // 1_000_000_000
    n = len(ts_ns)
    if opts.time == TIME_NONE:
        return []
    if opts.time == TIME_EPOCH:
        return [dec(sec.astype(np.uint64)), lit(".", n), fixed(us, 6), lit(" ", n)]
    sod = (sec + opts.utc_offset_s) % 86400
    return [
        fixed(sod // 3600, 2),
        lit(":", n),
        fixed(sod // 60 % 60, 2),
        lit(":", n),
        fixed(sod % 60, 2),
        lit(".", n),
        fixed(us, 6),
        lit(" ", n),
    ]


def _endpoint(dime: np.ndarray, thread: np.ndarray, n: int) -> list[Seg]:
    all_ = dime == DIME_ALL
    return [lit("*", n).when(all_), dec(dime).when(~all_), lit(".", n), dec(thread)]


def _ms(ns: np.ndarray) -> list[Seg]:
    us = np.maximum(ns, 0) // 1000
    n = len(ns)
    return [dec(us // 1000), lit(".", n), fixed(us % 1000, 3), lit("ms", n)]


Col = Callable[[str], np.ndarray]


def _signaling(c: Col, n: int, rtt_ns: np.ndarray | None) -> list[Seg]:
    op = c("sig.op")
    resp = op == Op.RESPONSE
    segs = [
        text.table(c("sig.cmd"), {int(x): x.name for x in Command}),
        lit(" ", n),
        text.table(op, {int(o): o.name.lower() for o in Op}),
        lit(" ", n).when(resp),
        text.table(c("sig.status"), {int(x): x.name for x in Status}).when(resp),
        lit(" id ", n),
        dec(c("sig.req_id")),
        lit(" tlvs ", n),
        dec(c("sig.tlv_count")),
    ]
    if rtt_ns is not None:
        has = rtt_ns >= 0
        if has.any():
            segs += [s.when(has) for s in [lit(" rtt ", n), *_ms(rtt_ns)]]
    return segs


def _data(c: Col, n: int) -> list[Seg]:
    flags = c("data.flags")
    count = c("data.frag_count")
    frag = count > 0
    ack = (flags & DataFlag.ACK) != 0
    payload = np.maximum(c("length").astype(np.int64) - DATA_FIXED, 0)
    segs = [lit("ch ", n), dec(c("data.channel"))]
    body = [
        lit(" msg ", n),
        dec(c("data.msg_id")),
        lit(" frag ", n),
        dec(c("data.frag_index").astype(np.uint32) + 1),
        lit("/", n),
        dec(count),
        lit(" off ", n),
        dec(c("data.frag_offset")),
        lit(" bytes ", n),
        dec(payload),
    ]
    segs += body if frag.all() else [s.when(frag) for s in body]
    if ack.any():
        acks = [lit(" ACK ", n), dec(c("data.ack")), lit(" credit ", n), dec(c("data.credit"))]
        segs += [s.when(ack) for s in acks]
    fin = (flags & DataFlag.FIN) != 0
    if fin.any():
        segs.append(lit(" FIN", n).when(fin))
    return segs


def _discovery(c: Col, n: int) -> list[Seg]:
    return [
        text.table(c("disc.op"), {int(o): o.name for o in DiscoveryOp}),
        lit(" probe ", n),
        dec(c("disc.probe_id")),
        lit(" dimes ", n),
        dec(c("disc.count")),
    ]


def _heartbeat(c: Col, n: int, gap_ns: np.ndarray | None) -> list[Seg]:
    cpu = c("hb.cpu_permille")
    segs = [
        lit("epoch ", n),
        dec(c("hb.epoch")),
        lit(" ", n),
        text.table(c("hb.state"), {int(s): s.name for s in DimeState}),
        lit(" cpu ", n),
        dec(cpu // 10),
        lit(".", n),
        dec(cpu % 10),
        lit("% mem ", n),
        dec(c("hb.mem_used")),
        lit("/", n),
        dec(c("hb.mem_limit")),
    ]
    if gap_ns is not None:
        late = gap_ns >= 0
        if late.any():
            segs += [s.when(late) for s in [lit(" GAP ", n), *_ms(gap_ns)]]
    return segs


def _parallax(
    b: Batch, rows: np.ndarray, cls: FrameClass, opts: LineOptions, rtt_ns: np.ndarray | None, gap_ns: np.ndarray | None
) -> list[Seg]:
    """The pieces between the time and ' len' of valid frames of one class."""
    n = len(rows)

    def c(name: str) -> np.ndarray:
        if name in b.cols or name not in _ROW_GATHER:
            return b.col(name)[rows]
        return b.col_rows(name, rows)

    segs: list[Seg] = []
    if opts.ether:
        segs += [
            text.mac(c("eth.src")),
            lit(" > ", n),
            text.mac(c("eth.dst")),
            lit(" ethertype 0x", n),
            text.hexnum(c("eth.type"), 4),
            lit(", ", n),
        ]
    segs += [lit(CLASS_TAGS[cls] + " ", n), *_endpoint(c("src_dime"), c("src_thread"), n), lit(" > ", n)]
    segs += [*_endpoint(c("dst_dime"), c("dst_thread"), n), lit(" ", n)]
    if cls is FrameClass.SIGNALING:
        body = _signaling(c, n, None if rtt_ns is None else rtt_ns[rows])
    elif cls is FrameClass.DATA:
        body = _data(c, n)
    elif cls is FrameClass.DISCOVERY:
        body = _discovery(c, n)
    else:
        body = _heartbeat(c, n, None if gap_ns is None else gap_ns[rows])
    enc = (c("flags") & HeaderFlag.ENCRYPTED) != 0
    if enc.any():  # an encrypted body has no fields to print (pxdump --key opens it first)
        body = [s.when(~enc) for s in body] + [lit("encrypted", n).when(enc)]
    segs += body
    auth = (c("flags") & HeaderFlag.AUTH) != 0
    if auth.any():
        segs.append(lit(" auth", n).when(auth))
    segs += [lit(" seq ", n), dec(c("seq"))]
    return segs


_ROW_GATHER = {"eth.src", "eth.dst", "hb.mem_used", "hb.mem_limit"}
"""Columns the fast path lacks: gathered for the rows that print them only."""


def render(
    b: Batch,
    opts: LineOptions,
    rtt_ns: np.ndarray | None = None,
    gap_ns: np.ndarray | None = None,
    hide_other: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bytes of the lines back to back, each row's line length, rows left for the caller).

    Rows left for the caller (malformed frames) have length 0 here; the caller
    formats them one by one (:func:`malformed_line`) and splices them in.
    """
    n = len(b)
    special = b.malformed
    normal = ~special
    segs: list[Seg] = [s.when(normal) for s in timestamps(b.ts_ns, opts)]
    kind = b.kind
    other = np.flatnonzero((kind == KIND_OTHER) & ~special)
    if len(other) and not hide_other:
        m = len(other)
        src, dst = b.col_rows("eth.src", other), b.col_rows("eth.dst", other)
        pieces = [
            lit("ether ", m),
            text.mac(src),
            lit(" > ", m),
            text.mac(dst),
            lit(" type 0x", m),
            text.hexnum(b.col_rows("eth.type", other), 4),
        ]
        segs += [s.at(other) for s in pieces]
    for cls in FrameClass:
        rows = np.flatnonzero((kind == cls) & ~special)
        if len(rows):
            segs += [s.at(rows) for s in _parallax(b, rows, cls, opts, rtt_ns, gap_ns)]
    segs += [s.when(normal) for s in (lit(" len ", n), dec(b.wirelen), lit("\n", n))]
    if hide_other and len(other):
        keep = np.ones(n, bool)
        keep[other] = False
        segs = [_drop(s, keep) for s in segs]
    flat, lens = text.join(segs, n)
    return flat, lens, np.flatnonzero(special)


def _drop(s: Seg, keep: np.ndarray) -> Seg:
    """The piece with the rows not in ``keep`` emptied."""
    rows = np.arange(len(keep)) if s.rows is None else s.rows
    return Seg(s.mat, np.where(keep[rows], s.lens, 0), s.start, s.rows)


def malformed_line(b: Batch, i: int, opts: LineOptions) -> bytes:
    """The line of a frame the decoder rejected: ``[malformed: <field> at byte N: reason]``."""
    one = b.take(np.array([i]))
    stamp, _ = text.join(timestamps(one.ts_ns, opts), 1)
    e = b.error(i)
    tag = CLASS_TAGS.get(int(b.kind[i]), "ether")
    return (
        stamp.tobytes()
        + f"{tag} [malformed: {e.field} at byte {e.offset}: {e.reason}] len {int(b.wirelen[i])}\n".encode()
    )


def lines(
    b: Batch,
    opts: LineOptions,
    rtt_ns: np.ndarray | None = None,
    gap_ns: np.ndarray | None = None,
    hide_other: bool = False,
) -> list[bytes]:
    """Each row's line (empty for a hidden row): for views that interleave more text per frame."""
    flat, lens, special = render(b, opts, rtt_ns, gap_ns, hide_other)
    ends = np.cumsum(lens)
    out = [flat[e - n : e].tobytes() for e, n in zip(ends.tolist(), lens.tolist(), strict=True)]
    for i in special.tolist():
        out[i] = malformed_line(b, i, opts)
    return out


def write(
    out: object,
    b: Batch,
    opts: LineOptions,
    rtt_ns: np.ndarray | None = None,
    gap_ns: np.ndarray | None = None,
    hide_other: bool = False,
) -> None:
    """Write every row's line to a binary stream, in bulk."""
    if accel.lines is not None:
        write_compiled(out, b, opts, rtt_ns, gap_ns, hide_other)
        return
    flat, lens, special = render(b, opts, rtt_ns, gap_ns, hide_other)
    w = out.write  # type: ignore[attr-defined]
    if not len(special):
        w(flat.tobytes())
        return
    starts = np.concatenate([[0], np.cumsum(lens)])
    pos = 0
    for i in special.tolist():
        w(flat[pos : starts[i]].tobytes())
        w(malformed_line(b, i, opts))
        pos = int(starts[i])
    w(flat[pos:].tobytes())


_NO_ROWS = np.zeros(0, np.int64)


class FrameSource(Protocol):
    """What the compiled writer reads: a capture buffer and where each row's frame is in it."""

    buf: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray

    def __len__(self) -> int: ...


def write_compiled(
    out: object,
    b: FrameSource,
    opts: LineOptions,
    rtt_ns: np.ndarray | None = None,
    gap_ns: np.ndarray | None = None,
    hide_other: bool = False,
    malformed: Callable[[int], bytes] | None = None,
) -> None:
    """:func:`write` by the compiled writer: lines formatted from the frame bytes, written in blocks.
    ``malformed(row)`` gives the line of a malformed row (default: :func:`malformed_line` of a Batch)."""
    assert accel.lines is not None
    if malformed is None:
        assert isinstance(b, Batch)
        batch = b

        def malformed(i: int) -> bytes:
            return malformed_line(batch, i, opts)

    names, name_lens = name_tables()
    w = out.write  # type: ignore[attr-defined]
    n = len(b)
    row = 0
    while row < n:
        row = accel.lines.write_lines(
            w,
            b.buf,
            b.offset,
            b.caplen,
            b.wirelen,
            b.ts_ns,
            _NO_ROWS if rtt_ns is None else rtt_ns,
            _NO_ROWS if gap_ns is None else gap_ns,
            row,
            opts.time,
            opts.ether,
            opts.utc_offset_s,
            hide_other,
            names,
            name_lens,
        )
        if row < n:
            w(malformed(row))
            row += 1


_NAME_WIDTH = 32


@lru_cache(maxsize=1)
def name_tables() -> tuple[np.ndarray, np.ndarray]:
    """The compiled writer's names: rows cmd, op, status, discovery op, DIME state, class tag;
    256 codes each (a code without a name is 0xNN, as in the numpy renderer)."""
    tables: list[dict[int, str]] = [
        {int(x): x.name for x in Command},
        {int(o): o.name.lower() for o in Op},
        {int(x): x.name for x in Status},
        {int(o): o.name for o in DiscoveryOp},
        {int(s): s.name for s in DimeState},
        {int(k): v for k, v in CLASS_TAGS.items()},
    ]
    names = np.zeros((len(tables), 256, _NAME_WIDTH), np.uint8)
    lens = np.zeros((len(tables), 256), np.uint8)
    for t, table in enumerate(tables):
        for code in range(256):
            word = table.get(code, f"0x{code:02x}").encode()[:_NAME_WIDTH]
            names[t, code, : len(word)] = np.frombuffer(word, np.uint8)
            lens[t, code] = len(word)
    return names, lens
