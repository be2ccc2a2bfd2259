"""pxdump's compiled hot paths against their pure twins: stdin streamed through the fast path (the
incremental indexer of pxproto.fastpath, compiled or pure), and -q counting.  The indexers' own
twin tests are in test_fastpath.py."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest

from pxproto.dump import accel, cli, oneline, source

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"

pytestmark = pytest.mark.skipif(not accel.compiled(), reason="pxdump's compiled modules are not built")


@pytest.fixture(params=[True, False], ids=["compiled", "pure"])
def impl(request: pytest.FixtureRequest) -> bool:
    """pxdump's compiled hot paths (the compiled indexer among them), then their pure twins."""
    request.addfinalizer(functools.partial(accel.use_compiled, accel.use_compiled(request.param)))
    return bool(request.param)


def whole_index(data: bytes) -> tuple[int, tuple[str, int, str] | None]:
    """Frames indexed in one feed, and the error."""
    ix = accel.index.Indexer()
    off, *_rest = ix.feed(data, True)
    return len(off), ix.error


@pytest.mark.parametrize("args", [[], ["-q"], ["-e", "-tt"], ["dime", "2"]])
def test_stdin_stream_equals_the_file(monkeypatch: pytest.MonkeyPatch, args: list[str], impl: bool) -> None:
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


def test_truncated_stdin_stream(monkeypatch: pytest.MonkeyPatch, impl: bool) -> None:
    data = (CAPTURES / "all.pcapng").read_bytes()
    monkeypatch.setattr(source, "READ_BLOCK", 500)

    class Stdin:
        buffer = io.BytesIO(data[: len(data) // 2])

    monkeypatch.setattr("sys.stdin", Stdin)
    out = io.BytesIO()
    with pytest.raises(source.CaptureEndsEarly) as exc:
        for _ in source.stream_frames(Stdin.buffer):
            pass
    frames, error = whole_index(data[: len(data) // 2])
    assert error is not None and exc.value.frames == frames > 0
    assert (exc.value.error.field, exc.value.error.offset) == error[:2]
    Stdin.buffer = io.BytesIO(data[: len(data) // 2])
    assert cli.run(cli.build_parser().parse_args(["-r", "-", "-q"]), out) == 1


def test_t_options_like_tcpdump(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    path = str(CAPTURES / "all.pcapng")
    assert cli.main(["-r", path, "-c", "1", "-t"]) == 0
    assert capsysbinary.readouterr().out.startswith(b"SIG ")
    assert cli.main(["-r", path, "-c", "1", "-tt"]) == 0
    assert capsysbinary.readouterr().out.split(b" ")[0].split(b".")[0].isdigit()
    assert cli.main(["-r", path, "-ttt"]) == 2
