"""The compiled sender's no-copy DATA frames (``ChannelSender.iov``: :class:`pxproto.dime._channel.TxFrame`, a
header and a view of the message) and ``send_frames``, the sendmmsg that sends them as two iovecs.

The bytes on the wire must not change: a sender with ``iov`` set is driven beside one without, through the same
messages, acks, losses and timeouts, and each TxFrame joined into bytes must be the frame the copy path built.
"""

from __future__ import annotations

import random
import socket
from typing import Any

import pytest

from pxproto.dime.endpoint import Address
from pxproto.fastpath import decode
from tests.channel_impls import compiled_module

A = Address(b"\x02\x00\x00\x00\x00\x0a", 10, 0)
B = Address(b"\x02\x00\x00\x00\x00\x0b", 11, 0)


def _mod() -> Any:
    return compiled_module("pxproto.dime._channel")


def _pair(mtu: int) -> tuple[Any, Any, Any]:
    mod = _mod()
    rx_mod = compiled_module("pxproto.dime._channel_rx")
    copy = mod.ChannelSender(A, B, 5, mtu=mtu, initial_credit=8)
    iov = mod.ChannelSender(A, B, 5, mtu=mtu, initial_credit=8)
    iov.iov = True
    rx = rx_mod.ChannelReceiver(B, A, 5, window=8, ack_every=3, ack_delay=0.002)
    return copy, iov, rx


def _same(mod: Any, copy_out: Any, iov_out: Any) -> list[bytes]:
    """The two outputs carry the same frames (the iov one's large ones as TxFrames) and events; the frames."""
    assert copy_out.events == iov_out.events
    assert copy_out.timer == iov_out.timer
    assert len(copy_out.frames) == len(iov_out.frames)
    for raw, f in zip(copy_out.frames, iov_out.frames, strict=True):
        assert type(raw) is bytes
        if type(f) is mod.TxFrame:
            assert f.size >= mod.IOV_MIN
            assert bytes(f) == raw
            assert len(f) == len(raw)
            assert f[:6] == raw[:6] and f[6:12] == raw[6:12] and f[-3:] == raw[-3:]
        else:
            assert type(f) is bytes and f == raw
            body = decode(raw).body
            assert len(body.payload) < mod.IOV_MIN
    return list(copy_out.frames)


def _joined(copy_out: Any, iov_out: Any) -> list[bytes]:
    """The two outputs carry the same events and frames, the iov one's joined into bytes; the frames."""
    assert copy_out.events == iov_out.events and copy_out.timer == iov_out.timer
    assert [bytes(f) for f in iov_out.frames] == copy_out.frames
    return list(copy_out.frames)


def _until_acked(
    copy: Any, iov: Any, rx: Any, frames: list[bytes], rng: random.Random, now: float, same: Any
) -> tuple[float, int]:
    """Deliver ``frames`` (a fifth lost), ack, retransmit on timeouts, until both senders have all acked, each
    output of the two compared by ``same``; returns the time then and how many frames went."""
    sent = 0
    for _ in range(50):
        acks = []
        for raw in frames:
            sent += 1
            if rng.random() < 0.2:
                continue
            acks += rx.receive_wire(raw, now).frames
        now += 0.003
        acks += rx.handle_timer_wire(now).frames
        frames = []
        for ack in acks:
            frames += same(copy.receive_wire(ack, now), iov.receive_wire(ack, now))
        now += 0.5
        frames += same(copy.handle_timer_wire(now), iov.handle_timer_wire(now))
        if not frames and copy.in_flight == 0 and not copy.unacked():
            break
    return now, sent


