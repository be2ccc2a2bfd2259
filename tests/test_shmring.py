"""The DIME <-> MICE hand-over in shared memory (:mod:`pxproto.node.shmring`): the ring alone (boundaries, gathered
parts, wrap-around, a full ring, bad sizes, nothing visible before it is published), the wake-up flags under a real
forked writer (no lost wake-up: a waiting reader is never left asleep with a message in the ring), a writer killed
mid-message, and items through real pxkernels exactly once with the rings in use."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import select
import signal
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pxproto.node import mice, shmring
from pxproto.node.testbed import Cluster
from pxproto.package import LocalStore
from pxproto.wire.codes import Command, TlvType
from pxproto.wire.frame import Tlv
from tests._helpers import manifest, packaged_cluster, start

pytestmark = pytest.mark.skipif(not shmring.available(), reason="pxproto.node._shmring is not built (pure build)")

_SEED = os.environ.get("PXPROTO_SEED", "0")
SEED = random.randrange(1 << 30) if _SEED == "random" else int(_SEED)


@contextlib.contextmanager
def _pair(size: int = shmring.RING_BYTES, soft: int = 0) -> Iterator[tuple[shmring.Link, shmring.Link]]:
    """Both ends of a hand-over over rings of ``size`` bytes (``soft``: see shmring.SOFT_BYTES), closed afterwards."""
    ours, theirs = shmring.Link.pair(size, soft or shmring.SOFT_BYTES)
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def _msg(seq: int, size: int) -> bytes:
    """Message ``seq`` of ``size`` bytes (at least 24): seq, size, a digest of the body, then the body."""
    body = (seq.to_bytes(8, "big") * (size // 8 + 1))[: size - 24]
    return struct.pack("!QQ", seq, size) + hashlib.blake2b(body, digest_size=8).digest() + body


def _check(view: memoryview | bytes) -> int:
    """The seq of a whole message made by :func:`_msg` (AssertionError names what is wrong)."""
    raw = bytes(view)
    seq, size = struct.unpack_from("!QQ", raw)
    assert len(raw) == size, f"message {seq}: {len(raw)} bytes, says {size}"
    assert raw[16:24] == hashlib.blake2b(raw[24:], digest_size=8).digest(), f"message {seq}: torn body"
    return int(seq)


def test_messages_keep_their_boundaries_and_parts_are_gathered() -> None:
    with _pair(1 << 16) as (ours, theirs):
        sent: list[Any] = [b"a", b"bc" * 5, [b"head", b"", b"tail"], (b"x" * 3000, memoryview(b"yz")), bytearray(b"q")]
        wanted = [b"a", b"bc" * 5, b"headtail", b"x" * 3000 + b"yz", b"q"]
        for m in sent:
            assert ours.try_send(m)
        for want in wanted:
            view = theirs.recv_view()
            assert view is not None
            assert bytes(view) == want
            theirs.done()
        assert theirs.recv_view() is None
        assert ours.tx.used() == 0


def test_wrap_around_many_sizes_in_a_small_ring() -> None:
    """Far more bytes than the ring holds, with sizes that leave every kind of tail: each message whole, in order."""
    rnd = random.Random(SEED)
    with _pair(8192) as (ours, theirs):
        cap = ours.tx.capacity
        total = seq = got = 0
        while total < 50 * cap:
            size = rnd.choice([24, 25, 31, 32, 33, 100, 1000, ours.tx.largest])
            if not ours.try_send(_msg(seq, size)):
                view = theirs.recv_view()
                assert view is not None, "full, yet nothing to read"
                assert _check(view) == got
                theirs.done()
                got += 1
                continue
            seq += 1
            total += size
        while (view := theirs.recv_view()) is not None:
            assert _check(view) == got
            theirs.done()
            got += 1
        assert got == seq


def test_small_messages_stay_within_the_soft_size_large_ones_use_the_ring() -> None:
    """Messages of up to half the soft size wrap at it (the writer is blocked once a soft size is in use); a larger
    one still goes, past it."""
    with _pair(65536, soft=8192) as (ours, theirs):
        n = 0
        while ours.try_send(_msg(n, 1000)):
            n += 1
            assert ours.tx.used() <= 8192
        assert n == 8192 // 1008
        for i in range(n):
            assert _check(_take(theirs) or b"") == i
        for i in range(n, n + 3 * n):  # laps of the soft part: the same bound
            assert ours.try_send(_msg(i, 1000))
            assert _check(_take(theirs) or b"") == i
        assert ours.try_send(_msg(9999, 20_000)) and ours.tx.used() > 8192
        assert _check(_take(theirs) or b"") == 9999


def test_a_full_ring_writes_nothing_until_space_is_released() -> None:
    with _pair(4096) as (ours, theirs):
        n = 0
        while ours.try_send(_msg(n, 200)):
            n += 1
        assert 0 < n < 4096 // 200
        used = ours.tx.used()
        assert ours.tx.put(_msg(n, 200)) == 0  # FULL: nothing written, nothing published
        assert ours.tx.used() == used
        view = theirs.recv_view()
        assert view is not None and _check(view) == 0
        theirs.done()
        assert ours.try_send(_msg(n, 200))
        seen = [_check(v) for v in iter(lambda: _take(theirs), None)]
        assert seen == list(range(1, n + 1))


def _take(link: shmring.Link) -> bytes | None:
    view = link.recv_view()
    if view is None:
        return None
    data = bytes(view)
    link.done()
    return data


def test_empty_and_oversized_messages_are_refused() -> None:
    with _pair(4096) as (ours, _):
        with pytest.raises(ValueError, match="empty message"):
            ours.try_send(b"")
        with pytest.raises(ValueError, match=r"a message of \d+ bytes, at most \d+ fit"):
            ours.try_send(b"x" * (ours.tx.largest + 1))
        assert ours.try_send(b"x" * ours.tx.largest)
        assert ours.tx.used() > 0


def test_the_default_ring_takes_the_largest_mice_message() -> None:
    """A MICE's largest item with its record header after a batch's worth of others fits, as on the socketpair."""
    with _pair() as (ours, theirs):
        big = mice.BATCH_BYTES + mice.REC.size + mice.MAX_ITEM
        assert ours.tx.largest >= big
        for _ in range(3):  # the second one wraps
            assert ours.try_send([b"r" * mice.BATCH_BYTES, b"h" * mice.REC.size, b"i" * mice.MAX_ITEM])
            view = theirs.recv_view()
            assert view is not None and len(view) == big
            del view
            theirs.done()


def test_a_message_written_but_not_published_is_not_visible() -> None:
    """What a writer killed between its copy and its release store leaves: bytes past ``head``, never read."""
    with _pair(4096) as (ours, theirs):
        assert ours.try_send(b"whole")
        mem = ours.tx.mem
        head = struct.unpack_from("=Q", mem, 64)[0]
        pos = shmring.HEADER_BYTES + head % ours.tx.capacity
        struct.pack_into("=II", mem, pos, 5, 0)  # a message header and its bytes, head not moved
        mem[pos + 8 : pos + 13] = b"half!"
        assert _take(theirs) == b"whole"
        assert theirs.recv_view() is None


def test_a_corrupt_ring_is_a_clear_error_not_a_stray_read() -> None:
    """The MICE is untrusted: a message length past what is published gives ValueError, read within the mapping."""
    with _pair(4096) as (ours, theirs):
        assert ours.try_send(b"abc")
        struct.pack_into("=I", ours.tx.mem, shmring.HEADER_BYTES, 4000)
        with pytest.raises(ValueError, match="shared ring: a message of 4000 bytes at 0"):
            theirs.recv_view()


def _fork(body: Callable[..., None], *args: object) -> int:
    """``body(*args)`` in a forked child (exit status 0 when it returns, 1 when it raises)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body(*args)
            code = 0
        finally:
            os._exit(code)
    return pid


