"""The Construct spec of every Parallax frame: the single source of the layout.

A frame is an Ethernet II header, the common Parallax header, a class body,
and, when the header's AUTH flag is set, the authentication trailer::

    | eth (14) | header (20) | body (header.length bytes) | auth (26, optional) |

All integers are big-endian.  The header's ``length`` counts the body only.
The EtherType names the class (:mod:`pxproto.wire.ethertypes`); the scope
(whole server or one DIME) is the header's SCOPE_DIME flag.

Generators (docs, fastpath constants, the Lua dissector) walk these Structs;
the reference codec (:mod:`pxproto.wire.codec`) parses with them, interpreted.
"""

from __future__ import annotations

from construct import Bytes, Enum, FlagsEnum, GreedyBytes, Int8ub, Int16ub, Int32ub, Int64ub, Struct, this

from pxproto.wire.codes import (
    Command,
    DataFlag,
    DimeState,
    DiscoveryOp,
    HeaderFlag,
    Op,
    Status,
)

Ethernet = Struct(
    "dst" / Bytes(6),
    "src" / Bytes(6),
    "type" / Int16ub,
)

Header = Struct(
    "version" / Int8ub,
    "flags" / FlagsEnum(Int8ub, HeaderFlag),
    "length" / Int16ub,
    "src_dime" / Int16ub,
    "src_thread" / Int16ub,
    "dst_dime" / Int16ub,
    "dst_thread" / Int16ub,
    "seq" / Int64ub,
)

SignalingFixed = Struct(
    "req_id" / Int32ub,
    "cmd" / Enum(Int8ub, Command),
    "op" / Enum(Int8ub, Op),
    "status" / Enum(Int8ub, Status),
    "tlv_count" / Int8ub,
)

TlvHeader = Struct(
    "type" / Int16ub,
    "length" / Int16ub,
)

Tlv = Struct(
    "type" / Int16ub,
    "length" / Int16ub,
    "value" / Bytes(this.length),
)

DataFixed = Struct(
    "channel" / Int16ub,
    "flags" / FlagsEnum(Int8ub, DataFlag),
    "msg_id" / Int32ub,
    "msg_len" / Int32ub,
    "frag_offset" / Int32ub,
    "frag_index" / Int16ub,
    "frag_count" / Int16ub,
    "ack" / Int32ub,
    "credit" / Int16ub,
)

DiscoveryFixed = Struct(
    "op" / Enum(Int8ub, DiscoveryOp),
    "state_filter" / Int8ub,
    "count" / Int16ub,
    "probe_id" / Int32ub,
    "sw_version" / Int32ub,
    "caps" / Int32ub,
)

DimeRecord = Struct(
    "dime" / Int16ub,
    "core" / Int16ub,
    "state" / Enum(Int8ub, DimeState),
    "mem_total" / Int32ub,
    "mem_free" / Int32ub,
    "epoch" / Int32ub,
)

HeartbeatBody = Struct(
    "epoch" / Int32ub,
    "state" / Enum(Int8ub, DimeState),
    "period_ms" / Int16ub,
    "cpu_permille" / Int16ub,
    "stage" / Int16ub,
    "mem_used" / Int32ub,
    "mem_limit" / Int32ub,
    "rx_queue" / Int32ub,
    "tx_queue" / Int32ub,
    "service" / Int32ub,
)

AuthTrailer = Struct(
    "key_id" / Int16ub,
    "counter" / Int64ub,
    "tag" / Bytes(16),
)

SignalingBody = Struct(
    "fixed" / SignalingFixed,
    "tlvs" / Tlv[this.fixed.tlv_count],
)

DataBody = Struct(
    "fixed" / DataFixed,
    "payload" / GreedyBytes,
)

DiscoveryBody = Struct(
    "fixed" / DiscoveryFixed,
    "dimes" / DimeRecord[this.fixed.count],
)

ETH_LEN = Ethernet.sizeof()
HEADER_LEN = Header.sizeof()
HEADER_OFFSET = ETH_LEN
BODY_OFFSET = ETH_LEN + HEADER_LEN
AUTH_LEN = AuthTrailer.sizeof()
TAG_LEN = 16
MIN_ETHERNET_FRAME = 60
"""Shortest Ethernet frame on the wire without FCS; shorter frames are padded with zeros."""

FIXED_BODIES = {
    "signaling": SignalingFixed,
    "data": DataFixed,
    "discovery": DiscoveryFixed,
    "heartbeat": HeartbeatBody,
}
"""The fixed part of each class's body, in the order of FrameClass."""

# Short names the field tables and the to_dict() keys use for each struct.
STRUCT_PREFIXES = {
    "eth": Ethernet,
    "": Header,
    "sig": SignalingFixed,
    "tlv": TlvHeader,
    "data": DataFixed,
    "disc": DiscoveryFixed,
    "disc.dime": DimeRecord,
    "hb": HeartbeatBody,
    "auth": AuthTrailer,
}

# The px.* key of each field where it is not simply px.<prefix>.<field>: the
# common header and the signaling fields are short because filters use them most.
FIELD_KEYS = {
    ("", "length"): "px.len",
    ("", "src_dime"): "px.dime.src",
    ("", "src_thread"): "px.thread.src",
    ("", "dst_dime"): "px.dime.dst",
    ("", "dst_thread"): "px.thread.dst",
    ("sig", "req_id"): "px.req_id",
    ("sig", "cmd"): "px.cmd",
    ("sig", "op"): "px.op",
    ("sig", "status"): "px.status",
    ("sig", "tlv_count"): "px.tlv_count",
}


def field_key(prefix: str, name: str) -> str:
    """The ``px.*`` name of a spec field: a to_dict() key, a dissector field, a filter word."""
    return FIELD_KEYS.get((prefix, name), f"px.{prefix + '.' if prefix else ''}{name}")
