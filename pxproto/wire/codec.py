"""The reference codec: the interpreted Construct spec, plus the protocol's rules.

Construct parses each fixed part only after the length has been checked, so
a Construct exception here is a bug, never a peer's fault; the rules that a
layout cannot say (enum codes, scope, fragment bounds, TLV kinds) follow the
parse, each naming its field and byte offset.
"""

from __future__ import annotations

from typing import Any

from construct import ConstructError

from pxproto.errors import ProtocolError
from pxproto.wire import codes, ethertypes, layout, spec
from pxproto.wire.frame import (
    DATA_FIXED,
    DIME_RECORD,
    DISCOVERY_FIXED,
    HEARTBEAT_LEN,
    SIGNALING_FIXED,
    Auth,
    Body,
    Data,
    DimeInfo,
    Discovery,
    Frame,
    Heartbeat,
    Sealed,
    Signaling,
    Tlv,
    body_length,
)

ETH = spec.ETH_LEN
HDR = spec.BODY_OFFSET
FIXED_SIZE = {
    codes.FrameClass.SIGNALING: SIGNALING_FIXED,
    codes.FrameClass.DATA: DATA_FIXED,
    codes.FrameClass.DISCOVERY: DISCOVERY_FIXED,
    codes.FrameClass.HEARTBEAT: HEARTBEAT_LEN,
}
# Byte offsets of header fields from the start of the frame, for errors.
OFF = {f.name: ETH + f.offset for f in layout.fields(spec.Header)}
HEADER_FLAG_MASK = int(codes.HeaderFlag.SCOPE_DIME | codes.HeaderFlag.AUTH | codes.HeaderFlag.ENCRYPTED)
DATA_FLAG_MASK = int(codes.DataFlag.ACK | codes.DataFlag.FIN)


