"""The bare-metal DIME's C source and sink (kernel/plane.c, stages.c) on the host, against the Python ones.

The same hosted plane as tests/test_baremetal_plane.py (tests/c/plane_check.c), its other end pxproto's
channels: the C source sends the demo's corpus as ``stages.source`` does (same items, same lineages
``stage << 48 | i + 1``, from START's first item, paced at its rate) and keeps each item until downstream
completes it (a re-wired output gets what was outstanding); the C sink commits each input it has not
completed before and completes it upstream. QEMU runs of both: tests/test_baremetal_endstages_guest.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pxproto.dime.channel import ChannelSender
from pxproto.dime.channel_rx import ChannelReceiver
from pxproto.wire import decode, encode
from pxproto.wire.frame import Data, Frame
from tests import test_baremetal_plane as hosted
from tests.test_baremetal_plane import CH, DONE, DOWN, DOWN2, PKG, SELF, UP, Plane, Workflow, _items, _stages, _want

exe, plane = hosted.exe, hosted.plane  # the fixtures, shared


def source_items(first: int = 0) -> dict[int, list[bytes]]:
    """What the Python source sends (unpaced): lineage -> [item]."""
    ctx = SimpleNamespace(params={"corpus": "corpus.txt", "rate": 0}, first=first)
    return {i + 1: [item] for i, item in enumerate(_stages().source(ctx)) if i >= first}


class EndWorkflow(Workflow):
    """The Workflow with a source or a sink on the hosted plane: its commits are kept apart from its frames."""

    def __init__(self, plane: Plane, stage: str) -> None:
        self.stage = stage
        """plane_check's load arguments: NAME WORK_US [FIRST [RATE]]."""
        self.commits: list[tuple[int, bytes]] = []
        self.mute_done = False
        super().__init__(plane)

    def setup(self) -> None:
        assert self.plane is not None
        assert self.plane.cmd(f"load {self.stage}") == []
        if self.stage.startswith("sink"):
            self.connect(CH, "in", UP)
        else:
            self.wire_down(DOWN)

    def _frames(self, lines: list[str]) -> list[Frame]:
        out = []
        for x in lines:
            if x.startswith("commit "):
                lin, _, data = x.removeprefix("commit ").partition(" ")
                self.commits.append((int(lin), bytes.fromhex(data)))
            else:
                out.append(decode(bytes.fromhex(x)))
        return out

    def from_plane(self, frames: list[Frame]) -> None:
        if self.mute_done:  # the upstream's completion end hears nothing (its acks and credit never come)
            frames = [f for f in frames if not (isinstance(f.body, Data) and f.body.channel == CH | DONE)]
        super().from_plane(frames)

    def exchange(self, frame: Frame) -> list[Frame]:
        assert self.plane is not None
        return self._frames(self.plane.cmd(f"frame {int(self.now * 1000)} {encode(frame).hex()}"))

    def turn(self) -> list[Frame]:
        assert self.plane is not None
        self.now += 0.005
        return self._frames(self.plane.cmd(f"turn {int(self.now * 1000)}"))


def test_the_c_source_sends_the_python_sources_items(plane: Plane) -> None:
    wf = EndWorkflow(plane, "source 0 0 0")
    want = source_items()
    assert len(want) == len((PKG / "corpus.txt").read_text().splitlines()) == 2400
    wf.run(60.0, until=lambda: len(wf.outputs) == len(want))
    assert wf.outputs == want
    wf.run(1.0)
    assert plane.cmd("stats")[0].startswith("live 0 queued 0 in 2400 out 2400 ")  # all completed downstream


def test_a_replacement_source_resumes_at_first_and_is_paced(plane: Plane) -> None:
    wf = EndWorkflow(plane, "source 0 1000 400")
    wf.run(0.1)  # 100 ms at 400 a second: item 1000 at once, then one every 2.5 ms
    got = sorted(wf.outputs)
    assert got[0] == 1001 and 38 <= len(got) <= 42 and got == list(range(1001, 1001 + len(got)))
    assert all(wf.outputs[lin] == v for lin, v in source_items(1000).items() if lin in wf.outputs)