def _write_all(ours: shmring.Link, theirs: shmring.Link, sizes: list[int]) -> None:
    ours.drop()
    for i, s in enumerate(sizes):
        theirs.send(_msg(i, s))


def _read_all(ours: shmring.Link, theirs: shmring.Link, n: int) -> None:
    ours.drop()
    for i in range(n):
        view = theirs.recv()
        assert view is not None and _check(view) == i
        del view
        theirs.done()
    assert theirs.recv() is None  # the writer's end of file, once everything was read


def _write_forever(ours: shmring.Link, theirs: shmring.Link) -> None:
    ours.drop()
    i = 0
    while True:
        theirs.send(_msg(i, 200_000 + 8 * i % 100_000))
        i += 1


@pytest.mark.parametrize("size", [4096, 65536])
def test_no_lost_wakeup_with_a_forked_writer(size: int) -> None:
    """A forked writer sends 20,000 messages (waiting on a full ring), the reader here waits as the DIME's loop does
    (flag, look again, poll): a poll that returns nothing in 10 s is a lost wake-up; each message comes once, in
    order, whole.  Then the other way: the reader forked and blocking, the writer here waiting for room."""
    n = 20_000
    rnd = random.Random(SEED)
    sizes = [rnd.choice([24, 40, 300, 1500]) for _ in range(n)]
    with _pair(size) as (ours, theirs):
        pid = _fork(_write_all, ours, theirs, sizes)
        theirs.drop()
        got = 0
        poller = select.poll()
        for fd in ours.fds():
            poller.register(fd, select.POLLIN)
        while got < n:
            if not ours.sleep():
                events = poller.poll(10_000)
                ours.awake()
                assert events, f"lost wake-up after {got} messages (seed {SEED})"
                ours.drain_wakes()
            while (data := _take(ours)) is not None:
                assert _check(data) == got
                got += 1
        assert os.waitpid(pid, 0)[1] == 0
    with _pair(size) as (ours, theirs):
        pid = _fork(_read_all, ours, theirs, n)
        theirs.drop()
        poller = select.poll()
        for fd in ours.fds():
            poller.register(fd, select.POLLIN)
        for i, s in enumerate(sizes):
            while not ours.try_send(_msg(i, s)):
                assert poller.poll(10_000), f"lost wake-up waiting for room at message {i} (seed {SEED})"
                ours.drain_wakes()
        ours.sock.shutdown(socket.SHUT_RDWR)  # the end of file the reader sees once it has read everything
        ours.wake()
        assert os.waitpid(pid, 0)[1] == 0


