"""``Frame.to_dict()`` from raw field values: how the scapy and dpkt bindings
(:mod:`pxproto.interop.scapy`, :mod:`pxproto.interop.dpkt`) name what they decoded, so every
decoder of the ecosystem can be checked key for key against the reference.

The fields and their ``px.*`` keys come from :mod:`pxproto.wire.layout`; only
the keys ``to_dict()`` derives (class, scope, flag bits, FCAPS, TLV values,
per-record lists) are computed here, with the reference's own helpers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pxproto.wire import ethertypes, layout
from pxproto.wire.codec import _decode_tlv
from pxproto.wire.codes import STATE_ANY, Command, DataFlag, DimeState, FrameClass, HeaderFlag, Scope
from pxproto.wire.frame import mac_text

BODY_PREFIX = layout.CLASS_PREFIX
"""The layout table of each class's fixed body."""


@dataclass
class Decoded:
    """What a binding decoded from one frame, as raw numbers and bytes by layout field name."""

    cls: FrameClass
    eth: Mapping[str, Any]
    header: Mapping[str, Any]
    body: Mapping[str, Any]
    tlvs: Sequence[tuple[int, bytes]] = ()
    dimes: Sequence[Mapping[str, Any]] = ()
    payload: bytes = b""
    auth: Mapping[str, Any] | None = None
    padding: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _table(prefix: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in layout.struct_tables()[prefix][1]:
        if f.name not in raw:
            continue  # derived by to_dict (px.eth.type)
        v = raw[f.name]
        if f.kind == "enum":
            v = f.values.get(int(v), int(v))
        elif f.kind in ("uint", "flags"):
            v = int(v)
        elif prefix == "eth":
            v = mac_text(bytes(v))
        else:
            v = bytes(v).hex()
        out[f.key] = v
    return out


def to_dict(d: Decoded) -> dict[str, Any]:
    """The ``px.*`` dict the reference ``decode(raw).to_dict()`` gives for the same frame."""
    out = _table("eth", d.eth)
    out["px.eth.type"] = ethertypes.current().of(d.cls)
    out["px.eth.padding"] = d.padding
    out["px.class"] = d.cls.name
    out |= _table("", d.header)
    flags = int(d.header["flags"])
    out["px.flags.scope_dime"] = bool(flags & HeaderFlag.SCOPE_DIME)
    out["px.flags.auth"] = bool(flags & HeaderFlag.AUTH)
    out["px.flags.encrypted"] = sealed = bool(flags & HeaderFlag.ENCRYPTED)
    out["px.scope"] = Scope(flags & HeaderFlag.SCOPE_DIME).name
    if not sealed:  # of an encrypted body no field is known (pxproto.wire.aead)
        _body_keys(d, out)
    if d.auth is not None:
        out |= _table("auth", d.auth)
    return out


def _body_keys(d: Decoded, out: dict[str, Any]) -> None:
    out |= _table(BODY_PREFIX[d.cls], d.body)
    if d.cls is FrameClass.SIGNALING:
        out["px.fcaps"] = Command(int(d.body["cmd"])).fcaps.name
        for t, value in d.tlvs:
            tlv = _decode_tlv(t, bytes(value), 0)
            out[tlv.key()] = tlv.display()
    elif d.cls is FrameClass.DATA:
        out["px.data.flags.ack"] = bool(int(d.body["flags"]) & DataFlag.ACK)
        out["px.data.flags.fin"] = bool(int(d.body["flags"]) & DataFlag.FIN)
        out["px.data.payload_len"] = len(d.payload)
    elif d.cls is FrameClass.DISCOVERY:
        sf = int(d.body["state_filter"])
        out["px.disc.state_filter"] = "ANY" if sf == STATE_ANY else DimeState(sf).name
        if d.dimes:
            rows = [_table("disc.dime", r) for r in d.dimes]
            for key in rows[0]:
                out[key] = [r[key] for r in rows]
