"""The shared codec suite, run against the reference codec, the compiled fast path and its
pure twin; plus the fast path's own API: generated constants, the compiled-build guard,
the fallback, the C builders, the batch decoder, the capture index, fuzz regressions."""

from __future__ import annotations

import functools
import io
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pxproto.fastpath as fp
from pxproto.capture import CaptureError, PcapngWriter, read_packets
from pxproto.errors import ProtocolError
from pxproto.fastpath import capindex, pure
from pxproto.wire import codec, ethertypes, gen_fastpath
from pxproto.wire.codes import Command, DataFlag, DimeState, FrameClass, Op, Scope, Status, TlvType
from pxproto.wire.frame import Auth, Data, Frame, Heartbeat, Signaling
from pxproto.wire.samples import malformed_samples, valid_samples

ROOT = Path(__file__).resolve().parent.parent
wirec: Any = None
compiled_index: Any = None
if fp.COMPILED:
    from pxproto.fastpath import _capindex as compiled_index  # type: ignore[attr-defined, no-redef]
    from pxproto.fastpath import wirec

CODECS = [
    pytest.param(SimpleNamespace(decode=codec.decode, encode=codec.encode), id="reference"),
    pytest.param(SimpleNamespace(decode=pure.decode, encode=pure.encode), id="pure"),
    pytest.param(
        SimpleNamespace(decode=wirec.decode, encode=wirec.encode) if wirec else None,
        id="compiled",
        marks=pytest.mark.skipif(wirec is None, reason="compiled fast path not built"),
    ),
]
VALID = valid_samples()
MALFORMED = malformed_samples()
# Inputs found by fuzzing or review that once broke (or nearly broke) a rule; hex.
REGRESSIONS = [
    # a TEXT TLV whose 4-byte UTF-8 sequence is broken in its last byte: the offset is the lead byte
    "ffffffffffff000000000000abba01010013ffff00000001000000000000000000000000000102010001000f0007616263f09f9878",
    # SYSTEM scope to a DIME id: dime.dst, before the body is looked at
    "ffffffffffff000000000000abba01000008ffff00000005000000000000000000000000000101010000",
    # a heartbeat from 0xffff
    "ffffffffffff000000000000abbd0100001fffff0000ffff0000000000000000000000000001000064000000000000000000000000000000000000000000000000",
    # an ACL entry with its reserved byte set
    "ffffffffffff000000000000abba01010014ffff00000001000000000000000000000000000142010001001a00080200000000011f01",
    # a UTF-16 surrogate (ED A0 80) in a TEXT TLV: CPython's strict decoder rejects it at the lead byte
    "ffffffffffff000000000000abba01010011ffff00000001000000000000000000000000000102010001000f00056162eda080",
]


# ---------------------------------------------------------------- shared suite (every codec)


@pytest.mark.parametrize("impl", CODECS)
def test_samples_round_trip(impl: Any) -> None:
    for name, raw in VALID:
        frame = impl.decode(raw)
        assert frame == codec.decode(raw), name
        assert frame.to_dict() == codec.decode(raw).to_dict(), name
        assert impl.encode(frame) == raw, name


@pytest.mark.parametrize("impl", CODECS)
def test_malformed_samples_rejected_with_their_field(impl: Any) -> None:
    for reason, field, offset, raw in MALFORMED:
        with pytest.raises(ProtocolError) as err:
            impl.decode(raw)
        assert (err.value.field, err.value.offset) == (field, offset), reason


@functools.cache
def _truncations() -> list[tuple[str, bytes, tuple[str, int]]]:
    """Every cut of every 8th sample, with the reference codec's verdict (computed once)."""
    out = []
    for name, raw in VALID[::8]:
        for n in range(len(raw)):
            try:
                codec.decode(raw[:n])
            except ProtocolError as exc:
                out.append((f"{name}[:{n}]", raw[:n], (exc.field, exc.offset)))
            else:
                assert n == 60 or not any(raw[n:]), (name, n)  # only zero padding may be cut off
    return out


