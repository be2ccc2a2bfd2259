"""The hostile-frame campaign at a running pxorch (a subprocess on a UDP virtual wire we hold the far end of).

Hostile frames are aimed at the orchestrator's MAC (or broadcast); between
bursts a fake server announces itself and heartbeats, and the orchestrator
must keep taking them (its heartbeat counter grows by what we sent, its
pool holds our DIMEs) and keep answering its control socket, keep probing,
and stay within an RSS bound.

Short form in the default run; ``pytest -m slow`` sends 1,000,000 frames.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxproto.dime.keys import add_trailer, fresh_keys, write_keyfile
from pxproto.fuzz import Case, FrameGenerator, Report, UdpWire, process_rss_kib
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import DIME_ALL, DimeState, DiscoveryOp, Scope
from pxproto.wire.frame import BROADCAST, DimeInfo, Discovery, Frame, Heartbeat
from tests._helpers import survive_campaign

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
SERVER = bytes.fromhex("02cc00000001")
RSS_GROWTH_BOUND_KIB = 64 * 1024
KEY = fresh_keys()[1]


class Orch:
    def __init__(self, tmp: Path, key: bool = False) -> None:
        self.wire = UdpWire("127.0.0.1:9")
        port = self.wire.local[1]
        self.control = str(tmp / "orch.sock")
        args = [sys.executable, "-m", "pxproto.orch.cli", "run", "--port", f"udp:127.0.0.1:{port}"]
        args += ["--control", self.control] + ([] if key else ["--insecure"])
        self.key = KEY if key else None
        self.counter = itertools.count(1)
        if key:
            write_keyfile(tmp / "cluster.key", {1: KEY})
            args += ["--key", str(tmp / "cluster.key")]
        self.proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.wire.sock.settimeout(15)
        data, addr = self.wire.sock.recvfrom(65600)  # its first probe tells us where it is and its MAC
        self.wire.sock.settimeout(None)
        self.wire.remote = addr[:2]
        self.mac = decode(data).src_mac
        self.seq = 0

    def status(self) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.control)
            s.sendall(b'{"cmd": "status"}\n')
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)  # type: ignore[no-any-return]

    def legit(self) -> list[bytes]:
        """A fake server's gratuitous announce of two DIMEs and their heartbeats."""
        self.seq += 1
        dimes = tuple(DimeInfo(d, d, DimeState.FREE, 16, 16, 1) for d in range(2))
        ann = Frame(Discovery(DiscoveryOp.GRATUITOUS, 0, 1, 0, 0xFF, dimes), Scope.SYSTEM, DIME_ALL, 0, DIME_ALL, 0)
        ann.dst_mac, ann.src_mac = BROADCAST, SERVER
        out = [encode(ann)]
        for d in range(2):
            hb = Frame(Heartbeat(1, DimeState.FREE, 100), Scope.SYSTEM, d, 0, DIME_ALL, 0, self.seq, BROADCAST, SERVER)
            out.append(encode(hb))
        if self.key is not None:
            out = [add_trailer(raw, 1, next(self.counter), self.key) for raw in out]
        return out

    def close(self) -> None:
        self.wire.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(params=[False, True], ids=["open", "keyed"])
def orch(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Orch]:
    o = Orch(tmp_path, key=request.param)
    yield o
    o.close()


class AimedGenerator(FrameGenerator):
    def __init__(self, seed: int, mac: bytes) -> None:
        super().__init__(seed, pool_size=256)
        self.mac = mac

    def next(self) -> Case:
        c = super().next()
        if len(c.raw) >= 6 and self.rng.random() < 0.8:
            return Case((self.mac if self.rng.random() < 0.5 else BROADCAST) + c.raw[6:], c.kind)
        return c


def run_orch_campaign(o: Orch, count: int, seed: int) -> None:
    rss0 = [0]
    legit_hb = [0]

    def legit(n: int) -> list[bytes]:
        legit_hb[0] += 2
        return o.legit()

    def probe() -> bool:
        before = o.status()["counters"].get("heartbeats", 0)
        o.wire.send(o.legit()[1:])
        legit_hb[0] += 2
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if o.status()["counters"].get("heartbeats", 0) >= before + 2:
                return True
            time.sleep(0.05)
        return False

    def check(r: Report) -> list[str]:
        if o.proc.poll() is not None:
            return [f"pxorch exited with {o.proc.returncode}: {o.proc.stderr.read() if o.proc.stderr else ''}"]
        rss = process_rss_kib(o.proc.pid)
        if r.bursts == 1:
            rss0[0] = rss
        if rss - rss0[0] > RSS_GROWTH_BOUND_KIB:
            return [f"pxorch RSS grew {rss - rss0[0]} KiB (bound {RSS_GROWTH_BOUND_KIB})"]
        return []

    report = survive_campaign(
        o.wire, AimedGenerator(seed, o.mac), count=count, burst=200, probes=40,
        probe=probe, rate=3000, legit=legit, check=check,
    )  # fmt: skip
    st = o.status()
    ours = [k for k in json.dumps(st["rows"]).split('"') if k.startswith("02:cc:00:00:00:01")]
    assert ours, st["rows"]
    if o.key is not None:
        # Authentication on: nothing the attacker sent (unsigned or forged) got into the pool.
        assert sum(st["pool"].values()) == 2, st["pool"]
        assert st["counters"]["heartbeats"] == legit_hb[0]  # exactly ours: every hostile one was refused
    # Still probing the network: a probe comes out within its period (2 s) plus slack.
    o.wire.recv(0.0)
    end = time.monotonic() + 10
    probes = 0
    while time.monotonic() < end and not probes:
        for raw in o.wire.recv(0.5):
            try:
                f = decode(raw)
            except Exception:
                continue
            probes += isinstance(f.body, Discovery) and f.body.op is DiscoveryOp.PROBE
    assert probes, "pxorch stopped probing"
    print(report.summary())
    print(f"pxorch RSS {process_rss_kib(o.proc.pid)} KiB, counters {st['counters']}, pool {st['pool']}")


def test_orchestrator_survives_a_short_campaign(orch: Orch) -> None:
    run_orch_campaign(orch, 3000, seed=5)


@pytest.mark.slow
def test_orchestrator_survives_a_million_hostile_frames(orch: Orch) -> None:
    run_orch_campaign(orch, 1_000_000, seed=6)
