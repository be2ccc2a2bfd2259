"""Canonical sample frames: every class, command, status, op and state, and
malformed frames with the field each must be rejected for.

The captures in ``captures/`` are these frames, recorded; the tests check that
the recorded bytes are exactly ``encode(frame)`` of this list, so a change to
the spec that alters the wire shows up as a stale capture.
"""

from __future__ import annotations

import struct
from dataclasses import replace

from pxproto.wire import auth, codes, spec
from pxproto.wire.codec import encode
from pxproto.wire.codes import DIME_ALL, Command, DimeState, DiscoveryOp, Op, Scope, Status, TlvType
from pxproto.wire.frame import Data, DimeInfo, Discovery, Frame, Heartbeat, Signaling, Tlv, connect_params

ORCH_MAC = bytes.fromhex("020000000001")
SERVER_MACS = [bytes.fromhex(f"0200000001{i:02x}") for i in range(1, 4)]
SAMPLE_KEY = b"pxproto sample key 0001"
SW_VERSION = 0x000100


def _value(t: TlvType, i: int) -> int | str | bytes:
    kind = codes.TLV_KINDS[t]
    if t is TlvType.PARAM_ID:
        return int(codes.Param.HEARTBEAT_PERIOD_MS)
    if t in codes.TLV_ENUMS:
        return int(next(iter(codes.TLV_ENUMS[t])))
    if kind in (codes.TlvKind.U8, codes.TlvKind.U16, codes.TlvKind.U32, codes.TlvKind.U64):
        return 100 + i
    if kind is codes.TlvKind.TEXT:
        return "wordcount" if t is TlvType.MICE_NAME else "stage 1 exited"
    if kind is codes.TlvKind.MAC:
        return SERVER_MACS[1]
    if kind is codes.TlvKind.DIGEST:
        return bytes(range(32))
    if kind is codes.TlvKind.ACL:
        return ORCH_MAC + bytes([0x1F, 0])
    return bytes([0xA5]) * 16


def _params(types: tuple[TlvType, ...]) -> tuple[Tlv, ...]:
    return tuple(Tlv(t, _value(t, i)) for i, t in enumerate(types))


def _from_orch(body: Signaling, dst_dime: int, dst_thread: int, seq: int) -> Frame:
    """A signaling frame from the orchestrator (its DIME_ALL, thread 0) to a DIME of the first server."""
    return Frame(body, Scope.DIME, DIME_ALL, 0, dst_dime, dst_thread, seq, SERVER_MACS[0], ORCH_MAC)


def signaling_samples() -> list[tuple[str, Frame]]:
    out = []
    for n, cmd in enumerate(Command, 1):
        req_params, resp_params = codes.COMMAND_PARAMS[cmd]
        req = _from_orch(Signaling(cmd, Op.REQUEST, 1000 + n, Status.OK, _params(req_params)), 2, 1, 2 * n)
        resp = Frame(
            Signaling(cmd, Op.RESPONSE, 1000 + n, Status.OK, _params(resp_params)),
            Scope.DIME,
            2,
            1,
            0,
            0,
            2 * n + 1,
            ORCH_MAC,
            SERVER_MACS[0],
        )
        out += [(f"{cmd.name} request", req), (f"{cmd.name} response", resp)]
    # An elected orchestrator stamps every request with its leader epoch (fencing).
    fenced = (*_params(codes.COMMAND_PARAMS[Command.START][0]), Tlv(TlvType.LEADER_EPOCH, 0x1_0000_0042))
    out.append(("START request fenced by a leader epoch", Frame(
        Signaling(Command.START, Op.REQUEST, 1999, Status.OK, fenced),
        Scope.DIME, 2, 0, 2, 1, 99, SERVER_MACS[0], ORCH_MAC,
    )))  # fmt: skip
    for status in Status:
        if status is Status.OK:
            continue
        err = Frame(
            Signaling(Command.LOAD, Op.RESPONSE, 2000 + status, status, (Tlv(TlvType.TEXT, status.name.lower()),)),
            Scope.DIME,
            3,
            0,
            0,
            0,
            100 + status,
            ORCH_MAC,
            SERVER_MACS[1],
        )
        out.append((f"LOAD response {status.name}", err))
    system = Frame(
        Signaling(Command.RESET, Op.REQUEST, 3000), Scope.SYSTEM, DIME_ALL, 0, DIME_ALL, 0, 1, SERVER_MACS[2], ORCH_MAC
    )
    out.append(("RESET request to a whole server, padded", replace(system, padding=60 - len(encode(system)))))
    unknown_tlvs = (Tlv(TlvType.PARAM_ID, 1), Tlv(0x7F00, b"future"))
    unknown = _from_orch(Signaling(Command.GET_PARAM, Op.REQUEST, 3001, Status.OK, unknown_tlvs), 1, 0, 2)
    out.append(("GET_PARAM with an unknown TLV type", unknown))
    rewire = connect_params(7, codes.Direction.OUTPUT, SERVER_MACS[2], 4)
    wiring = _from_orch(Signaling(Command.CONNECT, Op.REQUEST, 3002, Status.OK, rewire), 1, 0, 3)
    out.append(("CONNECT re-wiring an output channel", wiring))
    fault = Frame(
        Signaling(
            Command.FAULT_REPORT,
            Op.REQUEST,
            3003,
            Status.OK,
            (Tlv(TlvType.FAULT_CODE, int(codes.FaultCode.MEMORY_EXCEEDED)), Tlv(TlvType.MEM_USED, 9)),
        ),
        Scope.DIME,
        5,
        0,
        0,
        0,
        4,
        ORCH_MAC,
        SERVER_MACS[1],
    )
    out.append(("FAULT_REPORT memory exceeded", fault))
    clear = Signaling(Command.KEY_INSTALL, Op.REQUEST, 999, Status.OK, _params((TlvType.KEY_ID, TlvType.KEY)))
    out.append(
        (
            "KEY_INSTALL request, old clear KEY form (refused)",
            _from_orch(clear, 2, 1, 998),
        )
    )
    return out