@pytest.mark.parametrize("impl", CODECS)
def test_every_truncation_of_samples_rejected_like_the_reference(impl: Any) -> None:
    cases = _truncations()
    assert len(cases) > 500
    for what, cut, verdict in cases:
        with pytest.raises(ProtocolError) as mine:
            impl.decode(cut)
        assert (mine.value.field, mine.value.offset) == verdict, what


@pytest.mark.parametrize("impl", CODECS)
@pytest.mark.parametrize("hexraw", REGRESSIONS)
def test_regression_vectors(impl: Any, hexraw: str) -> None:
    raw = bytes.fromhex(hexraw)
    with pytest.raises(ProtocolError) as mine:
        impl.decode(raw)
    with pytest.raises(ProtocolError) as ref:
        codec.decode(raw)
    assert (mine.value.field, mine.value.offset) == (ref.value.field, ref.value.offset)


@pytest.mark.parametrize("impl", CODECS)
def test_ethertype_map_followed_at_run_time(impl: Any) -> None:
    frame = Frame(Heartbeat(1, DimeState.FREE), src_dime=1)
    raw = impl.encode(frame)
    try:
        ethertypes.configure("heartbeat=0x88b5,signaling=0x88b6")
        moved = impl.encode(frame)
        assert moved[12:14] == b"\x88\xb5" and moved[14:] == raw[14:]
        assert impl.decode(moved) == frame
        with pytest.raises(ProtocolError) as err:
            impl.decode(raw)
        assert (err.value.field, err.value.offset) == ("eth.type", 12)
    finally:
        ethertypes.configure(None)
    assert impl.decode(raw) == frame


@pytest.mark.parametrize("impl", CODECS)
@pytest.mark.parametrize(
    "frame",
    [
        Frame(Heartbeat(1, DimeState.FREE), src_dime=1, seq=-1),
        Frame(Heartbeat(1, DimeState.FREE), src_dime=1, src_mac=b"\x00"),
        Frame(Signaling(Command.PING, Op.REQUEST, 2**32), Scope.DIME, dst_dime=1),
        Frame(Data(1, payload=b"x" * 70000, msg_len=70000), Scope.DIME, dst_dime=1),
        Frame(Heartbeat(1, DimeState.FREE), src_dime=1, auth=Auth(0, 1)),
        Frame(Signaling(Command.PING, Op.REQUEST, 1, Status.BUSY), Scope.DIME, dst_dime=1),
    ],
    ids=["seq<0", "short-mac", "req_id>u32", "body>64k", "auth-key-0", "request-not-ok"],
)
def test_unencodable_frames_raise_protocol_error_like_the_reference(impl: Any, frame: Frame) -> None:
    with pytest.raises(ProtocolError) as mine:
        impl.encode(frame)
    with pytest.raises(ProtocolError) as ref:
        codec.encode(frame)
    assert mine.value.field == ref.value.field


# ---------------------------------------------------------------- the fast path's own API


def test_generated_constants_are_current() -> None:
    assert gen_fastpath.stale() == [], "run python -m pxproto.wire.gen_fastpath"


def test_generator_check_mode_detects_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in gen_fastpath.GENERATED_NAMES:
        (tmp_path / name).write_text((gen_fastpath.FASTPATH_DIR / name).read_text())
    monkeypatch.setattr(gen_fastpath, "FASTPATH_DIR", tmp_path)
    assert gen_fastpath.main(["--check"]) == 0
    (tmp_path / gen_fastpath.PXD_NAME).write_text("stale")
    assert gen_fastpath.main(["--check"]) == 1
    (tmp_path / gen_fastpath.PXD_NAME).write_text((gen_fastpath.FASTPATH_DIR / gen_fastpath.PXD_NAME).read_text())
    header = tmp_path / gen_fastpath.HEADER_NAME
    header.write_text(header.read_text().replace("#define PX_TEXT_MAX 255", "#define PX_TEXT_MAX 256"))
    assert gen_fastpath.main(["--check"]) == 1


def test_every_reference_error_field_has_a_fastpath_code() -> None:
    fields = {m[1] for m in MALFORMED}
    assert fields <= set(fp.ERROR_FIELDS), fields - set(fp.ERROR_FIELDS)


