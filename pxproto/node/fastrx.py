"""Per-frame helpers of the relay and the DIME: the compiled ``pxproto.node._fastrx`` when built, else this twin.

``route(raw, mac)`` -> DIME id, ROUTE_SERVER or ROUTE_DROP; ``ping_reply(raw, epoch)`` -> response bytes
or None.  Set ``PXPROTO_PURE=1`` to force the twin.  ``wire_rx()``: the compiled receive loop of a DIME's own wire
socket (``_fastrx.WireRx``), or None when not built (the DIME then reads its frames one Python call each).
"""

from __future__ import annotations

from pxproto.dime.endpoint import Address, frame_to, source
from pxproto.errors import ProtocolError
from pxproto.fastpath import select
from pxproto.wire import ethertypes, layout, spec
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import Command, HeaderFlag, Op, Status, TlvType
from pxproto.wire.frame import Signaling, Tlv

ROUTE_DROP = -2
ROUTE_SERVER = -1
_OFF = {prefix: {f.name: f.offset for f in fields} for prefix, (_s, fields) in layout.struct_tables().items()}
ETH_DST, ETH_TYPE = _OFF["eth"]["dst"], _OFF["eth"]["type"]
FLAGS = spec.HEADER_OFFSET + _OFF[""]["flags"]
DST_DIME = spec.HEADER_OFFSET + _OFF[""]["dst_dime"]
BODY_OFFSET = spec.BODY_OFFSET


def route_py(raw: bytes, mac: bytes) -> int:
    if len(raw) < BODY_OFFSET or ethertypes.current().classify(int.from_bytes(raw[ETH_TYPE : ETH_TYPE + 2])) is None:
        return ROUTE_DROP
    if not raw[ETH_DST] & 1 and raw[ETH_DST : ETH_DST + 6] != mac:
        return ROUTE_DROP
    if raw[FLAGS] & HeaderFlag.SCOPE_DIME:
        return int.from_bytes(raw[DST_DIME : DST_DIME + 2])
    return ROUTE_SERVER


def ping_reply_py(raw: bytes, epoch: int) -> bytes | None:
    try:
        f = decode(raw)
    except ProtocolError:
        return None
    b = f.body
    if not isinstance(b, Signaling) or b.cmd is not Command.PING or b.op is not Op.REQUEST or f.auth is not None:
        return None
    echo = b.param(TlvType.ECHO)
    if not isinstance(echo, bytes):
        return None
    body = Signaling(
        Command.PING, Op.RESPONSE, b.req_id, Status.OK, (Tlv(TlvType.ECHO, echo), Tlv(TlvType.EPOCH, epoch))
    )
    return encode(frame_to(Address(f.dst_mac, f.dst_dime, f.dst_thread), source(f), body))


_compiled = select.compiled("pxproto.node._fastrx")
COMPILED = _compiled is not None
route = _compiled.route if _compiled is not None else route_py
ping_reply = _compiled.ping_reply if _compiled is not None else ping_reply_py


def wire_rx() -> object | None:
    """A ``WireRx`` set up with the DATA layout of :mod:`pxproto.node.channels` (None: not compiled)."""
    if _compiled is None:
        return None
    from pxproto.dime.channel import MessageReceived, WireOutput
    from pxproto.node import channels
    from pxproto.node.flow import loops
    from pxproto.wire.codes import CounterId

    if channels.COMPLETION_BIT != 0x8000:
        raise ImportError("pxproto.node.fastrx: _fastrx.WireRx reads COMPLETION_BIT as 0x8000")

    return _compiled.WireRx(
        int(ethertypes.current().data),
        channels.CLEAR_ONLY,
        channels.DATA_MIN,
        channels.KEY_AT,
        channels.ACK_ID.start,
        channels.ACK_POS.start,
        (CounterId.FRAMES_RX, CounterId.BYTES_RX, CounterId.ACKS_MERGED, CounterId.FRAME_BUGS),
        WireOutput,
        MessageReceived,
        loops.arrive if loops is not None else None,
    )
