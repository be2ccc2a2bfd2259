"""``pxdump -q``: counts, rates, malformed frames and round-trip times, in bulk."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pxproto.dump import accel
from pxproto.dump.columns import KIND_OTHER, Batch
from pxproto.dump.track import HeartbeatGap, HeartbeatWatch, RequestMatcher, Unanswered, command_name
from pxproto.wire.codes import FrameClass, Op, Status

LISTED = 20
"""How many unanswered requests and heartbeat gaps the summary lists one by one."""


@dataclass
class Stats:
    frames: int = 0
    bytes: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    kinds: np.ndarray = field(default_factory=lambda: np.zeros(len(FrameClass) + 1, np.int64))
    malformed: int = 0
    requests: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    responses: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    statuses: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    sent: np.ndarray = field(default_factory=lambda: np.zeros(65536, np.int64))
    received: np.ndarray = field(default_factory=lambda: np.zeros(65536, np.int64))

    def feed(self, b: Batch) -> None:
        n = len(b)
        if not n:
            return
        self.frames += n
        self.bytes += int(b.wirelen.sum())
        lo, hi = int(b.ts_ns.min()), int(b.ts_ns.max())
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
        bad = b.malformed
        self.malformed += int(bad.sum())
        ok = b.valid
        counted = ok | ((b.kind == KIND_OTHER) & ~bad)
        self.kinds += np.bincount(b.kind[counted], minlength=len(self.kinds))
        sig = ok & (b.kind == FrameClass.SIGNALING)
        op = b.col("sig.op")
        cmd = b.col("sig.cmd")
        self.requests += np.bincount(cmd[sig & (op == Op.REQUEST)], minlength=256)
        resp = sig & (op == Op.RESPONSE)
        self.responses += np.bincount(cmd[resp], minlength=256)
        self.statuses += np.bincount(b.col("sig.status")[resp], minlength=256)
        self.sent += np.bincount(b.col("src_dime")[ok], minlength=65536)
        self.received += np.bincount(b.col("dst_dime")[ok], minlength=65536)

    def feed_frames(
        self,
        buf: np.ndarray,
        offset: np.ndarray,
        caplen: np.ndarray,
        wirelen: np.ndarray,
        ts_ns: np.ndarray,
        first: int,
        matcher: RequestMatcher,
        heartbeats: HeartbeatWatch,
    ) -> None:
        """Count frames straight from the capture buffer in one compiled pass (``accel.count``), and
        feed the trackers their rows: the same result as :meth:`feed` plus the trackers' ``feed``."""
        assert accel.count is not None
        n = len(offset)
        if not n:
            return
        nbytes, bad, lo, hi, sig, hb = accel.count.count_frames(
            buf, offset, caplen, wirelen, ts_ns, first, *self._counters()
        )
        self.frames += n
        self.bytes += nbytes
        self.malformed += bad
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
        matcher.match(sig["is_req"], sig["mac"], sig["rc"], sig["ep"], sig["ts"], sig["frame"])
        heartbeats.watch(hb["dime"], hb["ts"], hb["period"], hb["frame"], hi)

    def _counters(self) -> tuple[np.ndarray, ...]:
        return self.kinds, self.requests, self.responses, self.statuses, self.sent, self.received

    def report(
        self,
        rtts: tuple[np.ndarray, np.ndarray],
        unanswered: list[Unanswered],
        gaps: list[HeartbeatGap],
    ) -> str:
        span = ((self.last_ns or 0) - (self.first_ns or 0)) / 1e9
        out = [f"{self.frames} frames, {self.bytes} bytes in {span:.6f} s of capture"]
        if span > 0:
            out[0] += f" ({self.frames / span:.1f} frames/s, {self.bytes * 8 / span / 1e6:.3f} Mbit/s)"
        out.append("class")
        for cls in FrameClass:
            out.append(f"  {cls.name:<24}{int(self.kinds[cls]):>12}")
        out.append(f"  {'non-Parallax':<24}{int(self.kinds[KIND_OTHER]):>12}")
        out.append(f"  {'malformed':<24}{self.malformed:>12}")
        rtt, rtt_cmd = rtts
        out.append(f"command{'requests':>29}{'responses':>12}   rtt ms: min / median / p99 / max")
        for c in np.flatnonzero(self.requests + self.responses):
            line = f"  {command_name(int(c)):<24}{int(self.requests[c]):>12}{int(self.responses[c]):>12}"
            mine = rtt[rtt_cmd == c]
            if len(mine):
                q = np.percentile(mine, [0, 50, 99, 100]) / 1e6
                line += f"   {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f} / {q[3]:.3f}"
            out.append(line)
        out.append(f"status{'responses':>31}")
        for s in np.flatnonzero(self.statuses):
            out.append(f"  {Status(int(s)).name:<24}{int(self.statuses[s]):>12}")
        out.append(f"DIME{'sent':>33}{'received':>12}")
        for d in np.flatnonzero(self.sent + self.received):
            name = "* (server)" if d == 0xFFFF else str(d)
            out.append(f"  {name:<24}{int(self.sent[d]):>12}{int(self.received[d]):>12}")
        out.append(f"round trips matched: {len(rtt)}")
        out.append(f"unanswered requests: {len(unanswered)}")
        out += ["  " + unanswered_text(u) for u in unanswered[:LISTED]]
        if len(unanswered) > LISTED:
            out.append(f"  ... {len(unanswered) - LISTED} more")
        out.append(f"heartbeat gaps: {len(gaps)}")
        out += ["  " + gap_text(g) for g in gaps[:LISTED]]
        if len(gaps) > LISTED:
            out.append(f"  ... {len(gaps) - LISTED} more")
        return "\n".join(out) + "\n"


def unanswered_text(u: Unanswered) -> str:
    who = f"{'*' if u.dime == 0xFFFF else u.dime}.{u.thread}"
    return f"frame {u.frame} {command_name(u.cmd)} id {u.req_id} from {who}: {u.reason}"


def gap_text(g: HeartbeatGap) -> str:
    where = f"before frame {g.frame}" if g.frame else "at the end of the capture"
    return f"DIME {g.dime} sent no heartbeat for {g.gap_ns / 1e6:.3f} ms (period {g.period_ms} ms) {where}"
