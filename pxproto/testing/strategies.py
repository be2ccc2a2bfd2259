"""Hypothesis strategies for every Parallax frame class (needs the ``pxproto[testing]`` extra).

The strategies run the same drawing code as the seeded generator
(:mod:`pxproto.testing.draw`) through :class:`DrawSource`, and the same table
of mutations (:mod:`pxproto.testing.hostile`), so what hypothesis finds and
what ``pxfuzz`` sends come from one place.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hypothesis import strategies as st

from pxproto.testing import draw as _draw
from pxproto.testing.hostile import HOSTILE_KINDS, MUTATIONS
from pxproto.wire.codes import DIME_ALL, FrameClass, TlvType
from pxproto.wire.frame import Auth, Data, DimeInfo, Discovery, Frame, Heartbeat, Signaling, Tlv

T = TypeVar("T")

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
dime_ids = st.integers(0, DIME_ALL - 1)
macs = st.binary(min_size=_draw.MAC_SIZE, max_size=_draw.MAC_SIZE)
MAX_BODY = _draw.MAX_BODY


class DrawSource:
    """A :class:`pxproto.testing.draw.Source` over a hypothesis ``draw``: every choice shrinks."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def uint(self, nbits: int) -> int:
        return self.draw(st.integers(0, (1 << nbits) - 1))

    def between(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def pick(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def blob(self, lo: int, hi: int) -> bytes:
        return self.draw(st.binary(min_size=lo, max_size=hi))

    def chance(self, p: float) -> bool:
        return self.draw(st.booleans())

    def text(self, max_bytes: int) -> str:
        return self.draw(st.text(max_size=40).filter(lambda s: len(s.encode()) <= max_bytes))


def tlv_values(t: TlvType) -> st.SearchStrategy[Any]:
    return _drawn(lambda src: _draw.tlv_value(src, t))


@st.composite
def tlvs(draw: st.DrawFn, max_count: int = 6) -> tuple[Tlv, ...]:
    return _draw.tlvs(DrawSource(draw), max_count)


@st.composite
def signaling_bodies(draw: st.DrawFn) -> Signaling:
    return _draw.signaling(DrawSource(draw))


@st.composite
def data_bodies(draw: st.DrawFn, max_payload: int = _draw.MAX_PAYLOAD) -> Data:
    return _draw.data(DrawSource(draw), max_payload)


def _drawn(fn: Callable[[DrawSource], T]) -> st.SearchStrategy[T]:
    """What ``fn`` draws, as a strategy (every choice it makes shrinks)."""
    return st.composite(lambda draw: fn(DrawSource(draw)))()


def dime_info() -> st.SearchStrategy[DimeInfo]:
    return _drawn(_draw.dime_info)


def discovery_bodies() -> st.SearchStrategy[Discovery]:
    return _drawn(_draw.discovery)


dime_infos = dime_info()
heartbeat_bodies: st.SearchStrategy[Heartbeat] = _drawn(_draw.heartbeat)
auths: st.SearchStrategy[Auth] = _drawn(_draw.auth)
BODIES: dict[FrameClass, st.SearchStrategy[Any]] = {
    FrameClass.SIGNALING: signaling_bodies(),
    FrameClass.DATA: data_bodies(),
    FrameClass.DISCOVERY: discovery_bodies(),
    FrameClass.HEARTBEAT: heartbeat_bodies,
}


@st.composite
def frames(draw: st.DrawFn, cls: FrameClass | None = None) -> Frame:
    """A valid frame of ``cls`` (any class when None)."""
    return _draw.frame(DrawSource(draw), cls, auth_share=0.5)


def signaling_frames() -> st.SearchStrategy[Frame]:
    return frames(FrameClass.SIGNALING)


def data_frames() -> st.SearchStrategy[Frame]:
    return frames(FrameClass.DATA)


def discovery_frames() -> st.SearchStrategy[Frame]:
    return frames(FrameClass.DISCOVERY)


def heartbeat_frames() -> st.SearchStrategy[Frame]:
    return frames(FrameClass.HEARTBEAT)


@st.composite
def mutations(draw: st.DrawFn, raw: bytes, kinds: Sequence[str] = HOSTILE_KINDS) -> bytes:
    """``raw`` made hostile by one mutator of :data:`pxproto.testing.MUTATIONS` (a hostile one by default),
    driven by a drawn seed: a failing example names the mutator and the seed that reproduce it."""
    kind = draw(st.sampled_from(list(kinds)))
    seed = draw(st.integers(0, 2**32 - 1))
    return MUTATIONS[kind].apply(random.Random(seed), raw, ())


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    """Wire bytes from a valid frame, mutated."""
    from pxproto.wire.codec import encode

    return draw(mutations(encode(draw(frames()))))
