"""pxdump's filter language: parse errors point at the word; BPF and column masks agree."""

from __future__ import annotations

import numpy as np
import pcapy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxproto.capture.pcapng import Packet
from pxproto.dump.columns import from_packets
from pxproto.dump.filter import MAX_NESTING, MAX_WORDS, FilterError, parse, to_bpf
from pxproto.testing import frames
from pxproto.wire import decode, encode, ethertypes
from pxproto.wire.codes import Command, DimeState, Scope, TlvType
from pxproto.wire.frame import Auth, Frame, Heartbeat, Signaling, Tlv
from pxproto.wire.samples import valid_samples

FILTERS = [
    "signaling",
    "data or heartbeat",
    "not discovery",
    "parallax",
    "scope dime",
    "scope system and sig",
    "dime 3",
    "src dime 3 or dst dime 0",
    "thread 0",
    "dst thread 1 and not src thread 1",
    "cmd PING",
    "cmd get_param or cmd 0x11",
    "op response and status OK",
    "not status OK",
    "fcaps C",
    "fcaps S or fcaps F",
    "channel 3",
    "seq 0-1000",
    "seq 5",
    "seq 4294967290-4294967300",
    "seq 0-18446744073709551615",
    "auth",
    "mac 02:00:00:00:00:01",
    "src mac 00:00:00:00:00:00 and ! heartbeat",
    "(data && channel 1) || (hb and not auth)",
]


@pytest.mark.parametrize("text", FILTERS)
def test_every_filter_compiles_in_libpcap(text: str) -> None:
    bpf = to_bpf(text)
    assert bpf is not None
    pcapy.compile(pcapy.DLT_EN10MB, 65535, bpf, 1, 0)


@settings(max_examples=60)
@given(st.lists(frames(), min_size=20, max_size=40))
def test_bpf_and_columns_agree_on_valid_frames(fs: list) -> None:
    raws = [encode(f) for f in fs]
    batch = from_packets([Packet(r, i, len(r)) for i, r in enumerate(raws)])
    assert batch.valid.all()
    for text in FILTERS:
        prog = pcapy.compile(pcapy.DLT_EN10MB, 65535, to_bpf(text), 1, 0)
        kernel = np.array([prog.filter(r) != 0 for r in raws])
        columns = parse(text).mask(batch)
        assert (kernel == columns).all(), text


def test_mask_matches_decoded_fields() -> None:
    raws = [r for _, r in valid_samples()]
    batch = from_packets([Packet(r, 0, len(r)) for r in raws])
    decoded = [decode(r) for r in raws]
    got = parse("dime 2 and signaling").mask(batch)
    want = [f.cls.name == "SIGNALING" and 2 in (f.src_dime, f.dst_dime) for f in decoded]
    assert got.tolist() == want
    assert any(want)


@pytest.mark.parametrize(
    ("text", "word", "reason"),
    [
        ("cmd PIGN and dime 3", "PIGN", "unknown command"),
        ("dime 3 and", "", "filter ends"),
        ("(hb or data", "(", "never closed"),
        ("hb or data)", ")", "without a matching"),
        ("dime x", "x", "must be a number"),
        ("dime 70000", "70000", "out of range"),
        ("dime 65536", "65536", "out of range 0..65535"),
        ("src thread 65536", "65536", "out of range 0..65535"),
        ("channel 65536", "65536", "out of range 0..65535"),
        ("hb data", "data", "expected 'and' or 'or'"),
        ("src foo 3", "foo", "followed by"),
        ("seq 9-1", "9-1", "empty"),
        ("status FINE", "FINE", "unknown status"),
        ("fcaps Q", "Q", "unknown FCAPS area"),
        ("mac 00:11", "00:11", "not a MAC address"),
        ("heartbeat and bogus 3", "bogus", "unknown filter word"),
        ("and hb", "and", "needs a filter word"),
    ],
)
def test_bad_filter_points_at_the_word(text: str, word: str, reason: str) -> None:
    with pytest.raises(FilterError) as info:
        parse(text)
    e = info.value
    assert reason in e.reason
    assert text[e.pos : e.pos + len(word)] == word
    caret_line = str(e).splitlines()[-1]
    assert caret_line.index("^") - 2 == e.pos


def test_bpf_follows_the_configured_ethertypes() -> None:
    try:
        ethertypes.configure("signaling=0x88b5,data=0x88b6")
        assert to_bpf("signaling") == "ether proto 0x88b5"
    finally:
        ethertypes.configure(None)
    assert to_bpf("signaling") == "ether proto 0xabba"


def test_malformed_has_no_bpf_form() -> None:
    assert to_bpf("malformed") is None
    assert to_bpf("malformed and hb") == "ether proto 0xabbd"
    assert to_bpf("malformed or hb") is None


