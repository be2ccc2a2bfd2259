"""Generate ``docs/conformance.json``: frames with the JSON or the error every decoder must give.

``python -m pxproto.wire.gen_conformance [-o PATH]``.  The vectors are the
recorded samples (``captures/all.pcapng`` and ``captures/malformed.pcapng``,
i.e. :mod:`pxproto.wire.samples`) plus the edge cases below, one per rule
and kind the samples leave out.  Each edge case states the error it is for;
generation fails if the reference codec answers otherwise, and
``tests/test_conformance.py`` fails when the committed file is stale.

File format (language-neutral; docs/PROTOCOL.md, "Conformance vectors")::

    {"ethertypes": {...}, "vectors": [
        {"name": ..., "hex": ..., "json": {px.* key: value, ...}},           # valid
        {"name": ..., "hex": ..., "error": {"field": F, "offset": N}},      # rejected
    ]}
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Any

from pxproto.errors import ProtocolError
from pxproto.wire import ethertypes, samples, spec
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import TEXT_MAX, Command, DataFlag, FrameClass, Op, Scope, Status, TlvType
from pxproto.wire.frame import Data, Frame, Signaling, Tlv

OUTPUT = Path(__file__).resolve().parent.parent.parent / "docs" / "conformance.json"
B = spec.BODY_OFFSET
H = spec.ETH_LEN
A, Z = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")


def _with(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value) :]


def _sig(cmd: Command, *params: Tlv, op: Op = Op.REQUEST, status: Status = Status.OK) -> bytes:
    return encode(Frame(Signaling(cmd, op, 77, status, params), Scope.DIME, 1, 0, 2, 0, 9, Z, A))


_BAD_UTF8 = (
    ("cut inside a UTF-8 sequence", b"ab\xe2\x82", 2),
    ("with an overlong '/'", b"a\xc0\xaf", 1),
    ("with a UTF-16 surrogate", b"ab\xed\xa0\x80", 2),
    ("above U+10FFFF", b"\xf4\x90\x80\x80", 0),
    ("with a stray continuation byte", b"ok\x80", 2),
)
"""TEXT values that are not UTF-8: (how, the value, where in it the decoder must point)."""


def _raw_tlv(cmd: Command, type_: int, value: bytes) -> bytes:
    """A request carrying one TLV with exactly these value bytes (no kind check on the way)."""
    return _raw_tlvs(cmd, (type_, value))


def _raw_tlvs(cmd: Command, *tlvs: tuple[int, bytes]) -> bytes:
    fixed = spec.SignalingFixed.build(
        {"req_id": 77, "cmd": int(cmd), "op": int(Op.REQUEST), "status": int(Status.OK), "tlv_count": len(tlvs)}
    )
    body = fixed + b"".join(struct.pack(">HH", t, len(v)) + v for t, v in tlvs)
    hdr = spec.Header.build(
        {
            "version": 1,
            "flags": 1,
            "length": len(body),
            "src_dime": 1,
            "src_thread": 0,
            "dst_dime": 2,
            "dst_thread": 0,
            "seq": 9,
        }
    )
    return Z + A + struct.pack(">H", ethertypes.DEFAULT.signaling) + hdr + body


def _data(body: Data) -> bytes:
    return encode(Frame(body, Scope.DIME, 1, 0, 2, 0, 9, Z, A))


def _hlen(raw: bytes, n: int) -> bytes:
    return _with(raw, H + 2, struct.pack(">H", n))


def edge_cases() -> list[tuple[str, bytes, tuple[str, int] | None]]:
    """(name, bytes, expected (field, offset) or None for a valid frame)."""
    valid = dict(samples.valid_samples())
    hb = valid["heartbeat BUSY"]
    ping = _sig(Command.PING, Tlv(TlvType.ECHO, b"\x01"))
    tlv = B + spec.SignalingFixed.sizeof()
    ack = valid["acknowledgement with credit"]
    data = valid["small message fragment 1 of 1"]
    multi = valid["64 KiB message, 1500 MTU fragment 2 of 46"]
    last = valid["64 KiB message, 1500 MTU fragment 46 of 46"]
    probe = valid["probe for any DIME, padded"]
    announce = valid["announce answering probe 77"]
    acl_entry = A + bytes([0x1F, 0])
    signed = valid["LOAD request signed with key 1"]
    out: list[tuple[str, bytes, tuple[str, int] | None]] = [
        # Ethernet layer: not Parallax frames at all.
        ("frame shorter than an Ethernet header", Z + A, ("eth", 0)),
        ("unknown EtherType (IPv4)", _with(ping, 12, b"\x08\x00"), ("eth.type", 12)),
        # Check order: the first rule broken, in the documented order, names the error.
        ("version 2 and reserved flags: version first", _with(_with(ping, H, b"\x02"), H + 1, b"\x81"), ("version", H)),
        (
            "length past the frame and an unknown command: len first",
            _hlen(_with(ping, B + 4, b"\x7e"), 900),
            ("len", H + 2),
        ),
        (
            "wrong scope and unknown command: scope first",
            _with(_with(hb, H + 1, b"\x01"), B + 4, b"\x09"),
            ("flags", H + 1),
        ),
        (
            "unknown command and unknown op: cmd first",
            _with(_with(ping, B + 4, b"\x7e"), B + 5, b"\x09"),
            ("cmd", B + 4),
        ),
        (
            "unknown state and period 0: state first",
            _with(_with(hb, B + 4, b"\x09"), B + 5, b"\x00\x00"),
            ("hb.state", B + 4),
        ),
        ("trailing bytes and SYSTEM-scope DATA: trailing first", _with(data, H + 1, b"\x00") + b"\x01", ("len", H + 2)),
        (
            "DIME scope to 0xffff and a short body: scope first",
            _hlen(_with(ping, H + 8, b"\xff\xff")[: B + 4], 4),
            ("dime.dst", H + 8),
        ),
        (
            "heartbeat from 0xffff and too long: source first",
            _hlen(_with(hb, H + 4, b"\xff\xff") + b"\x00", 32),
            ("dime.src", H + 4),
        ),
        ("ack-only without the ACK flag, with an ack: ack first", _with(ack, B + 2, b"\x00"), ("data.ack", B + 19)),
        (
            "bad state filter and a wrong count: filter first",
            _with(_with(probe, B + 1, b"\x09"), B + 2, b"\x00\x05"),
            ("disc.state_filter", B + 1),
        ),
        (
            "record with an unknown state and too much free memory: state first",
            _with(_with(announce, B + 20, b"\x33"), B + 25, b"\x00\x00\x01\x00"),
            ("disc.dime.state", B + 20),
        ),
        (
            "second record bad, first good",
            _with(announce, B + 16 + 17 + 4, b"\x33"),
            ("disc.dime.state", B + 16 + 17 + 4),
        ),
        (
            "trailer key 0 and an unknown command: body first",
            _with(_with(signed, B + 4, b"\x7e"), len(signed) - spec.AUTH_LEN, b"\x00\x00"),
            ("cmd", B + 4),
        ),
        (
            "two bad TLVs: the first wins",
            _raw_tlvs(Command.CONNECT, (TlvType.DIRECTION, b"\x07"), (TlvType.PEER_MAC, bytes(5))),
            ("tlv.direction", tlv + 4),
        ),
        (
            "a TLV type twice, the second of the wrong size: repeat first",
            _raw_tlvs(Command.CONNECT, (TlvType.CHANNEL, b"\x00\x01"), (TlvType.CHANNEL, b"\x01")),
            ("tlv", tlv + 6),
        ),
        ("an unknown TLV type twice", _raw_tlvs(Command.PING, (300, b""), (300, b"\x01")), ("tlv", tlv + 4)),
        # HEARTBEAT bounds.
        ("CPU load exactly 1000 permille", _with(hb, B + 7, struct.pack(">H", 1000)), None),
        ("CPU load 1001 permille", _with(hb, B + 7, struct.pack(">H", 1001)), ("hb.cpu_permille", B + 7)),
        ("heartbeat body one byte short", _hlen(hb[:-1], 30), ("len", H + 2)),
        # TLV kinds and sizes.
        ("TEXT of TEXT_MAX bytes", _sig(Command.FAULT_REPORT, Tlv(TlvType.TEXT, "x" * TEXT_MAX)), None),
        (
            "TEXT of TEXT_MAX + 1 bytes",
            _raw_tlv(Command.FAULT_REPORT, TlvType.TEXT, b"x" * (TEXT_MAX + 1)),
            ("tlv.text", tlv + 2),
        ),
        ("empty TEXT", _sig(Command.FAULT_REPORT, Tlv(TlvType.TEXT, "")), None),
        ("TEXT with multi-byte UTF-8", _sig(Command.FAULT_REPORT, Tlv(TlvType.TEXT, "caf\u00e9 \u20ac")), None),
        *(
            (f"TEXT {how}", _raw_tlv(Command.FAULT_REPORT, TlvType.TEXT, value), ("tlv.text", tlv + 4 + bad))
            for how, value, bad in _BAD_UTF8
        ),
        ("TEXT with a NUL character", _sig(Command.FAULT_REPORT, Tlv(TlvType.TEXT, "a\x00b")), None),
        ("empty BYTES", _sig(Command.PING, Tlv(TlvType.ECHO, b"")), None),
        ("empty ACL", _sig(Command.ACL_SET, Tlv(TlvType.ACL, b"")), None),
        ("ACL of two entries", _sig(Command.ACL_SET, Tlv(TlvType.ACL, acl_entry + Z + b"\x01\x00")), None),
        (
            "ACL mask with bit 0x20 (above FCAPS)",
            _raw_tlv(Command.ACL_SET, TlvType.ACL, A + b"\x20\x00"),
            ("tlv.acl", tlv + 10),
        ),
        (
            "ACL second entry with a reserved byte",
            _raw_tlv(Command.ACL_SET, TlvType.ACL, acl_entry + A + b"\x01\x01"),
            ("tlv.acl", tlv + 4 + 14),
        ),
        ("ACL of 9 bytes", _raw_tlv(Command.ACL_SET, TlvType.ACL, acl_entry + b"\x00"), ("tlv.acl", tlv + 2)),
        (
            "DIGEST of 31 bytes",
            _raw_tlv(Command.LOAD, TlvType.PACKAGE_DIGEST, bytes(31)),
            ("tlv.package_digest", tlv + 2),
        ),
        ("MAC of 7 bytes", _raw_tlv(Command.CONNECT, TlvType.PEER_MAC, bytes(7)), ("tlv.peer_mac", tlv + 2)),
        ("U8 of 2 bytes", _raw_tlv(Command.CONNECT, TlvType.DIRECTION, bytes(2)), ("tlv.direction", tlv + 2)),
        ("U64 of 4 bytes", _raw_tlv(Command.SET_PARAM, TlvType.VALUE, bytes(4)), ("tlv.value", tlv + 2)),
        (
            "PARAM_ID with an unknown code",
            _raw_tlv(Command.GET_PARAM, TlvType.PARAM_ID, b"\x00\x63"),
            ("tlv.param_id", tlv + 4),
        ),
        ("FAULT_CODE 0", _raw_tlv(Command.FAULT_REPORT, TlvType.FAULT_CODE, b"\x00\x00"), ("tlv.fault_code", tlv + 4)),
        ("unknown TLV type 0", _raw_tlv(Command.PING, 0, b"\xab"), None),
        ("unknown TLV type 0xffff, empty", _raw_tlv(Command.PING, 0xFFFF, b""), None),
        ("TLV header cut by the body end", _hlen(_raw_tlv(Command.PING, 0, b"")[:-2], 10), ("tlv", tlv)),
        ("TLVs in any order", _sig(Command.SET_PARAM, Tlv(TlvType.VALUE, 5), Tlv(TlvType.PARAM_ID, 1)), None),
        ("request without its command's TLVs", _sig(Command.LOAD), None),
        ("response with a failure status", _sig(Command.LOAD, op=Op.RESPONSE, status=Status.BUSY), None),
        # DATA rules.
        ("ack-only frame with msg_len", _with(ack, B + 7, b"\x00\x00\x00\x01"), ("data.msg_len", B + 7)),
        ("ack-only frame with frag_offset", _with(ack, B + 11, b"\x00\x00\x00\x01"), ("data.frag_offset", B + 11)),
        ("ack-only frame with frag_index", _with(ack, B + 15, b"\x00\x01"), ("data.frag_index", B + 15)),
        ("ack-only frame with a msg_id", _with(ack, B + 3, b"\x00\x00\x00\x07"), None),
        ("ack-only frame with a payload", _hlen(ack + b"\x01", len(ack) - B + 1), ("len", H + 2)),
        ("credit without the ACK flag", _with(data, B + 23, b"\x00\x01"), ("data.credit", B + 23)),
        ("first fragment not at offset 0", _with(data, B + 11, b"\x00\x00\x00\x01"), ("data.frag_offset", B + 11)),
        ("last fragment ends before msg_len", _with(last, B + 7, b"\x00\x01\x00\x01"), ("data.msg_len", B + 7)),
        ("middle fragment with no bytes", _hlen(multi[: B + 25], 25), ("len", H + 2)),
        (
            "fragment end past 2^32",  # frag_offset + payload length is 2^32: exact, never wrapped to 0
            _hlen(_with(data, B + 7, b"\xff" * 8 + struct.pack(">HH", 1, 3))[: B + 26], 26),
            ("data.frag_offset", B + 11),
        ),
        ("empty message in one fragment", _data(Data(3, 9, b"", 0, 0, 0, 1)), None),
        ("DATA body shorter than its fixed part", _hlen(data[: B + 24], 24), ("len", H + 2)),
        (
            "DATA with both flags and an ack",
            _data(Data(3, 9, b"z", 1, 0, 0, 1, 5, 1, DataFlag.ACK | DataFlag.FIN)),
            None,
        ),
        # DISCOVERY rules.
        ("unknown discovery op", _with(probe, B, b"\x07"), ("disc.op", B)),
        ("state filter 5 (no such state)", _with(probe, B + 1, b"\x05"), ("disc.state_filter", B + 1)),
        ("probe listing a DIME", _with(announce, B, b"\x01"), ("disc.count", B + 2)),
        ("announce cut inside a record", _hlen(announce[:-1], len(announce) - B - 1), ("disc.count", B + 2)),
        ("DISCOVERY body shorter than its fixed part", _hlen(probe[: B + 15], 15), ("len", H + 2)),
        ("DISCOVERY with DIME scope", _with(probe, H + 1, b"\x01"), ("flags", H + 1)),
        # The trailer: any class may carry one; no decoder checks the tag.
        (
            "signed frame with a wrong tag (decoders do not check it)",
            valid["LOAD request signed with key 1"][:-1] + b"\x00",
            None,
        ),
    ]
    for cls_sample in ("small message fragment 1 of 1", "announce answering probe 77"):
        f = decode(valid[cls_sample])
        out.append((f"{f.cls.name} with a trailer", samples.auth.sign(f, 7, 3, samples.SAMPLE_KEY), None))
    out += encrypted_cases(valid)
    big = Data(3, 10, bytes(i & 0xFF for i in range(0xFFFF - 25)), 0xFFFF - 25, 0, 0, 1)
    out.append(("largest body (length 65535)", _data(big), None))
    return out


def encrypted_cases(valid: dict[str, bytes]) -> list[tuple[str, bytes, tuple[str, int] | None]]:
    """The AEAD mode (ENCRYPTED): a sealed frame of every class decodes with its body opaque; the header
    and trailer rules still hold, the body rules do not (its bytes are ciphertext)."""
    from pxproto.wire import aead

    out: list[tuple[str, bytes, tuple[str, int] | None]] = []
    sealed = {}
    for name in (
        "LOAD request signed with key 1",
        "small message fragment 1 of 1",
        "announce answering probe 77",
        "heartbeat BUSY",
        "probe for any DIME, padded",
    ):
        f = decode(valid[name])
        raw = aead.seal(f, 7, 3, samples.SAMPLE_KEY)
        sealed[f.cls] = raw
        # sealing drops the clear frame's padding (the trailer alone makes 60 bytes)
        out.append((f"{f.cls.name} encrypted ({name.replace(', padded', ', its padding dropped')})", raw, None))
    sig = sealed[FrameClass.SIGNALING]
    hb = sealed[FrameClass.HEARTBEAT]
    flags = sig[H + 1]
    out += [
        ("encrypted with a wrong GCM tag (decoders do not check it)", sig[:-1] + bytes([sig[-1] ^ 1]), None),
        (
            "ENCRYPTED without AUTH",
            _with(sig[: len(sig) - spec.AUTH_LEN], H + 1, bytes([flags & ~2])),
            ("flags", H + 1),
        ),
        ("ENCRYPTED and a reserved flag: reserved first", _with(sig, H + 1, bytes([flags | 0x80])), ("flags", H + 1)),
        ("encrypted, trailer cut short", sig[:-1], ("auth", len(sig) - spec.AUTH_LEN)),
        ("encrypted HEARTBEAT with DIME scope", _with(hb, H + 1, bytes([hb[H + 1] | 1])), ("flags", H + 1)),
        (
            "encrypted, trailer key id 0",
            _with(hb, len(hb) - spec.AUTH_LEN, b"\x00\x00"),
            ("auth.key_id", len(hb) - spec.AUTH_LEN),
        ),
        (
            "encrypted body shorter than the class's fixed part (opaque: no body rule)",
            _hlen(hb[: B + 3] + hb[len(hb) - spec.AUTH_LEN :], 3),
            None,
        ),
    ]
    return out


def _result(raw: bytes) -> dict[str, Any]:
    try:
        return {"json": decode(raw).to_dict()}
    except ProtocolError as exc:
        return {"error": {"field": exc.field, "offset": exc.offset}}


def vectors() -> dict[str, Any]:
    assert ethertypes.current() == ethertypes.DEFAULT, "vectors use the default EtherType map"
    out = []
    for name, raw in samples.valid_samples():
        out.append({"name": name, "source": "captures/all.pcapng", "hex": raw.hex(), **_result(raw)})
    for reason, field, offset, raw in samples.malformed_samples():
        got = _result(raw)
        assert got.get("error") == {"field": field, "offset": offset}, (reason, got)
        src = "captures/malformed.pcapng" if len(raw) >= spec.ETH_LEN else "pxproto/wire/samples.py"
        out.append({"name": reason, "source": src, "hex": raw.hex(), **got})
    for name, raw, want in edge_cases():
        got = _result(raw)
        if want is None:
            assert "json" in got, (name, got)
        else:
            assert got.get("error") == {"field": want[0], "offset": want[1]}, (name, got)
        out.append({"name": name, "source": "pxproto/wire/gen_conformance.py", "hex": raw.hex(), **got})
    names = [v["name"] for v in out]
    assert len(set(names)) == len(names), "vector names must be unique"
    return {
        "about": "Parallax conformance vectors; see docs/PROTOCOL.md, section 'Conformance vectors'. "
        "Generated by python -m pxproto.wire.gen_conformance; do not edit by hand.",
        "ethertypes": ethertypes.DEFAULT.as_dict(),
        "vectors": out,
    }


def render() -> str:
    return json.dumps(vectors(), indent=1, ensure_ascii=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pxproto.wire.gen_conformance", description=__doc__)
    ap.add_argument("-o", "--output", default=str(OUTPUT), help=f"file to write (default {OUTPUT})")
    args = ap.parse_args(argv)
    Path(args.output).write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
