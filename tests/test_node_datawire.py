"""The node's data path on encoded frames: clear DATA goes to its channel end as bytes (no Frame decoded),
sealed DATA down the decoding path; malformed, unwired and duplicate-ack frames as before."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from test_node_machine import FakeHost  # tests/ is on the path (rootdir conftest)

from pxproto import package
from pxproto.dime.endpoint import Address, frame_to
from pxproto.dime.keys import KeyRing
from pxproto.fastpath import encode
from pxproto.node import channels as channels_mod
from pxproto.node import machine as machine_mod
from pxproto.node import mice
from pxproto.node.channels import DATA_MIN
from pxproto.node.dime import Dime, DimeConfig, wire_credit
from pxproto.node.flow import loops as flow_loops
from pxproto.node.machine import DimeMachine, Loaded, MachineConfig, credit_for
from pxproto.wire.codes import Command, CounterId, DataFlag, Direction, FrameClass, Op
from pxproto.wire.frame import Data, Signaling, connect_params

SRC = Address(b"\x02\x00\x00\x00\x00\x01", 0, 0)
SNK = Address(b"\x02\x00\x00\x00\x00\x02", 1, 0)
MANAGER = Address(b"\x02\x00\x00\x00\x00\xfe", 0xFFFF, 0)
KEYS = {1: bytes(range(32))}


def machine(addr: Address, stage: int, encrypt: tuple[int, ...] = ()) -> DimeMachine:
    keys = KEYS if encrypt else {}
    m = DimeMachine(MachineConfig(addr, has_store=True, mtu=9000, keys=keys, encrypt=encrypt), FakeHost())
    m.start(10.0)
    m.loaded = Loaded(1, stage, "x", Path("."), package.Stage(stage, "x", "m:f"))
    m.start_mice(0)
    return m


def connect(m: DimeMachine, addr: Address, direction: Direction, peer: Address, ring: KeyRing | None) -> None:
    params = connect_params(1, direction, peer.mac, peer.dime)
    f = frame_to(MANAGER, addr, Signaling(Command.CONNECT, Op.REQUEST, 1, params=params))
    raw = encode(f) if ring is None else ring.protect(encode(f), f.cls)
    m.on_frame(raw, 10.0)
    m.take_outbox()


def pair(encrypt: tuple[int, ...] = ()) -> tuple[DimeMachine, DimeMachine]:
    ring = KeyRing(dict(KEYS), epoch=7, encrypt=encrypt) if encrypt else None
    src, snk = machine(SRC, 1, encrypt), machine(SNK, 0, encrypt)
    connect(snk, SNK, Direction.INPUT, SRC, ring)
    connect(src, SRC, Direction.OUTPUT, SNK, ring)
    return src, snk


def stream(src: DimeMachine, snk: DimeMachine, items: list[bytes]) -> list[tuple[int, bytes]]:
    """Send ``items`` from the source's MICE to the sink's; what the sink's MICE was handed, in order."""
    assert snk.mice is not None
    msg, _ = mice.pack_run(mice.OUT, 1 << 48 | 1, items, 0, 1 << 30, mice.MAX_ITEM)
    now = 11.0
    src.mice_message(msg, now)
    src.mice_batch_done(now)
    got: list[tuple[int, bytes]] = []
    for _ in range(200):
        now += 0.001
        src.handle_timer(now)
        src.plane.coalesce_completions(now)
        for raw, _ in src.take_outbox():
            snk.on_frame_guarded(raw if type(raw) is bytes else bytes(raw), now)  # (a TxFrame: joined, as sent)
        snk.plane.flush_acks()
        snk.handle_timer(now)
        snk.plane.feed_mice(now)
        recs = [(lin, data) for m in snk.mice.pending_tx for _, lin, data in mice.records(m)]
        snk.mice.pending_tx.clear()
        got += recs
        if recs:
            snk.mice_message(mice.pack_records(mice.DONE, [(lin, b"") for lin, _ in recs]), now)
            snk.mice_batch_done(now)
        snk.plane.coalesce_completions(now)
        for raw, _ in snk.take_outbox():
            src.on_frame_guarded(raw, now)
        src.plane.flush_acks()
        if len(got) >= len(items) and not src.plane.flow.retained:
            break
    return got


