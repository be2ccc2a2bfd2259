"""The FCAPS command handlers of a DIME: one function per command, dispatched by :data:`HANDLERS`.

Each takes the machine (:class:`pxproto.node.machine.DimeMachine`) and the request, and returns
the status and TLVs of the answer. They read the time as ``m.now`` and reach the host
(MICE processes, packages, CPU time) only through the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pxproto import package
from pxproto.dime.endpoint import Address
from pxproto.dime.keys import AccessList, unwrap_key
from pxproto.dime.signaling import RequestReceived, text_tlv
from pxproto.node.channels import CHANNEL_ENDS_MAX, COMPLETION_BIT
from pxproto.signing import VerifyKeys
from pxproto.wire.codes import DIME_ALL, Command, CounterId, DimeState, Direction, Param, Status, TlvType
from pxproto.wire.frame import Tlv

if TYPE_CHECKING:
    from pxproto.node.machine import DimeMachine

Tlvs = list[Tlv]
Reply = tuple[Status, Tlvs]
Handler = Callable[["DimeMachine", RequestReceived], Reply]

PARAM_BOUNDS = {
    Param.HEARTBEAT_PERIOD_MS: (1, 0xFFFF),
    Param.MEM_LIMIT_CHUNKS: (0, 1 << 20),
    Param.RETRANSMIT_MS: (1, 60_000),
    Param.CREDIT_WINDOW: (1, 0xFFFF),
    Param.LOG_LEVEL: (0, 5),
}


def _u64(v: Any) -> int:
    return int(v) if isinstance(v, int) else 0


def _mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


# ---------------------------------------------------------------- fault and configuration


def h_ping(m: DimeMachine, r: RequestReceived) -> Reply:
    echo = r.param(TlvType.ECHO)
    return Status.OK, [Tlv(TlvType.ECHO, echo if isinstance(echo, bytes) else b""), Tlv(TlvType.EPOCH, m.epoch)]


def h_fault_report(m: DimeMachine, r: RequestReceived) -> Reply:
    m.log(f"fault report from {_mac(r.peer.mac)}/{r.peer.dime}: {r.param(TlvType.TEXT)!s}")
    return Status.OK, []


def h_reset(m: DimeMachine, r: RequestReceived) -> Reply:
    m.stop_mice("reset")
    m.plane.clear()
    m.host.channels_cleared()
    m.loaded = None
    m.mem.reserved = 0
    m.acl = AccessList()
    m.epoch = m.host.next_epoch()
    m.keyring.epoch, m.keyring.sent = m.epoch, 0
    m.state = DimeState.FREE
    m.hb.epoch, m.hb.sent = m.epoch, 0
    m.cancel_beat()
    m.hb.stop()  # a heartbeat of the new epoch at once
    return Status.OK, [Tlv(TlvType.EPOCH, m.epoch)]


def param_value(m: DimeMachine, pid: int) -> int:
    return {
        Param.HEARTBEAT_PERIOD_MS: round(m.hb.period * 1000),
        Param.MEM_LIMIT_CHUNKS: m.mem.limit,
        Param.RETRANSMIT_MS: m.retransmit_ms,
        Param.CREDIT_WINDOW: m.credit_window,
        Param.LOG_LEVEL: m.log_level,
    }[Param(pid)]


def h_get_param(m: DimeMachine, r: RequestReceived) -> Reply:
    pid = _u64(r.param(TlvType.PARAM_ID))
    return Status.OK, [Tlv(TlvType.PARAM_ID, pid), Tlv(TlvType.VALUE, param_value(m, pid))]


def h_set_param(m: DimeMachine, r: RequestReceived) -> Reply:
    pid = Param(_u64(r.param(TlvType.PARAM_ID)))
    value = _u64(r.param(TlvType.VALUE))
    bounds = PARAM_BOUNDS[pid]
    if not bounds[0] <= value <= bounds[1]:
        return Status.BAD_PARAM, [text_tlv(f"{pid.name} must be in {bounds[0]}..{bounds[1]}, not {value}")]
    if pid is Param.HEARTBEAT_PERIOD_MS:
        m.cancel_beat()  # the armed one keeps the old schedule: send on the new one
        m.hb.set_period(value / 1000, m.now)
    elif pid is Param.MEM_LIMIT_CHUNKS:
        m.set_limit(value)
    elif pid is Param.RETRANSMIT_MS:
        m.retransmit_ms = value
    elif pid is Param.CREDIT_WINDOW:
        m.credit_window = value
    else:
        m.log_level = value
    return Status.OK, [Tlv(TlvType.PARAM_ID, int(pid)), Tlv(TlvType.VALUE, value)]


# ---------------------------------------------------------------- memory


def _mem_reply(m: DimeMachine) -> Tlvs:
    return [Tlv(TlvType.MEM_CHUNKS, m.mem.reserved), Tlv(TlvType.MEM_USED, m.mem.used)]


def h_mem_alloc(m: DimeMachine, r: RequestReceived) -> Reply:
    n = _u64(r.param(TlvType.MEM_CHUNKS))
    if m.mem.reserved + n > m.mem.limit:
        return Status.NO_MEMORY, [*_mem_reply(m), text_tlv(f"{n} more chunks pass the limit {m.mem.limit}")]
    m.mem.reserved += n
    return Status.OK, _mem_reply(m)


def h_mem_free(m: DimeMachine, r: RequestReceived) -> Reply:
    n = _u64(r.param(TlvType.MEM_CHUNKS))
    if n > m.mem.reserved:
        return Status.BAD_PARAM, [*_mem_reply(m), text_tlv(f"only {m.mem.reserved} chunks are reserved")]
    m.mem.reserved -= n
    return Status.OK, _mem_reply(m)


def h_mem_limit(m: DimeMachine, r: RequestReceived) -> Reply:
    n = _u64(r.param(TlvType.MEM_CHUNKS))
    if n < m.mem.reserved:
        return Status.BAD_PARAM, [text_tlv(f"{m.mem.reserved} chunks are reserved, the limit cannot go below")]
    m.set_limit(n)
    return Status.OK, [Tlv(TlvType.MEM_CHUNKS, n)]


# ---------------------------------------------------------------- the MICE


def h_load(m: DimeMachine, r: RequestReceived) -> Reply:
    from pxproto.node.machine import Loaded

    service, stage = _u64(r.param(TlvType.SERVICE_ID)), _u64(r.param(TlvType.STAGE))
    ids = [Tlv(TlvType.SERVICE_ID, service), Tlv(TlvType.STAGE, stage)]
    if m.mice is not None:
        return Status.BUSY, [*ids, text_tlv(f"MICE {m.mice.name} is running; STOP it first")]
    if not m.cfg.has_store:
        return Status.UNSUPPORTED, [*ids, text_tlv("this kernel has no --store")]
    dig, size, sig = r.param(TlvType.PACKAGE_DIGEST), r.param(TlvType.PACKAGE_SIZE), r.param(TlvType.PACKAGE_SIG)
    name = str(r.param(TlvType.MICE_NAME))
    try:
        assert isinstance(dig, bytes) and isinstance(sig, bytes)
        if not m.cfg.verify_keys and not m.cfg.insecure:
            raise package.PackageError("PACKAGE_SIG cannot be checked: this kernel has no --verify-key")
        keys = VerifyKeys.from_raw(m.cfg.verify_keys) if m.cfg.verify_keys else None
        path, manifest = m.host.fetch(dig, _u64(size), sig, keys)
        st = manifest.stage(stage)
    except package.PackageError as exc:
        m.counters[CounterId.REJECTED_AUTH] += "SIG" in str(exc)
        return Status.DENIED if "SIG" in str(exc) else Status.NOT_FOUND, [*ids, text_tlv(str(exc))]
    if st.name != name:
        return Status.BAD_PARAM, [*ids, text_tlv(f"stage {stage} is {st.name!r}, not {name!r}")]
    if st.memory_chunks > m.mem.limit:
        return Status.NO_MEMORY, [*ids, text_tlv(f"stage needs {st.memory_chunks} chunks, limit {m.mem.limit}")]
    m.loaded = Loaded(service, stage, name, path, st)
    m.manager = r.peer
    m.log(f"loaded service {service} stage {stage} ({name}) from {dig.hex()[:12]}")
    return Status.OK, ids


def h_start(m: DimeMachine, r: RequestReceived) -> Reply:
    service, stage = _u64(r.param(TlvType.SERVICE_ID)), _u64(r.param(TlvType.STAGE))
    if m.loaded is None or (m.loaded.service, m.loaded.stage) != (service, stage):
        return Status.NOT_FOUND, [text_tlv(f"service {service} stage {stage} is not loaded")]
    if m.mice is not None:
        return Status.BUSY, [text_tlv(f"MICE {m.mice.name} is running")]
    m.manager = r.peer
    m.start_mice(_u64(r.param(TlvType.VALUE)))  # a replacement source: the item to resume from
    return Status.OK, [Tlv(TlvType.EPOCH, m.epoch)]


def h_stop(m: DimeMachine, r: RequestReceived) -> Reply:
    service, stage = _u64(r.param(TlvType.SERVICE_ID)), _u64(r.param(TlvType.STAGE))
    if m.mice is None or (m.mice.service, m.mice.stage) != (service, stage):
        return Status.NOT_FOUND, [Tlv(TlvType.CPU_NS, 0), text_tlv("that MICE is not running")]
    cpu = m.host.cpu_ns(m.mice)[1]
    m.stop_mice("stop")
    return Status.OK, [Tlv(TlvType.CPU_NS, cpu)]


# ---------------------------------------------------------------- data channels


def h_connect(m: DimeMachine, r: RequestReceived) -> Reply:
    p = m.plane
    ch = _u64(r.param(TlvType.CHANNEL))
    if ch >= COMPLETION_BIT:
        return Status.BAD_PARAM, [Tlv(TlvType.CHANNEL, ch), text_tlv("channel ids are below 0x8000")]
    peer_mac = r.param(TlvType.PEER_MAC)
    assert isinstance(peer_mac, bytes)
    key = (ch, peer_mac, _u64(r.param(TlvType.PEER_DIME)))
    if key[2] == DIME_ALL:
        return Status.BAD_PARAM, [Tlv(TlvType.CHANNEL, ch), text_tlv("the peer must be a DIME, not 0xffff")]
    now = m.now
    output = _u64(r.param(TlvType.DIRECTION)) == Direction.OUTPUT
    end = (ch | COMPLETION_BIT, *key[1:]) if output else key
    if output and ch in p.outputs:
        p.unwire(ch)
    if end not in p.inputs and len(p.inputs) >= CHANNEL_ENDS_MAX:
        return Status.NO_MEMORY, [Tlv(TlvType.CHANNEL, ch), text_tlv(f"{CHANNEL_ENDS_MAX} channel ends wired")]
    p.inputs.add(end)
    p.receivers.pop(end, None)  # (re)wired: a fresh receiver
    if not output:  # and a fresh completion return, as the upstream's CONNECT gives it a fresh receiver of it
        p.senders.pop((ch | COMPLETION_BIT, *key[1:]), None)
    peer = Address(peer_mac, key[2], _u64(r.param(TlvType.PEER_THREAD)))
    if output:
        p.senders[key] = p.sender(peer, ch)
        p.outputs[ch] = key
        p.pump(now)
    m.host.wired(ch, output, peer, now)
    return Status.OK, [Tlv(TlvType.CHANNEL, ch)]


def h_disconnect(m: DimeMachine, r: RequestReceived) -> Reply:
    p = m.plane
    ch = _u64(r.param(TlvType.CHANNEL))
    output = _u64(r.param(TlvType.DIRECTION)) == Direction.OUTPUT
    replayed = m.host.unwired(ch, output, m.now)
    m.counters[CounterId.REPLAYED] += replayed
    if output:
        if ch not in p.outputs:
            return Status.NOT_FOUND, [Tlv(TlvType.CHANNEL, ch)]
        p.unwire(ch)
        p.pump(m.now)
    else:
        gone = [k for k in p.inputs if k[0] == ch]
        if not gone:
            return Status.NOT_FOUND, [Tlv(TlvType.CHANNEL, ch)]
        for k in gone:
            p.inputs.discard(k)
            p.receivers.pop(k, None)
            p.senders.pop((ch | COMPLETION_BIT, *k[1:]), None)  # its completion return: wired again from 0
    return Status.OK, [Tlv(TlvType.CHANNEL, ch)]


# ---------------------------------------------------------------- accounting and performance


def h_usage(m: DimeMachine, r: RequestReceived) -> Reply:
    c = m.counters
    return Status.OK, [
        Tlv(TlvType.CPU_NS, m.cpu_ns()),
        Tlv(TlvType.MEM_USED, m.mem.used),
        Tlv(TlvType.FRAMES_RX, c[CounterId.FRAMES_RX]),
        Tlv(TlvType.FRAMES_TX, c[CounterId.FRAMES_TX]),
        Tlv(TlvType.BYTES_RX, c[CounterId.BYTES_RX]),
        Tlv(TlvType.BYTES_TX, c[CounterId.BYTES_TX]),
    ]


def h_counters(m: DimeMachine, r: RequestReceived) -> Reply:
    cid = _u64(r.param(TlvType.COUNTER_ID))
    if cid not in CounterId._value2member_map_:
        return Status.NOT_FOUND, [Tlv(TlvType.COUNTER_ID, cid), Tlv(TlvType.VALUE, 0)]
    return Status.OK, [Tlv(TlvType.COUNTER_ID, cid), Tlv(TlvType.VALUE, m.counter(cid))]


def h_set_threshold(m: DimeMachine, r: RequestReceived) -> Reply:
    cid = _u64(r.param(TlvType.COUNTER_ID))
    if cid not in CounterId._value2member_map_:
        return Status.NOT_FOUND, [Tlv(TlvType.COUNTER_ID, cid)]
    value = _u64(r.param(TlvType.THRESHOLD))
    if value:
        m.thresholds[cid] = value
    else:
        m.thresholds.pop(cid, None)
    m.raised.discard(cid)
    return Status.OK, [Tlv(TlvType.COUNTER_ID, cid)]


# ---------------------------------------------------------------- security


def h_key_install(m: DimeMachine, r: RequestReceived) -> Reply:
    kid, wrapped = _u64(r.param(TlvType.KEY_ID)), r.param(TlvType.WRAPPED_KEY)
    if r.param(TlvType.KEY) is not None:  # the old clear form: never accepted, the key is burnt anyway
        return Status.BAD_PARAM, [Tlv(TlvType.KEY_ID, kid), text_tlv("a key in clear is refused: send WRAPPED_KEY")]
    if not m.keyring.enabled:
        return Status.UNSUPPORTED, [Tlv(TlvType.KEY_ID, kid), text_tlv("no cluster key to unwrap under (--insecure)")]
    if not isinstance(wrapped, bytes) or kid == 0:
        return Status.BAD_PARAM, [Tlv(TlvType.KEY_ID, kid), text_tlv("a key id 1..65535 and a WRAPPED_KEY")]
    try:
        key = unwrap_key(m.keyring, kid, wrapped, m.now)
        if len(key) < 16:
            raise ValueError("the unwrapped key has fewer than 16 bytes")
        m.keyring.install(kid, key)
    except ValueError as exc:  # wrong wrapping key, tampered, too short, or a retired key id
        m.counters[CounterId.REJECTED_AUTH] += 1
        return Status.BAD_PARAM, [Tlv(TlvType.KEY_ID, kid), text_tlv(str(exc))]
    return Status.OK, [Tlv(TlvType.KEY_ID, kid)]


def h_key_rotate(m: DimeMachine, r: RequestReceived) -> Reply:
    kid = _u64(r.param(TlvType.KEY_ID))
    if not m.keyring.has(kid, m.now):
        return Status.NOT_FOUND, [Tlv(TlvType.KEY_ID, kid)]
    m.keyring.rotate(kid, m.now)
    return Status.OK, [Tlv(TlvType.KEY_ID, kid)]


def h_acl_set(m: DimeMachine, r: RequestReceived) -> Reply:
    raw = r.param(TlvType.ACL)
    m.acl.set_raw(raw if isinstance(raw, bytes) else b"")
    return Status.OK, []


def h_acl_get(m: DimeMachine, r: RequestReceived) -> Reply:
    return Status.OK, [Tlv(TlvType.ACL, m.acl.raw())]


HANDLERS: dict[Command, Handler] = {
    Command.PING: h_ping,
    Command.FAULT_REPORT: h_fault_report,
    Command.RESET: h_reset,
    Command.GET_PARAM: h_get_param,
    Command.SET_PARAM: h_set_param,
    Command.MEM_ALLOC: h_mem_alloc,
    Command.MEM_FREE: h_mem_free,
    Command.MEM_LIMIT: h_mem_limit,
    Command.LOAD: h_load,
    Command.START: h_start,
    Command.STOP: h_stop,
    Command.CONNECT: h_connect,
    Command.DISCONNECT: h_disconnect,
    Command.USAGE: h_usage,
    Command.COUNTERS: h_counters,
    Command.SET_THRESHOLD: h_set_threshold,
    Command.KEY_INSTALL: h_key_install,
    Command.KEY_ROTATE: h_key_rotate,
    Command.ACL_SET: h_acl_set,
    Command.ACL_GET: h_acl_get,
}
"""Every command a DIME answers (the Responder answers UNSUPPORTED for the rest)."""