def _enum(enum: Any, value: int, field: str, offset: int, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise ProtocolError(field, offset, f"unknown {what} 0x{value:02x}") from None


def decode(buf: bytes | bytearray | memoryview) -> Frame:
    """Decode one Ethernet frame; raise ProtocolError naming the field and byte offset."""
    data = bytes(buf)
    try:
        return _decode(data)
    except ProtocolError:
        raise
    except (ConstructError, ValueError, KeyError, IndexError, TypeError, UnicodeError) as exc:
        # Unreachable when the rules above are complete; the fuzz tests assert it.
        raise ProtocolError("frame", 0, f"internal decoder error: {exc!r}") from exc


def _decode(data: bytes) -> Frame:
    n = len(data)
    if n < ETH:
        raise ProtocolError("eth", 0, f"truncated: {n} bytes, an Ethernet header needs {ETH}")
    eth = spec.Ethernet.parse(data[:ETH])
    cls = ethertypes.classify_or_raise(eth.type)
    if n < HDR:
        raise ProtocolError("header", ETH, f"truncated: {n - ETH} bytes, the Parallax header needs {HDR - ETH}")
    h = spec.Header.parse(data[ETH:HDR])
    if h.version != codes.PROTOCOL_VERSION:
        raise ProtocolError(
            "version", OFF["version"], f"version {h.version}, this codec speaks {codes.PROTOCOL_VERSION}"
        )
    flags = data[OFF["flags"]]
    if flags & ~HEADER_FLAG_MASK:
        raise ProtocolError("flags", OFF["flags"], f"reserved bits 0x{flags & ~HEADER_FLAG_MASK:02x} set")
    scope = codes.Scope.DIME if flags & codes.HeaderFlag.SCOPE_DIME else codes.Scope.SYSTEM
    has_auth = bool(flags & codes.HeaderFlag.AUTH)
    sealed = bool(flags & codes.HeaderFlag.ENCRYPTED)
    if sealed and not has_auth:
        raise ProtocolError("flags", OFF["flags"], "ENCRYPTED without AUTH: an encrypted body needs the trailer's tag")
    body_end = HDR + h.length
    if body_end > n:
        raise ProtocolError("len", OFF["length"], f"says {h.length} body bytes, the frame holds {n - HDR}")
    end = body_end + (spec.AUTH_LEN if has_auth else 0)
    if end > n:
        raise ProtocolError("auth", body_end, f"truncated trailer: {n - body_end} of {spec.AUTH_LEN} bytes")
    padding = n - end
    if padding and not (n == spec.MIN_ETHERNET_FRAME and not any(data[end:])):
        raise ProtocolError("len", OFF["length"], f"{padding} bytes follow the end of the frame at byte {end}")
    _check_scope(cls, scope, h.dst_dime, h.src_dime)
    if sealed:  # the header is clear and checked; the body is opaque until opened (pxproto.wire.aead)
        body: Body = Sealed(cls, data[HDR:body_end])
    elif h.length < FIXED_SIZE[cls]:
        raise ProtocolError(
            "len", OFF["length"], f"{h.length} body bytes, a {cls.name} body needs at least {FIXED_SIZE[cls]}"
        )
    else:
        body = _BODY_DECODERS[cls](data, HDR, body_end, h.dst_dime)
    auth = _decode_auth(data, body_end) if has_auth else None
    ids = {name: h[name] for name in ("src_dime", "src_thread", "dst_dime", "dst_thread", "seq")}
    return Frame(body, scope, dst_mac=eth.dst, src_mac=eth.src, auth=auth, version=h.version, padding=padding, **ids)


def _check_scope(cls: codes.FrameClass, scope: codes.Scope, dst_dime: int, src_dime: int) -> None:
    if cls is codes.FrameClass.DATA and scope is not codes.Scope.DIME:
        raise ProtocolError("flags", OFF["flags"], "a DATA frame must have DIME scope")
    if cls in (codes.FrameClass.DISCOVERY, codes.FrameClass.HEARTBEAT) and scope is not codes.Scope.SYSTEM:
        raise ProtocolError("flags", OFF["flags"], f"a {cls.name} frame must have SYSTEM scope")
    if scope is codes.Scope.SYSTEM and dst_dime != codes.DIME_ALL:
        raise ProtocolError("dime.dst", OFF["dst_dime"], f"a SYSTEM-scope frame goes to 0xffff, not {dst_dime}")
    if scope is codes.Scope.DIME and dst_dime == codes.DIME_ALL:
        raise ProtocolError("dime.dst", OFF["dst_dime"], "a DIME-scope frame needs a DIME id, not 0xffff")
    if cls is codes.FrameClass.HEARTBEAT and src_dime == codes.DIME_ALL:
        raise ProtocolError("dime.src", OFF["src_dime"], "a heartbeat comes from one DIME, not 0xffff")


def _decode_signaling(data: bytes, start: int, end: int, dst_dime: int) -> Signaling:
    f = spec.SignalingFixed.parse(data[start : start + SIGNALING_FIXED])
    cmd = _enum(codes.Command, int(f.cmd), "cmd", start + 4, "command")
    op = _enum(codes.Op, int(f.op), "op", start + 5, "op")
    status = _enum(codes.Status, int(f.status), "status", start + 6, "status")
    if op is codes.Op.REQUEST and status is not codes.Status.OK:
        raise ProtocolError("status", start + 6, f"a request carries OK, not {status.name}")
    params: list[Tlv] = []
    seen: set[int] = set()
    pos = start + SIGNALING_FIXED
    for i in range(f.tlv_count):
        if pos + 4 > end:
            raise ProtocolError("tlv", pos, f"TLV {i + 1} of {f.tlv_count}: header runs past the body end at {end}")
        t = spec.TlvHeader.parse(data[pos : pos + 4])
        if pos + 4 + t.length > end:
            raise ProtocolError("tlv.length", pos + 2, f"TLV {i + 1} length {t.length} runs past the body end")
        if t.type in seen:
            raise ProtocolError("tlv", pos, f"TLV type {t.type} appears twice")
        seen.add(t.type)
        params.append(_decode_tlv(t.type, data[pos + 4 : pos + 4 + t.length], pos))
        pos += 4 + t.length
    if pos != end:
        raise ProtocolError("tlv_count", start + 7, f"{end - pos} bytes follow the {f.tlv_count} TLVs it announces")
    return Signaling(cmd=cmd, op=op, req_id=f.req_id, status=status, params=tuple(params))


def _decode_tlv(type_: int, value: bytes, pos: int) -> Tlv:
    try:
        t = codes.TlvType(type_)
    except ValueError:
        return Tlv(type_, value)
    kind = codes.TLV_KINDS[t]
    name = f"tlv.{t.name.lower()}"
    size = codes.FIXED_TLV_SIZES.get(kind)
    if size is not None and len(value) != size:
        raise ProtocolError(name, pos + 2, f"length {len(value)}, a {kind.name} value is {size} bytes")
    if kind in (codes.TlvKind.U8, codes.TlvKind.U16, codes.TlvKind.U32, codes.TlvKind.U64):
        number = int.from_bytes(value, "big")
        if t in codes.TLV_ENUMS:
            _enum(codes.TLV_ENUMS[t], number, name, pos + 4, t.name.lower())
        return Tlv(t, number)
    if kind is codes.TlvKind.TEXT:
        if len(value) > codes.TEXT_MAX:
            raise ProtocolError(name, pos + 2, f"text of {len(value)} bytes, at most {codes.TEXT_MAX}")
        try:
            return Tlv(t, value.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ProtocolError(name, pos + 4 + exc.start, "not UTF-8") from None
    if kind is codes.TlvKind.ACL:
        if len(value) % codes.ACL_ENTRY_SIZE:
            raise ProtocolError(name, pos + 2, f"length {len(value)} is not a multiple of {codes.ACL_ENTRY_SIZE}")
        for k in range(0, len(value), codes.ACL_ENTRY_SIZE):
            mask, reserved = value[k + 6], value[k + 7]
            if mask >> len(codes.Fcaps) or reserved:
                raise ProtocolError(
                    name, pos + 4 + k + 6, f"entry {k // codes.ACL_ENTRY_SIZE}: bad FCAPS mask/reserved"
                )
    return Tlv(t, value)


def _decode_data(data: bytes, start: int, end: int, dst_dime: int) -> Data:
    f = spec.DataFixed.parse(data[start : start + DATA_FIXED])
    flags = data[start + 2]
    if flags & ~DATA_FLAG_MASK:
        raise ProtocolError("data.flags", start + 2, f"reserved bits 0x{flags & ~DATA_FLAG_MASK:02x} set")
    payload = data[start + DATA_FIXED : end]
    o = {fi: start + off for fi, off in _DATA_OFF.items()}
    if not flags & codes.DataFlag.ACK:
        if f.ack:
            raise ProtocolError("data.ack", o["ack"], "ack set without the ACK flag")
        if f.credit:
            raise ProtocolError("data.credit", o["credit"], "credit set without the ACK flag")
    if f.frag_count == 0:
        if not flags & codes.DataFlag.ACK:
            raise ProtocolError("data.flags", start + 2, "an acknowledgement-only frame (frag_count 0) sets ACK")
        for name in ("msg_len", "frag_offset", "frag_index"):
            if f[name]:
                raise ProtocolError(f"data.{name}", o[name], "must be 0 in an acknowledgement-only frame")
        if payload:
            raise ProtocolError("len", OFF["length"], "an acknowledgement-only frame carries no payload")
    else:
        if f.frag_index >= f.frag_count:
            raise ProtocolError("data.frag_index", o["frag_index"], f"fragment {f.frag_index} of {f.frag_count}")
        frag_end = f.frag_offset + len(payload)
        if frag_end > f.msg_len:
            raise ProtocolError(
                "data.frag_offset",
                o["frag_offset"],
                f"fragment bytes {f.frag_offset}..{frag_end} pass msg_len {f.msg_len}",
            )
        if f.frag_index == 0 and f.frag_offset:
            raise ProtocolError("data.frag_offset", o["frag_offset"], "the first fragment starts at 0")
        if f.frag_index == f.frag_count - 1 and frag_end != f.msg_len:
            raise ProtocolError("data.msg_len", o["msg_len"], f"the last fragment ends at {frag_end}, not {f.msg_len}")
        if not payload and f.msg_len:
            raise ProtocolError("len", OFF["length"], "a fragment of a non-empty message carries no bytes")
    numbers = {name: f[name] for name in _DATA_OFF if name != "flags"}  # channel, msg_id, ..., credit
    return Data(payload=payload, flags=codes.DataFlag(flags), **numbers)


def _decode_discovery(data: bytes, start: int, end: int, dst_dime: int) -> Discovery:
    f = spec.DiscoveryFixed.parse(data[start : start + DISCOVERY_FIXED])
    op = _enum(codes.DiscoveryOp, int(f.op), "disc.op", start, "discovery op")
    if f.state_filter != codes.STATE_ANY:
        _enum(codes.DimeState, f.state_filter, "disc.state_filter", start + 1, "state")
    want = DISCOVERY_FIXED + DIME_RECORD * f.count
    if end - start != want:
        raise ProtocolError("disc.count", start + 2, f"{f.count} DIMEs need {want} body bytes, there are {end - start}")
    if op is codes.DiscoveryOp.PROBE and f.count:
        raise ProtocolError("disc.count", start + 2, "a probe lists no DIMEs")
    if op is codes.DiscoveryOp.GRATUITOUS and f.probe_id:
        raise ProtocolError("disc.probe_id", start + 4, "a gratuitous announce answers no probe (probe_id 0)")
    dimes = []
    pos = start + DISCOVERY_FIXED
    for _ in range(f.count):
        r = spec.DimeRecord.parse(data[pos : pos + DIME_RECORD])
        state = _enum(codes.DimeState, int(r.state), "disc.dime.state", pos + 4, "state")
        if r.mem_free > r.mem_total:
            raise ProtocolError("disc.dime.mem_free", pos + 9, f"{r.mem_free} free chunks of {r.mem_total}")
        dimes.append(DimeInfo(r.dime, r.core, state, r.mem_total, r.mem_free, r.epoch))
        pos += DIME_RECORD
    return Discovery(op, f.probe_id, f.sw_version, f.caps, f.state_filter, tuple(dimes))


def _decode_heartbeat(data: bytes, start: int, end: int, dst_dime: int) -> Heartbeat:
    if end - start != HEARTBEAT_LEN:
        raise ProtocolError("len", OFF["length"], f"{end - start} body bytes, a HEARTBEAT body is {HEARTBEAT_LEN}")
    f = spec.HeartbeatBody.parse(data[start:end])
    state = _enum(codes.DimeState, int(f.state), "hb.state", start + 4, "state")
    if f.period_ms == 0:
        raise ProtocolError("hb.period_ms", start + 5, "a heartbeat period of 0 ms")
    if f.cpu_permille > codes.CPU_PERMILLE_MAX:
        raise ProtocolError("hb.cpu_permille", start + 7, f"{f.cpu_permille} is over {codes.CPU_PERMILLE_MAX}")
    return Heartbeat(
        f.epoch, state, f.period_ms, f.cpu_permille, f.stage, f.mem_used, f.mem_limit, f.rx_queue, f.tx_queue, f.service
    )


def _decode_auth(data: bytes, pos: int) -> Auth:
    a = spec.AuthTrailer.parse(data[pos : pos + spec.AUTH_LEN])
    if a.key_id == 0:
        raise ProtocolError("auth.key_id", pos, "key id 0 is reserved")
    if a.counter == 0:
        raise ProtocolError("auth.counter", pos + 2, "counter 0 is never sent")
    return Auth(a.key_id, a.counter, a.tag)


_DATA_OFF = {f.name: f.offset for f in layout.fields(spec.DataFixed)}
_BODY_DECODERS: dict[codes.FrameClass, Any] = {
    codes.FrameClass.SIGNALING: _decode_signaling,
    codes.FrameClass.DATA: _decode_data,
    codes.FrameClass.DISCOVERY: _decode_discovery,
    codes.FrameClass.HEARTBEAT: _decode_heartbeat,
}


# ----------------------------------------------------------------- encoding


def _encode_tlv(p: Tlv) -> bytes:
    v = p.value
    if isinstance(v, int):
        kind = codes.TLV_KINDS[codes.TlvType(p.type)]
        raw = v.to_bytes(codes.FIXED_TLV_SIZES[kind], "big")
    elif isinstance(v, str):
        raw = v.encode("utf-8")
    else:
        raw = bytes(v)
    return spec.Tlv.build({"type": int(p.type), "length": len(raw), "value": raw})


def _encode_body(b: Body) -> bytes:
    if isinstance(b, Sealed):
        return bytes(b.ciphertext)
    if isinstance(b, Signaling):
        fixed = spec.SignalingFixed.build(
            {
                "req_id": b.req_id,
                "cmd": int(b.cmd),
                "op": int(b.op),
                "status": int(b.status),
                "tlv_count": len(b.params),
            }
        )
        return fixed + b"".join(_encode_tlv(p) for p in b.params)
    if isinstance(b, Data):
        fixed = spec.DataFixed.build(
            {
                "channel": b.channel,
                "flags": int(b.flags),
                "msg_id": b.msg_id,
                "msg_len": b.msg_len,
                "frag_offset": b.frag_offset,
                "frag_index": b.frag_index,
                "frag_count": b.frag_count,
                "ack": b.ack,
                "credit": b.credit,
            }
        )
        return fixed + bytes(b.payload)
    if isinstance(b, Discovery):
        return spec.DiscoveryBody.build(
            {
                "fixed": {
                    "op": int(b.op),
                    "state_filter": b.state_filter,
                    "count": len(b.dimes),
                    "probe_id": b.probe_id,
                    "sw_version": b.sw_version,
                    "caps": b.caps,
                },
                "dimes": [
                    {
                        "dime": d.dime,
                        "core": d.core,
                        "state": int(d.state),
                        "mem_total": d.mem_total,
                        "mem_free": d.mem_free,
                        "epoch": d.epoch,
                    }
                    for d in b.dimes
                ],
            }
        )
    return spec.HeartbeatBody.build(
        {
            "epoch": b.epoch,
            "state": int(b.state),
            "period_ms": b.period_ms,
            "cpu_permille": b.cpu_permille,
            "stage": b.stage,
            "mem_used": b.mem_used,
            "mem_limit": b.mem_limit,
            "rx_queue": b.rx_queue,
            "tx_queue": b.tx_queue,
            "service": b.service,
        }
    )


def encode(frame: Frame) -> bytes:
    """Encode a frame; a frame the decoder would reject raises ProtocolError instead."""
    try:
        body = _encode_body(frame.body)
        header = spec.Header.build(
            {
                "version": frame.version,
                "flags": int(frame.flags),
                "length": body_length(frame.body),
                "src_dime": frame.src_dime,
                "src_thread": frame.src_thread,
                "dst_dime": frame.dst_dime,
                "dst_thread": frame.dst_thread,
                "seq": frame.seq,
            }
        )
        eth = spec.Ethernet.build(
            {"dst": frame.dst_mac, "src": frame.src_mac, "type": ethertypes.current().of(frame.cls)}
        )
        trailer = b""
        if frame.auth is not None:
            trailer = spec.AuthTrailer.build(
                {"key_id": frame.auth.key_id, "counter": frame.auth.counter, "tag": frame.auth.tag}
            )
    except (ConstructError, ValueError, KeyError, TypeError, OverflowError, AttributeError) as exc:
        raise ProtocolError("frame", 0, f"cannot encode: {exc}") from None
    out = eth + header + body + trailer + b"\x00" * frame.padding
    # The decoder's rules are the protocol: whatever it would reject, we never send.
    _decode(out)
    return out
