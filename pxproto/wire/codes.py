"""Every code the wire carries, as IntEnums: the spec's value tables.

The Construct spec in :mod:`pxproto.wire.spec` wraps its integer fields in
these enums, and every generator (docs, fastpath constants, Lua dissector)
reads them from there.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

PROTOCOL_VERSION = 1
DIME_ALL = 0xFFFF
"""Destination DIME id of a system-scope frame, and source id of a server's kernel."""
CHUNK_BYTES = 2 * 1024 * 1024
"""A DIME's memory is counted in 2 MiB chunks (the paper's allocation unit)."""


class FrameClass(IntEnum):
    """The four frame classes; each has its own EtherType."""

    SIGNALING = 1
    DATA = 2
    DISCOVERY = 3
    HEARTBEAT = 4


class Scope(IntEnum):
    """Whom a frame is for: the whole server, or one DIME on it."""

    SYSTEM = 0
    DIME = 1


class HeaderFlag(IntFlag):
    """Bits of the common header's flags byte; the others must be zero."""

    SCOPE_DIME = 0x01
    AUTH = 0x02
    ENCRYPTED = 0x04
    """The body is AEAD ciphertext (same length as the clear body); the trailer's tag is the AEAD tag."""


class Fcaps(IntEnum):
    """The management area of a signaling command (the high nibble of its code)."""

    F = 0x0
    C = 0x1
    A = 0x2
    P = 0x3
    S = 0x4


class Command(IntEnum):
    """Signaling commands. Code = FCAPS area << 4 | index within the area."""

    PING = 0x01
    FAULT_REPORT = 0x02
    RESET = 0x03
    GET_PARAM = 0x10
    SET_PARAM = 0x11
    MEM_ALLOC = 0x12
    MEM_FREE = 0x13
    MEM_LIMIT = 0x14
    LOAD = 0x15
    START = 0x16
    STOP = 0x17
    CONNECT = 0x18
    DISCONNECT = 0x19
    USAGE = 0x20
    COUNTERS = 0x30
    SET_THRESHOLD = 0x31
    KEY_INSTALL = 0x40
    KEY_ROTATE = 0x41
    ACL_SET = 0x42
    ACL_GET = 0x43

    @property
    def fcaps(self) -> Fcaps:
        return Fcaps(self.value >> 4)


class Op(IntEnum):
    """Whether a signaling frame asks or answers."""

    REQUEST = 1
    RESPONSE = 2


class Status(IntEnum):
    """Outcome carried by a signaling response (a request carries OK)."""

    OK = 0
    UNKNOWN_COMMAND = 1
    BAD_PARAM = 2
    NO_MEMORY = 3
    BUSY = 4
    NOT_FOUND = 5
    DENIED = 6
    AUTH_FAILED = 7
    FAULTED = 8
    UNSUPPORTED = 9
    TIMEOUT = 10
    INTERNAL = 11


class DimeState(IntEnum):
    """Life cycle state of a DIME, as discovery and heartbeats report it."""

    FREE = 0
    BUSY = 1
    FAULTED = 2
    BOOTING = 3
    STOPPING = 4


STATE_ANY = 0xFF
"""A discovery probe's state filter that matches every DIME."""


class DiscoveryOp(IntEnum):
    """Discovery frame kinds."""

    PROBE = 1
    ANNOUNCE = 2
    GRATUITOUS = 3


class DataFlag(IntFlag):
    """Bits of a DATA frame's flags byte; the others must be zero."""

    ACK = 0x01
    FIN = 0x02


class Capability(IntFlag):
    """What a server's kernel can do, announced in discovery."""

    FASTPATH = 0x01
    AUTH = 0x02
    JUMBO = 0x04
    CGROUP_MEMORY = 0x08
    RLIMIT_MEMORY = 0x10
    RELIABLE_DATA = 0x20


class Param(IntEnum):
    """Run-time parameters that GET_PARAM and SET_PARAM name (TLV PARAM_ID)."""

    HEARTBEAT_PERIOD_MS = 1
    MEM_LIMIT_CHUNKS = 2
    RETRANSMIT_MS = 3
    CREDIT_WINDOW = 4
    LOG_LEVEL = 5


class FaultCode(IntEnum):
    """What went wrong, in a FAULT_REPORT (TLV FAULT_CODE)."""

    MICE_CRASHED = 1
    MEMORY_EXCEEDED = 2
    HEARTBEAT_LOST = 3
    CHANNEL_BROKEN = 4
    AUTH_FAILURE = 5
    OVERLOAD = 6