@pytest.mark.parametrize("mtu", [1500, 9000, 65535])
def test_iov_frames_are_the_bytes_the_copy_path_builds(mtu: int) -> None:
    """Messages of every size class (empty, under IOV_MIN, whole fragments, a short last fragment), with frames
    lost, acked and retransmitted on a timeout: the same frames, as bytes, from both senders."""
    mod = _mod()
    copy, iov, rx = _pair(mtu)
    rng = random.Random(mtu)
    frag = copy.frag_size
    sizes = [0, 1, mod.IOV_MIN - 1, mod.IOV_MIN, frag, frag + 1, 3 * frag - 5, 2 * frag + mod.IOV_MIN]
    now = 1.0
    tx_frames = 0
    for size in sizes + [rng.randrange(0, 4 * frag) for _ in range(12)]:
        payload = rng.randbytes(size)
        a, b = copy.send_wire(payload, now), iov.send_wire(payload, now)
        assert a[0] == b[0]
        now, sent = _until_acked(copy, iov, rx, _same(mod, a[1], b[1]), rng, now, lambda x, y: _same(mod, x, y))
        tx_frames += sent
        assert copy.counters == iov.counters
        assert copy.unacked() == iov.unacked() == []
    assert copy.counters["retransmitted"] > 0  # the loss above made both retransmit
    assert tx_frames > len(sizes)


def test_a_sender_without_iov_gives_bytes_only() -> None:
    mod = _mod()
    tx = mod.ChannelSender(A, B, 5, mtu=65535, initial_credit=8)
    assert tx.iov is False
    _, out = tx.send_wire(bytes(200_000), 1.0)
    assert out.frames and all(type(f) is bytes for f in out.frames)


def test_tx_frame_reads_like_its_bytes() -> None:
    mod = _mod()
    tx = mod.ChannelSender(A, B, 5, mtu=9000, initial_credit=8)
    tx.iov = True
    _, out = tx.send_wire(bytes(range(256)) * 40, 1.0)
    f = out.frames[0]
    raw = bytes(f)
    assert type(f) is mod.TxFrame
    assert f.payload == bytes(range(256)) * 40 and f.offset == 0 and len(f.head) + f.size == len(raw)
    for key in (
        slice(None, 6),
        slice(0, 14),
        slice(6, 12),
        slice(None, None),
        slice(10, None),
        slice(-6, None),
        slice(0, 100, 2),
        0,
        13,
        60,
        -1,
    ):
        assert f[key] == raw[key], key
    d = decode(raw)
    assert d.body.msg_len == 10240 and d.body.frag_offset == 0 and d.body.payload == raw[len(f.head) :]
    assert "TxFrame" in repr(f)


def test_send_frames_sends_bytes_and_tx_frames_whole() -> None:
    """Over a datagram socketpair: each frame arrives as one datagram, a TxFrame as its joined bytes."""
    mod = _mod()
    tx = mod.ChannelSender(A, B, 5, mtu=9000, initial_credit=64)
    tx.iov = True
    frames: list[Any] = []
    for size in (3000, 20, 9000 * 3 + 11):
        frames += tx.send_wire(random.Random(size).randbytes(size), 1.0)[1].frames
    frames.insert(1, b"plain bytes frame")
    assert {type(f) for f in frames} == {bytes, mod.TxFrame}
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        b.setblocking(False)
        assert mod.send_frames(a.fileno(), frames) == len(frames)
        got = [b.recv(70_000) for _ in frames]
        assert got == [bytes(f) for f in frames]
        with pytest.raises(TypeError, match="frame 1 is a str"):
            mod.send_frames(a.fileno(), [b"x", "not a frame"])
        assert mod.send_frames(a.fileno(), []) == 0


def test_send_frames_answers_zero_when_the_socket_is_full() -> None:
    mod = _mod()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sent = 0
        for _ in range(10_000):
            n = mod.send_frames(a.fileno(), [bytes(1000)] * 64)
            if n == 0:
                break
            sent += n
        else:
            pytest.fail("the socket never filled")
        assert sent > 0
        with pytest.raises(OSError):
            mod.send_frames(-1, [b"x"])


