"""Repair and replay across real pxkernel processes, and the stream wire.

A DIME in the middle of a pipeline is killed mid-stream; the source is
re-wired (CONNECT) to a replacement; the sink must see every item exactly
once: what the dead DIME had passed on is replayed from the source's
retained copies and dropped at the sink by lineage.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto import package
from pxproto.dime.endpoint import Address
from pxproto.node.testbed import SIGNER, Cluster
from pxproto.package import LocalStore
from pxproto.wire.codes import Command, CounterId, Status, TlvType
from pxproto.wire.frame import Tlv

N = 1500

SERVICE_TOML = f"""
[service]
name = "repair"

[[stage]]
name = "source"
entry = "stages:source"
params = {{ count = {N} }}

[[stage]]
name = "double"
entry = "stages:double"

[[stage]]
name = "sink"
entry = "stages:sink"
"""

STAGES_PY = """
import time

def source(ctx):
    for i in range(ctx.params["count"]):
        if i % 10 == 0:
            time.sleep(0.01)  # about 1 item per ms: the kill lands mid-stream
        yield str(i).encode()

def double(item, ctx):
    yield str(int(item) * 2).encode()

def sink(item, ctx):
    ctx.store.append("sink", ctx.lineage.to_bytes(8, "big") + item)
    return ()
"""


def _bed(tmp: Path, stream: bool) -> Cluster:
    c = Cluster(tmp, kernels=2, dimes=3, key=True, stream=stream)
    pkg = tmp / "pkg"
    pkg.mkdir()
    (pkg / "service.toml").write_text(SERVICE_TOML)
    (pkg / "stages.py").write_text(STAGES_PY)
    c.archive = package.pack(pkg)  # type: ignore[attr-defined]
    package.store_put(c.store, c.archive)  # type: ignore[attr-defined]
    return c


@pytest.fixture
def udp_bed(tmp_path: Path) -> Iterator[Cluster]:
    c = _bed(tmp_path / "bed", stream=False)
    yield c
    c.close()


@pytest.fixture
def stream_bed(tmp_path: Path) -> Iterator[Cluster]:
    c = _bed(tmp_path / "bed", stream=True)
    yield c
    c.close()


def start(c: Cluster, dest: Address, stage: int, name: str) -> None:
    archive: bytes = c.archive  # type: ignore[attr-defined]
    r = c.ask(
        dest,
        Command.LOAD,
        Tlv(TlvType.SERVICE_ID, 3),
        Tlv(TlvType.STAGE, stage),
        Tlv(TlvType.MICE_NAME, name),
        Tlv(TlvType.PACKAGE_DIGEST, package.digest(archive)),
        Tlv(TlvType.PACKAGE_SIZE, len(archive)),
        Tlv(TlvType.PACKAGE_SIG, package.sign(archive, SIGNER)),
    )
    assert r.status is Status.OK, r
    r = c.ask(dest, Command.START, Tlv(TlvType.SERVICE_ID, 3), Tlv(TlvType.STAGE, stage))
    assert r.status is Status.OK, r


def connect(c: Cluster, up: Address, down: Address, channel: int) -> None:
    c.connect(up, down, channel)


def counter(c: Cluster, dest: Address, cid: CounterId) -> int:
    v = c.ask(dest, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, cid)).param(TlvType.VALUE)
    assert isinstance(v, int)
    return v


def sink_records(c: Cluster) -> list[bytes]:
    return LocalStore(c.tmp / "state0" / "store").records("sink")


def check_exactly_once(c: Cluster, recs: list[bytes]) -> None:
    lineages = [r[:8] for r in recs]
    dupes = len(lineages) - len(set(lineages))
    assert dupes == 0, f"{dupes} items reached the sink twice"
    assert sorted(int(r[8:]) for r in recs) == [2 * i for i in range(N)]


def test_kill_a_middle_dime_rewire_to_a_replacement_sink_sees_every_item_once(udp_bed: Cluster) -> None:
    c = udp_bed
    src, mid, spare, snk = c.dime(0, 0), c.dime(1, 0), c.dime(1, 1), c.dime(0, 1)
    start(c, snk, 2, "sink")
    start(c, mid, 1, "double")
    connect(c, mid, snk, 1)
    start(c, src, 0, "source")
    connect(c, src, mid, 2)
    assert c.client.wait_for(lambda: len(sink_records(c)) >= 200, 30), c.log_text()
    pid = c.dime_pid(1, 0)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the middle DIME dies with its MICE, mid-stream
    seen_at_kill = len(sink_records(c))
    assert seen_at_kill < N, "the stream ended before the kill: the test would prove nothing"
    # Repair: the replacement runs the same stage; wire it in, then re-plug the source's output to it.
    start(c, spare, 1, "double")
    connect(c, spare, snk, 3)
    connect(c, src, spare, 2)
    done = c.client.wait_for(lambda: len(sink_records(c)) >= N, 60)
    c.client.wait_for(lambda: False, 0.5)  # late copies, if any, would arrive now
    recs = sink_records(c)
    assert done, f"{len(recs)} of {N} items at the sink\n{c.log_text()}"
    check_exactly_once(c, recs)
    assert counter(c, src, CounterId.REPLAYED) > 0  # the source did send its retained items again
    assert counter(c, snk, CounterId.ITEMS_IN) == N


def test_stream_wire_pipeline(stream_bed: Cluster) -> None:
    c = stream_bed
    src, snk = c.dime(0, 0), c.dime(1, 2)
    mid = c.dime(1, 0)
    start(c, snk, 2, "sink")
    start(c, mid, 1, "double")
    connect(c, mid, snk, 1)
    start(c, src, 0, "source")
    connect(c, src, mid, 2)
    store = LocalStore(c.tmp / "state1" / "store")
    assert c.client.wait_for(lambda: len(store.records("sink")) >= N, 60), c.log_text()
    c.client.wait_for(lambda: False, 0.3)
    check_exactly_once(c, store.records("sink"))
    r = c.ask(src, Command.PING, Tlv(TlvType.ECHO, b"over a stream"))
    assert r.param(TlvType.ECHO) == b"over a stream"
