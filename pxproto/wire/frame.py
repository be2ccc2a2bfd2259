"""What a decoded frame is: plain dataclasses, and their flat ``px.*`` view."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pxproto.wire import ethertypes, spec
from pxproto.wire.codes import (
    DIME_ALL,
    PROTOCOL_VERSION,
    STATE_ANY,
    TLV_ENUMS,
    TLV_KINDS,
    Command,
    DataFlag,
    DimeState,
    DiscoveryOp,
    FrameClass,
    HeaderFlag,
    Op,
    Scope,
    Status,
    TlvKind,
    TlvType,
)

BROADCAST = b"\xff" * 6
NO_DATA_FLAGS = DataFlag(0)
TlvValue = int | str | bytes


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(slots=True)
class Tlv:
    """One typed signaling parameter; ``type`` is a TlvType or, if unknown, a bare int."""

    type: int
    value: TlvValue

    def key(self) -> str:
        try:
            return f"px.tlv.{TlvType(self.type).name.lower()}"
        except ValueError:
            return f"px.tlv.t{self.type}"

    def display(self) -> Any:
        """The JSON-ready form of the value (names for enum codes, hex for bytes)."""
        try:
            t = TlvType(self.type)
        except ValueError:
            assert isinstance(self.value, bytes)
            return self.value.hex()
        kind = TLV_KINDS[t]
        if t in TLV_ENUMS:
            assert isinstance(self.value, int)
            return TLV_ENUMS[t](self.value).name
        if kind is TlvKind.MAC:
            assert isinstance(self.value, bytes)
            return mac_text(self.value)
        if isinstance(self.value, bytes):
            return self.value.hex()
        return self.value


def connect_params(
    channel: int, direction: int, peer_mac: bytes, peer_dime: int, peer_thread: int = 0
) -> tuple[Tlv, ...]:
    """The parameters of a CONNECT request: ``channel``'s ``direction`` end (a Direction) to the peer's DIME and
    thread."""
    return (
        Tlv(TlvType.CHANNEL, channel),
        Tlv(TlvType.DIRECTION, int(direction)),
        Tlv(TlvType.PEER_MAC, peer_mac),
        Tlv(TlvType.PEER_DIME, peer_dime),
        Tlv(TlvType.PEER_THREAD, peer_thread),
    )


@dataclass(slots=True)
class Signaling:
    """An FCAPS request or response."""

    cmd: Command
    op: Op = Op.REQUEST
    req_id: int = 0
    status: Status = Status.OK
    params: tuple[Tlv, ...] = ()

    def param(self, t: TlvType) -> TlvValue | None:
        for p in self.params:
            if p.type == t:
                return p.value
        return None


@dataclass(slots=True)
class Data:
    """One fragment of a MICE message on a data channel, and/or an acknowledgement."""

    channel: int
    msg_id: int = 0
    payload: bytes = b""
    msg_len: int = 0
    frag_offset: int = 0
    frag_index: int = 0
    frag_count: int = 1
    ack: int = 0
    credit: int = 0
    flags: DataFlag = NO_DATA_FLAGS


@dataclass(slots=True)
class DimeInfo:
    """One DIME as discovery announces it."""

    dime: int
    core: int
    state: DimeState
    mem_total: int
    mem_free: int
    epoch: int


@dataclass(slots=True)
class Discovery:
    """A probe for DIMEs, or a server's announcement of its DIMEs."""

    op: DiscoveryOp
    probe_id: int = 0
    sw_version: int = 0
    caps: int = 0
    state_filter: int = STATE_ANY
    dimes: tuple[DimeInfo, ...] = ()


@dataclass(slots=True)
class Heartbeat:
    """A DIME's periodic sign of life, with its load."""

    epoch: int
    state: DimeState
    period_ms: int = 100
    cpu_permille: int = 0
    stage: int = 0
    mem_used: int = 0
    mem_limit: int = 0
    rx_queue: int = 0
    tx_queue: int = 0
    service: int = 0


