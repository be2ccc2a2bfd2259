"""The data channel's machines in use: the compiled ``pxproto.dime._channel`` when built, else the pure twins.

``ChannelSender`` and ``ChannelReceiver`` here are :class:`pxproto.dime.channel.ChannelSender` and
:class:`pxproto.dime.channel_rx.ChannelReceiver`, or their compiled copies (same API, same frames, events,
timers and counters for the same inputs; ``tests/test_channel_diff.py`` checks it).  ``PXPROTO_PURE=1`` forces
the twins; under ``PXPROTO_REQUIRE_COMPILED=1`` a missing or stale build is an ImportError
(:func:`pxproto.fastpath.select.compiled`).
"""

from __future__ import annotations

from typing import Any

from pxproto.dime import channel, channel_rx
from pxproto.fastpath import select

PureSender = channel.ChannelSender
PureReceiver = channel_rx.ChannelReceiver

_compiled: Any = select.compiled("pxproto.dime._channel")
COMPILED = _compiled is not None
ChannelSender: Any = _compiled.ChannelSender if COMPILED else PureSender
"""The sending end in use (a :class:`pxproto.dime.channel.ChannelSender` or its compiled copy)."""
ChannelReceiver: Any = _compiled.ChannelReceiver if COMPILED else PureReceiver
"""The receiving end in use (a :class:`pxproto.dime.channel_rx.ChannelReceiver` or its compiled copy)."""

__all__ = ["COMPILED", "ChannelReceiver", "ChannelSender", "PureReceiver", "PureSender"]