def test_a_rewired_source_output_gets_every_item_not_completed(plane: Plane) -> None:
    wf = EndWorkflow(plane, "source 0 0 0")
    wf.hold_completions = True  # the downstream DIME dies before completing anything
    wf.run(2.0, until=lambda: len(wf.outputs) >= 2048)
    held = dict(wf.outputs)
    assert len(held) == 2048  # the item table: the source waits for room
    wf.outputs.clear()
    wf.held.clear()
    wf.hold_completions = False
    wf.wire_down(DOWN2)
    wf.run(60.0, until=lambda: len(wf.outputs) == 2400)
    assert wf.outputs == source_items()  # the held ones again, then the rest, each once
    assert " replayed 2048 " in plane.cmd("stats")[0]


def test_the_c_sink_commits_each_lineage_once_and_completes_it(plane: Plane) -> None:
    wf = EndWorkflow(plane, "sink 0")
    items = [(lin, out[0]) for lin, out in _want(_items(300)).items()]
    wf.send(items)
    wf.run(5.0, until=lambda: len(set(wf.completed)) == len(items))
    assert sorted(wf.commits) == sorted(items)
    assert sorted(set(wf.completed)) == sorted(lin for lin, _ in items)
    # the upstream is replaced and replays what it had sent: completed again, committed never again
    wf.up_tx, wf.up_done = ChannelSender(UP, SELF, CH, mtu=1500), ChannelReceiver(UP, SELF, CH | DONE)
    wf.completed.clear()
    wf.connect(CH, "in", UP)
    wf.send(items[:50])
    wf.run(5.0, until=lambda: len(set(wf.completed)) == 50)
    assert sorted(set(wf.completed)) == sorted(lin for lin, _ in items[:50])
    assert len(wf.commits) == len(items)
    assert " dup 50 " in plane.cmd("stats")[0]


def test_a_sink_whose_completions_are_not_taken_stops_taking_items_and_loses_none(plane: Plane) -> None:
    """A sink holds no items, but owes a completion for each: they are bounded as held items are (by the
    credit it grants), so an upstream that does not take them is throttled instead of losing them."""
    wf = EndWorkflow(plane, "sink 0")
    wf.up_tx = ChannelSender(UP, SELF, CH, mtu=1500, initial_credit=256)
    items = [((1 << 48) | (i + 1), f"{i}\t1\t2".encode()) for i in range(8000)]
    wf.mute_done = True
    wf.send(items)
    wf.run(3.0)
    assert 2048 <= len(wf.commits) < len(items) and wf.completed == []  # owed: 2048, and what the channel holds
    wf.mute_done = False
    wf.run(120.0, until=lambda: len(set(wf.completed)) == len(items))
    assert sorted(set(wf.completed)) == sorted(lin for lin, _ in items)
    assert sorted(wf.commits) == sorted(items)
    assert "faults 0" in plane.cmd("stats")[0]


class DeferredWorkflow(Workflow):
    """The transform Workflow on a plane in the kernel's deferred mode (the MICE apart from the DIME loop)."""

    def setup(self) -> None:
        assert self.plane is not None and self.plane.cmd("defer") == []
        super().setup()


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_deferred_mode_keeps_items_exactly_once(plane: Plane, loss: float) -> None:
    wf = DeferredWorkflow(plane, loss=loss, seed=11)
    items = _items(800)
    wf.send(items)
    wf.run(20.0 if loss else 2.0, until=lambda: len(wf.outputs) == 800 and len(set(wf.completed)) == 800)
    assert wf.outputs == _want(items)
    assert sorted(set(wf.completed)) == sorted(lin for lin, _ in items)
    stats = plane.cmd("stats")[0]
    assert stats.startswith("live 0 queued 0 in 800 out 800 ") and "faults 0" in stats, stats


def test_deferred_mode_drops_a_job_whose_plane_was_reset_meanwhile(plane: Plane) -> None:
    wf = DeferredWorkflow(plane)
    wf.send(_items(10))  # taken in by the plane, waiting for the MICE (no turn yet)
    assert plane.cmd("take") == ["taken"]
    assert plane.cmd("reset") == []  # a STOP while the MICE runs the oldest input
    assert plane.cmd("done") == []  # its result goes nowhere
    assert plane.cmd("take") == ["none"]  # and the reset plane holds no input
    assert plane.cmd("stats")[0].startswith("live 0 queued 0 in 0 out 0 ")


@pytest.mark.parametrize("name", ["parse", "transform"])
def test_an_item_stage_ignores_the_source_arguments(plane: Plane, name: str) -> None:
    assert plane.cmd(f"load {name} 0 5 400") == []  # FIRST and RATE mean nothing to an item stage
    assert plane.cmd("turn 1000") == []
