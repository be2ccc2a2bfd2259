"""Hostile inputs to pxdump (issue 15, points 5 and 6): every input streamed in bounded memory,
every OS error one line with a non-zero exit, filter nesting limited, broken pcapng refused."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pxproto.dump import accel
from pxproto.dump.source import capture_frames

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "captures" / "all.pcapng"


def pxdump(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pxproto.dump.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, **kw)  # type: ignore[call-overload,no-any-return]


def one_line_error(r: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("pxdump: ") and needle in last, r.stderr


def test_fifo_prints_before_the_writer_closes(tmp_path: Path) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pxproto.dump.cli", "-r", str(fifo)], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    with open(fifo, "wb") as w:
        w.write(CAPTURE.read_bytes())
        w.flush()
        # the writer keeps the FIFO open: the first lines must come now, not at its end
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "nothing printed while the FIFO stayed open"
        first = proc.stdout.readline()
        assert b" SIG " in first or b" HB " in first or b" DATA " in first, first
    rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 0
    assert len((first + rest).splitlines()) == len(pxdump("-r", str(CAPTURE)).stdout.splitlines())


def test_process_substitution_streams(tmp_path: Path) -> None:
    """``-r <(...)``: a pipe given as a /dev/fd path."""
    r, w = os.pipe()
    data = CAPTURE.read_bytes()
    t = threading.Thread(target=lambda: (os.write(w, data), os.close(w)))
    t.start()
    try:
        got = pxdump("-r", f"/dev/fd/{r}", pass_fds=(r,))
    finally:
        t.join()
        os.close(r)
    assert got.returncode == 0, got.stderr
    assert got.stdout == pxdump("-r", str(CAPTURE)).stdout


def test_dev_zero_is_refused_at_once() -> None:
    t = time.monotonic()
    one_line_error(pxdump("-r", "/dev/zero"), 1, "at byte 0")
    assert time.monotonic() - t < 30


def test_write_to_a_full_device_is_one_line() -> None:
    one_line_error(pxdump("-r", str(CAPTURE), "-w", "/dev/full"), 1, "/dev/full: No space left on device")


def test_stdout_on_a_full_device_is_one_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open("/dev/full", "wb") as full:
        cmd = [sys.executable, "-m", "pxproto.dump.cli", "-r", str(CAPTURE)]
        r = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    one_line_error(r, 1, "output: No space left on device")


def test_unreadable_file_is_one_line() -> None:
    one_line_error(pxdump("-r", "/proc/self/mem"), 1, "/proc/self/mem: Input/output error")


def test_sparse_file_is_not_paged_in(tmp_path: Path) -> None:
    """No MAP_POPULATE: a 2 GB hole is rejected at its first bytes without reading it."""
    sparse = tmp_path / "sparse.pcapng"
    with open(sparse, "wb") as f:
        f.truncate(2 << 30)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pxproto.dump.cli", "-r", str(sparse)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    # wait4 reaps this one child and gives its own peak RSS; RUSAGE_CHILDREN would also
    # count every earlier child of this test worker
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    one_line_error(subprocess.CompletedProcess(cmd, proc.returncode, "", err), 1, "at byte 0")
    # A forked child's peak RSS includes what it shared with this worker before exec (the worker's
    # RSS at fork, at most its own peak): pxdump's own peak is bounded by 400 MB, or by that.
    inherited = _own_peak_kib()
    assert usage.ru_maxrss < max(400_000, inherited + 1), (usage.ru_maxrss, inherited)  # KiB; the 2 GB would show


def _own_peak_kib() -> int:
    """This process's peak resident set (VmHWM), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def test_memory_limit_is_one_line() -> None:
    """Under ``ulimit -v``, /dev/zero (once read whole until a MemoryError) is refused in one line."""
    code = "import resource; resource.setrlimit(resource.RLIMIT_AS, (700 << 20, 700 << 20))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    prog = f"{code}\nimport sys\nfrom pxproto.dump.cli import main\nsys.exit(main(['-r', '/dev/zero']))"
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=env, timeout=60)
    one_line_error(r, 1, "/dev/zero")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("( " * 5000 + "hb" + " )" * 5000, "nested deeper than 64"),
        ("not " * 5000 + "hb", "nested deeper than 64"),
        (" or ".join(["hb"] * 5000), "more than 256 filter words"),
    ],
    ids=["parentheses", "not", "words"],
)
def test_filter_nesting_is_limited(text: str, needle: str) -> None:
    r = pxdump("-r", str(CAPTURE), *text.split())
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "recursion" not in r.stderr
    assert needle in r.stderr.splitlines()[0]


def test_filter_nesting_within_the_limit_works() -> None:
    r = pxdump("-r", str(CAPTURE), *("( " * 60 + "hb" + " )" * 60).split())
    assert r.returncode == 0 and r.stdout.count(" HB ") == len(r.stdout.splitlines()) > 0


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
@pytest.mark.parametrize("window", [64, 100, 1000, 1 << 26])
def test_windowed_index_gives_the_whole_file(compiled: bool, window: int) -> None:
    """A mapped file indexed a window at a time (records cut by a window, or longer than it)."""
    was = accel.use_compiled(compiled)
    try:
        data = CAPTURE.read_bytes()
        whole = list(capture_frames(data, window=len(data)))
        parts = list(capture_frames(data, window=window))
    finally:
        accel.use_compiled(was)

    def rows(frames: list) -> list[bytes]:  # type: ignore[type-arg]
        return [bytes(f.buf[o : o + n]) for f in frames for o, n in zip(f.offset, f.caplen, strict=True)]

    assert rows(parts) == rows(whole) and len(rows(whole)) > 100
    assert np.concatenate([f.ts_ns for f in parts]).tolist() == np.concatenate([f.ts_ns for f in whole]).tolist()


