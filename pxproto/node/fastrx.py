"""Per-frame helpers of the relay and the DIME: the compiled ``pxproto.node._fastrx`` when built, else this twin.

``route(raw, mac)`` -> DIME id, ROUTE_SERVER or ROUTE_DROP; ``ping_reply(raw, epoch)`` -> response bytes
or None.  Set ``PXPROTO_PURE=1`` to force the twin.
"""

from __future__ import annotations

from pxproto.errors import ProtocolError
from pxproto.fastpath import select
from pxproto.wire import ethertypes
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import DIME_ALL, Command, Op, Scope, Status, TlvType
from pxproto.wire.frame import Frame, Signaling, Tlv

ROUTE_DROP = -2
ROUTE_SERVER = -1


def route_py(raw: bytes, mac: bytes) -> int:
    if len(raw) < 34 or ethertypes.current().classify(int.from_bytes(raw[12:14], "big")) is None:
        return ROUTE_DROP
    if not raw[0] & 1 and raw[:6] != mac:
        return ROUTE_DROP
    if raw[15] & 0x01:
        return int.from_bytes(raw[22:24], "big")
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
    reply = Frame(
        body=body,
        scope=Scope.SYSTEM if f.src_dime == DIME_ALL else Scope.DIME,
        src_dime=f.dst_dime,
        src_thread=f.dst_thread,
        dst_dime=f.src_dime,
        dst_thread=f.src_thread,
        dst_mac=f.src_mac,
        src_mac=f.dst_mac,
    )
    return encode(reply)


_compiled = select.compiled("pxproto.node._fastrx")
COMPILED = _compiled is not None
route = _compiled.route if _compiled is not None else route_py
ping_reply = _compiled.ping_reply if _compiled is not None else ping_reply_py
