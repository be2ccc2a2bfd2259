"""Items through one DIME's stage, for bench/baremetal.py: the bare-metal guest's and a Linux pxkernel DIME's.

Both run the Workflow of tests/test_baremetal_plane.py (this process is the upstream and the downstream
channel ends, completions included) with the same package LOADed (pxproto.baremetal.builtin's archive).
"""

from __future__ import annotations

import itertools
import select
import time
from typing import Any

from pxproto import package
from pxproto.baremetal import builtin
from pxproto.dime.endpoint import Address
from pxproto.errors import ProtocolError
from pxproto.node.testbed import SIGNER, Cluster
from pxproto.wire import decode, encode
from pxproto.wire.codes import Command, Direction, Status, TlvType
from pxproto.wire.frame import Frame, Heartbeat, Tlv
from tests.test_baremetal_mice import GuestWorkflow
from tests.test_baremetal_net import Guest
from tests.test_baremetal_plane import CH, DOWN, UP, Workflow, _items

STAGES = {"transform": (2, "transform"), "parse": (1, "parse")}


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


class _Beats:
    """Heartbeats of the DIME under test seen while the items stream: (arrival, cpu permille)."""

    me: Address
    beats: list[tuple[float, int]]

    def note(self, frames: list[Frame]) -> list[Frame]:
        for f in frames:
            if isinstance(f.body, Heartbeat) and (f.src_mac, f.src_dime) == (self.me.mac, self.me.dime):
                self.beats.append((time.monotonic(), f.body.cpu_permille))
        return frames


class _Guest(_Beats, GuestWorkflow):
    def __init__(self, guest: Guest, stage: tuple[int, str]) -> None:
        self.stage, self.beats = stage, []
        super().__init__(guest)

    def turn(self) -> list[Frame]:
        return self.note(super().turn())


class _Linux(_Beats, Workflow):
    """The Workflow, its DIME a pxkernel DIME on a pxswitch UDP port (the Cluster's client socket)."""

    def __init__(self, c: Cluster, dest: Address, stage: tuple[int, str]) -> None:
        self.c, self.me, self.stage, self.beats = c, dest, stage, []
        self.sock = c.client.wire.sock  # type: ignore[attr-defined]
        self.t0 = time.monotonic()
        super().__init__(None)

    def setup(self) -> None:
        archive = builtin.archive()
        package.store_put(self.c.store, archive)
        ids = (Tlv(TlvType.SERVICE_ID, 42), Tlv(TlvType.STAGE, self.stage[0]))
        for cmd, params in (
            (Command.RESET, ()),
            (Command.LOAD, (*ids, Tlv(TlvType.MICE_NAME, self.stage[1]),
                            Tlv(TlvType.PACKAGE_DIGEST, package.digest(archive)),
                            Tlv(TlvType.PACKAGE_SIZE, len(archive)),
                            Tlv(TlvType.PACKAGE_SIG, package.sign(archive, SIGNER)))),
            (Command.START, ids),
        ):  # fmt: skip
            r = self.c.ask(self.me, cmd, *params)
            assert r.status is Status.OK, (cmd, r)
        self.connect(CH, "in", UP)
        self.wire_down(DOWN)

    def connect(self, ch: int, direction: str, peer: Address) -> None:
        self.c.wire(self.me, Direction.OUTPUT if direction == "out" else Direction.INPUT, peer, ch)

    def exchange(self, frame: Frame) -> list[Frame]:
        self.sock.send(encode(frame))
        return []

    def turn(self) -> list[Frame]:
        got: list[Frame] = []
        end = time.monotonic() + 0.005
        while (left := end - time.monotonic()) > 0 and select.select([self.sock], [], [], left)[0]:
            try:
                got.append(decode(self.sock.recv(65535)))
            except ProtocolError:
                continue
        self.now = time.monotonic() - self.t0
        return self.note(got)


def measure(wf: Any, n: int, period_ms: int) -> tuple[float, list[float], list[float]]:
    """Stream n items through the Workflow's DIME: items/s, the heartbeat gaps' deviations from the period (ms),
    and the DIME's CPU % its heartbeats reported meanwhile."""
    lines = _items(2400)  # the corpus, parsed; passes over it get lineages of their own
    items = [((1 << 48) | (i + 1), lines[i % len(lines)][1]) for i in range(n)]
    want = len(items)
    t0 = time.monotonic()
    wf.send(items)
    wf.run(600.0, until=lambda: len(wf.outputs) >= want and len(set(wf.completed)) >= want)
    took = time.monotonic() - t0
    assert len(wf.outputs) == want, f"{len(wf.outputs)} of {want} items came out"
    beats = [t for t, _ in wf.beats]
    dev = [abs((b - a) * 1e3 - period_ms) for a, b in itertools.pairwise(beats)]
    return want / took, dev, [c / 10 for _, c in wf.beats]


def _stream(wf: Any, n: int, period_ms: int) -> tuple[float, str, str]:
    rate, dev, cpu = measure(wf, n, period_ms)
    jitter = f"p50 {_pct(dev, 50):.1f} / p99 {_pct(dev, 99):.1f} ms (n={len(dev)})"
    load = f"median {_pct(cpu, 50):.0f}% / max {max(cpu, default=0):.0f}%"
    return rate, jitter, load


def _rows(run: Any, n: int, period_ms: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, stage in STAGES.items():
        rate, jitter, load = _stream(run(stage), n, period_ms)
        out[key] = f"{rate:,.0f} items/s (n={n})"
        out[key + "_rate"] = f"{rate:.3f}"
        if key == "transform":
            out["jitter_load"], out["cpu_load"] = jitter, load
    return out


def guest_workflow(g: Guest, stage: str = "transform") -> Any:
    """The Workflow through the guest's DIME 0 running the package's stage, its heartbeats noted."""
    return _Guest(g, STAGES[stage])


def bare_metal_stream(g: Guest, n: int, period_ms: int) -> dict[str, str]:
    return _rows(lambda stage: _Guest(g, stage), n, period_ms)


def linux_stream(c: Cluster, n: int, period_ms: int) -> dict[str, str]:
    return _rows(lambda stage: _Linux(c, c.dime(0, 0), stage), n, period_ms)