def test_compiled_module_is_built_when_required() -> None:
    if os.environ.get("PXPROTO_REQUIRE_COMPILED") != "1":
        pytest.skip("PXPROTO_REQUIRE_COMPILED is not 1")
    assert fp.COMPILED, "the Cython fast path did not build (or did not import)"
    assert fp.decode is wirec.decode
    assert fp.Indexer is compiled_index.Indexer


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        check=True,
    )


def test_pure_environment_variable_forces_the_pure_path() -> None:
    out = _run("import pxproto.fastpath as fp; print(fp.COMPILED, fp.decode.__module__)", PXPROTO_PURE="1")
    assert out.stdout.split() == ["False", "pxproto.wire.codec"]
    assert "RuntimeWarning" not in out.stderr


def test_missing_extension_falls_back_with_exactly_one_warning() -> None:
    code = (
        "import sys; sys.modules['pxproto.fastpath.wirec'] = None\n"
        "import pxproto.fastpath as fp, importlib\n"
        "from pxproto.wire.samples import valid_samples\n"
        "raw = valid_samples()[0][1]\n"
        "print(fp.COMPILED, fp.encode(fp.decode(raw)) == raw)\n"
    )
    out = _run(code, PXPROTO_PURE="", PXPROTO_REQUIRE_COMPILED="")  # the fallback is what is tested
    assert out.stdout.split() == ["False", "True"]
    assert out.stderr.count("RuntimeWarning") == 1 and "reference codec" in out.stderr


@pytest.mark.skipif(wirec is None, reason="compiled fast path not built")
def test_c_builders_match_the_reference_encoder() -> None:
    dst, src = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
    hb = Heartbeat(7, DimeState.BUSY, 100, 250, 3, 10, 20, 1, 2, 99)
    raw = wirec.put_heartbeat(dst, src, 4, 1, 9, (7, 1, 100, 250, 3, 10, 20, 1, 2, 99))
    assert raw == codec.encode(Frame(hb, Scope.SYSTEM, 4, 1, 0xFFFF, 0, 9, dst, src))
    tag = bytes(range(16))
    raw = wirec.put_heartbeat(dst, src, 4, 1, 9, (7, 1, 100, 250, 3, 10, 20, 1, 2, 99), (5, 6, tag))
    assert codec.decode(raw) == Frame(hb, Scope.SYSTEM, 4, 1, 0xFFFF, 0, 9, dst, src, Auth(5, 6, tag))
    d = Data(3, 11, b"hello", 5, 0, 0, 1)
    raw = wirec.put_data(dst, src, 4, 1, 8, 2, 10, (3, 0, 11, 5, 0, 0, 1, 0, 0), b"hello")
    assert codec.decode(raw) == Frame(d, Scope.DIME, 4, 1, 8, 2, 10, dst, src)
    tlvs = [(int(TlvType.ECHO), b"abc"), (int(TlvType.EPOCH), 77, 4)]
    raw = wirec.put_signaling(dst, src, 1, 4, 1, 8, 2, 10, 123, 1, 2, 0, tlvs)
    got = codec.decode(raw)
    assert got.body == Signaling(Command.PING, Op.RESPONSE, 123, Status.OK, got.body.params)
    assert [(p.type, p.value) for p in got.body.params] == [(TlvType.ECHO, b"abc"), (TlvType.EPOCH, 77)]
    with pytest.raises(ProtocolError) as err:  # the builder checks what it built
        wirec.put_heartbeat(dst, src, 0xFFFF, 1, 9, (7, 1, 100, 250, 3, 10, 20, 1, 2, 99))
    assert err.value.field == "dime.src"
    with pytest.raises(ProtocolError) as err:
        wirec.put_signaling(dst, src, 1, 4, 1, 8, 2, 10, 123, 0x7E, 1, 0, [])
    assert err.value.field == "cmd"


