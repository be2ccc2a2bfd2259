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


@pytest.mark.parametrize("impl", ["c", "py"])
def test_item_lists_copies_the_items_out_of_a_reused_buffer(impl: str) -> None:
    """The MICE child reads its inputs from a view of its receive buffer: the items it gets are bytes of their own,
    unchanged when the buffer is overwritten, and the same as from a bytes copy of the message (compiled and pure)."""
    fn = mice.item_lists_py if impl == "py" else mice.item_lists
    if impl == "c" and not mice.COMPILED:
        pytest.skip("pxproto.node._items is not built")
    want = [bytes([i]) * (i * 700) for i in range(6)]
    msg = mice.pack_records(mice.ITEM, [(i + 1, w) for i, w in enumerate(want)]) + mice.REC.pack(mice.STOP, 0, 0)
    buf = bytearray(msg)
    got = fn(memoryview(buf), mice.ITEM, mice.STOP)
    buf[:] = bytes(len(buf))
    assert got == fn(msg, mice.ITEM, mice.STOP) == ([1, 2, 3, 4, 5, 6], want, True)
    assert all(type(x) is bytes for x in got[1])
    assert fn(memoryview(bytearray()), mice.ITEM, mice.STOP) == ([], [], False)
    with pytest.raises(ValueError, match="record header at byte 13 truncated"):
        fn(memoryview(bytearray(msg[:20])), mice.ITEM, mice.STOP)


def test_large_source_items_go_whole_and_in_order_over_a_socketpair() -> None:
    """Source items of GATHER_BYTES and more are sent as a header and the item itself (``sendmsg``, no copy): over
    a real SOCK_SEQPACKET pair, mixed with small ones and lists, every record arrives whole, with its lineage."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    big = [bytes([i]) * (mice.GATHER_BYTES + 1000 * i) for i in range(1, 8)]
    items = [big[0], b"s1", big[1], big[2], b"s2" * 500, big[3]]
    made: list[object] = [*items, [big[4], b"s3", big[5]], big[6]]
    want = [*items, big[4], b"s3", big[5], big[6]]
    with a, b:
        out = mice.Batcher(a)
        mice._emit_source(out, iter(made), mice.Context(1, 2, "src", 0, 1), 0)  # type: ignore[arg-type]
        out.flush()
        a.close()
        got: list[tuple[int, int, bytes]] = []
        while msg := b.recv(mice.SEQPACKET_MAX):
            assert len(msg) <= mice.BATCH_BYTES or len(mice.records(msg)) == 1  # a large item goes alone
            got.extend(mice.records(msg))
    assert got == [(mice.OUT, mice.source_lineage(2, i), w) for i, w in enumerate(want)]


def test_a_mutable_item_is_taken_when_yielded() -> None:
    """A bytearray item is copied when the source yields it (only exact bytes, which cannot change, are sent from
    the object itself): changing it afterwards changes nothing sent."""
    sent: list[bytes] = []

    class Sock:
        def sendall(self, data: bytes) -> None:
            sent.append(bytes(data))

        def sendmsg(self, parts: list[bytes]) -> int:
            sent.append(b"".join(parts))
            return len(sent[-1])

    item = bytearray(b"a" * (mice.GATHER_BYTES * 2))

    def source():  # type: ignore[no-untyped-def]
        yield [item]
        item[:] = b"b" * len(item)
        yield [item]

    out = mice.Batcher(Sock())  # type: ignore[arg-type]
    mice._emit_source(out, source(), mice.Context(1, 2, "src", 0, 1), 0)
    out.flush()
    assert [data[:1] for m in sent for _, _, data in mice.records(m)] == [b"a", b"b"]


def _messages() -> list[bytes]:
    big = [bytes([i]) * (mice.GATHER_BYTES + 999 * i) for i in range(4)]
    rec = mice.pack_records
    return [
        rec(mice.ITEM, [(1, b"small"), (2, big[0])]),  # a large item, not first
        rec(mice.ITEM, [(3, big[1])]),  # large first: the next message is peeked
        rec(mice.ITEM, [(4, big[2]), (5, b"tail"), (6, b"")]) + rec(mice.OUT, [(7, b"skipped")]),
        rec(mice.ITEM, [(8, big[3])]) + mice.REC.pack(mice.STOP, 0, 0) + rec(mice.ITEM, [(9, b"after stop")]),
        rec(mice.ITEM, [(10, b"x" * 100)]),  # peeked, small: received whole into the buffer
        mice.REC.pack(mice.STOP, 0, 0),
    ]


@pytest.mark.parametrize("impl", ["c", "py"])
def test_recv_items_gives_item_lists_of_each_message(impl: str) -> None:
    """Both twins, over a real SOCK_SEQPACKET pair: each message's ITEM records before any STOP, its size, and
    whether it opened with a large item (then the compiled twin receives the next one's first item straight into the
    bytes it returns): the same as item_lists of the message, and end of file as size 0."""
    if impl == "c" and not mice.COMPILED:
        pytest.skip("pxproto.node._items is not built")
    fn = mice.recv_items if impl == "c" else mice.recv_items_py
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    box = mice.Inbox()
    with a, b:
        for msg in _messages():
            a.send(msg)
        a.close()
        large = False
        for msg in _messages():
            lineages, items, stop, size, large = fn(b, box.buf, mice.ITEM, mice.STOP, mice.GATHER_BYTES, large)
            assert (lineages, items, stop) == mice.item_lists_py(msg, mice.ITEM, mice.STOP)
            assert size == len(msg) and all(type(x) is bytes for x in items)
            assert large == (msg[0] == mice.ITEM and mice.REC.unpack_from(msg)[2] >= mice.GATHER_BYTES)
        assert fn(b, box.buf, mice.ITEM, mice.STOP, mice.GATHER_BYTES, large) == ([], [], False, 0, False)


@pytest.mark.parametrize("impl", ["c", "py"])
def test_recv_items_refuses_a_short_record_and_a_message_past_the_buffer(impl: str) -> None:
    if impl == "c" and not mice.COMPILED:
        pytest.skip("pxproto.node._items is not built")
    fn = mice.recv_items if impl == "c" else mice.recv_items_py
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.send(mice.REC.pack(mice.ITEM, 1, mice.GATHER_BYTES) + bytes(10))  # says more bytes than it holds
        with pytest.raises(ValueError, match=f"record at byte 0 says {mice.GATHER_BYTES} bytes, 10 left"):
            fn(b, bytearray(1000), mice.ITEM, mice.STOP, mice.GATHER_BYTES, True)
        a.send(bytes(100))
        with pytest.raises(OSError, match="a MICE message of more than 50 bytes"):
            fn(b, bytearray(50), mice.ITEM, mice.STOP, mice.GATHER_BYTES, False)
