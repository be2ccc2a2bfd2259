"""Fast, seeded hostile-frame generation for ``pxfuzz``: a pool of valid frames and the mutation table.

Hypothesis's ``.example()`` is far too slow for a million frames, so the
frames are drawn with a plain :class:`random.Random` by the same drawing code
the strategies use (:mod:`pxproto.testing.draw`; every frame goes through the
reference encoder, which refuses anything the decoder would reject), kept in
a pool, and mutated by the one table of :mod:`pxproto.testing.hostile`.

Every :class:`Case` carries the name of the mutator that made it; the same
seed gives the same frames, in the same order, on every run.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from pxproto.testing.draw import MAX_BODY, random_frame, valid_pool
from pxproto.testing.hostile import (
    HOSTILE_KINDS,
    KINDS,
    MUTATIONS,
    mutate_ethertype,
    mutate_extend,
    mutate_field,
    mutate_flip,
    mutate_scope,
    mutate_splice,
    mutate_truncate,
    random_bytes,
)
from pxproto.wire import spec


@dataclass(frozen=True, slots=True)
class Case:
    """One generated frame: its bytes and the mutator that made it."""

    raw: bytes
    kind: str


class FrameGenerator:
    """A seeded, endless source of :class:`Case`; same seed, same frames.

    ``pool`` frames (from :func:`valid_pool`, or a capture) are the material;
    ``kinds`` and ``weights`` choose the mutators.  ``min_len`` > 0 keeps
    empty frames out (a stream wire cannot carry them); ``max_len`` bounds them.
    """

    def __init__(
        self,
        seed: int = 0,
        kinds: Iterable[str] = KINDS,
        weights: Sequence[float] | None = None,
        pool: Sequence[bytes] | None = None,
        pool_size: int = 256,
        macs: Sequence[bytes] | None = None,
        min_len: int = 0,
        max_len: int = MAX_BODY + spec.BODY_OFFSET + spec.AUTH_LEN + 64,
    ) -> None:
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"unknown mutator(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
        if weights is not None and len(weights) != len(self.kinds):
            raise ValueError(f"{len(weights)} weights for {len(self.kinds)} kinds")
        self.weights = list(weights) if weights is not None else None
        self.rng = random.Random(seed)
        self.pool = list(pool) if pool else valid_pool(self.rng, pool_size, macs)
        self.min_len = min_len
        self.max_len = max_len
        self.made = 0

    def _mutate(self, kind: str, raw: bytes) -> bytes:
        return MUTATIONS[kind].apply(self.rng, raw, self.pool)

    def next(self) -> Case:
        kind = self.rng.choices(self.kinds, self.weights)[0] if self.weights else self.rng.choice(self.kinds)
        raw = self._mutate(kind, self.rng.choice(self.pool))
        if len(raw) < self.min_len:
            raw = raw + bytes(self.min_len - len(raw))
        self.made += 1
        return Case(raw[: self.max_len], kind)

    def take(self, n: int) -> list[Case]:
        return [self.next() for _ in range(n)]

    def __iter__(self) -> Iterator[Case]:
        while True:
            yield self.next()


__all__ = [
    "HOSTILE_KINDS",
    "KINDS",
    "Case",
    "FrameGenerator",
    "mutate_ethertype",
    "mutate_extend",
    "mutate_field",
    "mutate_flip",
    "mutate_scope",
    "mutate_splice",
    "mutate_truncate",
    "random_bytes",
    "random_frame",
    "valid_pool",
]
