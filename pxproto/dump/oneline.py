"""The default view: one line per frame, built from the batch columns in bulk.

Line shapes (``-e`` inserts the MACs and EtherType after the time)::

    12:00:00.000001 SIG 3.1 > 7.0 GET_PARAM request id 42 tlvs 1 seq 5 len 62
    12:00:00.000002 SIG 7.0 > 3.1 GET_PARAM response BAD_PARAM id 42 tlvs 0 rtt 0.120ms seq 6 len 58
    12:00:00.000003 DATA 3.1 > 7.2 ch 4 msg 17 frag 2/3 off 1400 bytes 1400 ACK 12 credit 8 FIN seq 9 len 1480
    12:00:00.000004 DISC *.0 > *.0 ANNOUNCE probe 5 dimes 4 seq 1 len 130
    12:00:00.000005 HB 3.0 > *.0 epoch 7 BUSY cpu 53.2% mem 4/8 GAP 350.000ms seq 9 len 83
    12:00:00.000006 ether 00:11:22:33:44:55 > ff:ff:ff:ff:ff:ff type 0x0800 len 98
    12:00:00.000007 SIG [malformed: status at byte 40: unknown status 0x22] len 60

DIME 0xffff (the whole server) prints as ``*``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pxproto.dump import text
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


@dataclass
class LineOptions:
    ether: bool = False
    """-e: MACs and EtherType on every Parallax line."""
    epoch_time: bool = False
    """-tt: seconds since the epoch instead of the time of day."""
    utc_offset_s: int = 0
    """Local time zone offset applied to the time of day."""


def local_utc_offset() -> int:
    return -time.timezone if not time.localtime().tm_isdst else -time.altzone


def timestamps(ts_ns: np.ndarray, opts: LineOptions) -> list[Seg]:
    us = (ts_ns // 1000) % 1_000_000
    sec = ts_ns // 1_000_000_000
    n = len(ts_ns)
    if opts.epoch_time:
        return [dec(sec), lit(".", n), fixed(us, 6)]
    sod = (sec + opts.utc_offset_s) % 86400
    return [
        fixed(sod // 3600, 2),
        lit(":", n),
        fixed(sod // 60 % 60, 2),
        lit(":", n),
        fixed(sod % 60, 2),
        lit(".", n),
        fixed(us, 6),
    ]


def _endpoint(dime: np.ndarray, thread: np.ndarray, n: int) -> list[Seg]:
    all_ = dime == DIME_ALL
    return [lit("*", n).when(all_), dec(dime).when(~all_), lit(".", n), dec(thread)]


def _ms(ns: np.ndarray) -> list[Seg]:
    us = np.maximum(ns, 0) // 1000
    n = len(ns)
    return [dec(us // 1000), lit(".", n), fixed(us % 1000, 3), lit("ms", n)]


def _signaling(b: Batch, rtt_ns: np.ndarray | None, on: np.ndarray) -> list[Seg]:
    n = len(b)
    op = b.col("sig.op")
    resp = op == Op.RESPONSE
    segs = [
        text.table(b.col("sig.cmd"), {int(c): c.name for c in Command}),
        lit(" ", n),
        text.table(op, {int(o): o.name.lower() for o in Op}),
        lit(" ", n).when(resp),
        text.table(b.col("sig.status"), {int(s): s.name for s in Status}).when(resp),
        lit(" id ", n),
        dec(b.col("sig.req_id")),
        lit(" tlvs ", n),
        dec(b.col("sig.tlv_count")),
    ]
    if rtt_ns is not None:
        has = on & (rtt_ns >= 0)
        if has.any():
            segs += [s.when(has) for s in [lit(" rtt ", n), *_ms(rtt_ns)]]
    return [s.when(on) for s in segs]


def _data(b: Batch, on: np.ndarray) -> list[Seg]:
    n = len(b)
    flags = b.col("data.flags")
    count = b.col("data.frag_count")
    frag = count > 0
    ack = (flags & DataFlag.ACK) != 0
    payload = np.maximum(b.col("length").astype(np.int64) - DATA_FIXED, 0)
    segs = [lit("ch ", n), dec(b.col("data.channel"))]
    segs += [
        s.when(frag)
        for s in [
            lit(" msg ", n),
            dec(b.col("data.msg_id")),
            lit(" frag ", n),
            dec(b.col("data.frag_index").astype(np.uint32) + 1),
            lit("/", n),
            dec(count),
            lit(" off ", n),
            dec(b.col("data.frag_offset")),
            lit(" bytes ", n),
            dec(payload),
        ]
    ]
    segs += [
        s.when(ack) for s in [lit(" ACK ", n), dec(b.col("data.ack")), lit(" credit ", n), dec(b.col("data.credit"))]
    ]
    segs.append(lit(" FIN", n).when((flags & DataFlag.FIN) != 0))
    return [s.when(on) for s in segs]


def _discovery(b: Batch, on: np.ndarray) -> list[Seg]:
    n = len(b)
    segs = [
        text.table(b.col("disc.op"), {int(o): o.name for o in DiscoveryOp}),
        lit(" probe ", n),
        dec(b.col("disc.probe_id")),
        lit(" dimes ", n),
        dec(b.col("disc.count")),
    ]
    return [s.when(on) for s in segs]


def _heartbeat(b: Batch, gap_ns: np.ndarray | None, on: np.ndarray) -> list[Seg]:
    n = len(b)
    cpu = b.col("hb.cpu_permille")
    segs = [
        lit("epoch ", n),
        dec(b.col("hb.epoch")),
        lit(" ", n),
        text.table(b.col("hb.state"), {int(s): s.name for s in DimeState}),
        lit(" cpu ", n),
        dec(cpu // 10),
        lit(".", n),
        dec(cpu % 10),
        lit("% mem ", n),
        dec(b.col("hb.mem_used")),
        lit("/", n),
        dec(b.col("hb.mem_limit")),
    ]
    if gap_ns is not None:
        late = on & (gap_ns >= 0)
        if late.any():
            segs += [s.when(late) for s in [lit(" GAP ", n), *_ms(gap_ns)]]
    return [s.when(on) for s in segs]


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
    kind = b.kind
    px = (kind != KIND_OTHER) & ~special
    other = (kind == KIND_OTHER) & ~special
    shown = ~special & ~(other if hide_other else np.zeros(n, bool))
    segs: list[Seg] = timestamps(b.ts_ns, opts)
    segs.append(lit(" ", n))
    if opts.ether and px.any():
        src, dst = b.col("eth.src"), b.col("eth.dst")
        segs += [
            s.when(px)
            for s in [
                text.mac(src),
                lit(" > ", n),
                text.mac(dst),
                lit(" ethertype 0x", n),
                text.hexnum(b.col("eth.type"), 4),
                lit(", ", n),
            ]
        ]
    segs.append(text.table(kind, {k: v for k, v in CLASS_TAGS.items()}, 8))
    segs.append(lit(" ", n))
    if other.any():
        segs += [
            s.when(other)
            for s in [
                text.mac(b.col("eth.src")),
                lit(" > ", n),
                text.mac(b.col("eth.dst")),
                lit(" type 0x", n),
                text.hexnum(b.col("eth.type"), 4),
            ]
        ]
    if px.any():
        segs += [s.when(px) for s in _endpoint(b.col("src_dime"), b.col("src_thread"), n)]
        segs.append(lit(" > ", n).when(px))
        segs += [s.when(px) for s in _endpoint(b.col("dst_dime"), b.col("dst_thread"), n)]
        segs.append(lit(" ", n).when(px))
        for cls, build in (
            (FrameClass.SIGNALING, lambda on: _signaling(b, rtt_ns, on)),
            (FrameClass.DATA, lambda on: _data(b, on)),
            (FrameClass.DISCOVERY, lambda on: _discovery(b, on)),
            (FrameClass.HEARTBEAT, lambda on: _heartbeat(b, gap_ns, on)),
        ):
            on = px & (kind == cls)
            if on.any():
                segs += build(on)
        auth = px & ((b.col("flags") & HeaderFlag.AUTH) != 0)
        segs.append(lit(" auth", n).when(auth))
        segs += [s.when(px) for s in [lit(" seq ", n), dec(b.col("seq"))]]
    segs += [lit(" len ", n), dec(b.wirelen), lit("\n", n)]
    segs = [s.when(shown) for s in segs]
    flat, lens = text.join(segs, n)
    return flat, lens, np.flatnonzero(special)


def malformed_line(b: Batch, i: int, opts: LineOptions) -> bytes:
    """The line of a frame the decoder rejected: ``[malformed: <field> at byte N: reason]``."""
    one = b.take(np.array([i]))
    stamp, _ = text.join(timestamps(one.ts_ns, opts), 1)
    e = b.error(i)
    tag = CLASS_TAGS.get(int(b.kind[i]), "ether")
    return (
        stamp.tobytes()
        + f" {tag} [malformed: {e.field} at byte {e.offset}: {e.reason}] len {int(b.wirelen[i])}\n".encode()
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
