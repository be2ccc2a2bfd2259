"""Small valid frames of each class, for the switch's tests, its bench and smoke checks."""

from __future__ import annotations

from pxproto.wire import spec
from pxproto.wire.codec import encode
from pxproto.wire.codes import DIME_ALL, Command, DimeState, Op, Scope
from pxproto.wire.frame import BROADCAST, Data, Frame, Heartbeat, Signaling


def mac(n: int) -> bytes:
    """A locally administered unicast MAC numbered ``n``."""
    return bytes([0x02, 0, 0, 0, (n >> 8) & 0xFF, n & 0xFF])


def heartbeat(src: bytes, dime: int = 1, seq: int = 0) -> bytes:
    """A broadcast heartbeat from DIME ``dime`` behind MAC ``src``."""
    return encode(Frame(Heartbeat(1, DimeState.BUSY, 100), Scope.SYSTEM, dime, 0, DIME_ALL, 0, seq, BROADCAST, src))


def signaling(dst: bytes, src: bytes, dst_dime: int | None = None, src_dime: int = DIME_ALL, seq: int = 0) -> bytes:
    """A PING request; DIME scope when ``dst_dime`` is given, else to the server."""
    scope = Scope.SYSTEM if dst_dime is None else Scope.DIME
    return encode(
        Frame(
            Signaling(Command.PING, Op.REQUEST, seq),
            scope,
            src_dime,
            0,
            DIME_ALL if dst_dime is None else dst_dime,
            0,
            seq,
            dst,
            src,
        )
    )


def data(dst: bytes, src: bytes, dst_dime: int = 1, src_dime: int = 1, seq: int = 0, size: int = 64) -> bytes:
    """A one-fragment DATA frame of ``size`` bytes in all (at least 60)."""
    payload = max(1, size - spec.BODY_OFFSET - spec.DataFixed.sizeof())
    body = Data(channel=1, msg_id=seq & 0xFFFFFFFF, payload=b"\x5a" * payload, msg_len=payload, frag_count=1)
    return encode(Frame(body, Scope.DIME, src_dime, 0, dst_dime, 0, seq, dst, src))


def saturation(i: int) -> tuple[bytes, bool]:
    """Frame ``i`` of a data flood from MAC 1 to MAC 2 (DIME 1) with a control frame as one in ten (signaling and
    heartbeat in turn), and whether it is a control frame."""
    if i % 10:
        return data(mac(2), mac(1), dst_dime=1, seq=i), False
    return (signaling(mac(2), mac(1), dst_dime=1, seq=i) if i % 20 else heartbeat(mac(1), dime=2, seq=i)), True
