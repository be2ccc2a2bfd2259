"""Per-frame views: the ``-v``/``-vv`` tree, ``-x``/``-X`` hex dumps and ``--json`` lines.

These decode one frame at a time with the reference codec; they are for
reading a few frames closely, not for throughput.
"""

from __future__ import annotations

import json
from typing import Any

from pxproto.errors import ProtocolError
from pxproto.wire import decode, ethertypes, layout, spec
from pxproto.wire.frame import Frame

_SECTIONS = (
    ("eth.", "Ethernet II"),
    ("auth.", "Authentication trailer"),
    ("tlv.", "Parameters (TLVs)"),
    ("data.", "Data"),
    ("disc.", "Discovery"),
    ("hb.", "Heartbeat"),
)
_SIGNALING_KEYS = ("req_id", "cmd", "fcaps", "op", "status", "tlv_count")


def _section(key: str) -> str:
    short = key[3:]
    for prefix, title in _SECTIONS:
        if short.startswith(prefix):
            return title
    if short in _SIGNALING_KEYS:
        return "Signaling"
    return "Parallax header"


def _field_spans() -> dict[str, tuple[int, int]]:
    """px.* key -> (offset in frame, size) of the fixed fields, from the layout."""
    out: dict[str, tuple[int, int]] = {}
    tables = layout.struct_tables()
    for prefix, base in layout.PREFIX_BASE.items():
        for f in tables[prefix][1]:
            out[f.key] = (base + f.offset, f.size)
    return out


SPANS = _field_spans()


def tree(raw: bytes, frame_no: int, ts_ns: int, wirelen: int, level: int = 1) -> str:
    """A tshark -V style tree of one frame; level 2 adds each fixed field's offset and raw bytes."""
    head = f"Frame {frame_no}: {len(raw)} bytes captured ({wirelen} on wire), time {ts_ns / 1e9:.9f}\n"
    try:
        frame = decode(raw)
    except ProtocolError as e:
        if e.field == "eth.type" or len(raw) < spec.ETH_LEN:
            return (
                head
                + _ether_only(raw)
                + (f"    [malformed: {e.field} at byte {e.offset}: {e.reason}]\n" if len(raw) < spec.ETH_LEN else "")
            )
        return head + _ether_only(raw) + f"Parallax\n    [malformed: {e.field} at byte {e.offset}: {e.reason}]\n"
    return head + frame_tree(frame, raw, level)


def _ether_only(raw: bytes) -> str:
    if len(raw) < spec.ETH_LEN:
        return "Ethernet II (truncated)\n"
    et = int.from_bytes(raw[12:14], "big")
    return (
        f"Ethernet II\n    px.eth.dst: {raw[0:6].hex(':')}\n    px.eth.src: {raw[6:12].hex(':')}\n"
        f"    px.eth.type: 0x{et:04x}\n"
    )


def frame_tree(frame: Frame, raw: bytes, level: int = 1) -> str:
    lines: list[str] = []
    current = None
    for key, value in frame.to_dict().items():
        sec = _section(key)
        if sec != current:
            if sec == "Parallax header":
                lines.append(
                    f"Parallax, {frame.cls.name}, {_ep(frame.src_dime, frame.src_thread)} > "
                    f"{_ep(frame.dst_dime, frame.dst_thread)}"
                )
            else:
                lines.append(sec if sec != "Ethernet II" else "Ethernet II")
            current = sec
        shown = _show(key, value)
        if level >= 2 and key in SPANS:
            off, size = SPANS[key]
            shown += f"    [byte {off}, {size}: {raw[off : off + size].hex()}]"
        lines.append(f"    {key}: {shown}")
    return "\n".join(lines) + "\n"


def _ep(dime: int, thread: int) -> str:
    return f"{'*' if dime == 0xFFFF else dime}.{thread}"


def _show(key: str, value: Any) -> str:
    if key == "px.eth.type":
        cls = ethertypes.current().classify(value)
        return f"0x{value:04x} ({cls.name if cls else '?'})"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def hexdump(raw: bytes, ascii_: bool) -> str:
    """tcpdump -x / -X style: offset, 16 bytes in groups of two, ASCII for -X."""
    out = []
    for pos in range(0, len(raw), 16):
        chunk = raw[pos : pos + 16]
        groups = " ".join(chunk[k : k + 2].hex() for k in range(0, len(chunk), 2))
        line = f"\t0x{pos:04x}:  {groups}"
        if ascii_:
            line = f"{line:<50}  " + "".join(chr(c) if 32 <= c < 127 else "." for c in chunk)
        out.append(line)
    return "\n".join(out) + "\n"


MALFORMED_KEY = "_malformed"
"""The one --json key that is not a Frame.to_dict() key: a frame the decoder rejected prints
``{"_malformed": {"field": F, "offset": N, "reason": R}}`` (the leading underscore keeps it out of
the px.* namespace; the Wireshark dissector reports the same as expert info px.malformed.*)."""


def json_line(raw: bytes) -> str | None:
    """The frame's to_dict() as one JSON line; a malformed Parallax frame gives MALFORMED_KEY; others None."""
    try:
        return json.dumps(decode(raw).to_dict(), separators=(", ", ": "))
    except ProtocolError as e:
        if e.field == "eth.type":
            return None
        return json.dumps({MALFORMED_KEY: {"field": e.field, "offset": e.offset, "reason": e.reason}})