class Direction(IntEnum):
    """Which end of a MICE a data channel is wired to (TLV DIRECTION)."""

    INPUT = 0
    OUTPUT = 1


class TlvType(IntEnum):
    """Signaling parameter types. Unknown types are kept as raw bytes, so new
    parameters never break an old decoder."""

    PARAM_ID = 1
    VALUE = 2
    MEM_CHUNKS = 3
    SERVICE_ID = 4
    STAGE = 5
    MICE_NAME = 6
    PACKAGE_DIGEST = 7
    PACKAGE_SIZE = 8
    CHANNEL = 9
    PEER_MAC = 10
    PEER_DIME = 11
    PEER_THREAD = 12
    DIRECTION = 13
    FAULT_CODE = 14
    TEXT = 15
    CPU_NS = 16
    MEM_USED = 17
    FRAMES_RX = 18
    FRAMES_TX = 19
    BYTES_RX = 20
    BYTES_TX = 21
    COUNTER_ID = 22
    THRESHOLD = 23
    KEY_ID = 24
    KEY = 25
    ACL = 26
    ECHO = 27
    EPOCH = 28
    """In a response, the DIME's epoch. In a request (optional), the epoch of the DIME's life it is meant for: a
    DIME in another epoch answers DENIED (with its own EPOCH) and does nothing, so a command retransmitted past the
    DIME's restart does not act on its next life. The orchestrator puts it on every command it sends."""
    PACKAGE_SIG = 29
    LEADER_EPOCH = 30
    """Fencing: the orchestrator leader's epoch (its etcd election revision), on every request it sends. A DIME
    keeps the highest it has seen and answers a request carrying a lower one DENIED ("stale leader epoch"),
    so a deposed leader cannot act after a newer one has spoken. Requests without it are not fenced."""
    WRAPPED_KEY = 31
    """KEY_INSTALL's new key, never in clear: the wrapping key's id, then AES key wrap with padding (RFC 5649)
    under a key HKDF-SHA256 derives from that installed cluster key, bound to the new key id (see
    :func:`pxproto.dime.keys.wrap_key`). A listener without the wrapping key learns nothing of the new one."""


class TlvKind(IntEnum):
    """How a TLV's value is laid out."""

    U8 = 1
    U16 = 2
    U32 = 3
    U64 = 4
    TEXT = 5
    BYTES = 6
    MAC = 7
    DIGEST = 8
    ACL = 9


TLV_KINDS: dict[TlvType, TlvKind] = {
    TlvType.PARAM_ID: TlvKind.U16,
    TlvType.VALUE: TlvKind.U64,
    TlvType.MEM_CHUNKS: TlvKind.U32,
    TlvType.SERVICE_ID: TlvKind.U32,
    TlvType.STAGE: TlvKind.U16,
    TlvType.MICE_NAME: TlvKind.TEXT,
    TlvType.PACKAGE_DIGEST: TlvKind.DIGEST,
    TlvType.PACKAGE_SIZE: TlvKind.U64,
    TlvType.CHANNEL: TlvKind.U16,
    TlvType.PEER_MAC: TlvKind.MAC,
    TlvType.PEER_DIME: TlvKind.U16,
    TlvType.PEER_THREAD: TlvKind.U16,
    TlvType.DIRECTION: TlvKind.U8,
    TlvType.FAULT_CODE: TlvKind.U16,
    TlvType.TEXT: TlvKind.TEXT,
    TlvType.CPU_NS: TlvKind.U64,
    TlvType.MEM_USED: TlvKind.U32,
    TlvType.FRAMES_RX: TlvKind.U64,
    TlvType.FRAMES_TX: TlvKind.U64,
    TlvType.BYTES_RX: TlvKind.U64,
    TlvType.BYTES_TX: TlvKind.U64,
    TlvType.COUNTER_ID: TlvKind.U16,
    TlvType.THRESHOLD: TlvKind.U64,
    TlvType.KEY_ID: TlvKind.U16,
    TlvType.KEY: TlvKind.BYTES,
    TlvType.ACL: TlvKind.ACL,
    TlvType.ECHO: TlvKind.BYTES,
    TlvType.EPOCH: TlvKind.U32,
    TlvType.PACKAGE_SIG: TlvKind.BYTES,
    TlvType.LEADER_EPOCH: TlvKind.U64,
    TlvType.WRAPPED_KEY: TlvKind.BYTES,
}

TLV_ENUMS: dict[TlvType, type[IntEnum]] = {
    TlvType.PARAM_ID: Param,
    TlvType.DIRECTION: Direction,
    TlvType.FAULT_CODE: FaultCode,
}
"""TLVs whose integer value must be one of an enum's codes."""

