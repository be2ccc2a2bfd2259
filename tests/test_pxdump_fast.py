"""pxdump's compiled hot paths against their pure twins: the capture indexer (whole, damaged,
fed in pieces), stdin streamed through the fast path, and -q counting."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxproto.capture.pcapng import CaptureError
from pxproto.dump import accel, cli, oneline, source
from pxproto.fastpath.capindex import index_capture

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"

pytestmark = pytest.mark.skipif(not accel.compiled(), reason="pxdump's compiled modules are not built")


def pcap_of(raws: list[bytes]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, raw in enumerate(raws):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 250 * i, len(raw), len(raw) + 4) + raw)
    return b"".join(out)


def compiled_index(data: bytes) -> tuple[tuple[np.ndarray, ...], tuple[str, int, str] | None]:
    assert accel.index is not None
    ix = accel.index.Indexer()
    off, ln, _wire, ts, lt, _used = ix.feed(data, True)
    return (off, ln, ts, lt), ix.error


def pure_index(data: bytes) -> tuple[tuple[np.ndarray, ...], tuple[str, int, str] | None]:
    try:
        idx = index_capture(data)
        err = None
    except CaptureError as exc:
        idx = exc.partial  # type: ignore[attr-defined]
        err = (exc.field, exc.offset, exc.reason)
    return (idx.offsets, idx.lengths, idx.ts_ns, idx.linktype), err


def assert_same_index(data: bytes) -> None:
    (a, ea), (b, eb) = compiled_index(data), pure_index(data)
    assert ea == eb
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("name", ["all.pcapng", "malformed.pcapng"])
def test_indexer_matches_the_pure_one_on_every_cut(name: str) -> None:
    data = (CAPTURES / name).read_bytes()
    assert_same_index(data)
    for cut in sorted({0, 1, 3, 4, 7, 8, 11, 12, 27, 28, *range(29, len(data), 97), len(data) - 1}):
        assert_same_index(data[:cut])


def test_indexer_pcap_and_corruption() -> None:
    raws = [bytes(range(60)), bytes(70), b"\x01" * 14]
    data = pcap_of(raws)
    assert_same_index(data)
    for cut in range(len(data)):
        assert_same_index(data[:cut])
    bad = bytearray(data)
    bad[24 + 8 : 24 + 12] = struct.pack("<I", 10_000_000)  # a record longer than the snap length
    assert_same_index(bytes(bad))
    assert_same_index(b"nonsense")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_indexer_on_flipped_bytes(data: st.DataObject) -> None:
    raw = bytearray((CAPTURES / "all.pcapng").read_bytes()[:3000])
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    assert_same_index(bytes(raw))


@pytest.mark.parametrize("block", [1, 7, 97, 4096])
def test_indexer_fed_in_pieces_equals_whole(block: int) -> None:
    data = (CAPTURES / "all.pcapng").read_bytes()
    assert accel.index is not None
    whole = accel.index.Indexer().feed(data, True)
    ix = accel.index.Indexer()
    parts: list[list[np.ndarray]] = [[], [], [], [], []]
    pending, pos = b"", 0
    while True:
        chunk = data[pos : pos + block]
        pos += len(chunk)
        buf = pending + chunk
        *arrays, used = ix.feed(buf, not chunk)
        for p, a in zip(parts, arrays, strict=True):
            p.append(a)
        pending = buf[used:]
        if not chunk:
            break
    assert ix.error is None
    for p, w in zip(parts, whole[:5], strict=True):
        assert np.array_equal(np.concatenate(p), w)


@pytest.mark.parametrize("args", [[], ["-q"], ["-e", "-tt"], ["dime", "2"]])
def test_stdin_stream_equals_the_file(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setattr(oneline, "local_utc_offset", lambda: 0)
    monkeypatch.setattr(source, "READ_BLOCK", 333)
    path = CAPTURES / "all.pcapng"

    class Stdin:
        buffer = io.BufferedReader(io.BytesIO(path.read_bytes()))  # type: ignore[arg-type]

    monkeypatch.setattr("sys.stdin", Stdin)
    piped, direct = io.BytesIO(), io.BytesIO()
    assert cli.run(cli.build_parser().parse_args(["-r", "-", *args]), piped) == 0
    assert cli.run(cli.build_parser().parse_args(["-r", str(path), *args]), direct) == 0
    assert piped.getvalue() == direct.getvalue() and piped.getvalue()


def test_truncated_stdin_stream(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = (CAPTURES / "all.pcapng").read_bytes()
    monkeypatch.setattr(source, "READ_BLOCK", 500)

    class Stdin:
        buffer = io.BytesIO(data[: len(data) // 2])

    monkeypatch.setattr("sys.stdin", Stdin)
    out = io.BytesIO()
    with pytest.raises(source.CaptureEndsEarly) as exc:
        for _ in source.stream_frames(Stdin.buffer):
            pass
    whole = compiled_index(data[: len(data) // 2])
    assert exc.value.frames == len(whole[0][0]) and (exc.value.error.field, exc.value.error.offset) == whole[1][:2]
    Stdin.buffer = io.BytesIO(data[: len(data) // 2])
    assert cli.run(cli.build_parser().parse_args(["-r", "-", "-q"]), out) == 1


def test_t_options_like_tcpdump(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    path = str(CAPTURES / "all.pcapng")
    assert cli.main(["-r", path, "-c", "1", "-t"]) == 0
    assert capsysbinary.readouterr().out.startswith(b"SIG ")
    assert cli.main(["-r", path, "-c", "1", "-tt"]) == 0
    assert capsysbinary.readouterr().out.split(b" ")[0].split(b".")[0].isdigit()
    assert cli.main(["-r", path, "-ttt"]) == 2
