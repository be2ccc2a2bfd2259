"""The server's named counters behind each system-scope counter id (the ids are in :mod:`pxproto.wire.codes`)."""

from __future__ import annotations

from pxproto.wire.codes import CounterId, ServerCounterId

__all__ = ["SERVER_COUNTER_NAMES", "CounterId", "ServerCounterId"]

SERVER_COUNTER_NAMES: dict[ServerCounterId, tuple[str, ...]] = {
    ServerCounterId.WIRE_RX: ("wire_rx",),
    ServerCounterId.WIRE_TX: ("wire_tx",),
    ServerCounterId.DROPPED: ("dropped",),
    ServerCounterId.UNKNOWN_DIME: ("unknown_dime",),
    ServerCounterId.DIME_BUSY: ("dime_busy",),
    ServerCounterId.MALFORMED: ("malformed",),
    ServerCounterId.REJECTED_UNAUTHENTICATED: ("rejected_unauthenticated",),
    ServerCounterId.REJECTED_AUTH: ("rejected_bad_tag", "rejected_unknown_key", "rejected_retired_key"),
    ServerCounterId.REJECTED_REPLAY: ("rejected_replayed", "rejected_late"),
    ServerCounterId.FAULT_REPORTS: ("fault_reports",),
    ServerCounterId.REJECTED_FENCED: ("rejected_fenced",),
}
"""The server's named counters (pxproto/node/server.py) each id sums."""