def data_samples() -> list[tuple[str, Frame]]:
    out: list[tuple[str, Frame]] = []
    src, dst = SERVER_MACS[0], SERVER_MACS[1]

    def frag(msg_id: int, msg: bytes, mtu: int, label: str) -> None:
        room = mtu - spec.HEADER_LEN - spec.DataFixed.sizeof()
        pieces = [msg[i : i + room] for i in range(0, len(msg), room)] or [b""]
        for k, piece in enumerate(pieces):
            body = Data(3, msg_id, piece, len(msg), k * room, k, len(pieces), 0, 0, codes.DataFlag(0))
            out.append(
                (
                    f"{label} fragment {k + 1} of {len(pieces)}",
                    Frame(body, Scope.DIME, 1, 0, 2, 0, 500 + len(out), dst, src),
                )
            )

    frag(1, b"hello, stage two", 1500, "small message")
    frag(2, bytes(i & 0xFF for i in range(65536)), 1500, "64 KiB message, 1500 MTU")
    frag(3, bytes((7 * i) & 0xFF for i in range(20000)), 9000, "20000-byte message, jumbo MTU")
    ack = Data(3, 0, b"", 0, 0, 0, 0, 3, 64, codes.DataFlag.ACK)
    out.append(("acknowledgement with credit", Frame(ack, Scope.DIME, 2, 0, 1, 0, 900, src, dst)))
    fin = Data(3, 4, b"end", 3, 0, 0, 1, 2, 8, codes.DataFlag.ACK | codes.DataFlag.FIN)
    out.append(("last message with FIN and piggybacked ack", Frame(fin, Scope.DIME, 1, 0, 2, 0, 901, dst, src)))
    return out


