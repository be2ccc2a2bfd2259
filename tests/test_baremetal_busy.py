"""A bare-metal DIME whose stage is at 100% CPU keeps heartbeating and answering (QEMU, TCG).

The guest boots with ``work=200000``: every item of the transform costs 200 ms of CPU, twice the heartbeat
period. The MICE runs in the core's main context and the DIME loop from its timer interrupt, so while a
few items stream the DIME sends about one heartbeat per period, not one per item as a loop that runs the
stage inline can, reports its CPU near 100%, and answers a PING sent while an item is in progress. (The
jitter itself is measured, not asserted: ``bench/baremetal.py --busy``.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pxproto.wire.codes import Command, Status, TlvType
from pxproto.wire.frame import Frame, Heartbeat, Signaling, Tlv
from tests import test_baremetal_net as net
from tests.test_baremetal_mice import GuestWorkflow
from tests.test_baremetal_net import KEY, KEY_ID, VK, Guest, request
from tests.test_baremetal_plane import _items

pytestmark = net.pytestmark
WORK_US, ITEMS = 200_000, 12


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    net.build()
    append = f"key={KEY_ID}:{KEY.hex()} {VK} hb=100 chunks=8 work={WORK_US}"
    with Guest(smp=1, append=append, logdir=tmp_path_factory.mktemp("busy")) as g:
        yield g.booted(1)


class BusyWorkflow(GuestWorkflow):
    """The transform Workflow, noting DIME 0's heartbeats and the answer to one PING."""

    def __init__(self, guest: Guest) -> None:
        self.beats: list[Heartbeat] = []
        self.pong: tuple[int, float] | None = None
        super().__init__(guest)

    def turn(self) -> list[Frame]:
        frames = super().turn()
        for f in frames:
            if isinstance(f.body, Heartbeat) and f.src_dime == 0:
                self.beats.append(f.body)
            elif isinstance(f.body, Signaling) and f.body.req_id == 777_777 and f.body.status is Status.OK:
                self.pong = (len(self.outputs), time.monotonic())
        return frames


def test_heartbeats_and_answers_go_on_while_the_stage_is_busy(guest: Guest) -> None:
    wf = BusyWorkflow(guest)
    wf.send(_items(ITEMS))
    wf.run(10.0, until=lambda: len(wf.outputs) >= 2)  # the stage is inside its third item now, or later
    wf.beats.clear()
    guest.send(request(Command.PING, 0, 777_777, Tlv(TlvType.ECHO, b"busy?")))
    wf.run(120.0, until=lambda: len(wf.outputs) == ITEMS)
    assert len(wf.outputs) == ITEMS
    assert wf.pong is not None and wf.pong[0] < ITEMS, "the PING waited for the stage to finish"
    busy = ITEMS - 2  # items run while the beats were counted, 200 ms each: 2 s at least, 20 periods
    assert len(wf.beats) >= 1.5 * busy, f"{len(wf.beats)} heartbeats during {busy} items of 200 ms"
    loads = sorted(b.cpu_permille for b in wf.beats)
    assert loads[len(loads) // 2] >= 800, loads  # the stage's CPU shows in the heartbeats
