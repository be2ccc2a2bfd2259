"""pxdissect against hostile paths: a FIFO or device given to -o is written into, never renamed over
(as root, renaming over /dev/full replaced the device with a regular file); --check reads a bounded
amount (/dev/zero was read whole, ending in MemoryError); a standard output that fails is one line
and exit 1, not a traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

from pxproto.wire.ethertypes import EtherTypeMap
from pxproto.wire.gen_lua import generate

ROOT = Path(__file__).resolve().parent.parent


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def _pxdissect(*args: str, stdout: int = subprocess.PIPE, limited: bool = False) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pxproto.dissect.cli", *args], stdout=stdout,
                          stderr=subprocess.PIPE, env=env, timeout=60, check=False,
                          preexec_fn=_limit_memory if limited else None)  # fmt: skip


def test_output_to_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "out.lua"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    p = _pxdissect("-o", str(fifo))
    reader.join(30)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced by a regular file"
    assert got == [generate(EtherTypeMap()).encode()]
    assert not (tmp_path / "out.lua.tmp").exists()


def test_output_to_a_fifo_nobody_reads_to_the_end_is_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "out.lua"
    os.mkfifo(fifo)

    def close_early() -> None:
        with fifo.open("rb") as f:
            f.read(10)

    reader = threading.Thread(target=close_early)
    reader.start()
    p = _pxdissect("-o", str(fifo))
    reader.join(30)
    err = p.stderr.decode()
    assert p.returncode == 1 and err.count("\n") == 1 and err.startswith(f"pxdissect: cannot write {fifo}: "), err
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_check_reads_a_bounded_amount(tmp_path: Path) -> None:
    p = _pxdissect("--check", "/dev/zero", limited=True)
    err = p.stderr.decode()
    assert p.returncode == 1 and "Traceback" not in err and "/dev/zero is stale" in err, err
    committed = ROOT / "dissectors" / "parallax.lua"
    longer = tmp_path / "longer.lua"
    longer.write_bytes(committed.read_bytes() + b"-- one more line\n")
    assert _pxdissect("--check", str(longer)).returncode == 1
    assert _pxdissect("--check", str(committed)).returncode == 0


def test_a_standard_output_that_fails_is_one_line() -> None:
    with open("/dev/full", "wb") as full:
        for args in ((), ("--fields",)):
            p = _pxdissect(*args, stdout=full.fileno())
            err = p.stderr.decode()
            assert p.returncode == 1, err
            assert err == "pxdissect: cannot write the standard output: No space left on device\n", err