def test_a_writer_killed_mid_stream_leaves_only_whole_messages() -> None:
    """A forked writer of large messages is SIGKILLed at a random moment, several times over fresh rings: what the
    reader finds after its end of file is a run of whole messages 0, 1, 2..., never a torn one."""
    rnd = random.Random(SEED)
    for _ in range(6):
        with _pair(1 << 20) as (ours, theirs):
            pid = _fork(_write_forever, ours, theirs)
            theirs.drop()
            got = 0
            poller = select.poll()
            for fd in ours.fds():
                poller.register(fd, select.POLLIN)
            while not ours.rx.pending():  # the first message is out (however loaded the machine), then a while
                assert ours.sleep() or poller.poll(10_000), "the writer sent nothing in 10 s"
                ours.awake()
                ours.drain_wakes()
            select.select([], [], [], rnd.uniform(0.0, 0.03))
            for _ in range(rnd.randrange(3)):
                if (data := _take(ours)) is not None:
                    assert _check(data) == got
                    got += 1
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            ours.drain_wakes()
            assert not ours.alive()  # end of file: the writer is gone
            while (data := _take(ours)) is not None:
                assert _check(data) == got
                got += 1
            assert got >= 1 and ours.recv_view() is None


# ------------------------------------------------------------------ through real pxkernels

STAGES_PY = """
def source(ctx):
    sizes = ctx.params["sizes"]
    for i in range(ctx.params["count"]):
        n = sizes[i % len(sizes)]
        yield (i.to_bytes(4, "big") * (n // 4 + 1))[:n]

def relay(item, ctx):
    yield item

def sink(item, ctx):
    ctx.commit("got", item)
    return ()
"""
COUNT = 1200
SIZES = [16, 1400, 20_000, 300_000]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    toml = manifest("shm", ["source", "relay", "sink"], params={"source": {"count": COUNT, "sizes": SIZES}})
    c = packaged_cluster(tmp_path_factory.mktemp("shmring"), toml, STAGES_PY, kernels=2, dimes=2)
    yield c
    c.close()


def _maps_rings(pid: int | None) -> bool:
    """Whether process ``pid`` or one of its children maps a MICE hand-over ring."""
    assert pid is not None
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return any("memfd:pxmice-in" in Path(f"/proc/{p}/maps").read_text() for p in pids)


def test_items_pass_exactly_once_through_real_kernels(cluster: Cluster) -> None:
    """Source -> relay -> sink on two pxkernels, items of 16 B to 300 KB (batched, gathered, large): every item at
    the sink once, whole, its lineage the source's; the DIMEs handed over through the rings."""
    src, mid, snk = cluster.dime(0, 0), cluster.dime(1, 0), cluster.dime(0, 1)
    start(cluster, snk, 3, 2, "sink")
    start(cluster, mid, 3, 1, "relay")
    cluster.connect(mid, snk, 1)
    start(cluster, src, 3, 0, "source")
    cluster.connect(src, mid, 2)
    assert _maps_rings(cluster.dime_pid(1, 0)) and _maps_rings(cluster.dime_pid(0, 1))
    store = LocalStore(cluster.tmp / "state0" / "store")
    assert cluster.client.wait_for(lambda: len(store.records("got")) >= COUNT, 60), len(store.records("got"))
    cluster.client.wait_for(lambda: False, 0.3)  # nothing more comes
    recs = store.records("got")
    assert len(recs) == COUNT
    lineages = sorted(int.from_bytes(r[:8], "big") for r in recs)
    assert lineages == [mice.source_lineage(0, i) for i in range(COUNT)]
    for r in recs:
        i = (int.from_bytes(r[:8], "big") & ((1 << 48) - 1)) - 1
        n = SIZES[i % len(SIZES)]
        assert r[8:] == (i.to_bytes(4, "big") * (n // 4 + 1))[:n], f"item {i} damaged"
    items_in = cluster.ask(snk, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, 5)).param(TlvType.VALUE)
    assert items_in == COUNT
    for dest, stage in ((src, 0), (mid, 1), (snk, 2)):
        cluster.ask(dest, Command.STOP, Tlv(TlvType.SERVICE_ID, 3), Tlv(TlvType.STAGE, stage))
