"""The compiled forwarding loops' counters folded into the switch core's ``stats`` (``pxswitch stats``).

The core counts what Python forwarded; each compiled loop (the main thread's and every worker's) counts
what it forwarded itself, per port and for the switch.  :func:`add_loops` adds the loops' counts into the
core's dict, so a port's figures are the sum over every loop that handled it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pxproto.switch.core import CLASS_NAMES


def add_loops(st: dict[str, Any], loops: list[Any], fast_ports: dict[int, str]) -> None:
    """Add each loop's switch, malformed-field and per-port counters into ``st`` (the core's stats);
    ``fast_ports`` maps the port ids the compiled loops handle to their names."""
    if not loops:
        return
    mal = st["malformed"]
    for loop in loops:
        for k, v in loop.switch_counters().items():
            st["switch"][k] += v
        for k, v in loop.malformed_by_field().items():
            mal[k] = mal.get(k, 0) + v
        for pid, name in fast_ports.items():
            p = st["ports"][name]
            rx, rxb, tx, txb, drop, bad, rxc, txc, rx_big, tx_big = loop.counters(pid)
            p["rx_oversize"] += rx_big
            p["tx_oversize"] += tx_big
            p["rx"] += rx
            p["rx_bytes"] += rxb
            p["rx_malformed"] += bad
            p["tx"] += tx
            p["tx_bytes"] += txb
            p["tx_queue_drop"] += drop
            for cls, a, b in zip(CLASS_NAMES, rxc, txc, strict=True):
                p["rx_class"][cls] += a
                p["tx_class"][cls] += b
    st["malformed"] = dict(sorted(mal.items()))


def add_offload_errors(st: dict[str, Any], loops: Iterable[Any], fast_ports: dict[int, str]) -> None:
    """Add each loop's offload errors per port (after the ports' own ``describe()``, which sets ``errors``)."""
    for loop in loops:
        for pid, name in fast_ports.items():
            n = loop.offload_errors(pid)
            if n:
                errors = st["ports"][name]["errors"]
                errors["offload_error"] = errors.get("offload_error", 0) + n