@dataclass(slots=True)
class Auth:
    """The authentication trailer: key id, the sender's replay counter, a truncated MAC."""

    key_id: int
    counter: int
    tag: bytes = b"\x00" * 16


@dataclass(slots=True)
class Sealed:
    """An encrypted body (header flag ENCRYPTED): AEAD ciphertext of a ``cls`` body, opaque until opened
    with the cluster key (:mod:`pxproto.wire.aead`); the AEAD tag is the trailer's."""

    cls: FrameClass
    ciphertext: bytes = b""


Body = Signaling | Data | Discovery | Heartbeat | Sealed
BODY_CLASS: dict[type, FrameClass] = {
    Signaling: FrameClass.SIGNALING,
    Data: FrameClass.DATA,
    Discovery: FrameClass.DISCOVERY,
    Heartbeat: FrameClass.HEARTBEAT,
}


@dataclass(slots=True)
class Frame:
    """A whole Parallax frame, from the Ethernet header to the trailer."""

    body: Body
    scope: Scope = Scope.SYSTEM
    src_dime: int = DIME_ALL
    src_thread: int = 0
    dst_dime: int = DIME_ALL
    dst_thread: int = 0
    seq: int = 0
    dst_mac: bytes = BROADCAST
    src_mac: bytes = b"\x00" * 6
    auth: Auth | None = None
    version: int = PROTOCOL_VERSION
    padding: int = field(default=0)
    """Zero bytes after the frame that pad it to the 60-byte Ethernet minimum."""

    @property
    def cls(self) -> FrameClass:
        b = self.body
        return b.cls if type(b) is Sealed else BODY_CLASS[type(b)]  # type: ignore[union-attr]

    @property
    def flags(self) -> HeaderFlag:
        f = HeaderFlag(0)
        if self.scope is Scope.DIME:
            f |= HeaderFlag.SCOPE_DIME
        if self.auth is not None:
            f |= HeaderFlag.AUTH
        if type(self.body) is Sealed:
            f |= HeaderFlag.ENCRYPTED
        return f

    def to_dict(self) -> dict[str, Any]:
        """A flat, JSON-ready dict keyed by the ``px.*`` field names that
        ``pxdump --json`` prints and the Wireshark dissector filters on."""
        flags = self.flags
        d: dict[str, Any] = {
            "px.eth.dst": mac_text(self.dst_mac),
            "px.eth.src": mac_text(self.src_mac),
            "px.eth.type": ethertypes.current().of(self.cls),
            "px.eth.padding": self.padding,
            "px.class": self.cls.name,
            "px.version": self.version,
            "px.flags": int(flags),
            "px.flags.scope_dime": bool(flags & HeaderFlag.SCOPE_DIME),
            "px.flags.auth": bool(flags & HeaderFlag.AUTH),
            "px.flags.encrypted": bool(flags & HeaderFlag.ENCRYPTED),
            "px.scope": self.scope.name,
            "px.len": body_length(self.body),
            "px.dime.src": self.src_dime,
            "px.thread.src": self.src_thread,
            "px.dime.dst": self.dst_dime,
            "px.thread.dst": self.dst_thread,
            "px.seq": self.seq,
        }
        _BODY_DICT[type(self.body)](self.body, d)
        if self.auth is not None:
            d["px.auth.key_id"] = self.auth.key_id
            d["px.auth.counter"] = self.auth.counter
            d["px.auth.tag"] = self.auth.tag.hex()
        return d


def _copy(d: dict[str, Any], prefix: str, body: Any, names: tuple[str, ...]) -> None:
    """``d[prefix + name] = body.name`` for each of ``names``, in order (the JSON keeps the order)."""
    for name in names:
        d[prefix + name] = getattr(body, name)


