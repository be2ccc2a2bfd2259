"""The two implementations of the data channel's machines, for tests that run against both.

``pure``: :mod:`pxproto.dime.channel` / :mod:`pxproto.dime.channel_rx`; ``compiled``: ``pxproto.dime._channel``
and ``pxproto.dime._channel_rx``, imported directly (whatever ``PXPROTO_PURE`` says, so both are always compared
where they are built). Without a build the compiled cases skip, unless ``PXPROTO_REQUIRE_COMPILED=1``: they fail.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import pytest

from pxproto.dime.channel import ChannelSender
from pxproto.dime.channel_rx import ChannelReceiver

IMPLS = ("pure", "compiled")


def compiled_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if os.environ.get("PXPROTO_REQUIRE_COMPILED") == "1":
            raise
        pytest.skip(f"{name} is not built ({exc})")


def impl_classes(name: str) -> tuple[Any, Any]:
    """(ChannelSender, ChannelReceiver) of an implementation."""
    if name == "pure":
        return ChannelSender, ChannelReceiver
    tx = compiled_module("pxproto.dime._channel")
    rx = compiled_module("pxproto.dime._channel_rx")
    return tx.ChannelSender, rx.ChannelReceiver
