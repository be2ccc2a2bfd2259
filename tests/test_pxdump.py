"""pxdump end to end: golden output for every mode on captures/, files, bad input, bad arguments.

Regenerate the golden files after a deliberate change of output with
``PXDUMP_REGEN_GOLDEN=1 pytest tests/test_pxdump.py``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxproto.capture.pcapng import PcapngWriter, read_packets
from pxproto.dump import accel, cli, oneline
from pxproto.testing import frames, mutations
from pxproto.wire import decode, encode
from pxproto.wire.samples import malformed_samples, valid_samples

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
GOLDEN = Path(__file__).resolve().parent / "golden" / "pxdump"
REGEN = os.environ.get("PXDUMP_REGEN_GOLDEN") == "1"

MODES = {
    "all": ("all.pcapng", []),
    "all-e": ("all.pcapng", ["-e"]),
    "all-t": ("all.pcapng", ["-t"]),
    "all-tt": ("all.pcapng", ["-tt"]),
    "all-v": ("all.pcapng", ["-v"]),
    "all-vv": ("all.pcapng", ["-vv"]),
    "all-x": ("all.pcapng", ["-x"]),
    "all-X": ("all.pcapng", ["-X"]),
    "all-json": ("all.pcapng", ["--json"]),
    "all-q": ("all.pcapng", ["-q"]),
    "all-reassemble": ("all.pcapng", ["--reassemble", "data"]),
    "all-filter": ("all.pcapng", ["signaling", "and", "(", "status", "OK", "or", "fcaps", "C", ")"]),
    "malformed": ("malformed.pcapng", []),
    "malformed-q": ("malformed.pcapng", ["-q"]),
    "malformed-v": ("malformed.pcapng", ["-v"]),
    "malformed-json": ("malformed.pcapng", ["--json"]),
}


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oneline, "local_utc_offset", lambda: 0)


@pytest.fixture(params=["compiled", "pure"])
def impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """pxdump's compiled hot paths, then their pure twins (accel.use_compiled)."""
    was = accel.use_compiled(request.param == "compiled")
    try:
        yield request.param
    finally:
        accel.use_compiled(was)


