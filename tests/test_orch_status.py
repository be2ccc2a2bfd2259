"""``pxorch status``: a table whose headers never run together, whatever the cells hold."""

from __future__ import annotations

import itertools
from typing import Any

from pxproto.orch.status import COLUMNS, table


def _row(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "server": "02:00:00:00:00:01",
        "dime": 3,
        "health": "alive",
        "state": "running",
        "stage": "wordcount/transform",
        "replica": "2/3",
        "epoch": 7,
        "cpu": 12.5,
        "rx_queue": 0,
        "hb_age_ms": 41.0,
        "mem_used": 2,
        "mem_limit": 8,
        "mem_total": 16,
    }
    return {**row, **kw}


def test_every_header_stands_apart_and_every_cell_under_its_header() -> None:
    rows = [_row(), _row(dime=65534, health="suspected", stage="a-very-long-stage-name-indeed", hb_age_ms=123456.0)]
    lines = table(rows).splitlines()
    head = lines[0]
    titles = [title for _, title, _ in COLUMNS]
    for a, b in itertools.pairwise(titles):
        assert f"{a}  " in head and f"  {b}" in head, head  # two spaces at least between neighbours
    assert "dimehealth" not in head and "msmem" not in head
    assert set(lines[1]) == {"-"}
    # The columns line up: every row as long as the header (up to trailing spaces), cells found where expected.
    start = head.index("stage")
    assert lines[3][start:].startswith("a-very-long-stage-name-indeed")
    assert lines[2][start:].startswith("wordcount/transform")
    end = head.index("hb age ms") + len("hb age ms")
    assert lines[3][:end].endswith("123456")


def test_memory_shows_used_over_limit_or_total() -> None:
    text = table([_row(), _row(mem_limit=0)])
    assert "2/8" in text and "2/16" in text


def test_an_empty_pool_prints_the_header() -> None:
    assert table([]).splitlines()[0].startswith("server")
