"""Real pxkernel processes: one pair of DIMEs wired again and again on the same channel, as bench/channel.py does.

Each round STOPs both stages, STARTs new ones and CONNECTs the same two DIMEs on channel 1.  Before the fix
(``tests/test_dataplane_rewire.py`` has the machine-level form) the second round's completions never reached the
source's DIME: the sink's completion sender numbered on from the first round while the source's completion
receiver began again at message 0; the sink logged ``FAULT CHANNEL_BROKEN: channel 32769`` and the source kept
every output (``RETAINED``) for good.
"""

from __future__ import annotations

from pathlib import Path

from pxproto.dime.endpoint import Address
from pxproto.node.testbed import Cluster
from pxproto.package import LocalStore
from pxproto.wire.codes import Command, CounterId, TlvType
from pxproto.wire.frame import Tlv
from tests._helpers import manifest, packaged_cluster, start

COUNT = 2000
ROUNDS = 3
STAGES_PY = """
def _source(ctx):
    for i in range(ctx.params["count"]):
        yield ctx.params["tag"].encode() + i.to_bytes(4, "big")

src0 = src1 = src2 = _source

def sink(item, ctx):
    ctx.commit("rw", item)
    return ()
"""


def _counter(c: Cluster, dest: Address, cid: int) -> int:
    v = c.ask(dest, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, cid)).param(TlvType.VALUE)
    return v if isinstance(v, int) else 0


def test_the_same_pair_wired_again_keeps_completing(tmp_path: Path) -> None:
    params = {f"src{r}": {"count": COUNT, "tag": f"r{r}"} for r in range(ROUNDS)}
    toml = manifest("rw", ["sink", *params], params=params)
    c = packaged_cluster(tmp_path, toml, STAGES_PY, kernels=2, dimes=2)
    try:
        src, snk = c.dime(0, 0), c.dime(1, 1)
        store = LocalStore(c.tmp / "state1" / "store")
        for r in range(ROUNDS):
            start(c, snk, 1, 0, "sink")
            start(c, src, 1, r + 1, f"src{r}")
            c.connect(src, snk, 1)
            want = COUNT * (r + 1)
            assert c.client.wait_for(lambda w=want: len(store.records("rw")) >= w, 60), (
                f"round {r}: {len(store.records('rw'))} of {want} items at the sink\n{c.log_text()[-3000:]}"
            )
            for _ in range(50):  # completions are coalesced (2 ms) and may be retransmitted: up to 10 s
                retained = _counter(c, src, CounterId.RETAINED)
                if retained == 0:
                    break
                c.client.wait_for(lambda: False, 0.2)
            assert retained == 0, f"round {r}: the source's DIME still keeps {retained} outputs no completion freed"
            for dest, stage in ((src, r + 1), (snk, 0)):
                c.ask(dest, Command.STOP, Tlv(TlvType.SERVICE_ID, 1), Tlv(TlvType.STAGE, stage))
        assert "CHANNEL_BROKEN" not in c.log_text()
        assert len(set(store.records("rw"))) == COUNT * ROUNDS
    finally:
        c.close()