@pytest.mark.skipif(wirec is None, reason="compiled fast path not built")
@pytest.mark.parametrize("size", [1, 5, 20, 59, 60, 61, 64, 1400, 9000, 64_000])
def test_c_data_builder_matches_the_reference_encoder_at_every_size(size: int) -> None:
    """px_put_data writes frames of a large payload itself (memcpy), small or sealed ones through the header's
    encoder: both give the reference encoder's bytes, and refuse what it refuses."""
    dst, src = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
    payload = bytes(i * 7 % 251 for i in range(size))
    flags = DataFlag.FIN | DataFlag.ACK
    fixed = (0x1234, int(flags), 0xDEADBEEF, size + 9, 9, 1, 2, 0xCAFEF00D, 0x4321)
    d = Data(0x1234, 0xDEADBEEF, payload, size + 9, 9, 1, 2, 0xCAFEF00D, 0x4321, flags)
    raw = wirec.put_data(dst, src, 4, 1, 8, 2, 10, fixed, payload)
    assert raw == codec.encode(Frame(d, Scope.DIME, 4, 1, 8, 2, 10, dst, src))
    tag = bytes(range(16))
    if size <= 9000:  # (a trailer on 64,000 bytes passes the 16-bit length)
        sealed = wirec.put_data(dst, src, 4, 1, 8, 2, 10, fixed, payload, (5, 6, tag))
        assert codec.decode(sealed) == Frame(d, Scope.DIME, 4, 1, 8, 2, 10, dst, src, Auth(5, 6, tag))
    with pytest.raises(ProtocolError) as err:  # the fragment runs past msg_len: px_decode's check, either way
        wirec.put_data(dst, src, 4, 1, 8, 2, 10, (3, 0, 11, size + 8, 9, 1, 2, 0, 0), payload)
    assert err.value.field == "data.frag_offset"


@pytest.mark.skipif(wirec is None, reason="compiled fast path not built")
def test_c_copy_of_the_ethertype_map_follows_configure() -> None:
    assert wirec.current_ethertypes() == tuple(ethertypes.current().as_dict().values())
    try:
        ethertypes.configure("data=0x88b7")
        assert wirec.current_ethertypes()[1] == 0x88B7
    finally:
        ethertypes.configure(None)
    assert wirec.current_ethertypes() == (0xABBA, 0xABBB, 0xABBC, 0xABBD)


@pytest.mark.skipif(wirec is None, reason="compiled fast path not built")
def test_lazy_view_equals_the_frame() -> None:
    for _name, raw in VALID:
        v = fp.view(raw)
        f = codec.decode(raw)
        assert v == f and f == v and v.to_dict() == f.to_dict()
        assert (v.seq, v.src_dime, v.dst_dime, v.cls) == (f.seq, f.src_dime, f.dst_dime, f.cls)
        if isinstance(f.body, Signaling):
            assert (v.cmd, v.op, v.status, v.req_id) == (f.body.cmd, f.body.op, f.body.status, f.body.req_id)


# ---------------------------------------------------------------- batch and capture index


def _pcapng(frames: list[bytes]) -> bytes:
    out = io.BytesIO()
    w = PcapngWriter(out)
    for i, raw in enumerate(frames):
        w.write(raw, 1_000_000_000 + i)
    return out.getvalue()


def _pcap(frames: list[bytes], magic: int = 0xA1B2C3D4, endian: str = "<", linktype: int = 1, cut: int = 0) -> bytes:
    """A classic pcap; ``cut`` bytes of each frame are left out (caplen < wire length)."""
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, raw in enumerate(frames):
        kept = raw[: max(0, len(raw) - cut)]
        out += struct.pack(endian + "IIII", 5 + i, 7 + i, len(kept), len(raw)) + kept
    return out


def _block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack(e + "II", btype, 12 + len(body)) + body + struct.pack(e + "I", 12 + len(body))


def _shb(e: str) -> bytes:
    return _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def _idb(e: str, linktype: int, resol: int | None = None) -> bytes:
    opts = b"" if resol is None else struct.pack(e + "HH", 2, 3) + b"eth\x00" + struct.pack(e + "HHB3x", 9, 1, resol)
    return _block(
        e, 1, struct.pack(e + "HHI", linktype, 0, 65535) + opts + (struct.pack(e + "HH", 0, 0) if opts else b"")
    )


def _epb(e: str, iface: int, ts: int, raw: bytes, orig: int | None = None) -> bytes:
    head = struct.pack(e + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(raw), len(raw) if orig is None else orig)
    return _block(e, 6, head + raw)


