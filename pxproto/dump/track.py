"""Protocol awareness over a stream of batches: request/response matching,
heartbeat gaps per DIME, and DATA reassembly.

Each tracker is a pure state machine: batches (with their capture times) in,
per-row annotations and end-of-capture reports out; no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pxproto.dump.columns import Batch
from pxproto.wire.codes import Command, FrameClass, Op
from pxproto.wire.frame import Data

NONE = -1
"""Annotation value of a row the tracker has nothing to say about."""
HEARTBEAT_MISSES = 3
"""A DIME is flagged when no heartbeat came for this many of its own periods."""


@dataclass(frozen=True)
class Unanswered:
    frame: int
    """Frame number (1-based) of the request."""
    ts_ns: int
    cmd: int
    req_id: int
    dime: int
    """The requester's DIME and thread (the request's source)."""
    thread: int
    reason: str


_PENDING = ("mac", "rc", "ep", "ts", "frame")


class RequestMatcher:
    """Pairs each signaling response with the request it answers.

    As the DIME stack does, a request is keyed by its requester (the request's
    source MAC, the response's destination MAC), its req_id and its command;
    a response answers the latest unanswered request with its key.
    """

    def __init__(self) -> None:
        self.pending: dict[str, np.ndarray] = {
            k: np.zeros(0, np.int64 if k in ("ts", "frame") else np.uint64) for k in _PENDING
        }
        self.unanswered: list[Unanswered] = []
        self.rtt_ns: list[np.ndarray] = []
        self.rtt_cmd: list[np.ndarray] = []

    def feed(self, b: Batch) -> np.ndarray:
        """Round-trip time of every response row that answers a request seen (else -1)."""
        rtt = np.full(len(b), NONE, np.int64)
        rows = np.flatnonzero((b.kind == FrameClass.SIGNALING) & b.valid)
        if not len(rows):
            return rtt
        is_req = b.col("sig.op")[rows] == Op.REQUEST
        mac = np.where(is_req, b.col_rows("eth.src", rows), b.col_rows("eth.dst", rows))
        cmd = b.col("sig.cmd")[rows].astype(np.uint64)
        rc = (b.col("sig.req_id")[rows].astype(np.uint64) << np.uint64(8)) | cmd
        ep = (b.col("src_dime")[rows].astype(np.uint64) << np.uint64(16)) | b.col("src_thread")[rows]
        rtt[rows] = self.match(is_req, mac, rc, ep, b.ts_ns[rows], b.frame_numbers()[rows])
        return rtt

    def match(
        self, is_req: np.ndarray, mac: np.ndarray, rc: np.ndarray, ep: np.ndarray, ts: np.ndarray, frame: np.ndarray
    ) -> np.ndarray:
        """The same over valid signaling rows given as columns: ``mac`` the requester's MAC (a request's
        source, a response's destination), ``rc`` = req_id << 8 | cmd, ``ep`` = src_dime << 16 | src_thread,
        ``frame`` the frame numbers.  Returns each row's round-trip time (-1 if none)."""
        rows = np.arange(len(is_req))
        rtt = np.full(len(is_req), NONE, np.int64)
        if not len(rows):
            return rtt
        p = self.pending
        n_old = len(p["mac"])
        cur = {"mac": mac, "rc": rc, "ep": ep, "ts": ts, "frame": frame}
        a = {k: np.concatenate([p[k], cur[k]]) for k in _PENDING}
        req = np.concatenate([np.ones(n_old, bool), is_req])
        local = np.concatenate([np.full(n_old, NONE), rows])
        order = np.lexsort((np.arange(len(req)), a["rc"], a["mac"]))
        m, k, r = a["mac"][order], a["rc"][order], req[order]
        same = np.zeros(len(order), bool)
        same[1:] = (m[1:] == m[:-1]) & (k[1:] == k[:-1])
        hit = same & ~r
        hit[1:] &= r[:-1]
        answered = np.zeros(len(order), bool)
        answered[:-1] = hit[1:]
        resp = order[np.flatnonzero(hit)]
        asked = order[np.flatnonzero(hit) - 1]
        rtt[local[resp]] = a["ts"][resp] - a["ts"][asked]
        self.rtt_ns.append(a["ts"][resp] - a["ts"][asked])
        self.rtt_cmd.append(a["rc"][resp] & np.uint64(0xFF))
        # A request followed by another with the same key was given up or retransmitted.
        superseded = r & ~answered
        superseded[:-1] &= same[1:] & r[1:]
        superseded[-1:] = False
        for pos in np.flatnonzero(superseded):
            self._report(a, int(order[pos]), "followed by a new request with the same id")
        keep = order[np.flatnonzero(r & ~answered & ~superseded)]
        self.pending = {k: a[k][keep] for k in _PENDING}
        return rtt

    def _report(self, a: dict[str, np.ndarray], i: int, reason: str) -> None:
        rc, ep = int(a["rc"][i]), int(a["ep"][i])
        self.unanswered.append(
            Unanswered(int(a["frame"][i]), int(a["ts"][i]), rc & 0xFF, rc >> 8, ep >> 16, ep & 0xFFFF, reason)
        )

    def finish(self) -> list[Unanswered]:
        """Every request no response answered, in capture order."""
        p = self.pending
        for i in range(len(p["mac"])):
            self._report(p, i, "no response before the end of the capture")
        self.pending = {k: v[:0] for k, v in p.items()}
        self.unanswered.sort(key=lambda u: u.frame)
        return self.unanswered

    def rtts(self) -> tuple[np.ndarray, np.ndarray]:
        """(round-trip times in ns, command of each) of every matched pair."""
        if not self.rtt_ns:
            return np.zeros(0, np.int64), np.zeros(0, np.uint64)
        return np.concatenate(self.rtt_ns), np.concatenate(self.rtt_cmd)


@dataclass(frozen=True)
class HeartbeatGap:
    dime: int
    frame: int
    """Frame number of the heartbeat that ended the gap (0: the capture ended first)."""
    gap_ns: int
    period_ms: int


class HeartbeatWatch:
    """Flags a DIME whose heartbeats stop for HEARTBEAT_MISSES of its periods."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[int, int]] = {}  # dime -> (ts_ns, period_ms)
        self.gaps: list[HeartbeatGap] = []
        self.end_ns = 0

    def feed(self, b: Batch) -> np.ndarray:
        """Gap in ns before every heartbeat row that ends a gap (else -1)."""
        out = np.full(len(b), NONE, np.int64)
        rows = np.flatnonzero((b.kind == FrameClass.HEARTBEAT) & b.valid)
        end = int(b.ts_ns.max()) if len(b) else None
        dime = b.col("src_dime")[rows].astype(np.int64)
        period = b.col("hb.period_ms")[rows].astype(np.int64)
        out[rows] = self.watch(dime, b.ts_ns[rows], period, b.frame_numbers()[rows], end)
        return out

    def watch(
        self, dime: np.ndarray, ts: np.ndarray, period: np.ndarray, frame: np.ndarray, end_ns: int | None
    ) -> np.ndarray:
        """The same over valid heartbeat rows given as columns (``end_ns``: the batch's latest time)."""
        if end_ns is not None:
            self.end_ns = max(self.end_ns, end_ns)
        rows = np.arange(len(dime))
        out = np.full(len(dime), NONE, np.int64)
        if not len(rows):
            return out
        order = np.lexsort((np.arange(len(rows)), dime))
        d, t, per = dime[order], ts[order], period[order]
        prev_t = np.empty_like(t)
        prev_p = np.empty_like(per)
        prev_t[1:], prev_p[1:] = t[:-1], per[:-1]
        first = np.ones(len(d), bool)
        first[1:] = d[1:] != d[:-1]
        for pos in np.flatnonzero(first):
            seen = self.last.get(int(d[pos]))
            prev_t[pos], prev_p[pos] = seen if seen else (t[pos], per[pos])
        gap = t - prev_t
        late = gap > prev_p * 1_000_000 * HEARTBEAT_MISSES
        for pos in np.flatnonzero(late):
            self.gaps.append(HeartbeatGap(int(d[pos]), int(frame[order[pos]]), int(gap[pos]), int(prev_p[pos])))
        out[rows[order[late]]] = gap[late]
        ends = np.flatnonzero(np.append(d[1:] != d[:-1], True))
        for pos in ends:
            self.last[int(d[pos])] = (int(t[pos]), int(per[pos]))
        return out

    def finish(self) -> list[HeartbeatGap]:
        """Every gap seen, plus each DIME silent at the end of the capture."""
        for dime, (ts, period) in sorted(self.last.items()):
            if self.end_ns - ts > period * 1_000_000 * HEARTBEAT_MISSES:
                self.gaps.append(HeartbeatGap(dime, 0, self.end_ns - ts, period))
        return self.gaps


@dataclass
class Message:
    """A DATA message being put back together."""

    key: tuple[int, int, int, int, int, int]
    """(src DIME, src thread, dst DIME, dst thread, channel, msg_id)."""
    msg_len: int
    frag_count: int
    first_frame: int
    parts: dict[int, bytes] = field(default_factory=dict)
    """frag_offset -> bytes."""
    indexes: set[int] = field(default_factory=set)

    def complete(self) -> bool:
        return len(self.indexes) == self.frag_count and self.covered() == self.msg_len

    def covered(self) -> int:
        return sum(len(v) for v in self.parts.values())

    def missing(self) -> str:
        """Missing fragment indexes and byte ranges, as text."""
        holes = []
        pos = 0
        for off in sorted(self.parts):
            if off > pos:
                holes.append(f"{pos}..{off}")
            pos = max(pos, off + len(self.parts[off]))
        if pos < self.msg_len:
            holes.append(f"{pos}..{self.msg_len}")
        idx = sorted(set(range(self.frag_count)) - self.indexes)
        shown = ", ".join(map(str, idx[:8])) + (", ..." if len(idx) > 8 else "")
        return f"fragments {shown} missing (bytes {', '.join(holes) or 'none'})"

    def payload(self) -> bytes:
        out = bytearray(self.msg_len)
        for off, part in self.parts.items():
            out[off : off + len(part)] = part
        return bytes(out)


@dataclass(frozen=True)
class Reassembled:
    message: Message
    frame: int
    """Frame number of the fragment that completed it."""


class Reassembler:
    """Collects DATA fragments per (src, dst, channel, msg_id) until each message is whole."""

    def __init__(self) -> None:
        self.open: dict[tuple[int, int, int, int, int, int], Message] = {}

    def feed(self, frame_no: int, src: tuple[int, int], dst: tuple[int, int], d: Data) -> Reassembled | None:
        if d.frag_count == 0:
            return None
        key = (src[0], src[1], dst[0], dst[1], d.channel, d.msg_id)
        msg = self.open.get(key)
        if msg is None or msg.msg_len != d.msg_len or msg.frag_count != d.frag_count:
            msg = self.open[key] = Message(key, d.msg_len, d.frag_count, frame_no)
        msg.parts[d.frag_offset] = d.payload
        msg.indexes.add(d.frag_index)
        if msg.complete():
            del self.open[key]
            return Reassembled(msg, frame_no)
        return None

    def finish(self) -> list[Message]:
        """Messages still missing fragments at the end of the capture."""
        out = sorted(self.open.values(), key=lambda m: m.first_frame)
        self.open.clear()
        return out


def command_name(code: int) -> str:
    try:
        return Command(code).name
    except ValueError:
        return f"0x{code:02x}"
