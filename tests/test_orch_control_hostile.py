"""``pxorch run``'s control socket and ``pxorch``'s clients against hostile input.

Before: the daemon caught only bad JSON and socket errors, so a request with ``"events": "abc"``,
``"replicas": 1e400``, invalid UTF-8, 100,000 ``[``, a number of 5,000 digits or a path holding a NUL
ended it in a traceback (and ``pxorch deploy`` of a service file whose package path held a NUL did the
same); ``pxorch status`` on an empty or non-JSON reply printed a JSONDecodeError traceback;
``pxorch run --etcd 'not a url'`` and ``--control /missing/dir/c.sock`` ended in tracebacks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.orch.demo import free_udp_ports

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WARNING = "pxorch: WARNING: --insecure"


def _pxorch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pxproto.orch.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=60, check=False)  # fmt: skip


def _ask(control: Path, raw: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(control))
        s.sendall(raw)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            assert chunk, f"no reply to {raw[:60]!r}: the daemon closed the connection"
            data += chunk
    reply: dict[str, object] = json.loads(data)
    return reply


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    wd = tmp_path_factory.mktemp("orch")
    control = wd / "c.sock"
    port = f"udp:127.0.0.1:{free_udp_ports(1)[0]}"
    cmd = [sys.executable, "-m", "pxproto.orch.cli", "run", "--insecure", "--port", port,
           "--control", str(control), "--store", str(wd / "store")]  # fmt: skip
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(300):
            if control.exists() or p.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert control.exists(), p.communicate(timeout=10)[0]
        yield control, p
    finally:
        p.terminate()
        out = p.communicate(timeout=20)[0]
        assert "Traceback" not in out, out


BAD = [
    (b'{"cmd":"status","events":"abc"}', "status request: field 'events' must be an integer, got 'abc'"),
    (b'{"cmd":"status","events":[]}', "status request: field 'events' must be an integer, got []"),
    (b'{"cmd":"status","events":NaN}', "status request: field 'events' must be an integer, got nan"),
    (b'{"cmd":"status","events":-1}', "status request: field 'events' must be at least 0, got -1"),
    (b'{"cmd":"scale","service":"a","stage":"b","replicas":1e400}', "field 'replicas' must be an integer, got inf"),
    (b'{"cmd":"scale","service":"a","stage":"b","replicas":[]}', "field 'replicas' must be an integer, got []"),
    (b'{"cmd":"scale","service":"a","stage":"b","replicas":' + b"9" * 400 + b"}", "no service 'a'"),
    (b'{"cmd":"scale","service":["a"],"stage":"b","replicas":2}', "field 'service' must be text, got ['a']"),
    (b'{"cmd":"status","events":1' + b"0" * 5000 + b"}", "bad JSON request: a number with too many digits"),
    (b"\xff\xfe\xfd", "bad request: not UTF-8 (byte 0)"),
    (b"[" * 100000, "bad JSON request: nested too deeply"),
    (b'{"cmd":"deploy","file":"/tmp/a\\u0000b"}', "deploy request: field 'file' holds a NUL byte"),
    (b'{"cmd":"deploy","file":17}', "deploy request: field 'file' must be text, got 17"),
    (b'{"cmd":["status"]}', "field 'cmd' must be text (status, deploy or scale), got ['status']"),
    (b'{"cmd":"' + b"x" * 5000 + b'"}', "unknown command 'xxxxxxx"),
    (b"[1, 2]", "a JSON object, please"),
    (b"garbage", "bad JSON request: Expecting value"),
]


@pytest.mark.parametrize(("raw", "text"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_request_is_an_error_reply_and_the_daemon_serves_on(
    daemon: tuple[Path, subprocess.Popen[str]], raw: bytes, text: str
) -> None:
    control, p = daemon
    reply = _ask(control, raw)
    assert set(reply) == {"error"} and text in str(reply["error"]), reply
    assert len(str(reply["error"])) < 300, reply
    assert p.poll() is None
    good = _ask(control, b'{"cmd":"status","events":0}')
    assert "rows" in good and good["events"] == [], good


def test_deploy_of_a_package_path_with_a_nul(daemon: tuple[Path, subprocess.Popen[str]], tmp_path: Path) -> None:
    control, p = daemon
    svc = tmp_path / "svc.toml"
    svc.write_text('[service]\nname = "s"\nid = 1\npackage = "p\\u0000kg"\n\n[[stage]]\nname = "src"\n')
    r = _pxorch("deploy", str(svc), "--control", str(control))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr == f"pxorch: {svc}:4: [service] field 'package': a path cannot hold a NUL byte, got 'p\\x00kg'\n"
    assert p.poll() is None and "rows" in _ask(control, b'{"cmd":"status"}')


REPLIES = [
    (b"", "no reply (did `pxorch run` stop?)"),
    (b"garbage", "not a pxorch reply"),
    (b"\xff\xfe\n", "not a pxorch reply"),
    (b"[1, 2]\n", "not a pxorch reply"),
    (b'{"x": 1}\n', "not a pxorch reply"),
    (b'{"rows": [1], "pool": {}, "services": {}, "events": []}\n', "not a pxorch reply"),
    (b'{"rows": [], "pool": {}, "services": [], "events": []}\n', "not a pxorch reply"),
]


CLIENTS = [("status",), ("scale", "s", "t", "2"), ("deploy", "x.toml")]
CASES = [(c, r, t) for c in CLIENTS for r, t in REPLIES if c == ("status",) or not r.startswith(b'{"rows"')]


@pytest.mark.parametrize(("cmd", "reply", "text"), CASES, ids=[f"{c[0]}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_a_reply_that_is_not_pxorch_s_is_one_line(
    tmp_path: Path, cmd: tuple[str, ...], reply: bytes, text: str
) -> None:
    path = tmp_path / "other.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(1 << 16)
            conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        r = _pxorch(*cmd, "--control", str(path))
    finally:
        t.join(10)
        srv.close()
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr == f"pxorch: control socket {path}: {text}\n", r.stderr


def test_run_with_a_bad_etcd_url_or_control_path_is_one_line(tmp_path: Path) -> None:
    port = f"udp:127.0.0.1:{free_udp_ports(1)[0]}"
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    for args, text in (
        (
            ("--etcd", "not a url"),
            "--etcd 'not a url': endpoint 'not a url' is not [http[s]://]HOST:PORT (PORT 1..65535)",
        ),
        (
            ("--etcd", "http://127.0.0.1:99999"),
            "endpoint 'http://127.0.0.1:99999' is not [http[s]://]HOST:PORT (PORT 1..65535)",
        ),
        (("--etcd", "ftp://127.0.0.1:2379"), "endpoint 'ftp://127.0.0.1:2379': the scheme must be http or https"),
        (("--etcd", ","), "--etcd ',': no etcd endpoint given"),
        (("--control", str(tmp_path / "missing" / "c.sock")), "No such file or directory"),
        (("--control", str(blocker)), f"--control {blocker}: exists and is not a socket"),
    ):
        r = _pxorch("run", "--insecure", "--port", port, *args)
        lines = [ln for ln in r.stderr.splitlines() if not ln.startswith(WARNING)]
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(lines) == 1 and lines[0].startswith("pxorch: ") and lines[0].endswith(text), r.stderr
    assert blocker.read_text() == "keep me"
