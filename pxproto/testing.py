"""Hypothesis strategies for every Parallax frame class: public API for fuzzing.

``frames()`` draws valid :class:`~pxproto.wire.Frame` objects; the
``*_bodies()`` strategies draw one class each; ``mutations()`` turns valid
wire bytes into hostile ones (truncations, extensions, bit flips, one bad
field, a wrong EtherType).  Users point them at their own implementations::

    from hypothesis import given
    from pxproto.testing import frames
    from pxproto.wire import encode

    @given(frames())
    def test_my_decoder(frame):
        assert my_decode(encode(frame)) ...
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from pxproto.wire import ethertypes, spec
from pxproto.wire.codes import (
    ACL_ENTRY_SIZE,
    DIME_ALL,
    FIXED_TLV_SIZES,
    STATE_ANY,
    TEXT_MAX,
    TLV_ENUMS,
    TLV_KINDS,
    Command,
    DataFlag,
    DimeState,
    DiscoveryOp,
    Fcaps,
    FrameClass,
    Op,
    Scope,
    Status,
    TlvKind,
    TlvType,
)
from pxproto.wire.frame import Auth, Body, Data, DimeInfo, Discovery, Frame, Heartbeat, Signaling, Tlv, body_length

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
dime_ids = st.integers(0, DIME_ALL - 1)
macs = st.binary(min_size=6, max_size=6)
MAX_BODY = 9000  # a jumbo frame's payload

_UINT_MAX = {TlvKind.U8: 0xFF, TlvKind.U16: 0xFFFF, TlvKind.U32: 0xFFFFFFFF, TlvKind.U64: 2**64 - 1}


def tlv_values(t: TlvType) -> st.SearchStrategy[Any]:
    kind = TLV_KINDS[t]
    if t in TLV_ENUMS:
        return st.sampled_from([int(v) for v in TLV_ENUMS[t]])
    if kind in _UINT_MAX:
        return st.integers(0, _UINT_MAX[kind])
    if kind is TlvKind.TEXT:
        return st.text(max_size=40).filter(lambda s: len(s.encode()) <= TEXT_MAX)
    if kind in FIXED_TLV_SIZES:
        n = FIXED_TLV_SIZES[kind]
        return st.binary(min_size=n, max_size=n)
    if kind is TlvKind.ACL:
        entry = st.tuples(macs, st.integers(0, (1 << len(Fcaps)) - 1)).map(lambda e: e[0] + bytes([e[1], 0]))
        return st.lists(entry, max_size=6).map(b"".join)
    return st.binary(max_size=64)


@st.composite
def tlvs(draw: st.DrawFn, max_count: int = 6) -> tuple[Tlv, ...]:
    types = draw(
        st.lists(
            st.one_of(st.sampled_from(list(TlvType)), st.integers(200, 0xFFFF)),
            max_size=max_count,
            unique=True,
        )
    )
    out = []
    for t in types:
        if t in TlvType._value2member_map_:
            tt = TlvType(t)
            out.append(Tlv(tt, draw(tlv_values(tt))))
        else:
            out.append(Tlv(t, draw(st.binary(max_size=32))))
    return tuple(out)


@st.composite
def signaling_bodies(draw: st.DrawFn) -> Signaling:
    op = draw(st.sampled_from(list(Op)))
    status = Status.OK if op is Op.REQUEST else draw(st.sampled_from(list(Status)))
    return Signaling(draw(st.sampled_from(list(Command))), op, draw(u32), status, draw(tlvs()))


@st.composite
def data_bodies(draw: st.DrawFn, max_payload: int = 1500) -> Data:
    flags = DataFlag(draw(st.integers(0, int(DataFlag.ACK | DataFlag.FIN))))
    ack, credit = (draw(u32), draw(u16)) if flags & DataFlag.ACK else (0, 0)
    if flags & DataFlag.ACK and draw(st.booleans()):
        return Data(draw(u16), draw(u32), b"", 0, 0, 0, 0, ack, credit, flags)
    payload = draw(st.binary(min_size=1, max_size=max_payload))
    count = draw(st.integers(1, 0xFFFF))
    index = draw(st.integers(0, count - 1))
    offset = 0 if index == 0 else draw(st.integers(0, 2**32 - 1 - len(payload)))
    end = offset + len(payload)
    msg_len = end if index == count - 1 else draw(st.integers(end, 2**32 - 1))
    return Data(draw(u16), draw(u32), payload, msg_len, offset, index, count, ack, credit, flags)


dime_infos = st.builds(
    lambda dime, core, state, total, free_share, epoch: DimeInfo(
        dime, core, state, total, total * free_share // 100, epoch
    ),
    dime_ids,
    u16,
    st.sampled_from(list(DimeState)),
    u32,
    st.integers(0, 100),
    u32,
)


@st.composite
def discovery_bodies(draw: st.DrawFn) -> Discovery:
    op = draw(st.sampled_from(list(DiscoveryOp)))
    dimes = () if op is DiscoveryOp.PROBE else tuple(draw(st.lists(dime_infos, max_size=8)))
    probe_id = 0 if op is DiscoveryOp.GRATUITOUS else draw(u32)
    state_filter = draw(st.sampled_from([STATE_ANY, *[int(s) for s in DimeState]]))
    return Discovery(op, probe_id, draw(u32), draw(u32), state_filter, dimes)


heartbeat_bodies = st.builds(
    Heartbeat,
    u32,
    st.sampled_from(list(DimeState)),
    st.integers(1, 0xFFFF),
    st.integers(0, 1000),
    u16,
    u32,
    u32,
    u32,
    u32,
    u32,
)

BODIES: dict[FrameClass, st.SearchStrategy[Any]] = {
    FrameClass.SIGNALING: signaling_bodies(),
    FrameClass.DATA: data_bodies(),
    FrameClass.DISCOVERY: discovery_bodies(),
    FrameClass.HEARTBEAT: heartbeat_bodies,
}
auths = st.builds(Auth, st.integers(1, 0xFFFF), st.integers(1, 2**64 - 1), st.binary(min_size=16, max_size=16))


@st.composite
def frames(draw: st.DrawFn, cls: FrameClass | None = None) -> Frame:
    """A valid frame of ``cls`` (any class when None)."""
    if cls is None:
        cls = draw(st.sampled_from(list(FrameClass)))
    body: Body = draw(BODIES[cls])
    if cls is FrameClass.DATA:
        scope = Scope.DIME
    elif cls is FrameClass.SIGNALING:
        scope = draw(st.sampled_from(list(Scope)))
    else:
        scope = Scope.SYSTEM
    dst = draw(dime_ids) if scope is Scope.DIME else DIME_ALL
    src = draw(dime_ids) if cls is FrameClass.HEARTBEAT else draw(u16)
    auth = draw(st.none() | auths)
    frame = Frame(body, scope, src, draw(u16), dst, draw(u16), draw(u64), draw(macs), draw(macs), auth)
    size = spec.BODY_OFFSET + body_length(body) + (spec.AUTH_LEN if auth else 0)
    if size < spec.MIN_ETHERNET_FRAME and draw(st.booleans()):
        frame.padding = spec.MIN_ETHERNET_FRAME - size
    return frame


def signaling_frames() -> st.SearchStrategy[Frame]:
    return frames(FrameClass.SIGNALING)


def data_frames() -> st.SearchStrategy[Frame]:
    return frames(FrameClass.DATA)


def discovery_frames() -> st.SearchStrategy[Frame]:
    return frames(FrameClass.DISCOVERY)


def heartbeat_frames() -> st.SearchStrategy[Frame]:
    return frames(FrameClass.HEARTBEAT)


@st.composite
def mutations(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` made hostile: truncated, extended, bit-flipped, a field overwritten,
    its EtherType moved to another class, or replaced by random bytes."""
    how = draw(st.sampled_from(["truncate", "extend", "flip", "overwrite", "ethertype", "random"]))
    if how == "truncate":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if how == "extend":
        return raw + draw(st.binary(min_size=1, max_size=64))
    if how == "flip":
        b = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if how == "overwrite":
        b = bytearray(raw)
        i = draw(st.integers(0, len(b) - 1))
        chunk = draw(st.binary(min_size=1, max_size=8))
        b[i : i + len(chunk)] = chunk[: len(b) - i]
        return bytes(b)
    if how == "ethertype":
        values = list(ethertypes.current().as_dict().values())
        et = draw(st.sampled_from(values))
        return raw[:12] + et.to_bytes(2, "big") + raw[14:]
    return draw(st.binary(max_size=128))


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    """Wire bytes from a valid frame, mutated."""
    from pxproto.wire.codec import encode

    return draw(mutations(encode(draw(frames()))))


__all__ = [
    "ACL_ENTRY_SIZE",
    "BODIES",
    "auths",
    "data_bodies",
    "data_frames",
    "discovery_bodies",
    "discovery_frames",
    "frames",
    "heartbeat_bodies",
    "heartbeat_frames",
    "hostile_bytes",
    "mutations",
    "signaling_bodies",
    "signaling_frames",
    "tlvs",
]