# Hand-written truth (issue 12): the other tests compare two paths generated from the same code, so an
# error of meaning shared by both passes them.  These frames are literal bytes, read by eye:
# dst MAC, src MAC, EtherType, version, flags (bit 0: scope DIME), length, src dime.thread,
# dst dime.thread, seq (8 bytes), then the body.
HAND_FRAMES = {
    # heartbeat from DIME 3, scope system, to *.0, broadcast
    "HB": "ffffffffffff020000000003abbd0100001f00030000ffff000000000000000000000000000101006400fa"
    "00000000000000000000000000000000000000000000",
    # PING request *.0 > 3.1, scope DIME, seq 2, from MAC 00:..:00 to broadcast
    "REQ": "ffffffffffff000000000000abba01010008ffff00000003000100000000000000020000000201010000",
    # DATA 3.1 > 4.1, scope DIME, seq 9, channel 1
    "DATA": "020000000004020000000003abbb0101001a0003000100040001000000000000000900010000000009000000010000"
    "00000000000100000000000021",
    # PING response BUSY 3.1 > 1.0, scope DIME, seq 10
    "RESP": "020000000001020000000003abba010100080003000100010000000000000000000a0000000201020400",
    # discovery announce *.0 > *.0, scope system, seq 11
    "DISC": "ffffffffffff020000000005abbc01000010ffff0000ffff0000000000000000000b02ff0000000000070000010000000001",
}
HAND_TRUTH = {
    "scope dime": {"REQ", "DATA", "RESP"},
    "scope system": {"HB", "DISC"},
    "not scope dime": {"HB", "DISC"},
    "heartbeat and scope dime": set(),
    "data and scope dime": {"DATA"},
    "parallax": {"HB", "REQ", "DATA", "RESP", "DISC"},
    "data or heartbeat": {"HB", "DATA"},
    "signaling": {"REQ", "RESP"},
    "dime 3": {"HB", "REQ", "DATA", "RESP"},
    "src dime 3": {"HB", "DATA", "RESP"},
    "dst dime 3": {"REQ"},
    "thread 1": {"REQ", "DATA", "RESP"},
    "dst thread 0": {"HB", "RESP", "DISC"},
    "cmd PING": {"REQ", "RESP"},
    "op response": {"RESP"},
    "op request": {"REQ"},
    "status BUSY": {"RESP"},
    "fcaps F": {"REQ", "RESP"},
    "fcaps C": set(),
    "channel 1": {"DATA"},
    "seq 9-10": {"DATA", "RESP"},
    "seq 2": {"REQ"},
    "src mac 02:00:00:00:00:03": {"HB", "DATA", "RESP"},
    "mac ff:ff:ff:ff:ff:ff": {"HB", "REQ", "DISC"},
}


@pytest.mark.parametrize("text", sorted(HAND_TRUTH))
def test_filter_against_hand_computed_truth(text: str) -> None:
    names = list(HAND_FRAMES)
    raws = [bytes.fromhex(HAND_FRAMES[n]) for n in names]
    assert raws[names.index("DATA")][15] & 1 and not raws[names.index("HB")][15] & 1  # the scope bit, by eye
    batch = from_packets([Packet(r, 0, len(r)) for r in raws])
    assert batch.valid.all()
    columns = {n for n, keep in zip(names, parse(text).mask(batch), strict=True) if keep}
    assert columns == HAND_TRUTH[text], "columns"
    prog = pcapy.compile(pcapy.DLT_EN10MB, 65535, to_bpf(text), 1, 0)
    kernel = {n for n, r in zip(names, raws, strict=True) if prog.filter(r)}
    assert kernel == HAND_TRUTH[text], "BPF"


def test_a_frame_too_short_for_its_macs_matches_no_mac_filter() -> None:
    raws = [bytes(10), bytes.fromhex(HAND_FRAMES["REQ"])]  # a 10-byte runt of zeros; REQ comes from 00:..:00
    batch = from_packets([Packet(r, 0, len(r)) for r in raws])
    for text, want in [("src mac 00:00:00:00:00:00", [False, True]), ("mac 00:00:00:00:00:00", [False, True])]:
        prog = pcapy.compile(pcapy.DLT_EN10MB, 65535, to_bpf(text), 1, 0)
        assert [bool(prog.filter(r)) for r in raws] == want, f"BPF {text}"
        assert [bool(k) for k in parse(text).mask(batch)] == want, f"columns {text}"


def test_auth_matches_every_signed_frame_whatever_its_scope() -> None:
    signed = Auth(1, 7, bytes(16))
    body = Signaling(Command.PING, params=(Tlv(TlvType.ECHO, b"x"),))
    raws = [
        encode(Frame(body, Scope.DIME, 1, 0, 2, 0, auth=signed)),  # flags: SCOPE_DIME | AUTH
        encode(Frame(Heartbeat(1, DimeState.FREE, 100), Scope.SYSTEM, 3, auth=signed)),  # flags: AUTH
        encode(Frame(body, Scope.DIME, 1, 0, 2, 0)),  # flags: SCOPE_DIME
    ]
    batch = from_packets([Packet(r, 0, len(r)) for r in raws])
    prog = pcapy.compile(pcapy.DLT_EN10MB, 65535, to_bpf("auth"), 1, 0)
    assert [bool(k) for k in parse("auth").mask(batch)] == [True, True, False]
    assert [bool(prog.filter(r)) for r in raws] == [True, True, False]


@pytest.mark.parametrize("opener", ["(", "not "])
def test_nesting_up_to_the_limit_parses_and_one_deeper_is_refused(opener: str) -> None:
    def nested(depth: int) -> str:
        return opener * depth + "hb" + (")" * depth if opener == "(" else "")

    assert parse(nested(MAX_NESTING)) is not None
    with pytest.raises(FilterError, match=f"nested deeper than {MAX_NESTING}"):
        parse(nested(MAX_NESTING + 1))


def test_words_up_to_the_limit_parse_and_one_more_is_refused() -> None:
    assert parse(" or ".join(["hb"] * MAX_WORDS)) is not None
    with pytest.raises(FilterError, match=f"more than {MAX_WORDS} filter words"):
        parse(" or ".join(["hb"] * (MAX_WORDS + 1)))
