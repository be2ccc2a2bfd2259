"""Hand-built vectors, samples, captures and the generated reference, through the reference codec."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pxproto.capture import read_packets
from pxproto.wire import Command, DimeState, DiscoveryOp, ProtocolError, Status, decode, encode
from pxproto.wire.gen_docs import generate
from pxproto.wire.samples import malformed_samples, valid_samples

ROOT = Path(__file__).resolve().parent.parent
VECTORS_PY = ROOT / "tests" / "vectors" / "make_vectors.py"
VECTORS = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())


def _load_vector_builder():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS_PY)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_decodes_to_its_fields(vector: dict) -> None:  # type: ignore[type-arg]
    raw = bytes.fromhex(vector["hex"])
    fields = decode(raw).to_dict()
    for key, value in vector["fields"].items():
        assert fields.get(key, "<missing>") == value, key
    assert encode(decode(raw)) == raw


def test_vectors_file_is_current() -> None:
    assert _load_vector_builder().vectors() == VECTORS, "run python tests/vectors/make_vectors.py"


def test_every_code_has_a_vector() -> None:
    seen = {(v["fields"].get("px.cmd"), v["fields"].get("px.op")) for v in VECTORS}
    for cmd in Command:
        assert (cmd.name, "REQUEST") in seen and (cmd.name, "RESPONSE") in seen, cmd
    statuses = {v["fields"].get("px.status") for v in VECTORS}
    assert {s.name for s in Status} <= statuses
    states = {v["fields"].get("px.hb.state") for v in VECTORS}
    assert {s.name for s in DimeState} <= states
    ops = {v["fields"].get("px.disc.op") for v in VECTORS}
    assert {o.name for o in DiscoveryOp} <= ops
    classes = {v["fields"]["px.class"] for v in VECTORS}
    assert classes == {"SIGNALING", "DATA", "DISCOVERY", "HEARTBEAT"}


@pytest.mark.parametrize("reason,field,offset,raw", malformed_samples(), ids=[m[0] for m in malformed_samples()])
def test_malformed_sample_is_rejected_precisely(reason: str, field: str, offset: int, raw: bytes) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(raw)
    assert (err.value.field, err.value.offset) == (field, offset), err.value
    assert isinstance(err.value, ValueError)


def _capture(name: str) -> list:  # type: ignore[type-arg]
    with open(ROOT / "captures" / name, "rb") as f:
        return list(read_packets(f))


def test_all_capture_holds_exactly_the_samples() -> None:
    packets = _capture("all.pcapng")
    assert [p.data for p in packets] == [raw for _, raw in valid_samples()], (
        "captures/all.pcapng is stale: run python -m pxproto.wire.record captures/"
    )
    assert [p.comment for p in packets] == [name for name, _ in valid_samples()]
    for p in packets:
        assert encode(decode(p.data)) == p.data


def test_malformed_capture_rejects_every_frame_for_its_reason() -> None:
    packets = _capture("malformed.pcapng")
    expected = [(r, f, o) for r, f, o, raw in malformed_samples() if len(raw) >= 14]
    assert len(packets) == len(expected)
    for p, (reason, field, offset) in zip(packets, expected, strict=True):
        assert p.comment and p.comment.startswith(reason)
        with pytest.raises(ProtocolError) as err:
            decode(p.data)
        assert (err.value.field, err.value.offset) == (field, offset)


def test_every_command_and_status_is_in_the_capture() -> None:
    dicts = [decode(p.data).to_dict() for p in _capture("all.pcapng")]
    assert {(d.get("px.cmd"), d.get("px.op")) for d in dicts} >= {
        (c.name, o) for c in Command for o in ("REQUEST", "RESPONSE")
    }
    assert {d.get("px.status") for d in dicts} >= {s.name for s in Status}
    assert {d["px.class"] for d in dicts} == {"SIGNALING", "DATA", "DISCOVERY", "HEARTBEAT"}
    assert any(d.get("px.flags.auth") for d in dicts)
    assert max(d.get("px.data.msg_len", 0) for d in dicts) >= 65536


def test_protocol_reference_is_current() -> None:
    assert (ROOT / "docs" / "PROTOCOL.md").read_text() == generate(), (
        "run python -m pxproto.wire.gen_docs -o docs/PROTOCOL.md"
    )


def test_main_job_decodes_the_captures() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pxproto.wire", str(ROOT / "captures" / "all.pcapng")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"{len(valid_samples())} frames decoded, 0 malformed" in out
