"""Codec benchmark: the fast path against its peers, on the same frames, in one run.

    python bench/codec.py [--quick]

Single-frame decode: the 64-byte signaling frame (Ethernet + header + PING request
with an 18-byte ECHO TLV) decoded to full header + command fields.  Peers:

- fastpath.decode  -> the reference Frame dataclasses (same result as pxproto.wire.decode)
- fastpath.view    -> lazy FrameView (== that Frame; fields read from C on access)
- struct -> Frame  -> hand-written struct.unpack_from decoder building the same Frame
- struct tuple     -> struct.unpack_from alone (a floor, not a decoder: no Frame, no rules)
- Construct interp -> the spec's Structs (eth + header + signaling fixed part), interpreted
- Construct compiled -> the same Struct, .compile()d
- reference codec  -> pxproto.wire.decode (interpreted Construct + every rule)
- dpkt             -> dpkt Ethernet + a dpkt Packet class for the Parallax header + signaling fields
- scapy            -> scapy Ether / a scapy Packet layer for the same fields

Encode: the same frame from its Frame (fastpath, reference, struct-based encoder) or from
each library's own object (Construct, dpkt, scapy).  Batch: frames/s of
decode_columns over one buffer of 64-byte signaling frames.  Prints medians and
ratios (peer time / fastpath time).
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np
from construct import Struct

from _common import measure_installed  # bench/ is sys.path[0]; runs before pxproto loads

measure_installed()

import pxproto.fastpath as fp  # noqa: E402
from pxproto.wire import codec, ethertypes, spec  # noqa: E402
from pxproto.wire.codes import Command, Op, Scope, Status, TlvType  # noqa: E402
from pxproto.wire.frame import Frame, Signaling, Tlv  # noqa: E402

FRAME = Frame(
    Signaling(Command.PING, Op.REQUEST, 0xC0DE0001, Status.OK, (Tlv(TlvType.ECHO, b"0123456789abcdefgh"),)),
    Scope.DIME,
    0xFFFF,
    0,
    7,
    3,
    1 << 40,
    b"\x02\xbb\x00\x00\x00\x02",
    b"\x02\xaa\x00\x00\x00\x01",
)
RAW = codec.encode(FRAME)
assert len(RAW) == 64, len(RAW)

# ---------------------------------------------------------------- hand-written struct codec

HDR = struct.Struct(">6s6sHBBHHHHHQIBBBB")  # eth + header + signaling fixed part
TLVH = struct.Struct(">HH")
CMD = {int(c): c for c in Command}
OPS = {int(o): o for o in Op}
STATUS = {int(s): s for s in Status}
TLV_TYPES = {int(t): t for t in TlvType}


def struct_decode(raw: bytes) -> Frame:
    (dst, src, _et, _ver, flags, _length, sd, st, dd, dt, seq, req_id, cmd, op, status, count) = HDR.unpack_from(raw)
    params = []
    pos = HDR.size
    for _ in range(count):
        t, n = TLVH.unpack_from(raw, pos)
        params.append(Tlv(TLV_TYPES.get(t, t), raw[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    body = Signaling(CMD[cmd], OPS[op], req_id, STATUS[status], tuple(params))
    return Frame(
        body, Scope.DIME if flags & 1 else Scope.SYSTEM, sd, st, dd, dt, seq, dst, src, None, 1, len(raw) - pos
    )


def struct_tuple(raw: bytes) -> tuple[Any, ...]:
    return HDR.unpack_from(raw)


def struct_encode(f: Frame) -> bytes:
    b = f.body
    assert isinstance(b, Signaling)
    tlvs = b"".join(TLVH.pack(int(p.type), len(p.value)) + p.value for p in b.params)  # type: ignore[operator, arg-type]
    head = HDR.pack(
        f.dst_mac,
        f.src_mac,
        ethertypes.current().signaling,
        f.version,
        int(f.flags),
        8 + len(tlvs),
        f.src_dime,
        f.src_thread,
        f.dst_dime,
        f.dst_thread,
        f.seq,
        b.req_id,
        int(b.cmd),
        int(b.op),
        int(b.status),
        len(b.params),
    )
    out = head + tlvs
    return out + b"\x00" * (60 - len(out)) if len(out) < 60 else out


# ---------------------------------------------------------------- Construct, dpkt, scapy

FULL = Struct("eth" / spec.Ethernet, "hdr" / spec.Header, "sig" / spec.SignalingBody)
FULL_COMPILED = FULL.compile()


def _dpkt() -> tuple[Callable[[bytes], Any], Callable[[], bytes]] | None:
    try:
        import dpkt
    except ImportError:
        return None

    class PxSignaling(dpkt.Packet):  # type: ignore[misc]
        """Parallax header + signaling fixed part, as a dpkt header table."""

        __hdr__ = (
            ("version", "B", 1),
            ("flags", "B", 0),
            ("length", "H", 0),
            ("src_dime", "H", 0),
            ("src_thread", "H", 0),
            ("dst_dime", "H", 0),
            ("dst_thread", "H", 0),
            ("seq", "Q", 0),
            ("req_id", "I", 0),
            ("cmd", "B", 0),
            ("op", "B", 1),
            ("status", "B", 0),
            ("tlv_count", "B", 0),
        )

    def dec(raw: bytes) -> Any:
        eth = dpkt.ethernet.Ethernet(raw)
        return PxSignaling(eth.data)

    eth_obj = dpkt.ethernet.Ethernet(RAW)
    px_obj = PxSignaling(eth_obj.data)

    def enc() -> bytes:
        eth_obj.data = bytes(px_obj)
        return bytes(eth_obj)

    return dec, enc


def _scapy() -> tuple[Callable[[bytes], Any], Callable[[], bytes]] | None:
    try:
        from scapy.fields import ByteField, IntField, LongField, ShortField
        from scapy.layers.l2 import Ether
        from scapy.packet import Packet, bind_layers
    except ImportError:
        return None

    class PxSignaling(Packet):  # type: ignore[misc]
        name = "Parallax signaling"
        fields_desc = [  # noqa: RUF012 (scapy's API)
            ByteField("version", 1),
            ByteField("flags", 0),
            ShortField("length", 0),
            ShortField("src_dime", 0),
            ShortField("src_thread", 0),
            ShortField("dst_dime", 0),
            ShortField("dst_thread", 0),
            LongField("seq", 0),
            IntField("req_id", 0),
            ByteField("cmd", 0),
            ByteField("op", 1),
            ByteField("status", 0),
            ByteField("tlv_count", 0),
        ]

    bind_layers(Ether, PxSignaling, type=ethertypes.current().signaling)
    pkt = Ether(RAW)
    return Ether, lambda: bytes(pkt)


# ---------------------------------------------------------------- timing


# CPU time of this thread, not wall time: the bench is about work per frame on one core,
# and wall time on a shared machine measures the neighbours too.
CLOCK = time.thread_time


def per_call(fn: Callable[[], Any], repeat: int, budget: float) -> float:
    """Median CPU seconds per call over ``repeat`` runs of about ``budget`` seconds each."""
    n = 1
    while True:
        t = timeit.timeit(fn, number=n, timer=CLOCK)
        if t > budget / 5 or n > 10**7:
            break
        n *= 4
    number = max(1, int(n * (budget / max(t, 1e-9))))
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat, timer=CLOCK)) / number


def table(title: str, rows: list[tuple[str, float]], base: str) -> None:
    ref = dict(rows)[base]
    print(f"\n{title}")
    print(f"| {'peer':<34} | {'median µs':>10} | {'x fastpath':>10} |")
    print(f"|{'-' * 36}|{'-' * 12}|{'-' * 12}|")
    for name, secs in rows:
        print(f"| {name:<34} | {secs * 1e6:>10.3f} | {secs / ref:>10.1f} |")


def batch_rate(n: int, repeat: int) -> tuple[float, float, float, float]:
    """Frames/s of decode_columns: fresh columns, reused columns (out=), index alone and index+decode of a pcap."""
    raws = []
    for i in range(256):
        f = Frame(FRAME.body, FRAME.scope, i, 0, 7, 3, i, FRAME.dst_mac, FRAME.src_mac)
        raws.append(fp.encode(f))
    buf = b"".join(raws) * (n // 256)
    count = len(buf) // 64
    offsets = np.arange(count, dtype=np.int64) * 64
    lengths = np.full(count, 64, dtype=np.int64)
    cols = fp.decode_columns(buf, offsets, lengths)
    assert cols.valid.all()
    fresh = statistics.median(
        timeit.repeat(lambda: fp.decode_columns(buf, offsets, lengths), number=1, repeat=repeat, timer=CLOCK)
    )
    reuse = statistics.median(
        timeit.repeat(lambda: fp.decode_columns(buf, offsets, lengths, out=cols), number=1, repeat=repeat, timer=CLOCK)
    )
    pcap = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    rec = struct.pack("<IIII", 1, 0, 64, 64)
    for i in range(count):
        pcap += rec + buf[i * 64 : (i + 1) * 64]
    pcap_b = bytes(pcap)
    c2 = fp.decode_capture(pcap_b)
    assert len(c2) == count and c2.valid.all()
    index = statistics.median(timeit.repeat(lambda: fp.index_capture(pcap_b), number=1, repeat=repeat, timer=CLOCK))
    whole = statistics.median(timeit.repeat(lambda: fp.decode_capture(pcap_b), number=1, repeat=repeat, timer=CLOCK))
    return count / fresh, count / reuse, count / index, count / whole


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    ap.add_argument("--batch-frames", type=int, default=2_000_000)
    args = ap.parse_args(argv)
    repeat, budget = (5, 0.05) if args.quick else (7, 0.2)
    print(f"pxproto.fastpath COMPILED={fp.COMPILED}; frame: {len(RAW)} bytes signaling PING request + ECHO TLV")
    print("times are CPU time of the benchmark thread (time.thread_time), medians of repeated runs")
    assert fp.decode(RAW) == codec.decode(RAW) == struct_decode(RAW) == FRAME
    assert fp.encode(FRAME) == struct_encode(FRAME) == RAW
    dec: list[tuple[str, float]] = []
    dec.append(("fastpath.decode -> Frame", per_call(lambda: fp.decode(RAW), repeat, budget)))
    dec.append(("fastpath.view -> FrameView (lazy)", per_call(lambda: fp.view(RAW), repeat, budget)))
    dec.append(("struct -> Frame (hand-written)", per_call(lambda: struct_decode(RAW), repeat, budget)))
    dec.append(("struct.unpack_from tuple (floor)", per_call(lambda: struct_tuple(RAW), repeat, budget)))
    dec.append(("Construct compiled", per_call(lambda: FULL_COMPILED.parse(RAW), repeat, budget)))
    dec.append(("Construct interpreted", per_call(lambda: FULL.parse(RAW), repeat, budget)))
    dec.append(("reference codec (pxproto.wire)", per_call(lambda: codec.decode(RAW), repeat, budget)))
    d = _dpkt()
    if d:
        dec.append(("dpkt (Ethernet + Packet class)", per_call(lambda: d[0](RAW), repeat, budget)))
    s = _scapy()
    if s:
        dec.append(("scapy (Ether / Packet layer)", per_call(lambda: s[0](RAW), repeat, budget)))
    table("Single-frame decode", dec, "fastpath.decode -> Frame")
    view_t = dict(dec)["fastpath.view -> FrameView (lazy)"]
    print("  ratios against the lazy view: " + ", ".join(f"{k} {v / view_t:.1f}x" for k, v in dec[2:]))

    parsed = FULL.parse(RAW)
    enc: list[tuple[str, float]] = []
    enc.append(("fastpath.encode(Frame)", per_call(lambda: fp.encode(FRAME), repeat, budget)))
    enc.append(("struct encoder (Frame)", per_call(lambda: struct_encode(FRAME), repeat, budget)))
    enc.append(("Construct compiled build", per_call(lambda: FULL_COMPILED.build(parsed), repeat, budget)))
    enc.append(("Construct interpreted build", per_call(lambda: FULL.build(parsed), repeat, budget)))
    enc.append(("reference codec encode", per_call(lambda: codec.encode(FRAME), repeat, budget)))
    if d:
        enc.append(("dpkt bytes()", per_call(d[1], repeat, budget)))
    if s:
        enc.append(("scapy bytes()", per_call(s[1], repeat, budget)))
    table("Single-frame encode", enc, "fastpath.encode(Frame)")

    fresh, reuse, index, whole = batch_rate(args.batch_frames, 3 if args.quick else 5)
    print(f"\nBatch decode, {args.batch_frames:,} x 64-byte signaling frames, one core:")
    print(f"| {'mode':<46} | {'Mframes/s':>10} |")
    print(f"|{'-' * 48}|{'-' * 12}|")
    print(f"| {'decode_columns (new columns)':<46} | {fresh / 1e6:>10.1f} |")
    print(f"| {'decode_columns (out= reused columns)':<46} | {reuse / 1e6:>10.1f} |")
    which = "index_capture (pcap alone, " + ("compiled" if fp.COMPILED else "pure") + ")"
    print(f"| {which:<46} | {index / 1e6:>10.1f} |")
    print(f"| {'decode_capture (index pcap + decode)':<46} | {whole / 1e6:>10.1f} |")

    r = dict(dec)
    e = dict(enc)
    print("\nTargets:")
    checks = [
        ("decode vs struct -> Frame >= 3x", r["struct -> Frame (hand-written)"] / r["fastpath.decode -> Frame"], 3),
        ("decode vs Construct interpreted >= 100x", r["Construct interpreted"] / r["fastpath.decode -> Frame"], 100),
        ("encode vs struct encoder >= 3x", e["struct encoder (Frame)"] / e["fastpath.encode(Frame)"], 3),
        ("batch >= 15 Mframes/s (reused columns)", reuse / 1e6, 15),
    ]
    if d:
        checks.insert(
            1, ("decode vs dpkt >= 30x", r["dpkt (Ethernet + Packet class)"] / r["fastpath.decode -> Frame"], 30)
        )
    for name, got, want in checks:
        print(f"  {'MET ' if got >= want else 'MISS'} {name}: {got:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
