"""The C source and sink on a QEMU guest (TCG): the demo's source sends the corpus from the guest exactly as
the Python one does, and the guest's sink commits the whole workflow's results to the server's store (its
second serial port, a file here) once per lineage, with the exact answer; a replacement sink on the same
server (RESET, LOAD, START, a re-wired upstream replaying) completes the replayed items and writes nothing
again, as pxproto.node.mice.Context.commit does on Linux."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from pxproto.dime.channel import ChannelSender
from pxproto.dime.channel_rx import ChannelReceiver
from pxproto.wire.codes import Command, Status, TlvType
from pxproto.wire.frame import Tlv
from tests import test_baremetal_net as net
from tests.test_baremetal_endstages import source_items
from tests.test_baremetal_mice import GuestWorkflow
from tests.test_baremetal_net import KEY, KEY_ID, VK, Guest, call, request
from tests.test_baremetal_plane import CH, DONE, PKG, UP, _stages

pytestmark = net.pytestmark


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    net.build()
    d = tmp_path_factory.mktemp("ends")
    mono = int(time.monotonic() * 1000)
    append = f"key={KEY_ID}:{KEY.hex()} {VK} hb=100 chunks=8 mono={mono}"
    with Guest(smp=1, append=append, logdir=d, extra=("-serial", f"file:{d / 'results'}")) as g:
        g.store, g.mono = d / "results", mono / 1000  # type: ignore[attr-defined]
        yield g.booted(1)


class SourceWorkflow(GuestWorkflow):
    stage = (0, "source")


class SinkWorkflow(GuestWorkflow):
    stage = (3, "sink")


def records(path: Path) -> list[tuple[int, float, bytes]]:
    """The store object's records (pxproto.package.LocalStore framing; the sink's lineage | time | item)."""
    raw, out, pos = path.read_bytes(), [], 0
    while pos + 4 <= len(raw):
        (n,) = struct.unpack_from("!I", raw, pos)
        assert pos + 4 + n <= len(raw), "a torn record"
        lin, t = struct.unpack_from("!Qd", raw, pos + 4)
        out.append((lin, t, raw[pos + 20 : pos + 4 + n]))
        pos += 4 + n
    return out


def test_the_guests_source_sends_the_corpus_as_the_python_source(guest: Guest) -> None:
    wf = SourceWorkflow(guest)
    want = source_items()
    t0 = time.monotonic()
    wf.run(120.0, until=lambda: len(wf.outputs) == len(want))
    took = time.monotonic() - t0
    assert wf.outputs == want
    assert took >= 2400 / 400 * 0.9, took  # paced at the package's rate, 400 lines a second
    ids = Tlv(TlvType.SERVICE_ID, 42), Tlv(TlvType.STAGE, 0)
    assert call(guest, request(Command.STOP, 0, wf.next_req(), *ids)).status is Status.OK


def test_the_guests_sink_commits_the_exact_answer_once_across_a_replacement(guest: Guest) -> None:
    st, ctx = _stages(), SimpleNamespace(params={"work_us": 0})
    items = [(lin, next(st.transform(next(st.parse(v[0], ctx)), ctx))) for lin, v in source_items().items()]
    wf = SinkWorkflow(guest)
    wf.send(items)
    wf.run(180.0, until=lambda: len(set(wf.completed)) == len(items))
    assert sorted(set(wf.completed)) == [lin for lin, _ in items]
    recs = records(guest.store)  # type: ignore[attr-defined]
    assert sorted((lin, item) for lin, _, item in recs) == sorted(items)  # each lineage once, as sent
    answer = json.loads((PKG / "answer.json").read_text())
    fields = [item.split(b"\t") for _, _, item in recs]
    assert (len(recs), sum(int(f[1]) for f in fields), sum(int(f[2]) for f in fields)) == (
        answer["lines"], answer["words"], answer["checksum_sum"],
    )  # fmt: skip
    now = time.monotonic()
    assert all(guest.mono <= t <= now for _, t, _ in recs)  # type: ignore[attr-defined]  # the host's clock
    # the sink is replaced on this server (a new epoch, nothing of the old plane), its upstream replays
    wf2 = SinkWorkflow(guest)
    wf2.send(items[-200:])
    wf2.run(60.0, until=lambda: len(set(wf2.completed)) == 200)
    assert sorted(set(wf2.completed)) == [lin for lin, _ in items[-200:]]
    assert records(guest.store) == recs  # type: ignore[attr-defined]  # nothing committed twice
    # and a re-wired upstream of the same sink: completed at once (the plane's own memory)
    wf2.up_tx, wf2.up_done = ChannelSender(UP, wf2.me, CH, mtu=1500), ChannelReceiver(UP, wf2.me, CH | DONE)
    wf2.completed.clear()
    wf2.connect(CH, "in", UP)
    wf2.send(items[:100])
    wf2.run(60.0, until=lambda: len(set(wf2.completed)) == 100)
    assert records(guest.store) == recs  # type: ignore[attr-defined]
