"""Valid and hostile Parallax frames for testing any implementation: public API.

One generator, three faces:

- :mod:`pxproto.testing.draw`: the drawing of valid frames, from a seeded
  :class:`random.Random` (``random_frame``, ``valid_pool``, ``variant``);
- :mod:`pxproto.testing.hostile`: the one table of mutations
  (:data:`MUTATIONS`), derived from the spec's layout tables;
- :mod:`pxproto.testing.strategies`: hypothesis strategies over the same
  drawing and table (``frames()``, ``*_bodies()``, ``mutations()``,
  ``hostile_bytes()``).  They need hypothesis: ``pip install 'pxproto[testing]'``.

Users point them at their own implementations::

    from hypothesis import given
    from pxproto.testing import frames
    from pxproto.wire import encode

    @given(frames())
    def test_my_decoder(frame):
        assert my_decode(encode(frame)) ...

The drawing and the mutations import without hypothesis (``pxfuzz`` uses them);
the strategy names load it on first use.
"""

from __future__ import annotations

from typing import Any

from pxproto.testing.draw import RandomSource, Source, random_frame, valid_pool, variant
from pxproto.testing.hostile import HOSTILE_KINDS, KINDS, MUTATIONS, Mutation, mutate, ruled_fields

STRATEGIES = (
    "BODIES",
    "auths",
    "data_bodies",
    "data_frames",
    "dime_infos",
    "discovery_bodies",
    "discovery_frames",
    "frames",
    "heartbeat_bodies",
    "heartbeat_frames",
    "hostile_bytes",
    "mutations",
    "signaling_bodies",
    "signaling_frames",
    "tlv_values",
    "tlvs",
)
"""Names served from :mod:`pxproto.testing.strategies` (hypothesis)."""


def __getattr__(name: str) -> Any:
    if name not in STRATEGIES:
        raise AttributeError(f"module 'pxproto.testing' has no attribute {name!r}")
    try:
        from pxproto.testing import strategies
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        raise ModuleNotFoundError(
            f"pxproto.testing.{name} is a hypothesis strategy: pip install 'pxproto[testing]'", name="hypothesis"
        ) from None
    return getattr(strategies, name)


__all__ = [
    "HOSTILE_KINDS",
    "KINDS",
    "MUTATIONS",
    "STRATEGIES",
    "Mutation",
    "RandomSource",
    "Source",
    "mutate",
    "random_frame",
    "ruled_fields",
    "valid_pool",
    "variant",
    *STRATEGIES,
]
