"""``-w`` output: the compiled pcapng records match the reference writer byte for byte, and ``-C``
rotation splits at the record that fills a file, compiled or pure."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pxproto.capture.pcapng import PcapngWriter, read_packets
from pxproto.dump import output

FRAMES = [bytes(range(i % 7, i % 7 + 14 + i % 53)) for i in range(300)]


def columns(frames: list[bytes]) -> tuple[np.ndarray, ...]:
    buf = np.frombuffer(b"".join(frames), np.uint8)
    caplen = np.array([len(f) for f in frames], np.int64)
    offset = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.int64)
    wirelen = caplen + np.arange(len(frames)) % 3
    ts = 1_700_000_000_123_456_789 + np.arange(len(frames), dtype=np.int64) * 4_294_967_311
    return buf, offset, caplen, wirelen, ts


def test_compiled_records_match_the_reference_writer() -> None:
    ring = pytest.importorskip("pxproto.dump._ring")
    buf, offset, caplen, wirelen, ts = columns(FRAMES)
    ref = io.BytesIO()
    w = PcapngWriter(ref)
    head = ref.tell()
    for i, f in enumerate(FRAMES):
        w.write(f, int(ts[i]), int(wirelen[i]))
    assert bytes(ring.epb_records(buf, offset, caplen, wirelen, ts)) == ref.getvalue()[head:]


def test_compiled_records_refuse_rows_outside_the_buffer() -> None:
    ring = pytest.importorskip("pxproto.dump._ring")
    buf, offset, caplen, wirelen, ts = columns(FRAMES[:3])
    caplen[2] += 1
    with pytest.raises(ValueError, match="row 2"):
        ring.epb_records(buf, offset, caplen, wirelen, ts)


@pytest.fixture(params=["compiled", "pure"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "pure":
        monkeypatch.setattr(output, "epb_records", None)
    elif output.epb_records is None:
        pytest.skip("compiled ring not built")
    yield request.param


def test_rotation_splits_at_the_record_that_fills_a_file(tmp_path: Path, impl: str) -> None:
    path = tmp_path / "out.pcapng"
    w = output.CaptureWriter(str(path), 262144, rotate_bytes=4000)
    cols = columns(FRAMES)
    for lo in range(0, len(FRAMES), 64):  # batches of 64 rows, as a live capture gives them
        w.write_rows(cols[0], *(c[lo : lo + 64] for c in cols[1:]))
    w.close()
    names = sorted(tmp_path.iterdir(), key=lambda p: (len(p.name), p.name))
    assert names[0] == path and names[1].name == "out.pcapng1"
    got = []
    for p in names:
        size = p.stat().st_size
        packets = list(read_packets(open(p, "rb")))
        if p != names[-1]:
            # full: at least the limit, and under it before its last record
            last = 32 + (len(packets[-1].data) + 3) // 4 * 4
            assert size >= 4000 and size - last < 4000
        got += packets
    assert [p.data for p in got] == FRAMES
    assert [p.orig_len for p in got] == cols[3].tolist()
    assert [p.ts_ns for p in got] == cols[4].tolist()