def discovery_samples() -> list[tuple[str, Frame]]:
    caps = int(codes.Capability.FASTPATH | codes.Capability.AUTH | codes.Capability.RLIMIT_MEMORY)
    probe = Frame(
        Discovery(DiscoveryOp.PROBE, 77, SW_VERSION, caps, codes.STATE_ANY),
        Scope.SYSTEM,
        DIME_ALL,
        0,
        DIME_ALL,
        0,
        1,
        b"\xff" * 6,
        ORCH_MAC,
    )
    free_probe = Frame(
        Discovery(DiscoveryOp.PROBE, 78, SW_VERSION, caps, int(DimeState.FREE)),
        Scope.SYSTEM,
        DIME_ALL,
        0,
        DIME_ALL,
        0,
        2,
        b"\xff" * 6,
        ORCH_MAC,
    )
    dimes = tuple(DimeInfo(i, i, state, 16, 16 - 4 * (state is DimeState.BUSY), 3) for i, state in enumerate(DimeState))
    announce = Frame(
        Discovery(DiscoveryOp.ANNOUNCE, 77, SW_VERSION, caps, codes.STATE_ANY, dimes),
        Scope.SYSTEM,
        DIME_ALL,
        0,
        DIME_ALL,
        0,
        1,
        ORCH_MAC,
        SERVER_MACS[0],
    )
    boot = Frame(
        Discovery(
            DiscoveryOp.GRATUITOUS,
            0,
            SW_VERSION,
            caps,
            codes.STATE_ANY,
            tuple(DimeInfo(i, i, DimeState.FREE, 8, 8, 1) for i in range(2)),
        ),
        Scope.SYSTEM,
        DIME_ALL,
        0,
        DIME_ALL,
        0,
        1,
        b"\xff" * 6,
        SERVER_MACS[1],
    )
    return [
        ("probe for any DIME, padded", replace(probe, padding=60 - len(encode(probe)))),
        ("probe for free DIMEs, padded", replace(free_probe, padding=60 - len(encode(free_probe)))),
        ("announce answering probe 77", announce),
        ("gratuitous announce at boot", boot),
    ]


def heartbeat_samples() -> list[tuple[str, Frame]]:
    out = []
    for i, state in enumerate(DimeState):
        hb = Heartbeat(3, state, 100, 250 * (state is DimeState.BUSY), 1, 4, 16, 2, 0, 42 * (state is DimeState.BUSY))
        out.append(
            (f"heartbeat {state.name}", Frame(hb, Scope.SYSTEM, i, 0, DIME_ALL, 0, 10 + i, b"\xff" * 6, SERVER_MACS[0]))
        )
    return out


def auth_samples() -> list[tuple[str, bytes]]:
    """Signed frames, as wire bytes (the tag depends on the key)."""
    load = signaling_samples()[2 * (list(Command).index(Command.LOAD))][1]
    hb = heartbeat_samples()[1][1]
    return [
        ("LOAD request signed with key 1", auth.sign(load, 1, 1, SAMPLE_KEY)),
        ("heartbeat signed with key 1", auth.sign(hb, 1, 2, SAMPLE_KEY)),
    ]


def valid_samples() -> list[tuple[str, bytes]]:
    """Every sample, as (description, wire bytes), in capture order."""
    frames = signaling_samples() + data_samples() + discovery_samples() + heartbeat_samples()
    return [(name, encode(f)) for name, f in frames] + auth_samples()


def _with(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value) :]


