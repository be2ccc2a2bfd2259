"""What the switch needs to know of a frame: class, scope and DIME ids, or why it is malformed.

Three depths of validation, chosen by the switch's policy:

``none``
    classify by EtherType and read the header; only a frame too short to hold
    the header is malformed.
``header``
    also the header's own rules: version, reserved flags, body length against
    the frame length, padding, scope rules of each class.
``full``
    the reference decoder (every body rule); slow, for captures and tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pxproto.errors import ProtocolError
from pxproto.wire import codec, ethertypes, layout, spec
from pxproto.wire.codes import DIME_ALL, PROTOCOL_VERSION, FrameClass, HeaderFlag

Validation = Literal["none", "header", "full"]
VALIDATIONS: tuple[Validation, ...] = ("none", "header", "full")

ETH = spec.ETH_LEN
BODY = spec.BODY_OFFSET
OFF = {f.name: ETH + f.offset for f in layout.fields(spec.Header)}
_FLAG_MASK = int(HeaderFlag.SCOPE_DIME | HeaderFlag.AUTH | HeaderFlag.ENCRYPTED)
_SYSTEM_ONLY = (FrameClass.DISCOVERY, FrameClass.HEARTBEAT)


@dataclass(frozen=True, slots=True)
class Peek:
    """The header fields forwarding reads; ``cls`` is None for a non-Parallax frame."""

    cls: FrameClass | None
    dime_scope: bool = False
    src_dime: int = DIME_ALL
    dst_dime: int = DIME_ALL


NON_PARALLAX = Peek(None)


def _u16(buf: bytes, off: int) -> int:
    return (buf[off] << 8) | buf[off + 1]


def peek(buf: bytes, validation: Validation = "header") -> Peek:
    """Classify ``buf``; raise ProtocolError (field, offset, reason) if it is malformed."""
    n = len(buf)
    if n < ETH:
        raise ProtocolError("eth", 0, f"truncated: {n} bytes, an Ethernet header needs {ETH}")
    cls = ethertypes.current().classify(_u16(buf, 12))
    if cls is None:
        return NON_PARALLAX
    if validation == "full":
        f = codec.decode(buf)
        return Peek(cls, bool(f.flags & HeaderFlag.SCOPE_DIME), f.src_dime, f.dst_dime)
    if n < BODY:
        raise ProtocolError("header", ETH, f"truncated: {n - ETH} bytes, the Parallax header needs {BODY - ETH}")
    flags = buf[OFF["flags"]]
    dime_scope = bool(flags & HeaderFlag.SCOPE_DIME)
    src, dst = _u16(buf, OFF["src_dime"]), _u16(buf, OFF["dst_dime"])
    if validation == "header":
        _check_header(buf, cls, flags, dime_scope, src, dst)
    return Peek(cls, dime_scope, src, dst)


def _check_header(buf: bytes, cls: FrameClass, flags: int, dime_scope: bool, src: int, dst: int) -> None:
    n = len(buf)
    if buf[OFF["version"]] != PROTOCOL_VERSION:
        raise ProtocolError("version", OFF["version"], f"version {buf[OFF['version']]}, expected {PROTOCOL_VERSION}")
    if flags & ~_FLAG_MASK:
        raise ProtocolError("flags", OFF["flags"], f"reserved bits 0x{flags & ~_FLAG_MASK:02x} set")
    if flags & HeaderFlag.ENCRYPTED and not flags & HeaderFlag.AUTH:  # forwarded opaque, but never tagless
        raise ProtocolError("flags", OFF["flags"], "ENCRYPTED without AUTH: an encrypted body needs the trailer's tag")
    end = BODY + _u16(buf, OFF["length"]) + (spec.AUTH_LEN if flags & HeaderFlag.AUTH else 0)
    if end > n:
        raise ProtocolError("len", OFF["length"], f"the frame ends at {end}, it holds {n} bytes")
    if end < n and not (n == spec.MIN_ETHERNET_FRAME and not any(buf[end:])):
        raise ProtocolError("len", OFF["length"], f"{n - end} bytes follow the end of the frame at byte {end}")
    if cls is FrameClass.DATA and not dime_scope:
        raise ProtocolError("flags", OFF["flags"], "a DATA frame must have DIME scope")
    if cls in _SYSTEM_ONLY and dime_scope:
        raise ProtocolError("flags", OFF["flags"], f"a {cls.name} frame must have SYSTEM scope")
    if dime_scope == (dst == DIME_ALL):
        raise ProtocolError("dime.dst", OFF["dst_dime"], f"dst DIME {dst:#x} does not fit the frame's scope")
    if cls is FrameClass.HEARTBEAT and src == DIME_ALL:
        raise ProtocolError("dime.src", OFF["src_dime"], "a heartbeat comes from one DIME, not 0xffff")
