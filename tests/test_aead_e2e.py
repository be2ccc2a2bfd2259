"""The AEAD mode end to end: two pxkernel servers on two pxswitches (so data crosses two switch hops and
the inter-switch link), ``--encrypt data,signaling``, a source -> transform -> sink pipeline across them.
A sniffer (the first switch's mirror) sees every frame on its way: no item byte in clear, every DATA and
signaling frame encrypted, and the sink's answer exact.  pxdump shows the frames as encrypted and, with
``--key``, opens them."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pxproto.capture.pcapng import read_packets
from pxproto.dime.keys import write_keyfile
from pxproto.node.testbed import ENV, KEY
from pxproto.package import LocalStore
from pxproto.wire import aead, codec
from pxproto.wire.codes import Command, TlvType
from pxproto.wire.frame import Sealed, Tlv
from tests._helpers import manifest, packaged_cluster, start

N = 200
MARK = b"plaintext-item-"
SERVICE_TOML = manifest("aead", ["source", "shout", "sink"], version="1", params={"source": {"count": N}})
STAGES_PY = """
def source(ctx):
    for i in range(ctx.params["count"]):
        yield b"plaintext-item-%05d" % i

def shout(item, ctx):
    yield item.upper()

def sink(item, ctx):
    ctx.store.append(f"sink-{ctx.service_id}", item)
    return ()
"""


@pytest.mark.parametrize(
    "classes", ["data,signaling", pytest.param("all", marks=pytest.mark.slow)], ids=["data+signaling", "all"]
)
def test_encrypted_pipeline_across_two_switches_leaks_no_item(tmp_path: Path, classes: str) -> None:
    """``all``: heartbeats and discovery too (the server opens its DIMEs' heartbeat copies; the client opens
    announces and heartbeats); ``pytest -m slow``."""
    mirror = tmp_path / "wire.pcapng"
    c = packaged_cluster(
        tmp_path / "bed", SERVICE_TOML, STAGES_PY, kernels=2, dimes=2, encrypt=classes, mirror=mirror,
        two_switches=True,
    )  # fmt: skip
    try:
        src, mid, snk = c.dime(0, 0), c.dime(1, 0), c.dime(0, 1)  # server 1 is behind the second switch
        start(c, snk, 9, 2, "sink")
        start(c, mid, 9, 1, "shout")
        c.connect(mid, snk, 1)
        start(c, src, 9, 0, "source")
        c.connect(src, mid, 2)
        store = LocalStore(c.tmp / "state0" / "store")
        done = c.client.wait_for(lambda: len(store.records("sink-9")) >= N, 60)
        assert done, f"{len(store.records('sink-9'))} of {N} items at the sink\n{c.log_text()[-3000:]}"
        c.client.wait_for(lambda: False, 0.3)
        got = sorted(store.records("sink-9"))
        assert got == sorted(b"PLAINTEXT-ITEM-%05d" % i for i in range(N))  # exact: each once, transformed
        items_in = c.ask(snk, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, 5)).param(TlvType.VALUE)
        assert items_in == N
        assert not c.client.rejected, c.client.rejected
    finally:
        c.close()
    with open(mirror, "rb") as f:
        frames = [p.data for p in read_packets(f)]
    kinds: Counter[str] = Counter()
    for raw in frames:
        assert MARK not in raw and MARK.upper() not in raw, "an item crossed the wire in clear"
        try:
            fr = codec.decode(raw)
        except Exception:
            continue
        sealed = isinstance(fr.body, Sealed)
        kinds[f"{fr.cls.name} {'sealed' if sealed else 'clear'}"] += 1
        if fr.cls in aead.parse_classes(classes):
            assert sealed, f"a {fr.cls.name} frame in clear: {raw[:60].hex()}"
    # the sniffer saw the traffic itself (messages and acks both ways across the switches, encrypted)
    assert kinds["DATA sealed"] >= 4 and kinds["SIGNALING sealed"] >= 10, kinds
    if classes == "all":
        assert kinds["HEARTBEAT sealed"] > 0 and kinds["DISCOVERY sealed"] > 0 and not kinds["HEARTBEAT clear"], kinds
    else:
        assert kinds["HEARTBEAT clear"] > 0, kinds  # heartbeats were not chosen: signed, in clear

    # pxdump: encrypted frames print as such; with the key file they open and show their fields
    plain = subprocess.run(
        [sys.executable, "-m", "pxproto.dump.cli", "-t", "-r", str(mirror), "data"],
        env=ENV, capture_output=True, timeout=120, check=True,
    ).stdout.decode()  # fmt: skip
    lines = plain.splitlines()
    assert lines and all(" encrypted auth " in ln for ln in lines), lines[:3]
    keyfile = tmp_path / "cluster.key"
    write_keyfile(keyfile, {1: KEY})
    opened = subprocess.run(
        [sys.executable, "-m", "pxproto.dump.cli", "-t", "-r", str(mirror), "--key", str(keyfile), "data"],
        env=ENV, capture_output=True, timeout=120, check=True,
    ).stdout.decode()  # fmt: skip
    olines = opened.splitlines()
    assert len(olines) == len(lines) and not any("encrypted" in ln for ln in olines), olines[:3]
    assert sum(" msg " in ln for ln in olines) >= 2 and sum(" ACK " in ln for ln in olines) >= 2, olines[:3]
