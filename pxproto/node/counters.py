"""Counter ids that COUNTERS and SET_THRESHOLD name (TLV COUNTER_ID), per DIME.

A counter over its threshold (SET_THRESHOLD; 0 clears it) raises one
FAULT_REPORT OVERLOAD notification per crossing, checked at each heartbeat.
"""

from __future__ import annotations

from enum import IntEnum


class CounterId(IntEnum):
    FRAMES_RX = 1
    FRAMES_TX = 2
    BYTES_RX = 3
    BYTES_TX = 4
    ITEMS_IN = 5
    """Items handed to the MICE."""
    ITEMS_OUT = 6
    """Items the MICE produced."""
    DUPLICATES = 7
    """Item copies dropped by lineage (replays)."""
    REPLAYED = 8
    """Outputs sent again after a re-wire."""
    QUEUE_DEPTH = 9
    """Items waiting for the MICE plus outputs waiting for credit."""
    LATENCY_US = 10
    """Mean MICE processing time per item over the last heartbeat period, microseconds."""
    REJECTED_MALFORMED = 11
    REJECTED_AUTH = 12
    """Signaling frames with a bad tag or an unknown key id."""
    REJECTED_REPLAY = 13
    """Signaling frames whose counter was replayed or too late."""
    REJECTED_ACL = 14
    MEM_USED_CHUNKS = 15
    MEM_PEAK_CHUNKS = 16
    FAULTS = 17
    CPU_NS = 18
    ITEMS_PER_S = 19
    """Items the MICE completed per second over the last heartbeat period."""
    REJECTED_UNAUTHENTICATED = 20
    """Signaling frames without a trailer while a key is configured."""
    RETAINED = 21
    """Outputs kept until downstream completes them."""
    MEM_RETURNED_CHUNKS = 22
    """Chunks given back by MICE that ended."""
    DIME_CPU_NS = 23
    """CPU time of the DIME's own FCAPS loop (CPU_NS adds its MICE's)."""
    ITEM_FRAMES_TX = 24
    """Data frames sent carrying items (several items share a frame when they are small)."""
    WIRE_FALLBACK = 25
    """Data frames that could not go straight on the wire and went through the server instead."""
    TX_DROPPED = 26
    """Frames dropped because the server's relay had no room (retransmission recovers data)."""
    MICE_MESSAGES = 27
    """Record batches read from the MICE (ITEMS_OUT / this = items per batch)."""
    HEARTBEAT_LATE_MAX_US = 28
    """Largest lateness of a heartbeat behind its schedule as the DIME sent it, since this counter was last read."""
    SOURCE_RESUME = 29
    """A source: the index of its first item not yet completed downstream (every earlier one is); the point a
    replacement source resumes from (START's VALUE), so it does not re-yield what the workflow already finished."""
    HEARTBEATS_BY_LOOP = 30
    """Heartbeats the DIME's loop sent itself because the real-time sender thread had not (or there is none)."""
    ACKS_MERGED = 31
    """Channel acks not sent because a later ack of the same frames read together said the same and more."""
    REJECTED_DATA = 32
    """DATA frames dropped because no channel is wired with their sender (CONNECT), or the sender is DIME 0xffff."""
    FRAME_BUGS = 33
    """Frames whose handling raised an unexpected error (a kernel bug): caught at the frame boundary and logged."""


class ServerCounterId(IntEnum):
    """Counter ids that COUNTERS names at system scope (DIME 0xffff): the server's own wire and relay."""

    WIRE_RX = 1
    WIRE_TX = 2
    DROPPED = 3
    """Frames the server dropped on arrival: short, not Parallax, or another server's unicast."""
    UNKNOWN_DIME = 4
    """DIME-scope frames for a DIME id this server does not have."""
    DIME_BUSY = 5
    """Frames not relayed because the DIME's socket had no room."""
    MALFORMED = 6
    """System-scope frames the codec refused."""
    REJECTED_UNAUTHENTICATED = 7
    """System-scope frames without a trailer while a key is configured."""
    REJECTED_AUTH = 8
    """System-scope frames with a bad tag, or an unknown or retired key id."""
    REJECTED_REPLAY = 9
    """System-scope frames whose counter was replayed or too late."""
    FAULT_REPORTS = 10


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
}
"""The server's named counters (pxproto/node/server.py) each id sums."""
