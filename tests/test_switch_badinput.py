"""`pxswitch` on hostile input, as a process: one line naming what is wrong, the documented exit status, no
traceback (audit D2, D4-D7, D12)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[1])
HUGE = "99999999999999999999"


def pxswitch(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pxproto.switch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": ROOT},
    )


def one_line(r: subprocess.CompletedProcess[str], status: int, says: str) -> None:
    assert r.returncode == status and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pxswitch: ") and says in lines[0], r.stderr


def free_udp() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("mtu=1²00", "(mtu): '1²00' is not a number (digits are 0-9)"),  # ValueError from int()
        ("max_macs=5²", "(max_macs): '5²' is not a number"),
        ("name=٣", "(name): '٣' is not a number"),
    ],
)
def test_unicode_digits_in_a_port_option(tmp_path: Path, option: str, says: str) -> None:
    spec = f"udp:local={free_udp()},{option}"
    r = pxswitch("run", "--control", str(tmp_path / "c.sock"), "-p", spec)
    one_line(r, 2, f"--port {spec!r} {says}")


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (("--fdb-capacity", HUGE), 2, f"--fdb-capacity {HUGE}: 1..16777216"),  # OverflowError in Fdb()
        (("--max-macs", HUGE), 2, f"--max-macs {HUGE}: 0 (no limit)..16777216"),
        (("--aging", "nan"), 2, "--aging nan: a positive number of seconds"),  # ran, and never aged
        (("--aging", "inf"), 2, "--aging inf: a positive number of seconds"),
        (("--aging", "-1"), 2, "--aging -1.0: a positive number of seconds"),
        (("--mirror", "/nonexistent-pxs/m.pcapng"), 1, "mirror /nonexistent-pxs/m.pcapng: no such file or directory"),
        (("--mirror", "/"), 1, "mirror /: is a directory"),  # IsADirectoryError
    ],
)
def test_out_of_range_switch_options(tmp_path: Path, args: tuple[str, ...], status: int, says: str) -> None:
    r = pxswitch("run", "--control", str(tmp_path / "c.sock"), "-p", f"udp:local={free_udp()}", *args)
    one_line(r, status, says)
    assert not (tmp_path / "c.sock").exists()


def test_a_huge_port_max_macs(tmp_path: Path) -> None:
    spec = f"udp:local={free_udp()},max_macs={HUGE}"
    r = pxswitch("run", "--control", str(tmp_path / "c.sock"), "-p", spec)
    one_line(r, 1, f"(max_macs): max_macs {HUGE}: 0 (no limit)..16777216")


@pytest.mark.parametrize(
    ("text", "status", "says"),
    [
        ("port = [1, 2]\n", 2, "line 1: port[0]: must be a table ([[port]]), not 1"),  # AttributeError
        ('[[port]]\ntype = ["udp"]\n', 2, "line 2: port[0].type: port type ['udp']"),  # unhashable type: 'list'
        ("[[port]]\ntype = { a = 1 }\n", 2, "line 2: port[0].type: port type {'a': 1}"),  # ... 'dict'
        (f"[switch]\nmax_macs = {HUGE}\n", 2, f"line 2: switch.max_macs: max_macs {HUGE}: 0 (no limit).."),
        (f"[switch]\nfdb_capacity = {HUGE}\n", 2, f"line 2: switch.fdb_capacity: fdb_capacity {HUGE}: 1.."),
        ("[switch]\naging = nan\n", 2, "line 2: switch.aging: aging nan: a positive number of seconds"),
        (
            '[[port]]\ntype = "vxlan"\nremote = "10.0.0.1"\nvni = 1\naging = -inf\n',
            1,
            "line 5: port[0].aging: aging must be a positive number of seconds, not -inf",
        ),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, status: int, says: str) -> None:
    conf = tmp_path / "sw.toml"
    conf.write_text(text + f'\n[switch]\ncontrol = "{tmp_path / "c.sock"}"\n' * ("[switch]" not in text))
    r = pxswitch("run", "-c", str(conf))
    one_line(r, status, f"{conf} {says}")


@pytest.mark.parametrize("kind", ["zero", "fifo", "dir", "big"])
def test_a_config_that_is_not_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    """-c /dev/zero read until memory ran out; a FIFO blocked."""
    path = {"zero": "/dev/zero", "fifo": str(tmp_path / "fifo"), "dir": str(tmp_path), "big": str(tmp_path / "big")}
    if kind == "fifo":
        os.mkfifo(path[kind])
    if kind == "big":
        Path(path[kind]).write_text("#" * (1 << 20) + "\n")
    r = pxswitch("run", "-c", path[kind], timeout=20)
    says = {"dir": "is a directory", "big": "larger than 1048576 bytes"}.get(kind, "not a regular file")
    one_line(r, 2, f"{path[kind]}: ")
    assert says in r.stderr.lower()


@pytest.fixture
def fake_control(tmp_path: Path) -> Iterator[tuple[str, list[bytes]]]:
    """A UNIX socket that answers every request with the next reply of the list."""
    path = str(tmp_path / "fake.sock")
    replies: list[bytes] = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(256)
                    conn.sendall(replies.pop(0))
                except (OSError, IndexError):
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path, replies
    srv.shutdown(socket.SHUT_RDWR)
    srv.close()
    t.join(5)


@pytest.mark.parametrize("cmd", ["stats", "fdb"])
@pytest.mark.parametrize(
    "reply",
    [b"", b"garbage", b'{"x": 1}', b"[1, 2]", b'"text"', b"\xff\xfe\xfd", b"[" * 100000, b'{"ports": 5}', b"null"],
)
@pytest.mark.parametrize("raw", [False, True])
def test_a_reply_that_is_not_a_switchs(
    fake_control: tuple[str, list[bytes]], cmd: str, reply: bytes, raw: bool
) -> None:
    """An empty reply (a switch that died while answering) or another program's socket gave a JSONDecodeError,
    KeyError or TypeError traceback."""
    path, replies = fake_control
    replies.append(reply)
    r = pxswitch(cmd, "--control", path, *(["--json"] if raw else []))
    one_line(r, 1, f"control socket {path}: not a pxswitch {cmd} reply")
    assert r.stdout == ""


def test_an_error_reply_is_shown(fake_control: tuple[str, list[bytes]]) -> None:
    path, replies = fake_control
    replies.append(b'{"error": "unknown request"}\n')
    one_line(pxswitch("stats", "--control", path), 1, f"control socket {path}: unknown request")


def test_a_good_reply_prints(fake_control: tuple[str, list[bytes]]) -> None:
    path, replies = fake_control
    replies.append(b'[{"mac": "02:00:00:00:00:01", "dime": null, "port": "a", "age": 1.5}]\n')
    r = pxswitch("fdb", "--control", path)
    assert r.returncode == 0 and "02:00:00:00:00:01" in r.stdout and r.stderr == "", r
