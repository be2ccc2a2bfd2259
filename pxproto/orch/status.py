"""The operator's table: one row per DIME (server, DIME, health, state, stage, load, heartbeat age, memory)."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("server", "server", "s"),
    ("dime", "dime", "d"),
    ("health", "health", "s"),
    ("state", "state", "s"),
    ("stage", "stage", "s"),
    ("replica", "replica", "s"),
    ("epoch", "epoch", "d"),
    ("cpu", "cpu %", ".1f"),
    ("rx_queue", "rx q", "d"),
    ("hb_age_ms", "hb age ms", ".0f"),
    ("mem", "mem chunks", "s"),
)
GAP = "  "
"""Between two columns, whatever their contents: a header never runs into its neighbour."""


def table(rows: list[dict[str, Any]]) -> str:
    """Rows of :meth:`Orchestrator.status` as a text table: each column as wide as its widest cell or title,
    text left-aligned, numbers right-aligned."""
    cells = []
    for r in rows:
        r = {**r, "mem": f"{r['mem_used']}/{r['mem_limit'] or r['mem_total']}"}
        cells.append([f"{r[key]:{fmt}}" for key, _, fmt in COLUMNS])
    widths = [max([len(title), *(len(c[i]) for c in cells)]) for i, (_, title, _) in enumerate(COLUMNS)]

    def line(values: list[str]) -> str:
        out = [
            f"{v:<{w}}" if fmt == "s" else f"{v:>{w}}"
            for v, w, (_, _, fmt) in zip(values, widths, COLUMNS, strict=True)
        ]
        return GAP.join(out).rstrip()

    head = line([title for _, title, _ in COLUMNS])
    return "\n".join([head, "-" * len(head), *(line(c) for c in cells)])