def _sections() -> bytes:
    """Two sections (little then big endian), three interfaces with µs, ns and binary resolutions,
    simple packet blocks (one cut short of its original length), and blocks no reader knows."""
    raws = [raw for _, raw in VALID[:6]]
    le = [
        _shb("<"),
        _idb("<", 1),
        _block("<", 0x0BAD0BAD, b"unknown block body"),
        _idb("<", 1, 9),
        _epb("<", 0, 1_700_000_000_123_456, raws[0]),
        _epb("<", 1, 1_700_000_000_123_456_789, raws[1], len(raws[1]) + 40),
        _block("<", 3, struct.pack("<I", len(raws[2])) + raws[2]),
        _block("<", 5, bytes(20)),  # interface statistics
    ]
    be = [
        _shb(">"),
        _idb(">", 147, 0x8A),
        _block(">", 4, bytes(8)),  # name resolution
        _epb(">", 0, 2**40 + 3, raws[3]),
        _block(">", 3, struct.pack(">I", len(raws[4]) + 9) + raws[4]),
        _idb(">", 1, 3),
        _epb(">", 1, 2**63 + 5, raws[5]),  # past the year 2262: wraps
    ]
    return b"".join(le + be)


FILES = {
    "pcapng": _pcapng([raw for _, raw in VALID[:12]]),
    "pcap-le-us": _pcap([raw for _, raw in VALID[:5]]),
    "pcap-be-us": _pcap([raw for _, raw in VALID[:5]], 0xA1B2C3D4, ">", cut=9),
    "pcap-le-ns": _pcap([raw for _, raw in VALID[:5]], 0xA1B23C4D, "<", linktype=0x10093, cut=1),
    "pcap-be-ns": _pcap([raw for _, raw in VALID[:5]], 0xA1B23C4D, ">"),
    "pcapng-sections": _sections(),
}
INDEXERS = [
    pytest.param(capindex.Indexer, id="pure"),
    pytest.param(
        compiled_index.Indexer if compiled_index else None,
        id="compiled",
        marks=pytest.mark.skipif(compiled_index is None, reason="compiled fast path not built"),
    ),
]
needs_compiled = pytest.mark.skipif(compiled_index is None, reason="compiled fast path not built")


def _packets(blob: bytes) -> tuple[list[Any], CaptureError | None]:
    got: list[Any] = []
    try:
        for p in read_packets(io.BytesIO(blob)):
            got.append(p)
    except CaptureError as exc:
        return got, exc
    return got, None


def _assert_index_matches(blob: bytes, idx: fp.CaptureIndex, packets: list[Any]) -> None:
    assert [blob[o : o + n] for o, n in zip(idx.offsets, idx.lengths, strict=True)] == [p.data for p in packets]
    # absurd pcapng timestamps (past year 2262) wrap modulo 2**64 in the int64 column
    want = np.array([p.ts_ns % 2**64 for p in packets], dtype=np.uint64).view(np.int64)
    assert list(idx.ts_ns) == list(want)
    assert list(idx.linktype) == [p.linktype for p in packets]
    assert list(idx.wirelens) == [p.orig_len for p in packets]


def _index(indexer: Any, blob: bytes) -> tuple[fp.CaptureIndex, CaptureError | None]:
    try:
        return capindex.index_with(indexer(), blob), None
    except CaptureError as exc:
        return exc.partial, exc  # type: ignore[attr-defined]


@pytest.mark.parametrize("indexer", INDEXERS)
@pytest.mark.parametrize("name", list(FILES))
def test_capture_index_matches_read_packets(name: str, indexer: Any) -> None:
    blob = FILES[name]
    packets, err = _packets(blob)
    assert err is None and packets
    idx, damage = _index(indexer, blob)
    assert damage is None
    _assert_index_matches(blob, idx, packets)


def test_index_capture_uses_the_compiled_indexer_when_built() -> None:
    assert fp.Indexer is (compiled_index.Indexer if fp.COMPILED else capindex.Indexer)
    if fp.COMPILED:  # the extension itself, not the pure twin under its name
        assert Path(compiled_index.__file__).suffix in (".so", ".pyd") and compiled_index is not capindex
    idx = fp.index_capture(FILES["pcapng-sections"])
    assert len(idx.offsets) == 6 and list(idx.linktype) == [1, 1, 1, 147, 147, 1]


