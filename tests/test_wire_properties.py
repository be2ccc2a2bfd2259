"""Round trips and hostile input for the reference codec, driven by pxproto.testing."""

from __future__ import annotations

import io
import pickle
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxproto import ProtocolError
from pxproto.capture import CaptureError, PcapngWriter, read_packets
from pxproto.testing import frames, hostile_bytes, mutations
from pxproto.wire import DimeState, Frame, FrameClass, Heartbeat, auth, decode, encode, ethertypes, layout
from pxproto.wire.samples import valid_samples


def _decode_or_protocol_error(raw: bytes) -> None:
    try:
        decode(raw)
    except ProtocolError as exc:
        assert not exc.reason.startswith("internal"), exc
        assert 0 <= exc.offset <= max(len(raw), 14)


@pytest.mark.parametrize("cls", list(FrameClass), ids=lambda c: c.name)
@settings(max_examples=300)
@given(data=st.data())
def test_round_trip(cls: FrameClass, data: st.DataObject) -> None:
    frame = data.draw(frames(cls))
    raw = encode(frame)
    back = decode(raw)
    assert back == frame
    assert encode(back) == raw
    assert back.to_dict()["px.class"] == cls.name


@settings(max_examples=1500)
@given(hostile_bytes())
def test_hostile_bytes_raise_only_protocol_error(raw: bytes) -> None:
    _decode_or_protocol_error(raw)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_error(raw: bytes) -> None:
    _decode_or_protocol_error(raw)


@settings(max_examples=300)
@given(st.sampled_from([raw for _, raw in valid_samples()]).flatmap(mutations))
def test_mutated_samples_raise_only_protocol_error(raw: bytes) -> None:
    _decode_or_protocol_error(raw)


def test_every_truncation_of_every_sample_is_rejected() -> None:
    for name, raw in valid_samples():
        for n in range(len(raw)):
            try:
                decode(raw[:n])
            except ProtocolError:
                continue
            # a frame padded to 60 bytes is still whole without its padding
            assert decode(raw).padding and n >= len(raw) - decode(raw).padding, (name, n)


def test_to_dict_keys_follow_the_layout_tables() -> None:
    keys: set[str] = set()
    for _, raw in valid_samples():
        keys |= decode(raw).to_dict().keys()
    for prefix, (_, fields) in layout.struct_tables().items():
        for f in fields:
            if prefix == "tlv":
                continue  # TLV headers are shown in the dissector's subtrees, values under px.tlv.<name>
            assert f.key in keys, f.key
    assert all(k.startswith("px.") for k in keys)


def test_protocol_error_is_a_value_error_that_pickles() -> None:
    err = ProtocolError("cmd", 38, "unknown command 0x7e")
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.field, back.offset, back.reason) == ("cmd", 38, "unknown command 0x7e")
    assert str(err) == "cmd at byte 38: unknown command 0x7e"


def test_ethertype_map_is_configurable_for_every_codec() -> None:
    frame = Frame(Heartbeat(1, DimeState.FREE), src_dime=1)
    raw = encode(frame)
    try:
        ethertypes.configure("heartbeat=0x88b5,signaling=0x88b6")
        moved = encode(frame)
        assert moved[12:14] == b"\x88\xb5" and moved[14:] == raw[14:]
        assert decode(moved) == frame
        with pytest.raises(ProtocolError) as err:
            decode(raw)
        assert (err.value.field, err.value.offset) == ("eth.type", 12)
    finally:
        ethertypes.configure(None)
    assert decode(raw) == frame


@pytest.mark.parametrize(
    "text,needle",
    [
        ("signaling=0x0800", "IPv4"),
        ("data=0xabba", "same value"),
        ("video=0x1234", "CLASS=VALUE"),
        ("data=zz", "not a number"),
        ("data=0x10", "0x0600"),
        ("signaling=0x88b5,signaling=0x88b7", "item 2 'signaling=0x88b7': class signaling is given twice"),
        ("data=0x88b6, DATA=0x88b6", "item 2 'DATA=0x88b6': class data is given twice"),
        ("signaling=-1", "EtherType signaling=-0x1: must be within 0x0600..0xffff"),
    ],
)
def test_bad_ethertype_maps_are_refused_clearly(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ethertypes.EtherTypeMap.parse(text)


def test_auth_tag_covers_the_frame() -> None:
    frame = Frame(Heartbeat(4, DimeState.BUSY), src_dime=3)
    raw = auth.sign(frame, 2, 10, b"key")
    dec = decode(raw)
    assert dec.auth is not None and (dec.auth.key_id, dec.auth.counter) == (2, 10)
    assert auth.verify(dec, raw, b"key")
    assert not auth.verify(dec, raw, b"other key")
    tampered = bytearray(raw)
    tampered[40] ^= 1
    assert not auth.verify(decode(bytes(tampered)), bytes(tampered), b"key")


def _pcapng(frames_: list[bytes]) -> bytes:
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    for i, f in enumerate(frames_):
        w.write(f, 1_700_000_000_000_000_000 + i, comment=f"frame {i}")
    return buf.getvalue()


def test_pcapng_round_trip_keeps_frames_untouched() -> None:
    raws = [raw for _, raw in valid_samples()]
    got = list(read_packets(io.BytesIO(_pcapng(raws))))
    assert [p.data for p in got] == raws
    assert got[1].ts_ns == 1_700_000_000_000_000_001 and got[1].comment == "frame 1"


def test_classic_pcap_is_read() -> None:
    raw = valid_samples()[0][1]
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + struct.pack("<IIII", 5, 7, len(raw), len(raw))
    (p,) = list(read_packets(io.BytesIO(pcap + raw)))
    assert p.data == raw and p.ts_ns == 5_000_007_000


def test_truncated_pcapng_reports_where_it_stopped_after_yielding_what_it_read() -> None:
    blob = _pcapng([raw for _, raw in valid_samples()[:3]])
    cut = blob[:-10]
    got = []
    with pytest.raises(CaptureError) as err:
        for p in read_packets(io.BytesIO(cut)):
            got.append(p)
    assert len(got) == 2
    assert err.value.offset > 0 and "truncated" in err.value.reason


@pytest.mark.parametrize("blob", [b"", b"\x00\x01", b"GIF89a....", b"\x0a\x0d\x0d\x0a\xff\xff\xff\xff"])
def test_garbage_capture_files_get_capture_errors(blob: bytes) -> None:
    with pytest.raises(CaptureError):
        list(read_packets(io.BytesIO(blob)))


def _block(btype: int, body: bytes) -> bytes:
    return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


@pytest.mark.parametrize(
    "blob,field",
    [
        (struct.pack("<III", 0x0A0D0D0A, 12, 0x1A2B3C4D), "pcapng.block"),  # section header with no body
        (
            _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
            + _block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 0) + struct.pack("<HH", 0, 0))
            + _block(6, struct.pack("<IIIII", 0, 0, 0, 0, 0))
            + _block(3, b""),
            "pcapng.spb",
        ),  # empty if_tsresol option, then a simple packet block with no length
    ],
)
def test_odd_pcapng_blocks_get_capture_errors(blob: bytes, field: str) -> None:
    with pytest.raises(CaptureError) as err:
        list(read_packets(io.BytesIO(blob)))
    assert err.value.field == field
