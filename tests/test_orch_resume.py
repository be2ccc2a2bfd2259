"""A replacement source resumes from its lowest unfinished item (kernel side: the counter and START's VALUE)."""

from __future__ import annotations

import socket

from pxproto.node import mice
from pxproto.node.flow import Flow
from pxproto.node.mice import Context, source_lineage


def test_flow_reports_the_lowest_unfinished_source_item() -> None:
    f = Flow()
    assert f.source_resume(0) == 0
    assert f.source_resume(7) == 7
    for i in range(5):
        f.produced(source_lineage(0, i), b"x")
    assert f.source_resume() == 0
    f.downstream_completed(source_lineage(0, 0))
    f.downstream_completed(source_lineage(0, 2))
    assert f.source_resume() == 1, "item 1 is not finished, 2 is: resume at 1"
    f.downstream_completed(source_lineage(0, 1))
    assert f.source_resume() == 3
    for i in (3, 4):
        f.downstream_completed(source_lineage(0, i))
    assert f.source_resume() == 5, "everything made is finished: resume after the last"


def test_source_started_at_first_skips_the_items_before_it() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctx = Context(1, 0, "source", 0, 1, first=3)
    out = mice.Batcher(a)
    n = mice._emit(out, (bytes([i]) for i in range(6)), None, ctx, 0)
    out.flush()
    assert n == 6
    got = [(lin, data) for kind, lin, data in mice.records(b.recv(mice.SEQPACKET_MAX)) if kind == mice.OUT]
    assert got == [(source_lineage(0, i), bytes([i])) for i in (3, 4, 5)]
    a.close()
    b.close()
