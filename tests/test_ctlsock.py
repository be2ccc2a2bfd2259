"""The control-socket client that ``pxswitch stats``/``fdb`` and ``pxorch status``/``deploy``/... share.

Before: each tool had its own client, and both read the reply without a bound: a process at the socket path
that sent without end grew the client's memory without end, and one that sent a byte a second held it for
ever (the timeout was per read).  Now a reply is bounded in size and the exchange in time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pxproto import ctlsock
from pxproto.orch.daemon import ReplyError
from pxproto.orch.daemon import query as orch_query
from pxproto.switch.control import query as switch_query

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """A Unix socket whose one connection ``serve`` answers (in a thread); yields a function starting it."""
    path = str(tmp_path / "c.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(1)
    threads: list[threading.Thread] = []

    def start(serve: Callable[[socket.socket], None]) -> str:
        def run() -> None:
            conn, _ = lsock.accept()
            with conn:
                conn.recv(1 << 16)  # the request
                try:
                    serve(conn)
                except OSError:
                    pass  # the client gave up

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        return path

    yield start
    lsock.close()
    for t in threads:
        t.join(5)


def test_reply_until_close(server: Callable[..., str]) -> None:
    def two_parts(c: socket.socket) -> None:
        c.sendall(b'{"a": ')
        time.sleep(0.05)
        c.sendall(b"1}")

    path = server(two_parts)
    assert ctlsock.ask(path, b"stats\n", 5.0) == b'{"a": 1}'


def test_line_reply_ends_at_newline_on_an_open_connection(server: Callable[..., str]) -> None:
    def held_open(c: socket.socket) -> None:
        c.sendall(b'{"ok": true}\n')
        time.sleep(3)

    path = server(held_open)
    t0 = time.monotonic()
    assert ctlsock.ask(path, b"{}", 10.0, line=True) == b'{"ok": true}\n'
    assert time.monotonic() - t0 < 2.5  # it did not wait for the close


def test_reply_past_the_limit_is_refused(server: Callable[..., str]) -> None:
    def flood(c: socket.socket) -> None:
        for _ in range(200):
            c.sendall(b"x" * 4096)

    path = server(flood)
    with pytest.raises(ctlsock.ReplyTooLong, match="longer than 100000 bytes"):
        ctlsock.ask(path, b"stats\n", 5.0, limit=100_000)


def test_a_trickling_peer_is_bounded_by_the_whole_timeout(server: Callable[..., str]) -> None:
    def trickle(c: socket.socket) -> None:
        for _ in range(40):
            c.sendall(b" ")
            time.sleep(0.1)

    path = server(trickle)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ctlsock.ask(path, b"stats\n", 0.5)
    assert time.monotonic() - t0 < 2.0  # not 40 reads of 0.1 s each


def test_switch_and_orch_clients(server: Callable[..., str]) -> None:
    path = server(lambda c: c.sendall(b'{"frames": 3}'))
    assert switch_query(path, "stats") == {"frames": 3}
    path2 = server(lambda c: c.sendall(b'{"ok": 1}\n'))
    assert orch_query(path2, {"cmd": "status"}) == {"ok": 1}


def test_orch_client_words_an_overlong_reply(server: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctlsock, "REPLY_MAX", 10_000)
    path = server(lambda c: c.sendall(b"[" * 50_000))
    with pytest.raises(ReplyError, match="longer than 10000 bytes"):
        orch_query(path, {"cmd": "status"})


def test_pxswitch_stats_against_a_flooding_socket(tmp_path: Path) -> None:
    """The CLI end to end: a process at the control path that never stops sending; pxswitch says so and exits 1
    (its memory bounded by REPLY_MAX, lowered here so the test sends little)."""
    path = tmp_path / "sw.sock"
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(path))
    lsock.listen(1)
    stop = threading.Event()

    def flood() -> None:
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(10)
            try:
                while not stop.is_set():
                    conn.sendall(b"{" * 65536)
            except OSError:
                pass

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    code = (
        "import sys; import pxproto.ctlsock as c; c.REPLY_MAX = 1 << 20; "
        "from pxproto.switch.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    try:
        r = subprocess.run([sys.executable, "-c", code, "stats", "--control", str(path)], capture_output=True,
                           text=True, env=ENV, timeout=60, check=False)  # fmt: skip
    finally:
        stop.set()
        lsock.close()
        t.join(10)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == f"pxswitch: control socket {path}: a reply longer than 1048576 bytes"