def _pieces(rng: random.Random, payload: bytes, small: bool) -> list[bytes]:
    """``payload`` cut at random places (many short pieces with ``small``)."""
    cuts, at = [], 0
    while at < len(payload):
        step = rng.randint(1, 300) if small else rng.randint(1, 40_000)
        cuts.append(payload[at : at + step])
        at += step
    return cuts


def test_gather_holds_its_pieces_in_order() -> None:
    mod = _mod()
    g = mod.Gather([b"ab", b"", b"cde"])
    assert len(g) == 5 and bytes(g) == b"abcde" and "5 bytes in 2 pieces" in repr(g)
    assert len(mod.Gather()) == 0 and bytes(mod.Gather()) == b""
    with pytest.raises(TypeError, match="not bytes"):
        mod.Gather([b"a", bytearray(b"b")])


@pytest.mark.parametrize("mtu", [1500, 9000, 65535])
def test_gather_messages_send_the_frames_of_the_joined_message(mtu: int) -> None:
    """A message given as a Gather of its pieces (a source's kept runs) goes out as the frames the same message
    as one bytes gives, lost, acked and retransmitted alike: TxFrames pointing into the pieces, and a fragment over
    more pieces than one sendmmsg entry takes copied into bytes."""
    mod = _mod()
    copy, iov, rx = _pair(mtu)
    rng = random.Random(mtu * 7)
    frag = copy.frag_size
    now, kinds = 1.0, set()
    for size, small in [(3 * frag + 17, False), (2 * frag, True), (mod.IOV_MIN + 5, False), (0, False)] + [
        (rng.randrange(1, 4 * frag), rng.random() < 0.3) for _ in range(8)
    ]:
        payload = rng.randbytes(size)
        g = mod.Gather(_pieces(rng, payload, small))
        assert bytes(g) == payload
        a, b = copy.send_wire(payload, now), iov.send_wire(g, now)
        assert a[0] == b[0]
        kinds |= {type(f.payload) if type(f) is mod.TxFrame else bytes for f in b[1].frames}
        assert iov.unacked()[-1] == (a[0], payload)  # (the message, joined)
        now, _ = _until_acked(copy, iov, rx, _joined(a[1], b[1]), rng, now, _joined)
        assert copy.counters == iov.counters and iov.unacked() == []
    assert mod.Gather in kinds and bytes in kinds  # both: pointed into the pieces, and copied


def test_gather_messages_without_iov_and_as_frames() -> None:
    """A sender without ``iov``, and ``send`` (Frame objects), take a Gather as the message it joins."""
    mod = _mod()
    rng = random.Random(3)
    payload = rng.randbytes(30_000)
    plain = mod.ChannelSender(A, B, 5, mtu=9000, initial_credit=8)
    wire = mod.ChannelSender(A, B, 5, mtu=9000, initial_credit=8)
    assert (
        plain.send_wire(payload, 1.0)[1].frames
        == wire.send_wire(mod.Gather(_pieces(rng, payload, False)), 1.0)[1].frames
    )
    f1 = mod.ChannelSender(A, B, 5, mtu=9000, initial_credit=8).send(payload, 1.0)[1].frames
    f2 = mod.ChannelSender(A, B, 5, mtu=9000, initial_credit=8).send(mod.Gather(_pieces(rng, payload, True)), 1.0)[1]
    assert [f.body for f in f1] == [f.body for f in f2.frames]


def test_send_frames_sends_gathered_tx_frames_whole() -> None:
    mod = _mod()
    tx = mod.ChannelSender(A, B, 5, mtu=9000, initial_credit=64)
    tx.iov = True
    rng = random.Random(11)
    payload = rng.randbytes(9000 * 4 + 100)
    frames = tx.send_wire(mod.Gather(_pieces(rng, payload, False)), 1.0)[1].frames
    assert any(type(f) is mod.TxFrame and type(f.payload) is mod.Gather for f in frames)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        b.setblocking(False)
        assert mod.send_frames(a.fileno(), frames) == len(frames)
        assert [b.recv(70_000) for _ in frames] == [bytes(f) for f in frames]
