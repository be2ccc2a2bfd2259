"""Shared pieces of the coverage-guided state-machine targets (fuzz/sm_*.py).

Each target turns the fuzzer's bytes into a script of calls on one sans-I/O
machine: frames built field by field from a small set of peers (so the
machine's tables actually fill and collide), raw bytes through the reference
decoder, and clock steps.  Everything a machine emits must encode, its timer
must lie in the future after ``handle_timer``, and its tables must stay
within their stated bounds.  Any other exception is a finding.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

# A target runs as a script from fuzz/ (its own folder is on sys.path): pxproto is the checkout's, one up.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pxproto.errors import ProtocolError
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import Command, Op, Status, TlvType
from pxproto.wire.frame import Frame, Signaling, Tlv

MACS = [bytes([2, 0, 0, 0, 0, i]) for i in range(1, 5)]


class Script:
    """Reads choices off the fuzzer's bytes (atheris's FuzzedDataProvider, or a plain byte reader)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(self.take(nbytes).ljust(nbytes, b"\0"), "big")

    def take(self, n: int) -> bytes:
        b = self.data[self.pos : self.pos + n]
        self.pos += len(b)
        return b

    def pick(self, seq: Any) -> Any:
        return seq[self.u8() % len(seq)]

    def small(self, n: int) -> int:
        return self.u8() % n


class ScriptSource:
    """A :class:`pxproto.testing.draw.Source` reading its choices off a :class:`Script`: the fuzz targets
    draw frames with the same code as pxfuzz and the hypothesis strategies."""

    def __init__(self, s: Script) -> None:
        self.s = s

    def uint(self, nbits: int) -> int:
        return self.s.uint((nbits + 7) // 8) & ((1 << nbits) - 1)

    def between(self, lo: int, hi: int) -> int:
        return lo + self.uint((hi - lo).bit_length()) % (hi - lo + 1)

    def pick(self, seq: Any) -> Any:
        return self.s.pick(seq)

    def blob(self, lo: int, hi: int) -> bytes:
        return self.s.take(self.between(lo, min(hi, lo + 24))).ljust(lo, b"\0")

    def chance(self, p: float) -> bool:
        return self.s.u8() < p * 256

    def text(self, max_bytes: int) -> str:
        return self.s.take(self.s.small(12)).decode("latin-1")  # at most 24 UTF-8 bytes


def tlv_value(s: Script, t: TlvType) -> int | str | bytes:
    from pxproto.testing.draw import tlv_value as draw_tlv_value

    return draw_tlv_value(ScriptSource(s), t)


def signaling_body(s: Script, op: Op | None = None) -> Signaling:
    cmd = s.pick(list(Command))
    op = op or s.pick(list(Op))
    status = Status.OK if op is Op.REQUEST else s.pick(list(Status))
    types = {s.pick(list(TlvType)) for _ in range(s.small(4))}
    params = tuple(Tlv(t, tlv_value(s, t)) for t in sorted(types))
    return Signaling(cmd, op, s.small(8) + 1, status, params)


def wire_roundtrip(frame: Frame) -> Frame | None:
    """The frame as a receiver would see it, or None if the wire could not carry it."""
    try:
        return decode(encode(frame))
    except ProtocolError:
        return None


def raw_frame(s: Script) -> Frame | None:
    try:
        return decode(s.take(s.small(200)))
    except ProtocolError:
        return None


def check_output(out: Any, now: float, after_timer: bool = False) -> None:
    for f in out.frames:
        encode(f)  # what a machine sends, the wire must carry (raises ProtocolError if not)
    if after_timer and out.timer is not None and out.timer <= now:
        raise AssertionError(f"timer {out.timer} not after now {now} following handle_timer")


def run(target: Callable[[bytes], None]) -> None:
    """Run ``target`` under atheris with the command line's libFuzzer options."""
    import atheris

    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
