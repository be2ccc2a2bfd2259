"""The sink's MICE gets what a burst of DATA frames brought in one record message, handed over once the frames
read together are handled (``ChannelPlane.flush_acks``), not one message per frame."""

from __future__ import annotations

from test_node_datawire import items, pair  # tests/ is on the path (rootdir conftest)

from pxproto.node import mice


def _burst(n: int, size: int) -> tuple[list[bytes], int, list[bytes]]:
    """``n`` items of ``size`` bytes from the source's MICE, their frames read by the sink in one go; returns
    (the items, how many frames carried them, the record messages the sink's MICE was handed)."""
    src, snk = pair()
    assert snk.mice is not None
    want = items(n, size)
    msg, _ = mice.pack_run(mice.OUT, 1 << 48 | 1, want, 0, 1 << 30, mice.MAX_ITEM)
    src.mice_message(msg, 11.0)
    src.mice_batch_done(11.0)
    frames = [raw for raw, _ in src.take_outbox()]
    for raw in frames:
        snk.on_frame_guarded(raw, 11.001)
    assert not snk.mice.pending_tx  # nothing handed over while the frames of the burst are read
    snk.plane.flush_acks(11.001)
    return want, len(frames), list(snk.mice.pending_tx)


def test_a_burst_of_frames_is_one_message_to_the_mice() -> None:
    want, nframes, handed = _burst(20, 1400)  # 28 KiB: one record message holds them all
    assert nframes >= 3
    assert len(handed) == 1
    recs = mice.records(handed[0])
    assert [data for _, _, data in recs] == want
    assert {kind for kind, _, _ in recs} == {mice.ITEM}


def test_a_burst_larger_than_a_message_is_handed_over_whole_in_order() -> None:
    n = 3 * mice.BATCH_BYTES // 2 // 1400  # one and a half record messages' worth: all go at once, in order
    want, nframes, handed = _burst(n, 1400)
    assert nframes >= 8
    assert len(handed) >= 2
    assert all(len(msg) <= mice.BATCH_BYTES + mice.REC.size + 1400 for msg in handed)
    assert [data for msg in handed for _, _, data in mice.records(msg)] == want
