"""The bare-metal DIME's data plane and built-in stages, on the host (no QEMU).

tests/c/plane_check.c wraps kernel/plane.c, channel.c and stages.c; this test is the rest of
the workflow in Python: an upstream :class:`ChannelSender` sending item batches as a Linux DIME
does, a downstream :class:`ChannelReceiver` taking the outputs, and the completions going back
both ways, with frames lost on the way.  The kernel's ends must interoperate with pxproto's.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from pxproto.baremetal import builtin
from pxproto.dime.channel import ChannelSender, MessageReceived
from pxproto.dime.channel_rx import ChannelReceiver
from pxproto.dime.endpoint import Address
from pxproto.node import mice
from pxproto.wire import decode, encode
from pxproto.wire.codes import DataFlag
from pxproto.wire.frame import Data, Frame

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernel"
PKG = ROOT / "pxproto" / "orch" / "workflows" / "wordcount"
SELF = Address(bytes.fromhex("525400aa0001"), 0, 0)
UP = Address(bytes.fromhex("020000000001"), 1, 0)
DOWN = Address(bytes.fromhex("020000000002"), 2, 0)
DOWN2 = Address(bytes.fromhex("020000000003"), 3, 0)
CH, OUT = 5, 6
DONE = 0x8000

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc to build tests/c/plane_check.c")


def _stages() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wordcount_stages", PKG / "stages.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Plane:
    """The C plane as a subprocess: one command a line, the frames it sent back."""

    def __init__(self, exe: Path) -> None:
        self.p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def cmd(self, line: str) -> list[str]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = []
        while (got := self.p.stdout.readline().strip()) != ".":
            assert got, "plane_check ended"
            out.append(got)
        return out

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.wait(timeout=10)


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plane") / "plane_check"
    subprocess.run(
        ["gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-DCHANNEL_HOSTED",
         f"-I{ROOT / 'pxproto' / 'fastpath'}", f"-I{KERNEL}", str(ROOT / "tests" / "c" / "plane_check.c"),
         *(str(KERNEL / f) for f in ("plane.c", "channel.c", "stages.c")), "-o", str(out)],
        check=True,
    )  # fmt: skip
    return out


@pytest.fixture()
def plane(exe: Path) -> Iterator[Plane]:
    p = Plane(exe)
    yield p
    p.close()


def test_the_c_stages_match_the_python_ones_on_the_whole_corpus(plane: Plane) -> None:
    st = _stages()
    ctx = SimpleNamespace(params={"work_us": 0})
    lines = (PKG / "corpus.txt").read_text("utf-8").splitlines()
    extra = ["MiXeD CaSe, punctuation!! and\ttabs", "", "no words 123 ... ?", "a" * 100]
    for i, line in enumerate(lines + extra):
        item = f"{i}\t{line}".encode()
        parsed = next(st.parse(item, ctx))
        assert bytes.fromhex(plane.cmd(f"stage parse {item.hex()}")[0]) == parsed, line
        want = next(st.transform(parsed, ctx))
        assert bytes.fromhex(plane.cmd(f"stage transform {parsed.hex()}")[0]) == want, parsed


def test_the_builtin_package_header_is_current() -> None:
    assert (KERNEL / "builtin_pkg.h").read_text() == builtin.header(builtin.archive()), (
        "kernel/builtin_pkg.h is stale: python -m pxproto.baremetal.builtin"
    )


class Workflow:
    """upstream (Python) -> the C plane running ``transform`` -> downstream (Python), completions back."""

    me = SELF
    """The DIME under test."""

    def __init__(self, plane: Plane | None, loss: float = 0.0, seed: int = 1) -> None:
        self.plane, self.now, self.rng, self.loss = plane, 0.0, random.Random(seed), loss
        self.up_tx = ChannelSender(UP, self.me, CH, mtu=1500)
        self.up_done = ChannelReceiver(UP, self.me, CH | DONE)
        self.downs: dict[Address, tuple[ChannelReceiver, ChannelSender]] = {}
        self.outputs: dict[int, list[bytes]] = {}
        self.completed: list[int] = []
        self.hold_completions = False
        self.held: list[tuple[Address, int]] = []
        self.setup()

    # -- the DIME's side: the C plane in a subprocess here (tests/test_baremetal_mice.py: a QEMU guest)
    def setup(self) -> None:
        assert self.plane is not None
        assert self.plane.cmd("load transform 0") == []
        self.connect(CH, "in", UP)
        self.wire_down(DOWN)

    def connect(self, ch: int, direction: str, peer: Address) -> None:
        assert self.plane is not None
        assert self.plane.cmd(f"connect {ch} {direction} {peer.mac.hex()} {peer.dime}") == []

    def exchange(self, frame: Frame) -> list[Frame]:
        """Hand the DIME a frame; what it sent at once."""
        assert self.plane is not None
        return [decode(bytes.fromhex(x)) for x in self.plane.cmd(f"frame {int(self.now * 1000)} {encode(frame).hex()}")]

    def turn(self) -> list[Frame]:
        """Let time pass (5 ms); what the DIME sent meanwhile."""
        assert self.plane is not None
        self.now += 0.005
        return [decode(bytes.fromhex(x)) for x in self.plane.cmd(f"turn {int(self.now * 1000)}")]

    # -- the Python ends
    def wire_down(self, peer: Address) -> None:
        self.downs[peer] = (ChannelReceiver(peer, self.me, OUT), ChannelSender(peer, self.me, OUT | DONE, mtu=1500))
        self.connect(OUT, "out", peer)

    def to_plane(self, frames: list[Frame]) -> None:
        for f in frames:
            if self.rng.random() < self.loss:
                continue
            self.from_plane(self.exchange(f))

    def from_plane(self, frames: list[Frame]) -> None:
        for f in frames:
            body = f.body
            if not isinstance(body, Data):
                continue  # heartbeats, from a guest
            if self.rng.random() < self.loss:
                continue
            ack = bool(body.flags & DataFlag.ACK) and body.frag_count == 0
            peer = Address(f.dst_mac, f.dst_dime, 0)
            if body.channel == CH:
                self.to_plane(self.up_tx.receive(f, self.now).frames)
            elif body.channel == CH | DONE:
                out = self.up_done.receive(f, self.now)
                self.completed += [
                    v for e in out.events if isinstance(e, MessageReceived)
                    for v in struct.unpack(f"!{len(e.payload) // 8}Q", e.payload)
                ]  # fmt: skip
                self.to_plane(out.frames)
            elif body.channel == OUT | DONE and ack:
                self.to_plane(self.downs[peer][1].receive(f, self.now).frames)
            else:
                assert body.channel == OUT, body
                out = self.downs[peer][0].receive(f, self.now)
                for e in out.events:
                    if isinstance(e, MessageReceived):
                        for lin, item in mice.unpack_items(e.payload):
                            self.outputs.setdefault(lin, []).append(item)
                            self.held.append((peer, lin))
                self.to_plane(out.frames)
        if not self.hold_completions:
            self.complete()

    def complete(self) -> None:
        by_peer: dict[Address, list[int]] = {}
        for peer, lin in self.held:
            by_peer.setdefault(peer, []).append(lin)
        self.held.clear()
        for peer, lins in by_peer.items():
            self.to_plane(self.downs[peer][1].send(struct.pack(f"!{len(lins)}Q", *lins), self.now)[1].frames)

    def send(self, items: list[tuple[int, bytes]]) -> None:
        room = self.up_tx.frag_size - 8
        batch: list[tuple[int, bytes]] = []
        for lin, data in items:
            if batch and sum(12 + len(d) for _, d in batch) + 12 + len(data) > room:
                self.to_plane(self.up_tx.send(mice.pack_items(batch), self.now)[1].frames)
                batch = []
            batch.append((lin, data))
        if batch:
            self.to_plane(self.up_tx.send(mice.pack_items(batch), self.now)[1].frames)

    def run(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        end = self.now + seconds
        while self.now < end and not (until and until()):
            self.from_plane(self.turn())
            ends = [self.up_tx, self.up_done, *(e for pair in self.downs.values() for e in pair)]
            for e in ends:
                t = e.get_timer()
                if t is not None and t <= self.now:
                    self.to_plane(e.handle_timer(self.now).frames)


def _items(n: int, first: int = 0) -> list[tuple[int, bytes]]:
    st = _stages()
    ctx = SimpleNamespace(params={"work_us": 0})
    lines = (PKG / "corpus.txt").read_text("utf-8").splitlines()
    return [((1 << 48) | (i + 1), next(st.parse(f"{i}\t{lines[i]}".encode(), ctx))) for i in range(first, first + n)]


def _want(items: list[tuple[int, bytes]]) -> dict[int, list[bytes]]:
    st = _stages()
    ctx = SimpleNamespace(params={"work_us": 0})
    return {lin: [next(st.transform(d, ctx))] for lin, d in items}


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_items_flow_through_the_c_stage_exactly_once(plane: Plane, loss: float) -> None:
    wf = Workflow(plane, loss=loss, seed=7)
    items = _items(800)
    wf.send(items)
    wf.run(20.0 if loss else 2.0)
    assert wf.outputs == _want(items)  # every item, transformed, once, in spite of the losses
    assert sorted(set(wf.completed)) == sorted(lin for lin, _ in items)  # and completed upstream
    assert wf.up_tx.unacked() == []
    stats = plane.cmd("stats")[0]
    assert stats.startswith("live 0 queued 0 in 800 out 800 ") and "faults 0" in stats, stats


def test_a_replayed_item_is_completed_not_run_again(plane: Plane) -> None:
    wf = Workflow(plane)
    items = _items(100)
    wf.send(items)
    wf.run(1.0)
    # the upstream is replaced: its successor replays from the start on a fresh channel
    wf.up_tx = ChannelSender(UP, SELF, CH, mtu=1500)
    wf.up_done = ChannelReceiver(UP, SELF, CH | DONE)
    wf.completed.clear()
    assert plane.cmd(f"connect {CH} in {UP.mac.hex()} {UP.dime}") == []
    wf.send(items[:40])
    wf.run(1.0)
    assert sorted(wf.completed) == sorted(lin for lin, _ in items[:40])
    assert all(len(v) == 1 for v in wf.outputs.values())  # nothing went downstream twice
    assert " dup 40 " in plane.cmd("stats")[0]


def test_a_rewired_output_gets_what_its_predecessor_had_not_completed(plane: Plane) -> None:
    wf = Workflow(plane)
    wf.hold_completions = True  # the downstream DIME dies before completing anything
    items = _items(200)
    wf.send(items)
    wf.run(1.0)
    assert len(wf.outputs) == 200 and wf.completed == []
    wf.outputs.clear()
    wf.held.clear()
    wf.hold_completions = False
    wf.wire_down(DOWN2)  # its replacement: CONNECT re-wires the output
    wf.run(2.0)
    assert wf.outputs == _want(items)
    assert sorted(wf.completed) == sorted(lin for lin, _ in items)
    assert " replayed 200 " in plane.cmd("stats")[0]


def test_data_from_a_sender_no_connect_wired_is_refused(plane: Plane) -> None:
    Workflow(plane)
    stranger = ChannelSender(Address(bytes.fromhex("020000000099"), 9, 0), SELF, CH, mtu=1500)
    _, out = stranger.send(mice.pack_items(_items(3)), 0.0)
    for f in out.frames:
        assert plane.cmd(f"frame 0 {encode(f).hex()}") == []
    stats = plane.cmd("stats")[0]
    assert " in 0 " in stats and stats.endswith("rejected 1"), stats


def test_a_burst_beyond_the_item_table_waits_and_nothing_is_lost(plane: Plane) -> None:
    """A Linux sender may start with more credit than the DIME grants (its own window): a message the item
    table cannot take whole is refused unacknowledged, sent again later, and taken once there is room."""
    wf = Workflow(plane)
    wf.up_tx = ChannelSender(UP, SELF, CH, mtu=1500, initial_credit=256)
    wf.hold_completions = True  # downstream completes nothing yet: every item stays in the table
    items = [((1 << 48) | (i + 1), f"{i}\tw".encode()) for i in range(5000)]
    wf.send(items)
    wf.run(3.0)
    held = len(wf.outputs)
    assert 0 < held <= 2048  # the table (PLANE_ITEMS) is full, the rest waits upstream
    wf.hold_completions = False
    wf.complete()
    wf.run(60.0, until=lambda: len(wf.outputs) == len(items) and len(set(wf.completed)) == len(items))
    assert wf.outputs == _want(items)
    assert sorted(set(wf.completed)) == sorted(lin for lin, _ in items)
    assert "faults 0" in plane.cmd("stats")[0]


@pytest.mark.parametrize("loss", [0.0, 0.2])
def test_a_message_of_many_fragments_is_reassembled(plane: Plane, loss: float) -> None:
    """Items bigger than a frame: the Linux sender fragments their messages, the kernel reassembles them."""
    wf = Workflow(plane, loss=loss, seed=3)
    items = [((1 << 48) | (i + 1), f"{i}\t".encode() + b" ".join(b"w%d" % k for k in range(900 + i))) for i in range(5)]
    for item in items:  # one message each, about 4 KB: three fragments at MTU 1500
        assert len(mice.pack_items([item])) > 2 * wf.up_tx.frag_size
        wf.to_plane(wf.up_tx.send(mice.pack_items([item]), wf.now)[1].frames)
    wf.run(30.0, until=lambda: len(wf.outputs) == len(items) and len(set(wf.completed)) == len(items))
    assert wf.outputs == _want(items)
    assert sorted(set(wf.completed)) == sorted(lin for lin, _ in items)
