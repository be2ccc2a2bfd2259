"""A sink DIME's input queue is bounded in bytes as well as in items: large items cannot fill its memory.

Sans I/O, two machines (``tests.test_dataplane_rewire.Pair``), with the pure and the compiled channel.  The sink
DIME paused its inputs (credit 0) only above ``PAUSE_INPUT`` items waiting for its MICE: 4096 items of 64 KiB are
256 MiB, twice a default DIME's 64 chunks.  With real processes (``tests/test_kernel_backpressure.py``, slow) a
sink at a tenth of the source's rate let both DIMEs grow by about 140 MiB on 64 KiB items.
"""

from __future__ import annotations

import pytest

from pxproto.node import channels, mice
from pxproto.wire.codes import CounterId, Direction
from tests.channel_impls import IMPLS, impl_classes
from tests.test_dataplane_rewire import DOWN, UP, Pair

SIZE = 65536
COUNT = 1200
"""More than the sink hands its MICE (MICE_INFLIGHT) plus 8 MiB of them, far fewer than PAUSE_INPUT."""
QUEUED_MAX = 8 << 20
"""Bytes a sink DIME may hold for its MICE before it stops granting credit (``channels.PAUSE_BYTES``)."""


@pytest.fixture(params=IMPLS)
def pair(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Pair:
    tx, rx = impl_classes(request.param)
    monkeypatch.setattr(channels, "ChannelSender", tx)
    monkeypatch.setattr(channels, "ChannelReceiver", rx)
    return Pair(mtu=9000)


def test_a_stuck_sink_queues_a_bounded_number_of_bytes_and_then_takes_every_item_once(pair: Pair) -> None:
    p = pair
    p.start(DOWN, 0)
    p.start(UP, 1)
    p.wire_end(DOWN, Direction.INPUT, UP)
    p.wire_end(UP, Direction.OUTPUT, DOWN)
    p.consume = False
    p.produce(1, COUNT, SIZE)
    p.run(0.5)
    down, up = p.m[DOWN], p.m[UP]
    queued = sum(len(item) for _, item in down.plane.mice_queue)
    window = down.credit_window * (9000 + mice.ITEM_REC.size)  # what credit already granted may still bring
    assert down.plane.mice_inflight == channels.MICE_INFLIGHT
    assert queued <= QUEUED_MAX + window, (
        f"{len(down.plane.mice_queue)} items ({queued >> 20} MiB) wait for the stuck MICE"
    )
    assert len(up.plane.flow.queue) > 0  # the rest waits upstream, for credit
    p.consume = True
    p.run(2.0)
    assert down.counter(CounterId.ITEMS_IN) == COUNT
    assert up.counter(CounterId.RETAINED) == 0
    assert down.plane.flow.duplicates == 0
