"""A MICE's record batch handed to the machine as a view of the DIME's reused receive buffer (``Inbox.recv_view``):
everything kept is copied out, so the next message overwriting the buffer changes nothing already taken."""

from __future__ import annotations

import socket

import pytest
from test_node_datawire import items, pair  # tests/ is on the path (rootdir conftest)

from pxproto.node import channels, mice


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("size", [16, 65536])
def test_outputs_survive_the_buffer_being_reused(monkeypatch: pytest.MonkeyPatch, compiled: bool, size: int) -> None:
    if not compiled:
        monkeypatch.setattr(channels, "_loops", None)
    elif channels._loops is None:
        pytest.skip("pxproto.node._flowc is not built")
    src, _ = pair()
    want = items(5, size)
    buf = bytearray(mice.pack_run(mice.OUT, 1 << 48 | 1, want, 0, 1 << 30, mice.MAX_ITEM)[0])
    src.mice_message(memoryview(buf), 11.0)
    buf[:] = bytes(len(buf))  # the next receive into the same buffer
    kept = src.plane.flow.retained
    assert [bytes(kept[(1 << 48) + i + 1].data) for i in range(5)] == want
    assert all(type(kept[(1 << 48) + i + 1].data) is bytes for i in range(5))


def test_recv_view_is_the_message() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        box = mice.Inbox()
        a.send(b"one record batch")
        a.send(b"two")
        assert box.recv_view(b) == b"one record batch"
        assert box.recv_view(b) == b"two"
        a.close()
        assert len(box.recv_view(b)) == 0
