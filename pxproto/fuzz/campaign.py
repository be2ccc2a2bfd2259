"""A fuzz campaign: bursts of generated frames at a wire, a liveness probe between bursts.

::

    from pxproto.fuzz import Campaign, FrameGenerator, PingProbe, UdpWire

    wire = UdpWire("127.0.0.1:5000")
    report = Campaign(wire, FrameGenerator(seed=7), probe=PingProbe(wire, server_mac), count=100_000,
                      save="sent.pcapng").run()
    assert report.alive, report.summary()

Every frame sent is written to the pcapng file (when ``save`` is given) with
a comment ``#INDEX KIND VERDICT``, so :func:`replay` can send any stretch of
it again, one frame per probe, to find the frame that did the damage.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from pxproto.capture.pcapng import CaptureError, PcapngWriter, read_packets
from pxproto.fuzz.generate import Case, FrameGenerator
from pxproto.fuzz.probe import Probe
from pxproto.fuzz.verdict import OK, Verdict, reference_verdict
from pxproto.link import Wire

LEGIT = "legit"
_COMMENT = re.compile(r"#(\d+) (\S+)(?: (\S+))?")


@dataclass
class Report:
    """What a campaign (or a replay) did, and whether the target survived it."""

    sent: int = 0
    """Hostile (generated) frames sent."""
    legit_sent: int = 0
    """Legitimate frames mixed in."""
    bursts: int = 0
    probes: int = 0
    probe_failures: int = 0
    """Probes that failed (each may have been retried before the target was declared gone)."""
    kinds: Counter[str] = field(default_factory=Counter)
    """Frames sent, by mutator."""
    verdicts: Counter[str] = field(default_factory=Counter)
    """Frames sent, by the reference decoder's verdict (``ok`` or the field of its error)."""
    last_answered: int | None = None
    """Index of the last frame sent before the last probe the target answered."""
    stopped_after: int | None = None
    """Index of the last frame sent before the target stopped answering (None: it never did).
    The frame to blame is in ``(last_answered, stopped_after]``."""
    check_failures: list[str] = field(default_factory=list)
    """What the campaign's ``check`` hook reported (memory bounds, counters)."""
    elapsed: float = 0.0
    saved_to: str | None = None
    capture_error: str | None = None
    """Where a replayed capture is damaged (what was read before it was sent)."""

    @property
    def alive(self) -> bool:
        return self.stopped_after is None and not self.check_failures

    @property
    def rejected(self) -> int:
        return sum(n for v, n in self.verdicts.items() if v != OK)

    @property
    def suspects(self) -> tuple[int, int] | None:
        """The inclusive index range of frames that may have stopped the target."""
        if self.stopped_after is None:
            return None
        first = 0 if self.last_answered is None else self.last_answered + 1
        return first, self.stopped_after

    def summary(self) -> str:
        rate = self.sent / self.elapsed if self.elapsed else 0.0
        lines = [
            f"sent {self.sent} hostile + {self.legit_sent} legitimate frames in {self.bursts} bursts, "
            f"{self.elapsed:.1f} s ({rate:,.0f} frames/s); probes {self.probes}, failed {self.probe_failures}",
            "by mutator: " + ", ".join(f"{k}={v}" for k, v in sorted(self.kinds.items())),
        ]
        if self.verdicts:
            lines.append(
                f"reference verdicts: ok={self.verdicts.get(OK, 0)}, rejected={self.rejected}: "
                + ", ".join(f"{k}={v}" for k, v in sorted(self.verdicts.items()) if k != OK)
            )
        if self.stopped_after is not None:
            s = self.suspects
            assert s is not None
            lines.append(f"TARGET STOPPED ANSWERING after frame #{self.stopped_after}; suspects #{s[0]}..#{s[1]}")
        for c in self.check_failures:
            lines.append(f"CHECK FAILED: {c}")
        if self.saved_to:
            lines.append(f"frames saved to {self.saved_to}")
        if self.capture_error is not None:
            lines.append(f"CAPTURE DAMAGED: {self.capture_error}; the frames before it were sent")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "legit_sent": self.legit_sent,
            "bursts": self.bursts,
            "probes": self.probes,
            "probe_failures": self.probe_failures,
            "kinds": dict(self.kinds),
            "verdicts": dict(self.verdicts),
            "rejected": self.rejected,
            "last_answered": self.last_answered,
            "stopped_after": self.stopped_after,
            "suspects": self.suspects,
            "check_failures": self.check_failures,
            "elapsed": round(self.elapsed, 3),
            "alive": self.alive,
            "saved_to": self.saved_to,
            "capture_error": self.capture_error,
        }


