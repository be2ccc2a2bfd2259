"""A sink DIME's buffers for its MICE are bounded in bytes as well as in items: large items cannot fill its memory.

Sans I/O, two machines (``tests.test_dataplane_rewire.Pair``), with the pure and the compiled channel, and a sink
MICE that takes nothing.  The sink DIME paused its inputs (credit 0) only above ``PAUSE_INPUT`` items waiting for
its MICE, and handed the MICE up to ``MICE_INFLIGHT`` items: 4096 items of 64 KiB are 256 MiB, 512 items of 1 MiB
512 MiB, where a default DIME has 64 chunks (128 MiB).  With real processes (``tests/test_kernel_backpressure.py``,
slow) a sink at a tenth of the source's rate let both DIMEs grow by about 140 MiB on 64 KiB items.
"""

from __future__ import annotations

import pytest

from pxproto.node import channels, mice
from pxproto.wire.codes import CounterId, Direction
from tests.channel_impls import IMPLS, impl_classes
from tests.test_dataplane_rewire import DOWN, UP, Pair

QUEUED_MAX = 8 << 20
"""Bytes a sink DIME may hold for its MICE before it stops granting credit (``channels.PAUSE_BYTES``)."""
HANDED_MAX = 8 << 20
"""Bytes a sink DIME may have handed its MICE and not seen DONE before it hands no more
(``channels.MICE_INFLIGHT_BYTES``; one batch more may go)."""


@pytest.fixture(params=IMPLS)
def pair(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Pair:
    tx, rx = impl_classes(request.param)
    monkeypatch.setattr(channels, "ChannelSender", tx)
    monkeypatch.setattr(channels, "ChannelReceiver", rx)
    return Pair(mtu=9000)


@pytest.mark.parametrize(("size", "count"), [(65536, 1200), (1 << 20, 64)], ids=["64KiB", "1MiB"])
def test_a_stuck_sink_holds_a_bounded_number_of_bytes_and_then_takes_every_item_once(
    pair: Pair, size: int, count: int
) -> None:
    """``count`` items: more than the byte bounds let into the sink, fewer than its item bounds would."""
    p = pair
    p.start(DOWN, 0)
    p.start(UP, 1)
    p.wire_end(DOWN, Direction.INPUT, UP)
    p.wire_end(UP, Direction.OUTPUT, DOWN)
    p.consume = False
    p.produce(1, count, size)
    p.run(3.0)
    down, up = p.m[DOWN], p.m[UP]
    assert down.mice is not None
    handed = sum(len(msg) for msg in down.mice.pending_tx)  # the stuck MICE took none of them
    queued = sum(len(item) for _, item in down.plane.mice_queue)
    window = down.credit_window * (9000 + mice.ITEM_REC.size)  # what credit already granted may still bring
    held = f"{down.plane.mice_inflight} items ({handed >> 20} MiB) handed to the MICE, "
    held += f"{len(down.plane.mice_queue)} ({queued >> 20} MiB) queued"
    assert handed <= HANDED_MAX + mice.BATCH_BYTES + size, held
    assert queued <= QUEUED_MAX + window, held
    assert len(up.plane.flow.queue) > 0, held  # the rest waits upstream, for credit
    p.consume = True
    p.run(4.0)
    assert down.counter(CounterId.ITEMS_IN) == count
    assert up.counter(CounterId.RETAINED) == 0
    assert down.plane.flow.duplicates == 0
