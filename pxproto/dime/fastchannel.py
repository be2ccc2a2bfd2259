"""The data channel's machines in use: the compiled ``pxproto.dime._channel`` when built, else the pure twins.

``ChannelSender`` and ``ChannelReceiver`` here are :class:`pxproto.dime.channel.ChannelSender` and
:class:`pxproto.dime.channel_rx.ChannelReceiver`, or their compiled copies (``pxproto.dime._channel`` and
``pxproto.dime._channel_rx``; both or neither) (same API, same frames, events,
timers and counters for the same inputs; ``tests/test_channel_diff.py`` checks it).  ``PXPROTO_PURE=1`` forces
the twins; under ``PXPROTO_REQUIRE_COMPILED=1`` a missing or stale build is an ImportError
(:func:`pxproto.fastpath.select.compiled`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pxproto.dime import channel, channel_rx
from pxproto.fastpath import select

PureSender = channel.ChannelSender
PureReceiver = channel_rx.ChannelReceiver

_compiled: Any = select.compiled("pxproto.dime._channel")
_compiled_rx: Any = select.compiled("pxproto.dime._channel_rx") if _compiled is not None else None
COMPILED = _compiled is not None and _compiled_rx is not None
if TYPE_CHECKING:  # the compiled classes have the twins' API
    ChannelSender = channel.ChannelSender
    ChannelReceiver = channel_rx.ChannelReceiver
else:
    ChannelSender = _compiled.ChannelSender if COMPILED else PureSender
    ChannelReceiver = _compiled_rx.ChannelReceiver if COMPILED else PureReceiver

__all__ = ["COMPILED", "ChannelReceiver", "ChannelSender", "PureReceiver", "PureSender"]