def malformed_samples() -> list[tuple[str, str, int, bytes]]:
    """(reason, expected ProtocolError.field, expected offset, bytes) for each malformed frame."""
    sig = dict(valid_samples())
    load = sig["LOAD request"]
    ping = sig["PING request"]
    hb = sig["heartbeat FREE"]
    data = sig["small message fragment 1 of 1"]
    ack = sig["acknowledgement with credit"]
    announce = sig["announce answering probe 77"]
    boot = sig["gratuitous announce at boot"]
    signed = sig["LOAD request signed with key 1"]
    connect = sig["CONNECT request"]
    b = spec.BODY_OFFSET
    h = spec.ETH_LEN
    tlv0 = b + 8

    def hlen(raw: bytes, n: int) -> bytes:
        return _with(raw, h + 2, struct.pack(">H", n))

    return [
        ("truncated Ethernet header", "eth", 0, load[:10]),
        ("truncated Parallax header", "header", 14, load[:20]),
        ("version 2", "version", 14, _with(load, h, b"\x02")),
        ("reserved header flag bit set", "flags", 15, _with(load, h + 1, b"\x81")),
        ("length field longer than the frame", "len", 16, hlen(load, 900)),
        ("bytes after the frame end", "len", 16, load + b"\x01\x02\x03"),
        (
            "non-zero bytes padding a short frame",
            "len",
            16,
            _with(sig["RESET request to a whole server, padded"], 59, b"\x01"),
        ),
        ("DATA frame with SYSTEM scope", "flags", 15, _with(data, h + 1, b"\x00")),
        ("HEARTBEAT with DIME scope", "flags", 15, _with(hb, h + 1, b"\x01")),
        (
            "SYSTEM scope addressed to one DIME",
            "dime.dst",
            22,
            _with(sig["RESET request to a whole server, padded"], h + 8, b"\x00\x01"),
        ),
        ("DIME scope addressed to 0xffff", "dime.dst", 22, _with(load, h + 8, b"\xff\xff")),
        ("heartbeat from DIME 0xffff", "dime.src", 18, _with(hb, h + 4, b"\xff\xff")),
        ("signaling body shorter than its fixed part", "len", 16, hlen(load, 4)[: b + 4]),
        ("unknown command 0x7e", "cmd", b + 4, _with(load, b + 4, b"\x7e")),
        ("unknown op 9", "op", b + 5, _with(load, b + 5, b"\x09")),
        ("unknown status 0x99", "status", b + 6, _with(sig["LOAD response"], b + 6, b"\x99")),
        ("request carrying a failure status", "status", b + 6, _with(load, b + 6, b"\x04")),
        ("TLV count larger than the TLVs", "tlv", len(ping), _with(ping, b + 7, b"\x02")),
        ("TLV count smaller than the TLVs", "tlv_count", b + 7, _with(load, b + 7, b"\x01")),
        ("TLV length past the body", "tlv.length", tlv0 + 2, _with(ping, tlv0 + 2, b"\x00\x40")),
        (
            "u32 TLV with a 2-byte value",
            "tlv.service_id",
            tlv0 + 2,
            hlen(load[: tlv0 + 2] + b"\x00\x02\x00\x07" + load[tlv0 + 8 :], len(load) - b - 2),
        ),
        ("duplicate TLV type", "tlv", tlv0 + 8, _with(load, tlv0 + 8, b"\x00\x04")),
        ("MICE name not UTF-8", "tlv.mice_name", tlv0 + 8 + 6 + 4, _with(load, tlv0 + 8 + 6 + 4, b"\xff")),
        ("DIRECTION TLV with an unknown code", "tlv.direction", tlv0 + 10, _with(connect, tlv0 + 10, b"\x07")),
        ("fragment index beyond the count", "data.frag_index", b + 15, _with(data, b + 15, b"\x00\x05")),
        ("fragment past the message length", "data.frag_offset", b + 11, _with(data, b + 7, b"\x00\x00\x00\x02")),
        (
            "ack-only frame without the ACK flag",
            "data.flags",
            b + 2,
            _with(_with(ack, b + 2, b"\x00"), b + 19, bytes(6)),
        ),
        ("ack value without the ACK flag", "data.ack", b + 19, _with(data, b + 19, b"\x00\x00\x00\x09")),
        ("reserved DATA flag bit", "data.flags", b + 2, _with(data, b + 2, b"\x80")),
        ("announce count disagrees with its records", "disc.count", b + 2, _with(announce, b + 2, b"\x00\x09")),
        ("gratuitous announce answering a probe", "disc.probe_id", b + 4, _with(boot, b + 4, b"\x00\x00\x00\x01")),
        (
            "announced DIME with more free than total memory",
            "disc.dime.mem_free",
            b + 16 + 9,
            _with(announce, b + 16 + 9, b"\x00\x00\x01\x00"),
        ),
        ("unknown DIME state in an announce", "disc.dime.state", b + 16 + 4, _with(announce, b + 16 + 4, b"\x33")),
        ("heartbeat body too long", "len", 16, hlen(hb + b"\x00", len(hb) - b + 1)),
        ("heartbeat with an unknown state", "hb.state", b + 4, _with(hb, b + 4, b"\x09")),
        ("heartbeat period 0", "hb.period_ms", b + 5, _with(hb, b + 5, b"\x00\x00")),
        ("CPU load over 1000 permille", "hb.cpu_permille", b + 7, _with(hb, b + 7, b"\x04\x00")),
        ("truncated authentication trailer", "auth", len(signed) - spec.AUTH_LEN, signed[:-5]),
        (
            "authentication key id 0",
            "auth.key_id",
            len(signed) - spec.AUTH_LEN,
            _with(signed, len(signed) - spec.AUTH_LEN, b"\x00\x00"),
        ),
        (
            "authentication counter 0",
            "auth.counter",
            len(signed) - spec.AUTH_LEN + 2,
            _with(signed, len(signed) - spec.AUTH_LEN + 2, bytes(8)),
        ),
    ]