def test_memory_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pxproto.dump import cli

    def exhausted(*_: object) -> None:
        raise MemoryError

    monkeypatch.setattr(cli, "_file_batches", exhausted)
    assert cli.main(["-r", str(CAPTURE)]) == 1
    assert capsys.readouterr().err == "pxdump: out of memory\n"


def _pcapng(frame_len: int = 62) -> bytearray:
    import io

    from pxproto.capture.pcapng import PcapngWriter

    out = io.BytesIO()
    PcapngWriter(out).write(bytes(range(frame_len)), 1_700_000_000_000_000_000)
    return bytearray(out.getvalue())


def _broken(case: str) -> tuple[bytes, int, str]:
    """A broken pcapng, the byte offset it must be refused at, and the words of the reason.
    Layout of PcapngWriter's output: SHB at 0 (28 bytes), IDB at 28 (32 bytes: its options at 44,
    if_tsresol then the end), EPB at 60 (caplen at 80, origlen at 84)."""
    data = _pcapng()
    if case == "shb-major-2":
        data[12] = 2
        return bytes(data), 12, "major version 2"
    if case == "idb-option-overrun":
        data[46] = 9  # if_tsresol claims 9 bytes: 12 padded, 8 left in the block
        return bytes(data), 44, "option 9 of 9 bytes runs past its block"
    if case == "caplen-past-packet":
        data[80] = 63  # 62 bytes of data, padded to 64: one byte of padding taken as data
        return bytes(data), 80, "captured length 63 > packet length 62"
    raise AssertionError(case)


CASES = ["shb-major-2", "idb-option-overrun", "caplen-past-packet"]


@pytest.mark.parametrize("case", CASES)
def test_broken_pcapng_reference_reader(case: str) -> None:
    import io

    from pxproto.capture.pcapng import CaptureError, read_packets

    data, offset, reason = _broken(case)
    with pytest.raises(CaptureError) as e:
        list(read_packets(io.BytesIO(data)))
    assert e.value.offset == offset and reason in e.value.reason


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
@pytest.mark.parametrize("case", CASES)
def test_broken_pcapng_indexers(case: str, compiled: bool) -> None:
    data, offset, reason = _broken(case)
    was = accel.use_compiled(compiled)
    try:
        ix = accel.index.Indexer()
        off, *_ = ix.feed(data, True)
    finally:
        accel.use_compiled(was)
    assert len(off) == 0 and ix.error is not None
    assert ix.error[1] == offset and reason in ix.error[2], ix.error


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
@pytest.mark.parametrize("case", CASES)
def test_broken_pcapng_pxdump_exits_1_with_the_offset(case: str, reference: bool, tmp_path: Path) -> None:
    data, offset, reason = _broken(case)
    path = tmp_path / "broken.pcapng"
    path.write_bytes(data)
    r = pxdump("-r", str(path), *(["--reference"] if reference else []))
    one_line_error(r, 1, f"at byte {offset}")
    assert reason in r.stderr


def test_unbroken_pcapng_still_reads() -> None:
    import io

    from pxproto.capture.pcapng import read_packets

    (p,) = read_packets(io.BytesIO(bytes(_pcapng())))
    assert p.data == bytes(range(62)) and p.orig_len == 62


def _ts_overflow_pcapng() -> bytes:
    """Four PINGs; the third EPB's time, 0xFFFFFFFF_FFFFFFFF µs, is past int64 nanoseconds."""
    import io
    import struct

    from pxproto.capture.pcapng import read_packets

    with open(CAPTURE, "rb") as f:
        data = next(iter(read_packets(f))).data

    def block(kind: int, body: bytes) -> bytes:
        return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    def epb(hi: int, lo: int) -> bytes:
        return block(6, struct.pack("<IIIII", 0, hi, lo, len(data), len(data)) + data + bytes(-len(data) % 4))

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 1, 0, 262144))
    assert next(iter(read_packets(io.BytesIO(shb + idb + epb(0xFFFFFFFF, 0xFFFFFFFF))))).ts_ns >= 1 << 63
    return shb + idb + epb(0x5F000, 0) + epb(0x5F000, 0) + epb(0xFFFFFFFF, 0xFFFFFFFF) + epb(0x5F000, 0)


@pytest.mark.parametrize("mode", [[], ["-v"], ["--json"], ["-q"], ["-tt"]], ids=["text", "v", "json", "q", "tt"])
def test_timestamp_past_int64_ns_reference_matches_fast(mode: list[str], tmp_path: Path) -> None:
    """The time wraps modulo 2**64 as CaptureIndex documents, on both paths: all four frames printed."""
    path = tmp_path / "ts.pcapng"
    path.write_bytes(_ts_overflow_pcapng())
    fast = pxdump("-r", str(path), *mode)
    ref = pxdump("--reference", "-r", str(path), *mode)
    assert "Traceback" not in ref.stderr, ref.stderr
    assert (ref.returncode, ref.stdout, ref.stderr) == (fast.returncode, fast.stdout, fast.stderr)
    assert fast.returncode == 0, fast.stderr
    if mode in ([], ["-tt"]):
        assert sum(" PING request " in line for line in fast.stdout.splitlines()) == 4, fast.stdout