@pytest.mark.parametrize("indexer", INDEXERS)
@pytest.mark.parametrize("name", list(FILES))
def test_damaged_capture_raises_like_read_packets_with_the_frames_before(name: str, indexer: Any) -> None:
    blob = FILES[name]
    rng = np.random.default_rng(7)
    cuts = [blob[:n] for n in range(0, len(blob), 7)]
    flips = []
    for _ in range(150):
        b = bytearray(blob)
        b[int(rng.integers(len(b)))] = int(rng.integers(256))
        flips.append(bytes(b))
    for bad in cuts + flips:
        packets, err = _packets(bad)
        idx, damage = _index(indexer, bad)
        if damage is not None:
            assert err is not None and (damage.field, damage.offset) == (err.field, err.offset), (damage, err)
        else:
            assert err is None
        _assert_index_matches(bad, idx, packets)


def _feed_whole(indexer: Any, data: bytes) -> tuple[list[np.ndarray], tuple[str, int, str] | None, int]:
    ix = indexer()
    *arrays, used = ix.feed(data, True)
    return arrays, ix.error, used


def _assert_twins_agree(data: bytes) -> None:
    (a, ea, ua), (b, eb, ub) = _feed_whole(compiled_index.Indexer, data), _feed_whole(capindex.Indexer, data)
    assert (ea, ua) == (eb, ub)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


@needs_compiled
@pytest.mark.parametrize("name", [*FILES, "all.pcapng", "malformed.pcapng"])
def test_compiled_and_pure_indexers_agree_on_every_cut(name: str) -> None:
    data = FILES[name] if name in FILES else (ROOT / "captures" / name).read_bytes()
    cuts = range(len(data) + 1) if len(data) < 5000 else sorted({*range(0, 200), *range(200, len(data), 97), len(data)})
    for cut in cuts:
        _assert_twins_agree(data[:cut])
    _assert_twins_agree(b"nonsense")
    bad = bytearray(FILES["pcap-le-us"])
    bad[24 + 8 : 24 + 12] = struct.pack("<I", 10_000_000)  # a record longer than the snap length
    _assert_twins_agree(bytes(bad))


@needs_compiled
@settings(max_examples=80, deadline=None)
@given(st.data())
def test_compiled_and_pure_indexers_agree_on_flipped_bytes(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(FILES)))
    raw = bytearray(FILES[name])
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _assert_twins_agree(bytes(raw))


@pytest.mark.parametrize("indexer", INDEXERS)
@pytest.mark.parametrize("block", [1, 7, 97, 4096])
def test_indexer_fed_in_pieces_equals_whole(indexer: Any, block: int) -> None:
    data = FILES["pcapng-sections"] + _block(">", 0x0BAD, bytes(5000)) + FILES["pcapng"]
    for blob in (data, FILES["pcap-be-ns"]):
        whole, _error, _used = _feed_whole(indexer, blob)
        ix = indexer()
        parts: list[list[np.ndarray]] = [[], [], [], [], []]
        pending, pos = b"", 0
        while True:
            chunk = blob[pos : pos + block]
            pos += len(chunk)
            buf = pending + chunk
            *arrays, used = ix.feed(buf, not chunk)
            for p, a in zip(parts, arrays, strict=True):
                p.append(a)
            pending = buf[used:]
            if not chunk:
                break
        assert ix.error is None and pending == b""
        for p, w in zip(parts, whole, strict=True):
            assert np.array_equal(np.concatenate(p), w)


@pytest.mark.parametrize("indexer", INDEXERS)
def test_indexer_cut_stream_ends_with_the_error_of_the_whole(indexer: Any) -> None:
    data = FILES["pcapng-sections"][:-7]
    ix = indexer()
    first = ix.feed(data[:100], False)
    assert ix.error is None
    rest = ix.feed(data[first[-1] :], True)
    whole, error, _used = _feed_whole(indexer, data)
    assert ix.error == error and error is not None and error[0] == "pcapng.block"
    assert list(first[0]) + list(rest[0]) == list(whole[0])
    assert ix.feed(b"more", True)[-1] == 0 and ix.error == error  # stopped for good


