"""Unit tests of the kernel's own logic: package format, key file, replay window, ACL, flow, memory, MICE records."""

from __future__ import annotations

import os
import socket
import types
from pathlib import Path
from typing import Any

import pytest

from pxproto import package
from pxproto.dime.keys import AccessList, KeyFileError, KeyRing, ReplayWindow, add_trailer, parse_keyfile
from pxproto.node import mice
from pxproto.node.flow import Completed, Flow
from pxproto.node.memory import MemoryAccount, chunks_of
from pxproto.package import LocalStore
from pxproto.signing import VerifyKeys, fresh_signing_key
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import CHUNK_BYTES, Command
from pxproto.wire.frame import Frame, Signaling

TOML = '[service]\nname = "s"\n\n[[stage]]\nname = "a"\nentry = "m:f"\nmemory_chunks = 2\n'


def make_pkg(tmp: Path, toml: str = TOML) -> Path:
    (tmp / "service.toml").write_text(toml)
    (tmp / "m.py").write_text("def f(ctx):\n    yield b'x'\n")
    return tmp


def test_pack_is_deterministic_and_verifies(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    d = make_pkg(tmp_path / "p")
    a1 = package.pack(d)
    (d / "m.py").touch()  # a new mtime changes nothing
    assert package.pack(d) == a1
    signer = fresh_signing_key()
    key = VerifyKeys.from_raw({1: signer.public_bytes()})
    store = tmp_path / "store"
    dig = package.store_put(store, a1)
    path, man, _ = package.fetch_tree(store, tmp_path / "local", dig, len(a1), package.sign(a1, signer), key)
    assert man.stages[0].memory_chunks == 2 and (path / "m.py").exists()
    with pytest.raises(package.PackageError, match="PACKAGE_SIG"):
        package.fetch_tree(store, tmp_path / "local", dig, len(a1), b"\0" * 66, key)
    with pytest.raises(package.PackageError, match="PACKAGE_SIZE"):
        package.fetch_tree(store, tmp_path / "local", dig, len(a1) + 1, package.sign(a1, signer), key)


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[service]\nname = "s"\n', "at least one"),
        ('[service]\nname = "s"\n[[stage]]\nname = "a"\nentry = "nocolon"\n', "line 3 (stage 0): field 'entry'"),
        ('[service]\nname = "s"\n[[stage]]\nname = "a"\nentry = "m:f"\nmemory_chunks = 0\n', "memory_chunks"),
        ('[service]\nname = "s"\n[[stage]]\nname = "a"\nentry = "m:f"\nbogus = 1\n', "unknown field 'bogus'"),
        ("[service\n", "service.toml"),
    ],
)
def test_manifest_errors_name_line_and_field(toml: str, needle: str) -> None:
    with pytest.raises(package.PackageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        package.parse_manifest(toml)


def test_keyfile() -> None:
    keys = parse_keyfile("# c\n1 " + "00" * 16 + "\n7 " + "11" * 16 + "\n")
    assert set(keys) == {1, 7} and KeyRing(keys).active == 7
    assert parse_keyfile("ab" * 16) == {1: b"\xab" * 16}
    for bad, where in (("1 zz", "line 1"), ("0 " + "00" * 16, "line 1"), ("1 00", "at least"), ("", "no key")):
        with pytest.raises(KeyFileError, match=where):
            parse_keyfile(bad)


def test_replay_window() -> None:
    w = ReplayWindow(size=8)
    for c in (5, 3, 9):
        assert w.check(c) is None
        w.accept(c)
    assert w.check(5) == "replayed" and w.check(9) == "replayed"
    assert w.check(4) is None and w.check(1) == "late"
    w.accept(100)
    assert w.check(95) is None and w.check(92) == "late"


def _signed(ring: KeyRing, key: bytes) -> tuple[bytes, Frame]:
    raw = encode(Frame(Signaling(Command.PING, req_id=1)))
    signed = add_trailer(raw, 1, ring.next_counter(), key)
    return signed, decode(signed)


def test_keyring_checks_tag_before_moving_the_window() -> None:
    key = b"a" * 16
    tx, rx = KeyRing({1: key}, epoch=3), KeyRing({1: key})
    raw, f = _signed(tx, key)
    assert f.auth is not None and f.auth.counter == 3 << 32 | 1
    forged = raw[:-1] + bytes([raw[-1] ^ 1])
    assert rx.check(forged, f.src_mac, f.src_dime, 1, f.auth.counter, f.padding) == "bad_tag"
    assert rx.check(raw, f.src_mac, f.src_dime, 1, f.auth.counter, f.padding) is None  # the forgery did not burn it
    assert rx.check(raw, f.src_mac, f.src_dime, 1, f.auth.counter, f.padding) == "replayed"
    assert rx.check(raw, f.src_mac, f.src_dime, 2, f.auth.counter, f.padding) == "unknown_key"


def test_acl() -> None:
    acl = AccessList()
    assert acl.allows(b"\1" * 6, Command.RESET)
    acl.set_raw(b"\1" * 6 + bytes([0b00010, 0]))  # area C only
    assert acl.allows(b"\1" * 6, Command.LOAD) and not acl.allows(b"\1" * 6, Command.PING)
    assert not acl.allows(b"\2" * 6, Command.LOAD)
    assert acl.raw() == b"\1" * 6 + bytes([2, 0])


def test_flow_completion_travels_back_and_replays_on_rewire() -> None:
    f = Flow()
    up = (1, b"\1" * 6, 0)
    assert f.arrive(10, up) == "new"
    f.produced(10, b"a")  # k=0 output keeps the lineage
    f.produced(mice.derive_lineage(10, 1), b"b")
    assert f.done(10) == []  # outputs still open
    assert f.take(5, 1 << 20)[1] == 2 and not f.queue  # both sent on channel 5
    assert f.requeue(5) == 2 and f.queued == 2  # a re-wire sends them again
    assert f.downstream_completed(10) == (10, [])
    assert f.downstream_completed(mice.derive_lineage(10, 1)) == (10, [up])
    assert f.arrive(10, up) == "done"  # a replayed copy is completed at once
    assert f.duplicates == 1


def test_flow_copy_in_progress_waits() -> None:
    f = Flow()
    a, b = (1, b"\1" * 6, 0), (1, b"\2" * 6, 0)
    assert f.arrive(7, a) == "new" and f.arrive(7, b) == "wait"
    assert f.done(7) == [a, b]


def test_lineage() -> None:
    assert mice.source_lineage(2, 0) == 2 << 48 | 1
    assert mice.derive_lineage(99, 0) == 99
    assert mice.derive_lineage(99, 1) == mice.derive_lineage(99, 1) != mice.derive_lineage(99, 2)
    assert mice.unpack_item(mice.pack_item(5, b"x")) == (5, b"x")
    with pytest.raises(ValueError):
        mice.unpack_item(b"123")


def test_records_and_batcher() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    bat = mice.Batcher(a)
    bat.add(mice.OUT, 1, b"x" * 10)
    bat.add(mice.DONE, 1)
    bat.flush()
    assert list(mice.records(b.recv(1 << 16))) == [(mice.OUT, 1, b"x" * 10), (mice.DONE, 1, b"")]
    with pytest.raises(ValueError, match="truncated"):
        list(mice.records(b"\x01\x00"))
    with pytest.raises(ValueError, match="says"):
        list(mice.records(mice.REC.pack(2, 1, 50) + b"x"))


def test_memory_account() -> None:
    assert chunks_of(1) == 1 and chunks_of(CHUNK_BYTES) == 1 and chunks_of(CHUNK_BYTES + 1) == 2
    m = MemoryAccount(limit=8)
    m.reserved = 2
    m.sample(0.0, 5)
    assert m.used == 5 and m.free == 3 and m.peak == 5
    assert m.mice_exited(1.0) == 5 and m.used == 2 and m.returned == 5


def test_local_store(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    s.put("a/b", b"1")
    s.append("log", b"x")
    s.append("log", b"yz")
    assert s.get("a/b") == b"1" and s.records("log") == [b"x", b"yz"] and s.names() == ["a/b", "log"]
    with pytest.raises(ValueError):
        s.put("../escape", b"")


def test_fastrx_compiled_and_twin_agree() -> None:
    from pxproto.node import fastrx
    from pxproto.wire.codes import Scope, TlvType
    from pxproto.wire.frame import Tlv

    if os.environ.get("PXPROTO_PURE") == "1":
        pytest.skip("pure twin forced")
    assert fastrx.COMPILED, "pxproto.node._fastrx did not build (python setup.py build_ext --inplace)"
    mac = b"\x02\x00\x00\x00\x00\x01"
    ping = Frame(
        Signaling(Command.PING, req_id=9, params=(Tlv(TlvType.ECHO, b"abc"),)),
        scope=Scope.DIME,
        dst_dime=3,
        dst_mac=mac,
        src_mac=b"\x02" * 6,
    )
    raw = encode(ping)
    fast, slow = decode(fastrx.ping_reply(raw, 5) or b""), decode(fastrx.ping_reply_py(raw, 5) or b"")
    fast.padding = slow.padding = 0  # the compiled builder pads short frames to 60 bytes
    assert fast == slow
    reply = decode(fastrx.ping_reply(raw, 5) or b"")
    assert reply.src_dime == 3 and reply.body.param(TlvType.EPOCH) == 5  # type: ignore[union-attr]
    no_echo = encode(Frame(Signaling(Command.PING, req_id=9), scope=Scope.DIME, dst_dime=3, dst_mac=mac))
    for r in (no_echo, raw[:-1], encode(Frame(Signaling(Command.USAGE), scope=Scope.DIME, dst_dime=3))):
        assert fastrx.ping_reply(r, 5) is None and fastrx.ping_reply_py(r, 5) is None
    for r in (raw, raw[:20], encode(Frame(Signaling(Command.PING), dst_mac=b"\xff" * 6)), b"\x03" * 6 + raw[6:]):
        assert fastrx.route(r, mac) == fastrx.route_py(r, mac)
    assert fastrx.route(raw, mac) == 3


def test_completed_watermark_keeps_memory_flat_and_answers_exactly() -> None:
    done = Completed()
    lineages = [mice.source_lineage(2, i) for i in range(20000)]
    order = lineages[:]
    for i in range(0, len(order) - 5, 5):  # nearly in order: swaps within small groups
        order[i], order[i + 4] = order[i + 4], order[i]
    for n, lin in enumerate(order):
        done.add(lin)
        assert len(done) <= 6, f"after {n + 1} lineages the set holds {len(done)} entries"
    assert all(lin in done for lin in lineages)
    assert mice.source_lineage(2, 20000) not in done and mice.source_lineage(3, 0) not in done
    assert len(done) == 1 and done.marks == {2: 20000}


def test_completed_bounds_lineages_that_cannot_join_a_watermark() -> None:
    done = Completed(cap=100)
    derived = [mice.derive_lineage(mice.source_lineage(0, i), 1) for i in range(250)]
    for lin in derived:
        done.add(lin)
    assert len(done.above) <= 100 and done.forgotten >= 150
    assert derived[-1] in done and derived[0] not in done  # the oldest are forgotten first


def test_flow_drops_a_replayed_source_lineage_long_after_completion() -> None:
    f = Flow()
    up = (1, b"\1" * 6, 0)
    for i in range(5000):
        lin = mice.source_lineage(0, i)
        assert f.arrive(lin, up) == "new"
        assert f.done(lin) == [up]  # a sink: done at once
    assert len(f.completed) == 1
    assert f.arrive(mice.source_lineage(0, 17), up) == "done" and f.duplicates == 1


def test_keyring_rotation_keeps_the_old_key_for_the_grace_only() -> None:
    k1, k2 = b"a" * 16, b"b" * 16
    tx, rx = KeyRing({1: k1}, epoch=1), KeyRing({1: k1}, grace=0.5)
    rx.install(2, k2)
    assert rx.active == 1
    rx.rotate(2, now=10.0)
    assert rx.active == 2
    raw, f = _signed(tx, k1)
    assert f.auth is not None
    assert rx.check(raw, f.src_mac, f.src_dime, 1, f.auth.counter, f.padding, now=10.2) is None
    raw, f = _signed(tx, k1)
    assert f.auth is not None
    assert rx.check(raw, f.src_mac, f.src_dime, 1, f.auth.counter, f.padding, now=10.6) == "retired_key"
    with pytest.raises(ValueError, match="retired"):
        rx.install(1, k1)


def test_item_batches_round_trip_and_name_the_bad_byte() -> None:
    items = [(mice.source_lineage(1, i), bytes([i]) * i) for i in range(40)]
    msg = mice.pack_items(items)
    assert mice.unpack_items(msg) == items
    assert mice.unpack_items(mice.pack_item(7, b"one")) == [(7, b"one")]  # the single-item form still reads
    with pytest.raises(ValueError, match="at byte 8 says 9 bytes"):
        mice.unpack_items(mice.BATCH_MARK + mice.ITEM_REC.pack(5, 9) + b"abc")
    with pytest.raises(ValueError, match="header at byte 8 truncated"):
        mice.unpack_items(mice.BATCH_MARK + b"\0\0\1")
    with pytest.raises(ValueError, match="lineage 0"):
        mice.unpack_items(mice.BATCH_MARK + mice.ITEM_REC.pack(0, 0))


def _senders() -> list[object]:
    from pxproto.node import beat

    out: list[object] = [beat.BeaterPy]
    if beat.COMPILED:
        out.append(beat.Beater)
    return out


@pytest.mark.parametrize("make", _senders(), ids=lambda m: getattr(m, "__module__", "?"))
def test_heartbeat_sender_sends_an_armed_frame_once_and_gives_back_a_taken_one(make: Any) -> None:
    import select
    import time

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender = make(a.fileno())
    try:
        now = time.monotonic()
        sender.arm(b"beat-1", now + 0.01)
        assert select.select([b], [], [], 5.0)[0], "the armed frame never came"
        assert b.recv(100) == b"beat-1"
        deadline = time.monotonic() + 5.0
        sent, when = False, 0.0
        while not sent and time.monotonic() < deadline:
            sent, when = sender.take()
            if not sent:
                time.sleep(0.01)
        assert sent and when >= now + 0.01
        # Armed far ahead and taken back: never sent, and take says so.
        sender.arm(b"beat-2", time.monotonic() + 60)
        taken, _ = sender.take()
        assert not taken
        assert not select.select([b], [], [], 0.2)[0]
        # Re-armed before its time: only the newer frame goes.
        sender.arm(b"old", time.monotonic() + 0.05)
        sender.arm(b"new", time.monotonic() + 0.02)
        assert select.select([b], [], [], 5.0)[0]
        assert b.recv(100) == b"new"
        assert not select.select([b], [], [], 0.2)[0]
    finally:
        sender.close()
        a.close()
        b.close()


def test_the_compiled_heartbeat_sender_is_built() -> None:
    from pxproto.node import beat

    if os.environ.get("PXPROTO_PURE") == "1":
        pytest.skip("pure twin forced")
    assert beat.COMPILED, "pxproto/node/_beat.pyx did not build: heartbeats would go at normal priority"


def test_a_mice_under_its_limit_can_start_threads() -> None:
    """RLIMIT_AS (the fallback) counts a thread's whole stack: 4 threads of 8 MiB would not fit in 8 chunks."""
    from pxproto.node.memory import limit_self

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import threading

            limit_self(8)
            stop = threading.Event()
            threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(4)]
            for t in threads:
                t.start()
            stop.set()
            block = bytearray(4 << 20)  # and still room to allocate
            code = 0 if block else 1
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status:#x}"


def test_commit_keeps_one_record_per_lineage(tmp_path: Path) -> None:
    from pxproto.package import LocalStore, keyed_records

    store = LocalStore(tmp_path)
    ctx = mice.Context(1, 3, "sink", 0, 1, store=store, lineage=7)
    assert ctx.commit("out", b"a") and not ctx.commit("out", b"a")
    ctx.lineage = 8
    assert ctx.commit("out", b"b")
    # A replacement (a new process, a fresh Context) on the same store: the replay writes nothing.
    again = mice.Context(1, 3, "sink", 1, 2, store=store, lineage=7)
    assert not again.commit("out", b"a")
    store.append("out", b"\x00\x01")  # a torn record is never a committed one
    assert keyed_records(store.records("out")) == [(7, b"a"), (8, b"b")]


def test_an_appender_writes_each_record_through_at_once(tmp_path: Path) -> None:
    from pxproto.package import LocalStore

    store = LocalStore(tmp_path)
    one, two = store.appender("a/out"), store.appender("a/out")  # two sinks' handles on one object
    one(b"first")
    assert store.records("a/out") == [b"first"]  # in the file when the call returns: nothing buffered
    two(b"second" * 1000)
    store.append("a/out", b"third")
    one(b"")
    assert store.records("a/out") == [b"first", b"second" * 1000, b"third", b""]


def test_a_yielded_list_is_a_batch_of_items() -> None:
    class Rec(mice.Batcher):
        """A Batcher whose socket keeps what it is sent; ``got`` is every record sent or still waiting."""

        def __init__(self) -> None:
            super().__init__(self)  # type: ignore[arg-type]
            self.sent: list[bytes] = []

        def sendall(self, data: bytes) -> None:
            self.sent.append(data)

        @property
        def got(self) -> list[tuple[int, int, bytes]]:
            return [r for m in [*self.sent, b"".join(self.parts)] for r in mice.records(m)]

    one, batch = Rec(), Rec()
    ctx = mice.Context(1, 2, "s", 0, 1)
    assert mice._emit(one, iter([b"a", b"b", b"c"]), None, ctx, 0) == 3  # type: ignore[arg-type]
    assert mice._emit(batch, iter([[b"a", b"b"], (b"c",)]), None, ctx, 0) == 3  # type: ignore[arg-type]
    assert one.got == batch.got
    derived, derived_batch = Rec(), Rec()
    mice._emit(derived, iter([b"x", b"y"]), 99, ctx, 0)  # type: ignore[arg-type]
    mice._emit(derived_batch, iter([[b"x", b"y"]]), 99, ctx, 0)  # type: ignore[arg-type]
    assert derived.got == derived_batch.got
    with pytest.raises(TypeError):
        mice._emit(Rec(), iter([[b"x", 3]]), 99, ctx, 0)  # type: ignore[arg-type, list-item]


def test_a_mice_before_its_ready_record_uses_zero_chunks_on_every_path() -> None:
    from pxproto.node.dime import Dime
    from pxproto.node.machine import Mice

    # Its baseline comes in READY: until then all of the process would count, dozens of chunks over its limit.
    # One rule (memory.mice_chunks): before READY it has run no stage code and uses 0 chunks, on the RLIMIT_AS
    # path and the cgroup path alike, so heartbeats report a real figure (0) from the first beat.
    whole = types.SimpleNamespace(usage=lambda: 64 << 21)  # a cgroup charged with the whole process: 64 chunks
    for cg in (None, whole):
        host = types.SimpleNamespace(_cgroup_of=lambda m, cg=cg: cg)
        assert Dime.mice_mem_chunks(host, Mice(os.getpid(), 1, 2, "sink")) == 0  # type: ignore[arg-type]
    rlimit = types.SimpleNamespace(_cgroup_of=lambda m: None)
    assert Dime.mice_mem_chunks(rlimit, Mice(os.getpid(), 1, 2, "sink", baseline=1)) > 20  # type: ignore[arg-type, operator]
    charged = types.SimpleNamespace(_cgroup_of=lambda m: whole)
    assert Dime.mice_mem_chunks(charged, Mice(os.getpid(), 1, 2, "sink", baseline=60 << 21)) == 4  # type: ignore[arg-type]