def pxdump(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsysbinary.readouterr()
    return rc, out.decode(), err.decode()


def write_capture(path: Path, raws: list[bytes]) -> None:
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        for i, raw in enumerate(raws):
            w.write(raw, 1_700_000_000_000_000_000 + i * 1_000_000)


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_golden(mode: str, path: str, impl: str, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    name, args = MODES[mode]
    extra = ["--reference"] if path == "reference" else []
    rc, out, err = pxdump(capsysbinary, "-r", str(CAPTURES / name), *extra, *args)
    assert rc == 0, err
    golden = GOLDEN / f"{mode}.txt"
    if REGEN and path == "reference" and impl == "pure":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(out)
    assert out == golden.read_text()


@pytest.mark.skipif(os.environ.get("PXPROTO_PURE") == "1", reason="PXPROTO_PURE=1 asks for the pure twins")
def test_fast_path_is_compiled() -> None:
    from pxproto.dump.columns import fastpath_available

    assert fastpath_available(), "pxproto.fastpath is not built: pxdump falls back to the reference codec"
    assert accel.compiled(), "pxproto/dump/_*.pyx are not built: pxdump uses its pure twins"


def test_one_line_per_frame_and_every_class_named(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    path = CAPTURES / "all.pcapng"
    n = sum(1 for _ in read_packets(open(path, "rb")))
    rc, out, _ = pxdump(capsysbinary, "-r", str(path))
    lines = [x for x in out.splitlines() if not x.startswith(("unanswered:", "heartbeat gap:"))]
    assert rc == 0 and len(lines) == n
    for tag in (" SIG ", " DATA ", " DISC ", " HB "):
        assert any(tag in x for x in lines)


def test_json_keys_are_exactly_to_dict(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    path = CAPTURES / "all.pcapng"
    rc, out, _ = pxdump(capsysbinary, "-r", str(path), "--json")
    assert rc == 0
    for line, p in zip(out.splitlines(), read_packets(open(path, "rb")), strict=True):
        assert json.loads(line) == json.loads(json.dumps(decode(p.data).to_dict()))


def test_malformed_frames_are_reported_counted_and_decoding_goes_on(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    good = [raw for _, raw in valid_samples()[:3]]
    bad = [(field, offset, raw) for _, field, offset, raw in malformed_samples()]
    raws = [good[0], *(raw for _, _, raw in bad), good[1], good[2]]
    path = tmp_path / "mixed.pcapng"
    write_capture(path, raws)
    rc, out, _ = pxdump(capsysbinary, "-r", str(path), "-tt")
    lines = out.splitlines()
    assert rc == 0
    for (field, offset, _), line in zip(bad, lines[1:], strict=False):
        assert f"[malformed: {field} at byte {offset}: " in line
    assert "[malformed" not in lines[len(bad) + 1] and "[malformed" not in lines[len(bad) + 2]
    rc, out, _ = pxdump(capsysbinary, "-r", str(path), "-q")
    assert f"  malformed{len(bad):>27}" in out


@settings(max_examples=30)
@given(st.lists(frames().map(encode).flatmap(mutations), min_size=1, max_size=20))
def test_hostile_frames_never_crash(raws: list[bytes]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "h.pcapng"
        write_capture(path, raws)
        for args in ([], ["-e"], ["-vv"], ["--json"], ["-q"], ["--reassemble"], ["not", "malformed"], ["dime", "1"]):
            outs = []
            for extra in ([], ["--reference"]):
                out = io.BytesIO()
                parsed = cli.build_parser().parse_args(["-r", str(path), *extra, *args])
                assert cli.run(parsed, out) == 0
                outs.append(out.getvalue())
            assert outs[0] == outs[1], args


def test_truncated_capture_reports_how_far_and_fails(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    raw = (CAPTURES / "all.pcapng").read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(raw[: len(raw) // 2])
    rc, out, err = pxdump(capsysbinary, "-r", str(cut), "-tt")
    assert rc == 1
    assert "capture ends early at byte" in err and "after" in err
    frames_read = int(err.split(" after ")[1].split()[0])
    assert 0 < frames_read == sum(1 for x in out.splitlines() if x[:1].isdigit())


def test_corrupt_capture(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    bad = tmp_path / "junk.pcap"
    bad.write_bytes(b"this is not a capture file")
    rc, out, err = pxdump(capsysbinary, "-r", str(bad))
    assert rc == 1 and out == ""
    assert err.startswith("pxdump: ") and "byte 0" in err and "Traceback" not in err


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    data = (CAPTURES / "all.pcapng").read_bytes()

    class Stdin:
        buffer = io.BytesIO(data)

    monkeypatch.setattr("sys.stdin", Stdin)
    rc, out, _ = pxdump(capsysbinary, "-r", "-", "-c", "5")
    assert rc == 0 and len([x for x in out.splitlines() if " > " in x]) == 5


def test_write_keeps_frames_untouched(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    src = CAPTURES / "malformed.pcapng"
    dst = tmp_path / "out.pcapng"
    rc, out, _ = pxdump(capsysbinary, "-r", str(src), "-w", str(dst))
    assert rc == 0 and out == ""
    before = [(p.data, p.ts_ns) for p in read_packets(open(src, "rb"))]
    after = [(p.data, p.ts_ns) for p in read_packets(open(dst, "rb"))]
    assert before == after
    rc, out, _ = pxdump(capsysbinary, "-r", str(src), "-w", str(dst), "--print", "malformed")
    assert rc == 0 and out.count("[malformed") == len(list(read_packets(open(dst, "rb"))))


def test_count_and_hide_other(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    ipv4 = bytes.fromhex("ffffffffffff020000000001" + "0800") + bytes(46)
    path = tmp_path / "mixed.pcapng"
    write_capture(path, [ipv4, valid_samples()[0][1], ipv4])
    rc, out, _ = pxdump(capsysbinary, "-r", str(path), "-tt")
    assert rc == 0 and out.splitlines()[0].endswith("ether 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff type 0x0800 len 60")
    rc, out, _ = pxdump(capsysbinary, "-r", str(path), "--hide-other")
    lines = [x for x in out.splitlines() if " len " in x]
    assert len(lines) == 1 and " SIG " in lines[0]
    rc, out, _ = pxdump(capsysbinary, "-r", str(path), "-c", "2")
    assert rc == 0 and len([x for x in out.splitlines() if " len " in x]) == 2


def test_raw_bpf_passthrough(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    rc, out, _ = pxdump(capsysbinary, "-r", str(CAPTURES / "all.pcapng"), "-F", "ether proto 0xabbd")
    lines = [x for x in out.splitlines() if " len " in x]
    assert rc == 0 and lines and all(" HB " in x for x in lines)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "exactly one of -i IFACE"),
        (["-r", "x", "-i", "lo"], "exactly one of"),
        (["-r", "x", "-c", "0"], "-c 0"),
        (["-r", "x", "-s", "0"], "-s 0"),
        (["-r", "x", "--print"], "--print goes with -w"),
        (["-r", "x", "-c", "many"], "invalid int value"),
        (["-r", "x", "--bogus"], "unrecognized arguments"),
        (["-r", "x", "--ethertypes", "signaling=0x0800"], "IPv4"),
        (["-r", "x", "--ethertypes", "signaling=0x88b5,signaling=0x88b7"], "class signaling is given twice"),
        (["-r", "x", "-q", "--json"], "choose one of"),
        (["-r", "x", "-F", "ether proto nonsense("], "-F"),
    ],
)
def test_bad_arguments_one_clear_line(argv: list[str], needle: str, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    rc, out, err = pxdump(capsysbinary, *argv)
    assert rc == 2 and out == ""
    assert needle in err and "Traceback" not in err


def test_bad_filter_caret(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    rc, _, err = pxdump(capsysbinary, "-r", str(CAPTURES / "all.pcapng"), "cmd", "PIGN")
    assert rc == 2
    lines = err.splitlines()
    assert "unknown command 'PIGN'" in lines[0]
    assert lines[1] == "  cmd PIGN" and lines[2] == "      ^^^^"


def test_missing_file_and_interface(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    rc, _, err = pxdump(capsysbinary, "-r", "/nonexistent/x.pcapng")
    assert rc == 1 and err == "pxdump: /nonexistent/x.pcapng: No such file or directory\n"
    rc, _, err = pxdump(capsysbinary, "-i", "nosuchif0")
    assert rc == 1 and len(err.splitlines()) == 1 and "nosuchif0" in err and "Traceback" not in err
