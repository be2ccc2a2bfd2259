"""The operator's table: one row per DIME (server, DIME, health, state, stage, load, heartbeat age, memory)."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("server", "server", 18, "s"),
    ("dime", "dime", 5, "d"),
    ("health", "health", 8, "s"),
    ("state", "state", 9, "s"),
    ("stage", "stage", 22, "s"),
    ("replica", "replica", 9, "s"),
    ("epoch", "epoch", 6, "d"),
    ("cpu", "cpu %", 6, ".1f"),
    ("rx_queue", "rx q", 6, "d"),
    ("hb_age_ms", "hb age ms", 10, ".0f"),
    ("mem", "mem chunks", 11, "s"),
)


def table(rows: list[dict[str, Any]]) -> str:
    """Rows of :meth:`Orchestrator.status` as a fixed-width text table."""
    head = "".join(f"{title:<{w}}" if fmt == "s" else f"{title:>{w}}" for _, title, w, fmt in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        r = {**r, "mem": f"{r['mem_used']}/{r['mem_limit'] or r['mem_total']}"}
        cells = []
        for key, _, w, fmt in COLUMNS:
            v = r[key]
            cells.append(f"{v:<{w}}" if fmt == "s" else f"{v:>{w - 1}{fmt}} ")
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)
