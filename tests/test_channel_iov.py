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
        frames = _same(mod, a[1], b[1])
        for _ in range(50):  # deliver (a fifth lost), ack, retransmit on timeouts, until this message is acked
            acks = []
            for raw in frames:
                tx_frames += 1
                if rng.random() < 0.2:
                    continue
                acks += rx.receive_wire(raw, now).frames
            now += 0.003
            acks += rx.handle_timer_wire(now).frames
            frames = []
            for ack in acks:
                frames += _same(mod, copy.receive_wire(ack, now), iov.receive_wire(ack, now))
            now += 0.5
            frames += _same(mod, copy.handle_timer_wire(now), iov.handle_timer_wire(now))
            if not frames and copy.in_flight == 0 and not copy.unacked():
                break
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
