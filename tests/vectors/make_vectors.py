"""Write tests/vectors/frames.json: frames built byte by byte with struct and
literal code tables, independent of pxproto, with the fields each must decode to.

Run ``python tests/vectors/make_vectors.py`` after a deliberate wire change;
tests/test_vectors.py fails when the committed file differs from its output.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

ETHERTYPE = {"SIGNALING": 0xABBA, "DATA": 0xABBB, "DISCOVERY": 0xABBC, "HEARTBEAT": 0xABBD}
COMMANDS = {
    "PING": (0x01, "F"),
    "FAULT_REPORT": (0x02, "F"),
    "RESET": (0x03, "F"),
    "GET_PARAM": (0x10, "C"),
    "SET_PARAM": (0x11, "C"),
    "MEM_ALLOC": (0x12, "C"),
    "MEM_FREE": (0x13, "C"),
    "MEM_LIMIT": (0x14, "C"),
    "LOAD": (0x15, "C"),
    "START": (0x16, "C"),
    "STOP": (0x17, "C"),
    "CONNECT": (0x18, "C"),
    "DISCONNECT": (0x19, "C"),
    "USAGE": (0x20, "A"),
    "COUNTERS": (0x30, "P"),
    "SET_THRESHOLD": (0x31, "P"),
    "KEY_INSTALL": (0x40, "S"),
    "KEY_ROTATE": (0x41, "S"),
    "ACL_SET": (0x42, "S"),
    "ACL_GET": (0x43, "S"),
}
STATUSES = [
    "OK",
    "UNKNOWN_COMMAND",
    "BAD_PARAM",
    "NO_MEMORY",
    "BUSY",
    "NOT_FOUND",
    "DENIED",
    "AUTH_FAILED",
    "FAULTED",
    "UNSUPPORTED",
    "TIMEOUT",
    "INTERNAL",
]
STATES = ["FREE", "BUSY", "FAULTED", "BOOTING", "STOPPING"]
A = bytes.fromhex("02aa00000001")
B = bytes.fromhex("02bb00000002")


def mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def frame(
    cls: str,
    flags: int,
    body: bytes,
    sd: int,
    st: int,
    dd: int,
    dt: int,
    seq: int,
    trailer: bytes = b"",
    dst: bytes = B,
    src: bytes = A,
) -> bytes:
    eth = dst + src + struct.pack(">H", ETHERTYPE[cls])
    return eth + struct.pack(">BBHHHHHQ", 1, flags, len(body), sd, st, dd, dt, seq) + body + trailer


def common(cls: str, flags: int, sd: int, st: int, dd: int, dt: int, seq: int, length: int) -> dict[str, object]:
    return {
        "px.class": cls,
        "px.eth.type": ETHERTYPE[cls],
        "px.eth.src": mac(A),
        "px.eth.dst": mac(B),
        "px.version": 1,
        "px.flags": flags,
        "px.scope": "DIME" if flags & 1 else "SYSTEM",
        "px.dime.src": sd,
        "px.thread.src": st,
        "px.dime.dst": dd,
        "px.thread.dst": dt,
        "px.seq": seq,
        "px.len": length,
    }


def vectors() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []

    def add(name: str, raw: bytes, fields: dict[str, object]) -> None:
        out.append({"name": name, "hex": raw.hex(), "fields": fields})

    seq = 1 << 40  # wide sequence numbers are the point of a 64-bit field
    for name, (code, area) in COMMANDS.items():
        for op, opname in ((1, "REQUEST"), (2, "RESPONSE")):
            body = struct.pack(">IBBBB", 0xC0DE0000 + code, code, op, 0, 0)
            f = common("SIGNALING", 1, 0xFFFF, 0, 7, 3, seq, len(body))
            f.update(
                {
                    "px.req_id": 0xC0DE0000 + code,
                    "px.cmd": name,
                    "px.fcaps": area,
                    "px.op": opname,
                    "px.status": "OK",
                    "px.tlv_count": 0,
                }
            )
            add(f"{name} {opname.lower()}", frame("SIGNALING", 1, body, 0xFFFF, 0, 7, 3, seq), f)
            seq += 1
    for code, status in enumerate(STATUSES):
        body = struct.pack(">IBBBB", 77, 0x16, 2, code, 0)
        f = common("SIGNALING", 1, 4, 0, 9, 0, seq, len(body))
        f.update({"px.cmd": "START", "px.op": "RESPONSE", "px.status": status})
        add(f"START response {status}", frame("SIGNALING", 1, body, 4, 0, 9, 0, seq), f)
        seq += 1
    tlvs = [
        (1, struct.pack(">H", 1), "param_id", "HEARTBEAT_PERIOD_MS"),
        (2, struct.pack(">Q", 250), "value", 250),
        (3, struct.pack(">I", 12), "mem_chunks", 12),
        (6, b"sorter", "mice_name", "sorter"),
        (7, bytes(range(32)), "package_digest", bytes(range(32)).hex()),
        (10, B, "peer_mac", mac(B)),
        (13, b"\x01", "direction", "OUTPUT"),
        (14, struct.pack(">H", 2), "fault_code", "MEMORY_EXCEEDED"),
        (26, A + b"\x1f\x00", "acl", (A + b"\x1f\x00").hex()),
        (0x7F01, b"new", "t32513", b"new".hex()),
    ]
    body = struct.pack(">IBBBB", 5, 0x11, 1, 0, len(tlvs)) + b"".join(
        struct.pack(">HH", t, len(v)) + v for t, v, _, _ in tlvs
    )
    f = common("SIGNALING", 1, 0xFFFF, 0, 2, 0, seq, len(body))
    f.update({"px.cmd": "SET_PARAM", "px.tlv_count": len(tlvs)})
    f.update({f"px.tlv.{k}": v for _, _, k, v in tlvs})
    add("SET_PARAM with TLVs of every kind and one unknown type", frame("SIGNALING", 1, body, 0xFFFF, 0, 2, 0, seq), f)
    payload = b"0123456789"
    body = struct.pack(">HBIIIHHIH", 9, 0, 3, 30, 10, 1, 3, 0, 0) + payload
    f = common("DATA", 1, 1, 2, 3, 4, 50, len(body))
    f.update(
        {
            "px.data.channel": 9,
            "px.data.msg_id": 3,
            "px.data.msg_len": 30,
            "px.data.frag_offset": 10,
            "px.data.frag_index": 1,
            "px.data.frag_count": 3,
            "px.data.payload_len": 10,
            "px.data.flags.ack": False,
        }
    )
    add("DATA fragment 2 of 3", frame("DATA", 1, body, 1, 2, 3, 4, 50), f)
    body = struct.pack(">HBIIIHHIH", 9, 1, 0, 0, 0, 0, 0, 3, 16)
    f = common("DATA", 1, 3, 4, 1, 2, 51, len(body))
    f.update({"px.data.frag_count": 0, "px.data.ack": 3, "px.data.credit": 16, "px.data.flags.ack": True})
    add("DATA acknowledgement", frame("DATA", 1, body, 3, 4, 1, 2, 51), f)
    body = struct.pack(">BBHIII", 1, 0, 0, 99, 0x000100, 3)
    raw = frame("DISCOVERY", 0, body, 0xFFFF, 0, 0xFFFF, 0, 1)
    f = common("DISCOVERY", 0, 0xFFFF, 0, 0xFFFF, 0, 1, len(body))
    f.update(
        {
            "px.disc.op": "PROBE",
            "px.disc.state_filter": "FREE",
            "px.disc.probe_id": 99,
            "px.disc.count": 0,
            "px.eth.padding": 60 - len(raw),
        }
    )
    add("DISCOVERY probe for free DIMEs, padded to 60 bytes", raw + bytes(60 - len(raw)), f)
    recs = struct.pack(">HHBIII", 0, 0, 0, 8, 8, 2) + struct.pack(">HHBIII", 1, 1, 1, 8, 3, 2)
    body = struct.pack(">BBHIII", 2, 0xFF, 2, 99, 0x000100, 3) + recs
    f = common("DISCOVERY", 0, 0xFFFF, 0, 0xFFFF, 0, 2, len(body))
    f.update(
        {
            "px.disc.op": "ANNOUNCE",
            "px.disc.count": 2,
            "px.disc.state_filter": "ANY",
            "px.disc.dime.state": ["FREE", "BUSY"],
            "px.disc.dime.mem_free": [8, 3],
        }
    )
    add("DISCOVERY announce of two DIMEs", frame("DISCOVERY", 0, body, 0xFFFF, 0, 0xFFFF, 0, 2), f)
    body = struct.pack(">BBHIII", 3, 0xFF, 0, 0, 0x000100, 3)
    raw = frame("DISCOVERY", 0, body, 0xFFFF, 0, 0xFFFF, 0, 3)
    f = common("DISCOVERY", 0, 0xFFFF, 0, 0xFFFF, 0, 3, len(body))
    f.update({"px.disc.op": "GRATUITOUS", "px.disc.count": 0})
    add("DISCOVERY gratuitous announce", raw + bytes(60 - len(raw)), f)
    for code, state in enumerate(STATES):
        body = struct.pack(">IBHHHIIIII", 7, code, 100, 500, 2, 3, 16, 1, 0, 42)
        f = common("HEARTBEAT", 0, 2, 0, 0xFFFF, 0, 1000 + code, len(body))
        f.update(
            {
                "px.hb.epoch": 7,
                "px.hb.state": state,
                "px.hb.period_ms": 100,
                "px.hb.cpu_permille": 500,
                "px.hb.mem_used": 3,
                "px.hb.mem_limit": 16,
                "px.hb.service": 42,
            }
        )
        add(f"HEARTBEAT {state}", frame("HEARTBEAT", 0, body, 2, 0, 0xFFFF, 0, 1000 + code), f)
    body = struct.pack(">IBBBB", 1, 0x01, 1, 0, 0)
    trailer = struct.pack(">HQ", 3, 1 << 33) + bytes(range(16))
    f = common("SIGNALING", 3, 0xFFFF, 0, 1, 0, 9, len(body))
    f.update(
        {
            "px.cmd": "PING",
            "px.flags.auth": True,
            "px.auth.key_id": 3,
            "px.auth.counter": 1 << 33,
            "px.auth.tag": bytes(range(16)).hex(),
        }
    )
    add("PING with an authentication trailer", frame("SIGNALING", 3, body, 0xFFFF, 0, 1, 0, 9, trailer), f)
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("frames.json")
    path.write_text(json.dumps(vectors(), indent=1) + "\n")
    print(f"{path}: {len(vectors())} vectors")