def _plain(v: Any) -> Any:
    """An enum member's name; any other value as it is."""
    return v.name if isinstance(v, Enum) else v


def _signaling_dict(b: Signaling, d: dict[str, Any]) -> None:
    d["px.req_id"] = b.req_id
    d["px.cmd"] = b.cmd.name
    d["px.fcaps"] = b.cmd.fcaps.name
    d["px.op"] = b.op.name
    d["px.status"] = b.status.name
    d["px.tlv_count"] = len(b.params)
    for p in b.params:
        d[p.key()] = p.display()


def _data_dict(b: Data, d: dict[str, Any]) -> None:
    d["px.data.channel"] = b.channel
    d["px.data.flags"] = int(b.flags)
    d["px.data.flags.ack"] = bool(b.flags & DataFlag.ACK)
    d["px.data.flags.fin"] = bool(b.flags & DataFlag.FIN)
    _copy(d, "px.data.", b, ("msg_id", "msg_len", "frag_offset", "frag_index", "frag_count", "ack", "credit"))
    d["px.data.payload_len"] = len(b.payload)


def _discovery_dict(b: Discovery, d: dict[str, Any]) -> None:
    d["px.disc.op"] = b.op.name
    d["px.disc.state_filter"] = "ANY" if b.state_filter == STATE_ANY else DimeState(b.state_filter).name
    d["px.disc.count"] = len(b.dimes)
    d["px.disc.probe_id"] = b.probe_id
    d["px.disc.sw_version"] = b.sw_version
    d["px.disc.caps"] = b.caps
    if b.dimes:
        for name in ("dime", "core", "state", "mem_total", "mem_free", "epoch"):
            d[f"px.disc.dime.{name}"] = [_plain(getattr(x, name)) for x in b.dimes]


def _sealed_dict(b: Sealed, d: dict[str, Any]) -> None:
    """Nothing of an encrypted body is known but its length (``px.len``) and class."""


def _heartbeat_dict(b: Heartbeat, d: dict[str, Any]) -> None:
    d["px.hb.epoch"] = b.epoch
    d["px.hb.state"] = b.state.name
    _copy(d, "px.hb.", b, ("period_ms", "cpu_permille", "stage", "mem_used", "mem_limit", "rx_queue", "tx_queue"))
    d["px.hb.service"] = b.service


_BODY_DICT: dict[type, Callable[[Any, dict[str, Any]], None]] = {
    Signaling: _signaling_dict,
    Data: _data_dict,
    Discovery: _discovery_dict,
    Heartbeat: _heartbeat_dict,
    Sealed: _sealed_dict,
}


def tlv_size(p: Tlv) -> int:
    v = p.value
    if isinstance(v, int):
        kind = TLV_KINDS[TlvType(p.type)]
        return {TlvKind.U8: 1, TlvKind.U16: 2, TlvKind.U32: 4, TlvKind.U64: 8}[kind]
    if isinstance(v, str):
        return len(v.encode())
    return len(v)


def body_length(b: Body) -> int:
    """The header's ``length`` for this body."""
    if isinstance(b, Signaling):
        return SIGNALING_FIXED + sum(TLV_HEADER + tlv_size(p) for p in b.params)
    if isinstance(b, Data):
        return DATA_FIXED + len(b.payload)
    if isinstance(b, Discovery):
        return DISCOVERY_FIXED + DIME_RECORD * len(b.dimes)
    if isinstance(b, Sealed):
        return len(b.ciphertext)
    return HEARTBEAT_LEN


SIGNALING_FIXED = spec.SignalingFixed.sizeof()
TLV_HEADER = spec.TlvHeader.sizeof()
DATA_FIXED = spec.DataFixed.sizeof()
DISCOVERY_FIXED = spec.DiscoveryFixed.sizeof()
DIME_RECORD = spec.DimeRecord.sizeof()
HEARTBEAT_LEN = spec.HeartbeatBody.sizeof()
