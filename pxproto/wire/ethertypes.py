"""The EtherType map: which EtherType carries which frame class.

This module is the one place every tool reads it from (codecs, BPF filters,
the Lua dissector generator).  The default follows the prior art of the
Parallax authors' later BareMetal node (0xABBA commands, 0xABBB data) and
extends it to four classes.  Change it at run time with :func:`configure`, or
before start-up with the ``PXPROTO_ETHERTYPES`` environment variable, e.g.
``PXPROTO_ETHERTYPES=signaling=0x88b5,data=0x88b6,discovery=0xabbc,heartbeat=0xabbd``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from types import TracebackType

from pxproto.errors import ProtocolError, SettingError
from pxproto.wire.codes import FrameClass

ENV_VAR = "PXPROTO_ETHERTYPES"

# EtherTypes the map may not take: a Parallax frame must never be mistaken
# for one of these.
RESERVED = {
    0x0800: "IPv4",
    0x0806: "ARP",
    0x86DD: "IPv6",
    0x8100: "802.1Q VLAN tag",
    0x88A8: "802.1ad service tag",
    0x88CC: "LLDP",
    0x88A2: "ATA over Ethernet",
    0x8847: "MPLS",
    0x88E5: "MACsec",
}


@dataclass(frozen=True)
class EtherTypeMap:
    """EtherType of each frame class."""

    signaling: int = 0xABBA
    data: int = 0xABBB
    discovery: int = 0xABBC
    heartbeat: int = 0xABBD

    def __post_init__(self) -> None:
        values = self.as_dict()
        for name, value in values.items():
            if not 0x0600 <= value <= 0xFFFF:
                raise ValueError(f"EtherType {name}={hex(value)}: must be within 0x0600..0xffff")
            if value in RESERVED:
                raise ValueError(f"EtherType {name}=0x{value:04x} is taken by {RESERVED[value]}")
        if len(set(values.values())) != len(values):
            raise ValueError(f"EtherType map gives two classes the same value: {self.describe()}")

    def as_dict(self) -> dict[str, int]:
        """Class name (lower case) -> EtherType, in class order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def of(self, cls: FrameClass) -> int:
        """The EtherType that carries ``cls``."""
        return self.as_dict()[cls.name.lower()]

    def classify(self, ethertype: int) -> FrameClass | None:
        """The class an EtherType carries, or None for a non-Parallax frame."""
        for name, value in self.as_dict().items():
            if value == ethertype:
                return FrameClass[name.upper()]
        return None

    def describe(self) -> str:
        return ",".join(f"{k}=0x{v:04x}" for k, v in self.as_dict().items())

    @classmethod
    def parse(cls, text: str) -> EtherTypeMap:
        """Read ``signaling=0xabba,data=...``; classes left out keep their default."""
        values: dict[str, int] = {}
        for i, item in enumerate(filter(None, (p.strip() for p in text.split(",")))):
            name, sep, number = item.partition("=")
            name = name.strip().lower()
            if not sep or name not in EtherTypeMap().as_dict():
                raise ValueError(
                    f"EtherType map item {i + 1} {item!r}: expected CLASS=VALUE with CLASS one of "
                    "signaling, data, discovery, heartbeat"
                )
            if name in values:
                raise ValueError(f"EtherType map item {i + 1} {item!r}: class {name} is given twice")
            try:
                values[name] = int(number.strip(), 0)
            except ValueError:
                raise ValueError(f"EtherType map item {i + 1} {item!r}: {number.strip()!r} is not a number") from None
        return cls(**values)


DEFAULT = EtherTypeMap()
_current = DEFAULT


def current() -> EtherTypeMap:
    """The map in force."""
    return _current


def configure(new: EtherTypeMap | str | None) -> EtherTypeMap:
    """Put a map in force for every codec and tool in this process; None restores the default."""
    global _current
    if isinstance(new, str):
        new = EtherTypeMap.parse(new)
    _current = DEFAULT if new is None else new
    for hook in _listeners:
        hook(_current)
    return _current


_listeners: list[Callable[[EtherTypeMap], None]] = []


def on_change(hook: Callable[[EtherTypeMap], None]) -> None:
    """Call ``hook(map)`` whenever the map changes (the fastpath keeps a C copy)."""
    _listeners.append(hook)


def classify_or_raise(ethertype: int) -> FrameClass:
    cls = _current.classify(ethertype)
    if cls is None:
        raise ProtocolError("eth.type", 12, f"0x{ethertype:04x} is not a Parallax EtherType ({_current.describe()})")
    return cls


def _one_line(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """``sys.excepthook`` while a bad ``PXPROTO_ETHERTYPES`` is raised: that error is one line, not a traceback."""
    if issubclass(kind, SettingError):
        print(f"pxproto: {exc}", file=sys.stderr)
    else:
        sys.__excepthook__(kind, exc, tb)


def _configure_from_env() -> None:
    """Put ``PXPROTO_ETHERTYPES`` in force; a value that is no map raises :class:`SettingError`.

    The console scripts print it as their one line of error (exit status 2); a ``python -m``
    tool (``python -m pxproto.wire``), whose package import fails before its code runs, prints
    it as one line too (exit status 1), by way of ``sys.excepthook`` (left alone if it is not
    Python's own)."""
    text = os.environ.get(ENV_VAR)
    if not text:
        return
    try:
        configure(text)
    except ValueError as exc:
        if sys.excepthook is sys.__excepthook__:
            sys.excepthook = _one_line
        raise SettingError(ENV_VAR, text, str(exc)) from None


_configure_from_env()
