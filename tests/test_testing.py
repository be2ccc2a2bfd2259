"""pxproto.testing: one generator (drawing, mutation table, strategies), derived from the spec, no hypothesis needed
for the parts pxfuzz uses."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import pxproto.testing as pt
from pxproto.errors import ProtocolError
from pxproto.fuzz.cli import main as pxfuzz
from pxproto.testing import MUTATIONS, frames, hostile_bytes, mutations, random_frame, ruled_fields, valid_pool, variant
from pxproto.testing.hostile import HEADER_SPOTS, spots
from pxproto.wire import layout, spec
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import FrameClass

ROOT = Path(__file__).resolve().parent.parent


def test_ruled_fields_are_found_by_the_decoder_and_are_the_protocols_rules() -> None:
    ruled = ruled_fields()
    # Every field the rules of docs/PROTOCOL.md constrain beyond its width ...
    for key in (
        "px.version", "px.flags", "px.len", "px.dime.src", "px.dime.dst", "px.cmd", "px.op", "px.status",
        "px.tlv_count", "px.data.flags", "px.data.msg_len", "px.data.frag_offset", "px.data.frag_index",
        "px.data.frag_count", "px.data.ack", "px.data.credit", "px.disc.op", "px.disc.state_filter",
        "px.disc.count", "px.disc.probe_id", "px.hb.state", "px.hb.period_ms", "px.hb.cpu_permille",
        "px.auth.key_id", "px.auth.counter",
    ):  # fmt: skip
        assert key in ruled, key
    # ... and none that any value of its width fills legally.
    free = ("px.seq", "px.thread.src", "px.thread.dst", "px.req_id", "px.data.channel", "px.data.msg_id",
            "px.disc.sw_version", "px.disc.caps", "px.hb.epoch", "px.hb.stage", "px.auth.tag")  # fmt: skip
    for key in free:
        assert key not in ruled, key
    # Every enum and flags field of the layout tables has codes the decoder refuses.
    for struct in (spec.Header, *spec.FIXED_BODIES.values(), spec.AuthTrailer):
        for f in layout.fields(struct):
            if f.kind in ("enum", "flags"):
                assert f.key in ruled, f.key


def test_field_spots_come_from_the_layout_tables() -> None:
    raw = encode(random_frame(random.Random(0), FrameClass.HEARTBEAT, auth=1.0))
    here = {f.key: off for f, off in spots(raw)}
    assert here["px.seq"] == spec.ETH_LEN + 12
    assert here["px.hb.cpu_permille"] == spec.BODY_OFFSET + 7
    assert here["px.auth.key_id"] == spec.BODY_OFFSET + spec.HeartbeatBody.sizeof()
    assert [f.key for f, _ in HEADER_SPOTS] == [f.key for f in layout.fields(spec.Header)]


def test_the_table_names_every_mutator_and_pxfuzz_lists_it(capsys) -> None:  # type: ignore[no-untyped-def]
    assert pt.KINDS == tuple(MUTATIONS) and pt.KINDS[0] == "valid"
    assert pxfuzz(["kinds"]) == 0
    out = capsys.readouterr().out
    for m in MUTATIONS.values():
        assert f"{m.name:<10} {m.help}" in out


def test_every_hostile_mutator_mostly_breaks_a_frame(rng: random.Random) -> None:
    pool = valid_pool(rng, 40)
    for kind in pt.HOSTILE_KINDS:
        refused = 0
        for i in range(200):
            try:
                decode(pt.mutate(rng, pool[i % len(pool)], kind, pool))
            except ProtocolError:
                refused += 1
        assert refused >= {"flip": 60, "field": 100}.get(kind, 170), (kind, refused)


def test_variants_keep_the_shape_and_stay_valid(rng: random.Random) -> None:
    for raw in valid_pool(rng, 40):
        f = decode(raw)
        for _ in range(5):
            v = variant(rng, f)
            out = encode(v)
            assert len(out) == len(raw) and decode(out) == v and v.cls is f.cls


@settings(max_examples=60)
@given(frames())
def test_strategy_frames_are_valid(f) -> None:  # type: ignore[no-untyped-def]
    assert decode(encode(f)) == f


@settings(max_examples=60)
@given(hostile_bytes())
def test_strategy_hostile_bytes_only_raise_protocol_error(raw: bytes) -> None:
    try:
        decode(raw)
    except ProtocolError:
        pass


@settings(max_examples=40)
@given(st.data())
def test_mutations_strategy_applies_the_named_mutator(data: st.DataObject) -> None:
    raw = encode(data.draw(frames()))
    assert len(data.draw(mutations(raw, kinds=["truncate"]))) < len(raw)
    assert data.draw(mutations(raw, kinds=["valid"]))[: spec.ETH_LEN] == raw[: spec.ETH_LEN]


NO_HYPOTHESIS = """
import sys
sys.modules["hypothesis"] = None  # as if not installed
import pxproto.testing, pxproto.fuzz, pxproto.fuzz.cli, pxproto.dump.cli, pxproto.orch.demo
from pxproto.testing import MUTATIONS, valid_pool, random_frame
assert pxproto.fuzz.cli.main(["gen", "-n", "20", "-o", sys.argv[1]]) == 0
assert pxproto.dump.cli.main(["-r", sys.argv[1], "-q"]) in (0, 1)
try:
    from pxproto.testing import frames
except ModuleNotFoundError as exc:
    assert "pxproto[testing]" in str(exc), exc
else:
    raise AssertionError("strategies imported without hypothesis")
"""


def test_pxfuzz_pxdump_and_the_drawing_need_no_hypothesis(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(
        [sys.executable, "-c", NO_HYPOTHESIS, str(tmp_path / "g.pcapng")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