class _Pacer:
    """Keeps the average send rate at ``rate`` frames per second (None: as fast as possible)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.count = 0

    def wait(self, n: int) -> None:
        self.count += n
        if self.rate:
            ahead = self.start + self.count / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


@contextlib.contextmanager
def _writer(save: str | Path | IO[bytes] | None, comment: str) -> Iterator[PcapngWriter | None]:
    if save is None:
        yield None
    elif isinstance(save, str | Path):
        with open(save, "wb") as f:
            w = PcapngWriter(f, comment=comment)
            yield w
            w.flush()
    else:
        w = PcapngWriter(cast(BinaryIO, save), comment=comment)
        yield w
        w.flush()


@dataclass
class Campaign:
    """Send ``count`` generated frames at ``wire`` in bursts, probing the target between bursts.

    ``legit(burst_number)`` returns legitimate frames to mix into each burst;
    ``check(report)`` runs after each probe and returns a list of problems
    (an empty list when all is well; e.g. RSS over its bound).  ``verdict``
    classifies every frame (None to skip; the reference decoder is slow).
    A failed probe is retried ``probe_retries`` times before the target is
    declared gone.
    """

    wire: Wire
    generator: FrameGenerator
    probe: Probe | None = None
    count: int = 10_000
    burst: int = 64
    rate: float | None = None
    save: str | Path | IO[bytes] | None = None
    legit: Callable[[int], Sequence[bytes]] | None = None
    check: Callable[[Report], list[str]] | None = None
    verdict: Verdict | None = reference_verdict
    probe_every: int = 1
    """Probe after every this many bursts (and always after the last)."""
    probe_retries: int = 2
    on_burst: Callable[[Sequence[Case]], None] | None = None
    """Called with each burst's cases after they are sent (the campaign tests keep their own books with it)."""

    def run(self) -> Report:
        r = Report()
        if isinstance(self.save, str | Path):
            r.saved_to = str(self.save)
        pacer = _Pacer(self.rate)
        t0 = time.monotonic()
        comment = f"pxfuzz campaign: {self.count} frames, kinds {','.join(self.generator.kinds)}"
        with _writer(self.save, comment) as w:
            index = 0
            while index < self.count:
                n = min(self.burst, self.count - index)
                cases = self.generator.take(n)
                legit = list(self.legit(r.bursts)) if self.legit else []
                raws = [c.raw for c in cases]
                if w is not None or self.verdict is not None:
                    self._book(r, cases, legit, index, w)
                else:
                    r.kinds.update(c.kind for c in cases)
                self.wire.send(raws + legit)
                if self.on_burst is not None:
                    self.on_burst(cases)
                index += n
                r.sent += n
                r.legit_sent += len(legit)
                r.bursts += 1
                pacer.wait(n + len(legit))
                if self.probe is not None and (r.bursts % self.probe_every == 0 or index >= self.count):
                    if not self._probe(r):
                        r.stopped_after = index - 1
                        break
                    r.last_answered = index - 1
                if self.check is not None:
                    problems = self.check(r)
                    if problems:
                        r.check_failures.extend(problems)
                        break
        r.elapsed = time.monotonic() - t0
        return r

    def _book(
        self, r: Report, cases: Sequence[Case], legit: Sequence[bytes], first: int, w: PcapngWriter | None
    ) -> None:
        now = time.time_ns()
        for i, c in enumerate(cases):
            r.kinds[c.kind] += 1
            v = self.verdict(c.raw) if self.verdict is not None else ""
            if self.verdict is not None:
                r.verdicts[v] += 1
            if w is not None:
                w.write(c.raw, now, comment=f"#{first + i} {c.kind} {v}".rstrip())
        if w is not None:
            for f in legit:
                w.write(f, now, comment=f"#- {LEGIT}")

    def _probe(self, r: Report) -> bool:
        assert self.probe is not None
        for _ in range(1 + self.probe_retries):
            r.probes += 1
            if self.probe():
                return True
            r.probe_failures += 1
        return False


@dataclass(frozen=True, slots=True)
class SavedFrame:
    """A frame from a campaign's pcapng, with the index and kind its comment gave it."""

    index: int | None
    kind: str
    verdict: str
    raw: bytes


def iter_cases(path: str | Path) -> Iterator[SavedFrame]:
    """Each frame of a saved campaign (or any capture: frames without pxfuzz comments get their position), as it
    is read; CaptureError where the file is damaged, after the frames before the damage."""
    with open(path, "rb") as f:
        for pos, p in enumerate(read_packets(f)):
            m = _COMMENT.fullmatch(p.comment or "")
            if m and m.group(1).isdigit():
                yield SavedFrame(int(m.group(1)), m.group(2), m.group(3) or "", p.data)
            elif p.comment and p.comment.endswith(LEGIT):
                yield SavedFrame(None, LEGIT, "", p.data)
            else:
                yield SavedFrame(pos, "capture", "", p.data)


def load_cases(path: str | Path) -> list[SavedFrame]:
    """Every frame of a saved campaign (:func:`iter_cases`, read whole first)."""
    return list(iter_cases(path))


def replay(
    path: str | Path,
    wire: Wire,
    probe: Probe | None = None,
    start: int = 0,
    end: int | None = None,
    burst: int = 1,
    legit: bool = False,
    rate: float | None = None,
) -> Report:
    """Send frames ``start..end`` (inclusive, by campaign index) of a saved campaign again, as they are read (the
    legitimate ones after them, with ``legit``).

    With ``burst=1`` and a probe, the report's ``stopped_after`` is the exact
    frame after which the target stopped answering.  A capture damaged part way is sent up to the damage: the
    report's ``capture_error`` then says where it is.
    """
    frames: Iterator[SavedFrame] = (
        s for s in iter_cases(path) if (s.index is not None and start <= s.index and (end is None or s.index <= end))
    )
    if legit:
        frames = itertools.chain(frames, (s for s in iter_cases(path) if s.index is None))
    r = Report()
    pacer = _Pacer(rate)
    t0 = time.monotonic()
    while True:
        chunk = []
        try:
            for s in frames:
                chunk.append(s)
                if len(chunk) == burst:
                    break
        except CaptureError as exc:
            r.capture_error = str(exc)  # (the frames read before it still go)
        if not chunk:
            break
        wire.send([s.raw for s in chunk])
        for s in chunk:
            r.kinds[s.kind] += 1
            if s.verdict:
                r.verdicts[s.verdict] += 1
        r.sent += len(chunk)
        r.bursts += 1
        pacer.wait(len(chunk))
        last = chunk[-1].index
        if probe is not None:
            r.probes += 1
            if not probe():
                r.probe_failures += 1
                r.stopped_after = last
                break
            r.last_answered = last
        if r.capture_error is not None:
            break
    r.elapsed = time.monotonic() - t0
    return r


def process_rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"process {pid}: no VmRSS in /proc/{pid}/status")