@pytest.mark.parametrize("indexer", INDEXERS)
def test_section_header_too_short_for_its_byte_order_magic(indexer: Any) -> None:
    # read_packets fails at byte 12 reading the rest of this section header; the compiled indexer once
    # reported the trailing length at byte 8 instead
    blob = struct.pack("<III", 0x0A0D0D0A, 12, 0x1A2B3C4D) + bytes(40)
    _packets_read, err = _packets(blob)
    idx, damage = _index(indexer, blob)
    assert damage is not None and err is not None and (damage.field, damage.offset) == (err.field, err.offset)
    assert (damage.field, damage.offset) == ("pcapng.block", 12) and len(idx.offsets) == 0


def test_decode_capture_columns_match_single_frame_decoding() -> None:
    raws = [raw for _, raw in VALID] + [m[3] for m in MALFORMED]
    blob = _pcapng(raws)
    cols = fp.decode_capture(blob)
    assert len(cols) == len(raws)
    for i, raw in enumerate(raws):
        try:
            f = codec.decode(raw)
        except ProtocolError as exc:
            assert not cols.valid[i] and cols.errors[i] == exc.field and cols.error_offset[i] == exc.offset
            continue
        assert cols.valid[i] and cols.error[i] == 0 and cols.errors[i] == ""
        d = f.to_dict()
        assert cols.cls[i] == int(f.cls) and cols.seq[i] == f.seq and cols.src_dime[i] == f.src_dime
        assert cols.body_len[i] == d["px.len"] and cols.padding[i] == f.padding
        assert cols.ts_ns[i] == 1_000_000_000 + i
        if isinstance(f.body, Signaling):
            assert (cols.cmd[i], cols.op[i], cols.status[i], cols.req_id[i]) == (
                f.body.cmd,
                f.body.op,
                f.body.status,
                f.body.req_id,
            )
        if isinstance(f.body, Heartbeat):
            assert (cols.hb_epoch[i], cols.hb_state[i]) == (f.body.epoch, f.body.state)
        if isinstance(f.body, Data):
            assert (cols.channel[i], cols.msg_id[i], cols.frag_index[i], cols.frag_count[i], cols.msg_len[i]) == (
                f.body.channel,
                f.body.msg_id,
                f.body.frag_index,
                f.body.frag_count,
                f.body.msg_len,
            )


def test_filter_and_reused_columns() -> None:
    raws = [raw for _, raw in VALID]
    blob = b"".join(raws)
    offsets = np.cumsum([0] + [len(r) for r in raws[:-1]])
    lengths = [len(r) for r in raws]
    cols = fp.decode_columns(blob, offsets, lengths)
    frames = [codec.decode(r) for r in raws]
    pings = cols.filter(cls=FrameClass.SIGNALING, cmd=Command.PING, op=Op.REQUEST)
    assert len(pings) == sum(
        1 for f in frames if isinstance(f.body, Signaling) and f.body.cmd is Command.PING and f.body.op is Op.REQUEST
    )
    assert len(pings) > 0
    either = cols.mask(cls=[FrameClass.HEARTBEAT, FrameClass.DISCOVERY])
    assert either.sum() == sum(1 for f in frames if f.cls in (FrameClass.HEARTBEAT, FrameClass.DISCOVERY))
    assert cols.mask(seq=slice(0, 2**63)).sum() == sum(1 for f in frames if f.seq < 2**63)
    assert cols.mask(src_dime=lambda a: a == 0xFFFF).sum() == sum(1 for f in frames if f.src_dime == 0xFFFF)
    with pytest.raises(KeyError):
        cols.mask(nonsense=1)
    again = fp.decode_columns(blob, offsets, lengths, out=cols)
    assert again is cols and cols.valid.all()
    bad = fp.decode_columns(blob, offsets, lengths, linktypes=[101] * len(raws))
    assert not bad.valid.any() and set(bad.errors) == {"frame"} and not bad.cls.any()
    assert bad.mask(error="frame").all()
    with pytest.raises(ValueError):
        fp.decode_columns(blob, [len(blob) - 3], [10])
