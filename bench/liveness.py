"""Liveness bench: the pool's lazy-deadline failure detector against the eager design it replaced.

    python bench/liveness.py              # 1,000 DIMEs, 100 rounds of heartbeats

Two designs of "suspect a DIME after a silence" were in the tree until issue 12:
- *lazy* (pxorch's pool, now :class:`pxproto.dime.liveness.Pool`): a heartbeat
  only moves ``last_seen``; a heap entry per DIME is re-armed when it comes due
  early; phi-accrual keeps a running mean and variance (EWMA);
- *eager* (``dime.heartbeat.FailureDetector``, removed): every heartbeat pushes
  a new versioned heap entry; phi-accrual keeps a window of intervals and
  recomputes mean and variance over it at every heartbeat.
The eager design is reproduced below as the peer: its per-heartbeat core only,
without the Output and event objects the removed class built for every
heartbeat, so its figures are a lower bound of that class's cost.
Printed: microseconds per heartbeat and the ratio to the lazy missed-count
detector, then when each design suspects a DIME that fell silent.

Measured once against the removed classes themselves (tree at 222df3c, same
harness, 1,000 DIMEs, a host at load 16 on 2 cores, so +-30%): the eager
FailureDetector 8-11 us a heartbeat (missed) and 19-26 us (phi); pxorch's
lazy pool 2.8-4.3 us (missed) and 34-50 us (phi: it recomputed the normal
quantile by bisection at every heartbeat); the merged pool 2.7-5.5 us and
3.8-5.2 us.  Silence before suspicion is the same for missed-count (200 ms);
for phi the running estimate (lazy) and the window (eager) agree within 3 ms
at +-10 ms of jitter, and the running one suspects 11 ms sooner at +-30 ms.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

from pxproto.dime.liveness import DimeSuspected, Liveness, Pool  # noqa: E402
from pxproto.wire.codes import DimeState  # noqa: E402
from pxproto.wire.frame import Heartbeat  # noqa: E402


class Eager:
    """The removed FailureDetector's heartbeat path: a heap push per heartbeat, windowed phi."""

    def __init__(self, liveness: Liveness, window: int = 100) -> None:
        self.liveness = liveness
        self.window = window if liveness.detector == "phi" else 16
        self.last: dict[tuple[bytes, int], float] = {}
        self.intervals: dict[tuple[bytes, int], deque[float]] = {}
        self.version: dict[tuple[bytes, int], int] = {}
        self.heap: list[tuple[float, int, tuple[bytes, int]]] = []

    def allowed(self, key: tuple[bytes, int], period: float) -> float:
        if self.liveness.detector == "missed":
            return self.liveness.missed * period
        xs = list(self.intervals[key]) or [period]
        mean = sum(xs) / len(xs)
        var = sum((x - mean) ** 2 for x in xs) / len(xs)
        return mean + self.liveness.z * self.liveness.std(mean, var)

    def heartbeat(self, mac: bytes, dime: int, hb: Heartbeat, now: float) -> None:
        key = (mac, dime)
        last = self.last.get(key)
        if last is None:
            self.intervals[key] = deque()
        elif now > last:
            iv = self.intervals[key]
            iv.append(now - last)
            while len(iv) > self.window:
                iv.popleft()
        self.last[key] = now
        v = self.version[key] = self.version.get(key, 0) + 1
        heapq.heappush(self.heap, (now + self.allowed(key, hb.period_ms / 1000), v, key))

    def expired(self, now: float) -> list[tuple[bytes, int]]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            _, v, key = heapq.heappop(self.heap)
            if self.version.get(key) == v:
                out.append(key)
        return out


def per_heartbeat(n: int, rounds: int, make: Callable[[], object], tick: Callable[[object, float], object]) -> float:
    """Microseconds per heartbeat, ``n`` DIMEs beating every 100 ms, the timer handled once a round."""
    hb = Heartbeat(1, DimeState.FREE, 100)
    macs = [bytes([2, 0, 0, 0, (i // 4) >> 8, (i // 4) & 0xFF]) for i in range(n)]
    best = math.inf
    for _ in range(3):
        d = make()
        beat = d.heartbeat  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        for r in range(rounds):
            for i in range(n):
                beat(macs[i], i % 4, hb, r * 0.1 + i * 1e-5)
            tick(d, r * 0.1 + 0.099)
        best = min(best, (time.perf_counter() - t0) / (rounds * n) * 1e6)
    return best


def suspicion_after(liveness: Liveness, eager: bool, jitter: float, seed: int = 1) -> float:
    """Seconds from a DIME's last heartbeat to its suspicion, after 100 heartbeats 100 ms +- ``jitter`` apart."""
    rng = random.Random(seed)
    hb = Heartbeat(1, DimeState.FREE, 100)
    mac = bytes([2, 0, 0, 0, 0, 1])
    det: Eager | Pool = Eager(liveness) if eager else Pool(liveness=liveness)
    t = 0.0
    for _ in range(100):
        t += 0.1 + rng.uniform(-jitter, jitter)
        det.heartbeat(mac, 0, hb, t)
    step = t
    while True:
        step += 0.0005
        if isinstance(det, Eager):
            if det.expired(step):
                return step - t
        elif any(isinstance(e, DimeSuspected) for e in det.handle_timer(step).events):
            return step - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dimes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    missed, phi = Liveness("missed", missed=2), Liveness("phi", phi=8)
    rows = [
        ("lazy (dime.liveness.Pool), missed 2", per_heartbeat(args.dimes, args.rounds, lambda: Pool(liveness=missed), Pool.handle_timer)),  # noqa: E501
        ("lazy (dime.liveness.Pool), phi 8", per_heartbeat(args.dimes, args.rounds, lambda: Pool(liveness=phi), Pool.handle_timer)),  # noqa: E501
        ("eager (old FailureDetector), missed 2", per_heartbeat(args.dimes, args.rounds, lambda: Eager(missed), Eager.expired)),  # noqa: E501
        ("eager (old FailureDetector), phi 8", per_heartbeat(args.dimes, args.rounds, lambda: Eager(phi), Eager.expired)),  # noqa: E501
    ]  # fmt: skip
    base = rows[0][1]
    print(f"per-heartbeat cost, {args.dimes} DIMEs at 10 Hz, {args.rounds} rounds (best of 3)")
    print(f"{'design':<42}{'us/heartbeat':>13}{'ratio':>8}")
    for name, us in rows:
        print(f"{name:<42}{us:>13.2f}{us / base:>7.2f}x")
    print("\nsilence before suspicion, 100 ms heartbeats (ms)")
    print(f"{'detector, jitter':<42}{'lazy':>8}{'eager':>8}")
    for liveness, label in ((missed, "missed 2"), (phi, "phi 8")):
        for jitter in (0.001, 0.01, 0.03):
            lazy = suspicion_after(liveness, False, jitter) * 1e3
            eager = suspicion_after(liveness, True, jitter) * 1e3
            print(f"{label + f', +-{jitter * 1e3:.0f} ms':<42}{lazy:>8.1f}{eager:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