def items(n: int, size: int) -> list[bytes]:
    return [bytes([i % 251]) * size for i in range(n)]


@pytest.mark.parametrize("size", [16, 1400, 65536])
def test_clear_data_never_decoded(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    src, snk = pair()
    real = machine_mod.decode

    def no_data(raw: bytes):  # type: ignore[no-untyped-def]
        f = real(raw)
        assert not isinstance(f.body, Data), "a clear DATA frame went through the decoder"
        return f

    monkeypatch.setattr(machine_mod, "decode", no_data)
    want = items(300 if size < 65536 else 20, size)
    got = stream(src, snk, want)
    assert [d for _, d in got] == want
    assert len({lin for lin, _ in got}) == len(want)
    assert not src.plane.flow.retained  # every item completed back at the source
    assert snk.counters[CounterId.FRAME_BUGS] == src.counters[CounterId.FRAME_BUGS] == 0


def test_sealed_data_still_flows() -> None:
    src, snk = pair(encrypt=(int(FrameClass.DATA),))
    seen: list[bytes] = []
    real = snk.on_frame

    def spy(raw: bytes, now: float) -> None:
        seen.append(raw)
        real(raw, now)

    snk.on_frame = spy  # type: ignore[method-assign]
    want = items(200, 1400)
    got = stream(src, snk, want)
    assert [d for _, d in got] == want
    data = [r for r in seen if r[12:14] == snk.plane.data_type]
    assert data and all(r[15] & 0x04 for r in data)  # every DATA frame went sealed (ENCRYPTED)
    assert snk.counters[CounterId.REJECTED_AUTH] == 0


def data_frame(src: Address, dst: Address, channel: int, payload: bytes = b"abc") -> bytes:
    body = Data(channel, msg_id=0, payload=payload, msg_len=len(payload), frag_count=1)
    return encode(frame_to(src, dst, body))


@pytest.mark.parametrize("cut", [15, 16, DATA_MIN - 1])
def test_short_data_frame_is_counted_malformed(cut: int) -> None:
    _, snk = pair()
    raw = data_frame(SRC, SNK, 1)[:cut]
    snk.on_frame(raw, 12.0)
    assert snk.counters[CounterId.REJECTED_MALFORMED] == 1
    assert snk.counters[CounterId.FRAME_BUGS] == 0
    snk.plane.data_wire(raw, 12.0)  # called directly, it says so itself
    assert snk.counters[CounterId.REJECTED_MALFORMED] == 2
    assert snk.reasons["malformed:data"] == 1


@pytest.mark.parametrize("sender", ["wired", "unwired", "to_output"])
def test_bad_data_frame_is_counted_malformed(sender: str) -> None:
    """Malformed before anything else, as on the decoding path: from a wired input, from a sender never wired,
    and a non-ack frame on one of the DIME's outputs."""
    src, snk = pair()
    m, frm, to = {
        "wired": (snk, SRC, SNK),
        "unwired": (snk, Address(b"\x02\x00\x00\x00\x00\x09", 4, 0), SNK),
        "to_output": (src, SNK, SRC),
    }[sender]
    raw = bytearray(data_frame(frm, to, 1))
    raw[14] = 0x7F  # the header's version
    m.on_frame(bytes(raw), 12.0)
    assert m.counters[CounterId.REJECTED_MALFORMED] == 1
    assert m.counters[CounterId.REJECTED_DATA] == 0
    assert not m.take_outbox()


def test_unwired_data_is_refused() -> None:
    _, snk = pair()
    other = Address(b"\x02\x00\x00\x00\x00\x09", 4, 0)
    snk.on_frame(data_frame(other, SNK, 1), 12.0)
    snk.on_frame(data_frame(Address(SRC.mac, 0xFFFF, 0), SNK, 1), 12.0)
    assert snk.counters[CounterId.REJECTED_DATA] == 2
    assert snk.reasons["data:not_wired"] == snk.reasons["data:from_dime_all"] == 1
    assert (1, other.mac, 4) not in snk.plane.receivers


def test_held_acks_merge_but_duplicates_both_go() -> None:
    _, snk = pair()
    key = (1, SRC.mac, SRC.dime)

    def ack(msg_id: int, pos: int) -> bytes:
        return encode(frame_to(SNK, SRC, Data(1, msg_id=msg_id, frag_count=0, ack=pos, credit=64, flags=DataFlag.ACK)))

    p = snk.plane
    assert p._hold_acks(key, [ack(1, 5), ack(1, 6)]) == []
    assert snk.counters[CounterId.ACKS_MERGED] == 1
    assert p._hold_acks(key, [ack(1, 6)]) == [ack(1, 6)]  # a repeat of the held one: both go
    snk.take_outbox()
    p.flush_acks()
    assert [raw for raw, _ in snk.take_outbox()] == [ack(1, 6)]


@pytest.mark.parametrize(
    ("mtu", "rcvbuf", "want"),
    [
        (1500, 425_984, 109),  # NIC MTUs keep the default window (160 KiB), whatever the socket holds
        (9000, 8 << 20, 18),
        (65000, 425_984, 4),  # a default rmem_max: 212,992 bytes of data, 4 jumbo fragments at least
        (65000, 8 << 20, 64),  # 4 MiB held: the window's ceiling, 4 MiB
        (65000, 16 << 20, 64),  # more held: still the ceiling
        (16000, 8 << 20, 256),  # the ceiling, at most 256 fragments
    ],
)
def test_wire_credit_follows_the_wire_socket_for_jumbo_frames(mtu: int, rcvbuf: int, want: int) -> None:
    assert wire_credit(mtu, rcvbuf) == want
    assert credit_for(mtu) <= want


def test_a_dime_on_a_udp_wire_takes_its_window_from_the_socket(tmp_path: Path) -> None:
    wire = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        wire.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        got = wire.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        cfg = DimeConfig(
            dime=0, core=0, mac="02:00:00:00:00:01", fd=a.fileno(), state_dir=str(tmp_path),
            local_store=str(tmp_path / "store"), mtu=65000, wire_fd=os.dup(wire.fileno()), pin=False,
        )  # fmt: skip
        d = Dime(cfg, a)
        assert d.m.credit_window == wire_credit(65000, got) == 4
        d.wire.close()  # type: ignore[union-attr]
    finally:
        for s in (wire, a, b):
            s.close()


def test_a_dime_sends_its_data_frames_without_joining_them(tmp_path: Path) -> None:
    """The DIME process sets its plane up for TxFrames and sends them (and bytes beside them) with one sendmmsg:
    each arrives as the frame's bytes; a frame for the relay (to its own MAC) goes through the server whole."""
    from pxproto.dime import fastchannel

    if not fastchannel.COMPILED or flow_loops is None:
        pytest.skip("the compiled channel and flow loops are not built")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wire = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        peer.bind(("127.0.0.1", 0))
        wire.connect(peer.getsockname())
        cfg = DimeConfig(
            dime=SRC.dime, core=0, mac=SRC.mac.hex(), fd=a.fileno(), state_dir=str(tmp_path),
            local_store=str(tmp_path / "store"), mtu=9000, wire_fd=os.dup(wire.fileno()), pin=False,
        )  # fmt: skip
        d = Dime(cfg, a)
        assert d.send_frames is not None and d.m.plane.iov_frames and d.m.plane.tx_split == 2
        connect(d.m, SRC, Direction.OUTPUT, SNK, None)
        d.m.take_outbox()
        (tx,) = d.m.plane.senders.values()
        assert tx.iov
        _, out = tx.send_wire(bytes(range(256)) * 70, 11.0)  # 17,920 bytes: 2 full fragments and 20 bytes
        assert [type(f).__name__ for f in out.frames] == ["TxFrame", "TxFrame", "bytes"]  # (short: copied)
        want = [bytes(f) for f in out.frames]
        d.m.out(out)
        d.m.send_raw(b"\x00" * 60, "direct")
        d._send_out()
        peer.settimeout(5)
        assert [peer.recv(70_000) for _ in range(4)] == [*want, b"\x00" * 60]
        assert d.m.outbox == []
        d.m.outbox.append((out.frames[0], "relay"))  # (to the server: bytes)
        d._send_out()
        assert b.recv(70_000) == want[0]
        d.wire.close()  # type: ignore[union-attr]
    finally:
        for s in (peer, wire, a, b):
            s.close()


def test_pump_hands_each_data_frame_to_the_driver_as_it_is_built() -> None:
    """``plane.frame_out`` runs once per data frame, with that frame (and only it) new in the outbox: the driver
    can send the first frames of a window while the machine builds the rest."""
    src, snk = pair()
    per_call: list[int] = []
    src.plane.frame_out = lambda n: per_call.append(len(src.take_outbox()))
    items = [bytes([i % 251]) * 3000 for i in range(12)]  # 3 items per 9000-byte frame: 4 frames
    assert [d for _, d in stream(src, snk, items)] == items
    assert per_call[:4] == [1, 1, 1, 1]
    assert src.counters[CounterId.ITEM_FRAMES_TX] == len(per_call)


def wired_sink(m: DimeMachine) -> None:
    """A Dime's machine (no MICE process: its queue is enough) started with a window of 16, its input from SRC."""
    m.credit_window = 16
    m.start(10.0)
    m.loaded = Loaded(1, 0, "x", Path("."), package.Stage(0, "x", "m:f"))
    m.start_mice(0)
    connect(m, SNK, Direction.INPUT, SRC, None)


@pytest.mark.parametrize("iov", [False, True])
def test_pump_builds_a_window_in_batches_with_tx_split(iov: bool) -> None:
    """With ``tx_split`` set (the DIME process's TX_SPLIT), pump builds up to ``credit_window // tx_split`` messages
    in C between two ``frame_out`` calls, each told how many; with ``iov_frames`` the large frames are TxFrames
    whose bytes are the frames the copy path builds.  The items arrive all, in order, either way."""
    from pxproto.dime import fastchannel

    if not fastchannel.COMPILED or flow_loops is None:
        pytest.skip("the compiled channel and flow loops are not built")
    src, snk = machine(SRC, 1, ()), machine(SNK, 0, ())
    src.plane.tx_split = 2
    src.plane.iov_frames = iov
    connect(snk, SNK, Direction.INPUT, SRC, None)
    connect(src, SRC, Direction.OUTPUT, SNK, None)
    calls: list[tuple[int, int]] = []
    kinds: set[str] = set()

    def frame_out(n: int) -> None:
        box = src.take_outbox()
        kinds.update(type(raw).__name__ for raw, _ in box)
        calls.append((n, len(box)))
        src.outbox += box  # (sent with the rest by stream)

    src.plane.frame_out = frame_out
    items = [bytes([i % 251]) * 3000 for i in range(300)]  # 2 items per 9000-byte frame: 150 frames
    assert [d for _, d in stream(src, snk, items)] == items
    most = src.credit_window // 2
    assert max(n for n, _ in calls) == most > 1  # a batch as large as the split allows
    assert sum(n for n, _ in calls) == src.counters[CounterId.ITEM_FRAMES_TX] == 150
    assert sum(k for _, k in calls) >= 150  # each call saw its messages' frames in the outbox
    assert kinds == ({"TxFrame"} if iov else {"bytes"})


@pytest.mark.parametrize("large", [1, 8])
def test_items_larger_than_a_frame_share_messages_of_several_fragments(
    large: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items that do not fit a frame each (10,000 B on a 9000-byte MTU: 2 frames each, the second a quarter full)
    go in messages of up to LARGE_MSG_FRAGS fragments, fewer frames for the same items; items that fit a frame
    keep one frame per message.  Exact either way."""
    monkeypatch.setattr(channels_mod, "LARGE_MSG_FRAGS", large)
    src, snk = pair()
    big = [bytes([i % 251]) * 10_000 for i in range(40)]
    assert [d for _, d in stream(src, snk, big)] == big
    frames = src.counters[CounterId.ITEM_FRAMES_TX]
    if large == 1:
        assert frames == 2 * len(big)
    else:
        assert frames < 1.5 * len(big)  # 10,012 B items in 8,950-byte fragments: about 1.13 frames each
    src, snk = pair()
    small = [bytes([i % 251]) * 3000 for i in range(60)]  # 2 a frame, whatever LARGE_MSG_FRAGS says
    assert [d for _, d in stream(src, snk, small)] == small
    assert src.counters[CounterId.ITEM_FRAMES_TX] == len(small) // 2


def test_outputs_queued_again_by_a_rewiring_count_their_bytes_again() -> None:
    """A CONNECT that re-wires an output queues again what went on the old wiring and was not completed: its bytes
    count in ``queued_bytes`` again (it is sent, and subtracted, again), so the plane's figure stays what waits (the
    backlog bound and the large-item packing read it)."""
    src, _ = pair()
    msg, _ = mice.pack_run(mice.OUT, 1 << 48 | 1, [b"y" * 10_000] * 5, 0, 1 << 30, mice.MAX_ITEM)
    src.mice_message(msg, 11.0)
    src.mice_batch_done(11.0)
    assert src.take_outbox() and src.plane.flow.queued == 0 and src.plane.queued_bytes == 0  # all sent
    src.plane.unwire(1)  # as a CONNECT re-wiring channel 1 does first
    assert src.counters[CounterId.REPLAYED] == 5
    assert (src.plane.flow.queued, src.plane.queued_bytes) == (5, 50_000)
    connect(src, SRC, Direction.OUTPUT, Address(b"\x02\x00\x00\x00\x00\x09", 4, 0), None)  # sent again there
    assert (src.plane.flow.queued, src.plane.queued_bytes) == (0, 0)


def test_the_planes_timer_is_the_earliest_of_its_channel_ends() -> None:
    src, _ = pair()
    assert src.plane.timers() == [None]  # nothing in flight, nothing held back
    msg, _ = mice.pack_run(mice.OUT, 1 << 48 | 1, [b"x" * 100] * 3, 0, 1 << 30, mice.MAX_ITEM)
    src.mice_message(msg, 11.0)
    src.mice_batch_done(11.0)  # a frame in flight: its sender's retransmission timer is armed
    (tx,) = src.plane.senders.values()
    rto = tx.get_timer()
    assert rto is not None and rto > 11.0
    assert src.plane.timers() == [rto]
    src.plane.flush_at = rto - 0.5
    assert src.plane.timers() == [rto - 0.5]
    due = src.get_timer()
    assert due is not None and due <= rto - 0.5


def test_a_burst_returns_its_credit_before_it_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DIME reading a burst of data frames sends its held ack after every credit window / ACK_SPLIT frames,
    not only once the burst is over (one ack per window-sized burst made the channel stop-and-wait)."""
    from pxproto.node import dime as dime_mod

    src, _ = pair()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    monkeypatch.setattr(Dime, "start_mice", lambda self, *a: 0)  # no MICE process: its queue is enough here
    try:
        cfg = DimeConfig(
            dime=SNK.dime, core=0, mac=SNK.mac.hex(), fd=theirs.fileno(), state_dir=str(tmp_path),
            local_store=str(tmp_path / "store"), mtu=9000, pin=False,
        )  # fmt: skip
        d = Dime(cfg, theirs)
        m = d.m
        wired_sink(m)
        ours.setblocking(False)
        while True:  # what the DIME sent so far (CONNECT's reply, its first heartbeat)
            try:
                ours.recv(65536)
            except BlockingIOError:
                break
        frames = []
        for i in range(16):  # one item per frame, one fragment per message: a window's worth
            msg, _ = mice.pack_run(mice.OUT, 1 << 48 | (i + 1), [b"y" * 8000], 0, 1 << 30, mice.MAX_ITEM)
            src.mice_message(msg, 11.0)
            src.mice_batch_done(11.0)
            frames += [raw for raw, _ in src.take_outbox()]
        assert len(frames) == 16
        acks = []
        for i, raw in enumerate(frames, 1):
            d._from_server(raw, 11.0)
            try:
                got = ours.recv(65536)
            except BlockingIOError:
                continue
            src.on_frame(got, 11.0)
            acks.append(i)
        step = 16 // dime_mod.ACK_SPLIT
        assert dime_mod.ACK_SPLIT >= 2 and acks == list(range(step, 17, step))  # the first ones before the burst ends
        assert m.counters[CounterId.ITEMS_IN] == 16  # and the acked frames' items went to the MICE with the acks
        m.mice = None
    finally:
        ours.close()
        theirs.close()
