"""pxdump's filter language: parse errors point at the word; BPF and column masks agree."""

from __future__ import annotations

import numpy as np
import pcapy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxproto.capture.pcapng import Packet
from pxproto.dump.columns import from_packets
from pxproto.dump.filter import FilterError, parse, to_bpf
from pxproto.testing import frames
from pxproto.wire import decode, encode, ethertypes
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
