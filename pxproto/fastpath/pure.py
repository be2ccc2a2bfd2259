"""The pure-Python twin of the compiled fast path: same API, same answers, slower.

Used when the extension did not build or ``PXPROTO_PURE=1``.  Single frames go
through the reference codec; the batch decoder fills the same columns row by row.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from pxproto.errors import ProtocolError
from pxproto.wire import codec, ethertypes, spec
from pxproto.wire.codes import HeaderFlag
from pxproto.wire.frame import Data, Discovery, Frame, Heartbeat, Signaling
from pxproto.wire.layout import ERROR_CODES

decode = codec.decode
encode = codec.encode
_HEADER = struct.Struct(">BBHHHHHQ")


def view(buf: bytes | bytearray | memoryview) -> Frame:
    """The pure path has no lazy view: the Frame itself."""
    return codec.decode(buf)


def check(buf: bytes | bytearray | memoryview) -> tuple[str, int]:
    try:
        codec.decode(buf)
    except ProtocolError as exc:
        return (exc.field, exc.offset)
    return ("", 0)


def decode_columns_into(
    buf: Any, offsets: Any, lengths: Any, arrays: dict[str, np.ndarray], linktypes: Any = None
) -> None:
    mv = memoryview(buf).cast("B")
    offs = np.asarray(offsets, dtype=np.int64)
    lens = np.asarray(lengths, dtype=np.int64)
    if len(lens) != len(offs):
        raise ValueError(f"{len(offs)} offsets but {len(lens)} lengths")
    lts = None if linktypes is None else np.asarray(linktypes, dtype=np.uint16)
    if lts is not None and len(lts) != len(offs):
        raise ValueError(f"{len(offs)} offsets but {len(lts)} linktypes")
    total = len(mv)
    for i, (o, n) in enumerate(zip(offs.tolist(), lens.tolist(), strict=True)):
        if o < 0 or n < 0 or o + n > total:
            raise ValueError(f"frame {i}: bytes {o}..{o + n} lie outside the {total}-byte buffer")
    a = arrays
    for i, (o, n) in enumerate(zip(offs.tolist(), lens.tolist(), strict=True)):
        a["offset"][i] = o
        a["length"][i] = n
        if lts is not None and lts[i] != 1:
            a["error"][i] = ERROR_CODES["frame"]
            continue
        data = bytes(mv[o : o + n])
        try:
            f = codec.decode(data)
        except ProtocolError as exc:
            a["error"][i] = ERROR_CODES[exc.field]
            a["error_offset"][i] = exc.offset
            _header(a, i, data)
            continue
        a["valid"][i] = True
        _header(a, i, data)
        a["padding"][i] = f.padding
        if f.auth is not None:
            a["auth_key_id"][i] = f.auth.key_id
            a["auth_counter"][i] = f.auth.counter
        _body(a, i, f)


def _header(a: dict[str, np.ndarray], i: int, data: bytes) -> None:
    if len(data) < spec.ETH_LEN:
        return
    (et,) = struct.unpack_from(">H", data, 12)
    cls = ethertypes.current().classify(et)
    a["ethertype"][i] = et
    if cls is None:
        return
    a["cls"][i] = int(cls)
    if len(data) < spec.BODY_OFFSET:
        return
    version, flags, length, sd, st, dd, dt, seq = _HEADER.unpack_from(data, spec.ETH_LEN)
    a["version"][i] = version
    a["flags"][i] = flags
    a["scope"][i] = 1 if flags & HeaderFlag.SCOPE_DIME else 0
    a["has_auth"][i] = bool(flags & HeaderFlag.AUTH)
    a["body_len"][i] = length
    a["src_dime"][i] = sd
    a["src_thread"][i] = st
    a["dst_dime"][i] = dd
    a["dst_thread"][i] = dt
    a["seq"][i] = seq


def _body(a: dict[str, np.ndarray], i: int, f: Frame) -> None:
    b = f.body
    if isinstance(b, Signaling):
        a["req_id"][i] = b.req_id
        a["cmd"][i] = int(b.cmd)
        a["op"][i] = int(b.op)
        a["status"][i] = int(b.status)
        a["tlv_count"][i] = len(b.params)
    elif isinstance(b, Data):
        a["channel"][i] = b.channel
        a["data_flags"][i] = int(b.flags)
        for name in ("msg_id", "msg_len", "frag_offset", "frag_index", "frag_count", "ack", "credit"):
            a[name][i] = getattr(b, name)
        a["payload_len"][i] = len(b.payload)
    elif isinstance(b, Discovery):
        a["disc_op"][i] = int(b.op)
        a["state_filter"][i] = b.state_filter
        a["disc_count"][i] = len(b.dimes)
        a["probe_id"][i] = b.probe_id
    elif isinstance(b, Heartbeat):
        a["hb_state"][i] = int(b.state)
        for name in ("epoch", "period_ms", "cpu_permille", "stage", "service"):
            a["hb_" + name][i] = getattr(b, name)