FIXED_TLV_SIZES: dict[TlvKind, int] = {
    TlvKind.U8: 1,
    TlvKind.U16: 2,
    TlvKind.U32: 4,
    TlvKind.U64: 8,
    TlvKind.MAC: 6,
    TlvKind.DIGEST: 32,
}
ACL_ENTRY_SIZE = 8
"""An ACL TLV is a list of (peer MAC: 6 bytes, FCAPS area mask: u8, reserved: u8)."""
TEXT_MAX = 255
CPU_PERMILLE_MAX = 1000
"""A heartbeat's cpu_permille is at most this (1000 = every core busy)."""

# Parameters each command carries in its request and its response.  Endpoints
# check these; the codec only checks that every TLV is well formed.
COMMAND_PARAMS: dict[Command, tuple[tuple[TlvType, ...], tuple[TlvType, ...]]] = {
    Command.PING: ((TlvType.ECHO,), (TlvType.ECHO, TlvType.EPOCH)),
    Command.FAULT_REPORT: ((TlvType.FAULT_CODE, TlvType.TEXT), ()),
    Command.RESET: ((), (TlvType.EPOCH,)),
    Command.GET_PARAM: ((TlvType.PARAM_ID,), (TlvType.PARAM_ID, TlvType.VALUE)),
    Command.SET_PARAM: ((TlvType.PARAM_ID, TlvType.VALUE), (TlvType.PARAM_ID, TlvType.VALUE)),
    Command.MEM_ALLOC: ((TlvType.MEM_CHUNKS,), (TlvType.MEM_CHUNKS, TlvType.MEM_USED)),
    Command.MEM_FREE: ((TlvType.MEM_CHUNKS,), (TlvType.MEM_CHUNKS, TlvType.MEM_USED)),
    Command.MEM_LIMIT: ((TlvType.MEM_CHUNKS,), (TlvType.MEM_CHUNKS,)),
    Command.LOAD: (
        (
            TlvType.SERVICE_ID,
            TlvType.STAGE,
            TlvType.MICE_NAME,
            TlvType.PACKAGE_DIGEST,
            TlvType.PACKAGE_SIZE,
            TlvType.PACKAGE_SIG,
        ),
        (TlvType.SERVICE_ID, TlvType.STAGE),
    ),
    Command.START: ((TlvType.SERVICE_ID, TlvType.STAGE), (TlvType.EPOCH,)),
    Command.STOP: ((TlvType.SERVICE_ID, TlvType.STAGE), (TlvType.CPU_NS,)),
    Command.CONNECT: (
        (TlvType.CHANNEL, TlvType.DIRECTION, TlvType.PEER_MAC, TlvType.PEER_DIME, TlvType.PEER_THREAD),
        (TlvType.CHANNEL,),
    ),
    Command.DISCONNECT: ((TlvType.CHANNEL, TlvType.DIRECTION), (TlvType.CHANNEL,)),
    Command.USAGE: (
        (),
        (
            TlvType.CPU_NS,
            TlvType.MEM_USED,
            TlvType.FRAMES_RX,
            TlvType.FRAMES_TX,
            TlvType.BYTES_RX,
            TlvType.BYTES_TX,
        ),
    ),
    Command.COUNTERS: ((TlvType.COUNTER_ID,), (TlvType.COUNTER_ID, TlvType.VALUE)),
    Command.SET_THRESHOLD: ((TlvType.COUNTER_ID, TlvType.THRESHOLD), (TlvType.COUNTER_ID,)),
    Command.KEY_INSTALL: ((TlvType.KEY_ID, TlvType.WRAPPED_KEY), (TlvType.KEY_ID,)),
    Command.KEY_ROTATE: ((TlvType.KEY_ID,), (TlvType.KEY_ID,)),
    Command.ACL_SET: ((TlvType.ACL,), ()),
    Command.ACL_GET: ((), (TlvType.ACL,)),
}


# Counter ids that COUNTERS and SET_THRESHOLD name (TLV COUNTER_ID). A counter over its threshold
# (SET_THRESHOLD; 0 clears it) raises one FAULT_REPORT OVERLOAD notification per crossing.


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
    REJECTED_FENCED = 34
    """Requests refused because their LEADER_EPOCH was older than one already seen (a deposed orchestrator), or
    their EPOCH named another life of this DIME."""


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
    REJECTED_FENCED = 11
    """Requests refused because their LEADER_EPOCH was older than one any DIME of this server had accepted."""
