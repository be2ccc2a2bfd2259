"""docs/conformance.json through every decoder: the reference codec, the fast path (compiled and
pure; decode, view, check and the batch columns), pxdump --json (a subprocess, fast and reference
paths) and tshark with the generated dissector.  One pcapng holds every vector, so each tool
starts once."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pxproto import fastpath
from pxproto.capture.pcapng import PcapngWriter
from pxproto.errors import ProtocolError
from pxproto.fastpath import pure
from pxproto.wire import codec, ethertypes, samples
from pxproto.wire.codes import Command, DimeState, DiscoveryOp, Op, Status, TlvType
from pxproto.wire.gen_conformance import OUTPUT, render
from pxproto.wire.gen_lua import EXTRA_FIELDS, field_types

ROOT = Path(__file__).resolve().parent.parent
DOC = json.loads(OUTPUT.read_text())
VECTORS: list[dict[str, Any]] = DOC["vectors"]
IDS = [v["name"] for v in VECTORS]
NOT_PARALLAX = ("eth", "eth.type")
"""Errors that mean 'not a Parallax frame': tshark never calls the dissector; pxdump --json prints
nothing for a foreign EtherType."""


def expected(v: dict[str, Any]) -> dict[str, Any]:
    return {k: v[k] for k in ("json", "error") if k in v}


def outcome(decode: Any, raw: bytes) -> dict[str, Any]:
    try:
        return {"json": decode(raw).to_dict()}
    except ProtocolError as exc:
        return {"error": {"field": exc.field, "offset": exc.offset}}


def test_vectors_file_is_current() -> None:
    assert OUTPUT.read_text() == render(), "run python -m pxproto.wire.gen_conformance"


def test_vectors_cover_the_protocol() -> None:
    valid = [v["json"] for v in VECTORS if "json" in v]
    assert {(d.get("px.cmd"), d.get("px.op")) for d in valid} >= {(c.name, o.name) for c in Command for o in Op}
    assert {d.get("px.status") for d in valid} >= {s.name for s in Status}
    assert {d.get("px.hb.state") for d in valid} >= {s.name for s in DimeState}
    assert {d.get("px.disc.op") for d in valid} >= {o.name for o in DiscoveryOp}
    assert {d["px.class"] for d in valid} == {"SIGNALING", "DATA", "DISCOVERY", "HEARTBEAT"}
    assert {d["px.class"] for d in valid if "px.auth.tag" in d} == {"SIGNALING", "DATA", "DISCOVERY", "HEARTBEAT"}
    # the AEAD mode: an encrypted frame of every class, its body opaque (no body field in any decoder's answer)
    sealed = [d for d in valid if d["px.flags.encrypted"]]
    assert {d["px.class"] for d in sealed} == {"SIGNALING", "DATA", "DISCOVERY", "HEARTBEAT"}
    body_prefixes = ("px.req_id", "px.cmd", "px.data.", "px.disc.", "px.hb.", "px.tlv")
    assert all(not k.startswith(body_prefixes) for d in sealed for k in d)
    assert all(d["px.flags.auth"] for d in sealed)
    keys = {k for d in valid for k in d}
    assert keys >= {f"px.tlv.{t.name.lower()}" for t in TlvType}
    assert any(re.fullmatch(r"px\.tlv\.t\d+", k) for k in keys)
    # Every field a decoder may blame appears as an expected error (the error table of PROTOCOL.md).
    errors = {v["error"]["field"] for v in VECTORS if "error" in v}
    assert errors >= {
        "eth", "eth.type", "header", "version", "flags", "len", "dime.src", "dime.dst", "cmd", "op", "status",
        "tlv", "tlv_count", "tlv.length", "data.flags", "data.ack", "data.credit", "data.msg_len",
        "data.frag_offset", "data.frag_index", "disc.op", "disc.state_filter", "disc.count", "disc.probe_id",
        "disc.dime.state", "disc.dime.mem_free", "hb.state", "hb.period_ms", "hb.cpu_permille", "auth",
        "auth.key_id", "auth.counter", "tlv.text", "tlv.acl", "tlv.direction", "tlv.param_id", "tlv.fault_code",
        "tlv.package_digest", "tlv.peer_mac", "tlv.value", "tlv.service_id", "tlv.mice_name",
    }  # fmt: skip
    # The bounds the issue found untested.
    by_name = {v["name"]: v for v in VECTORS}
    assert by_name["CPU load 1001 permille"]["error"]["field"] == "hb.cpu_permille"
    assert "json" in by_name["CPU load exactly 1000 permille"]
    assert by_name["ACL mask with bit 0x20 (above FCAPS)"]["error"]["field"] == "tlv.acl"
    assert by_name["TEXT of TEXT_MAX + 1 bytes"]["error"]["field"] == "tlv.text"
    assert "json" in by_name["TEXT of TEXT_MAX bytes"]


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_reference_codec(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    assert outcome(codec.decode, raw) == expected(vector)
    if "json" in vector:
        assert codec.encode(codec.decode(raw)) == raw


IMPLS = [pytest.param(pure, id="pure")]
if fastpath.COMPILED:
    from pxproto.fastpath import wirec

    IMPLS.append(pytest.param(wirec, id="compiled"))


@pytest.mark.parametrize("impl", IMPLS)
def test_fast_path(impl: Any) -> None:
    for v in VECTORS:
        raw = bytes.fromhex(v["hex"])
        want = expected(v)
        assert outcome(impl.decode, raw) == want, v["name"]
        assert outcome(impl.view, raw) == want, v["name"]
        err = v.get("error", {"field": "", "offset": 0})
        assert impl.check(raw) == (err["field"], err["offset"]), v["name"]
        if "json" in v:
            assert impl.encode(impl.decode(raw)) == raw, v["name"]


def test_fast_path_columns() -> None:
    """The batch decoder pxdump and the switch use names the same error per row."""
    raws = [bytes.fromhex(v["hex"]) for v in VECTORS]
    buf = b"".join(raws)
    offsets, pos = [], 0
    for r in raws:
        offsets.append(pos)
        pos += len(r)
    import numpy as np

    cols = fastpath.decode_columns(buf, np.array(offsets, dtype=np.int64), np.array([len(r) for r in raws]))
    for i, v in enumerate(VECTORS):
        field = v["error"]["field"] if "error" in v else ""
        if field in NOT_PARALLAX:
            assert not cols.cls[i], v["name"]
        else:
            assert cols.error_field(i) == field, v["name"]
            assert bool(cols.valid[i]) == ("json" in v), v["name"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert ethertypes.current() == ethertypes.DEFAULT
    path = tmp_path_factory.mktemp("conformance") / "vectors.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        for i, v in enumerate(VECTORS):
            w.write(bytes.fromhex(v["hex"]), 1_700_000_000_000_000_000 + i * 1000)
        w.flush()
    return path


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_pxdump_json(capture: Path, path: str) -> None:
    extra = ["--reference"] if path == "reference" else []
    p = subprocess.run(
        [sys.executable, "-m", "pxproto.dump.cli", "-r", str(capture), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert p.returncode == 0, p.stderr
    lines = iter(p.stdout.splitlines())
    for v in VECTORS:
        if v.get("error", {}).get("field") == "eth.type":
            continue  # not a Parallax frame: no line
        got = json.loads(next(lines))
        if "json" in v:
            assert got == v["json"], v["name"]
        else:
            err = got["_malformed"]
            assert {"field": err["field"], "offset": err["offset"]} == v["error"], v["name"]
    assert next(lines, None) is None


# ------------------------------------------------------------------ tshark

TSHARK = shutil.which("tshark")
TYPES = field_types()
EXPERT = re.compile(r"^(\S+) at byte (\d+): ")


def _collect(node: Any, fields: dict[str, list[Any]], experts: list[str]) -> None:
    if isinstance(node, list):
        for x in node:
            _collect(x, fields, experts)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k == "_ws.expert":
                for e in v if isinstance(v, list) else [v]:
                    if any(x.startswith("px.malformed.") for x in e):
                        experts.append(e.get("_ws.expert.message", ""))
            elif k == "px.tlv.unknown":
                trees = node[k + "_tree"]
                for value, tree in zip(
                    v if isinstance(v, list) else [v], trees if isinstance(trees, list) else [trees], strict=True
                ):
                    fields.setdefault(f"px.tlv.t{tree['px.tlv.type']}", []).append(value.replace(":", ""))
                    _collect(tree, fields, experts)
            elif k.startswith("px.") and not k.endswith("_tree"):
                fields.setdefault(k, []).extend(v if isinstance(v, list) else [v])
            elif k != "px.tlv.unknown_tree":
                _collect(v, fields, experts)


def _as_tshark(key: str, value: Any) -> list[Any]:
    ftype = TYPES.get(key, "")
    out = []
    for x in value if isinstance(value, list) else [value]:
        if ftype == "bool":
            out.append("1" if x else "0")
        elif ftype.startswith("uint"):
            out.append(str(x))
        elif isinstance(x, str) and ftype == "string":
            out.append(x.replace("\0", "\\x00"))  # the dissector shows a NUL as \x00 (a Wireshark string ends at one)
        else:
            out.append(str(x))
    return out


def _normal(key: str, values: list[Any]) -> list[Any]:
    ftype = TYPES.get(key, "bytes" if re.fullmatch(r"px\.tlv\.t\d+", key) else "")
    if ftype.startswith("uint"):
        return [str(int(x, 0)) for x in values]
    if ftype == "bytes":
        return [x.replace(":", "") for x in values]
    return values


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_tshark_dissector(capture: Path, tmp_path: Path) -> None:
    assert TSHARK is not None
    env = {**os.environ, "HOME": str(tmp_path), "WIRESHARK_CONFIG_DIR": str(tmp_path / "ws")}
    lua = ROOT / "dissectors" / "parallax.lua"
    cmd = [TSHARK, "-n", "-X", f"lua_script:{lua}", "-r", str(capture), "-T", "json", "--no-duplicate-keys", "-J", "px"]
    p = subprocess.run(cmd, capture_output=True, env=env, timeout=300, check=False)
    assert p.returncode == 0, p.stderr.decode()
    packets = [pkt["_source"]["layers"] for pkt in json.loads(p.stdout.decode("utf-8"))]
    assert len(packets) == len(VECTORS)
    for v, layers in zip(VECTORS, packets, strict=True):
        fields: dict[str, list[Any]] = {}
        experts: list[str] = []
        _collect(layers.get("px", {}), fields, experts)
        if "error" in v and v["error"]["field"] in NOT_PARALLAX:
            assert "px" not in layers, v["name"]
            continue
        if "error" in v:
            m = EXPERT.match(experts[0]) if len(experts) == 1 else None
            assert m, (v["name"], experts)
            assert {"field": m[1], "offset": int(m[2])} == v["error"], v["name"]
            continue
        assert not experts, (v["name"], experts)
        got = {k: _normal(k, vals) for k, vals in fields.items() if k not in EXTRA_FIELDS}
        want = {k: _as_tshark(k, val) for k, val in v["json"].items()}
        assert got == want, (
            v["name"],
            {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)},
        )


def test_samples_module_is_the_source() -> None:
    """The vectors start with the recorded samples, in capture order."""
    names = [n for n, _ in samples.valid_samples()] + [m[0] for m in samples.malformed_samples()]
    assert IDS[: len(names)] == names


def test_every_json_key_and_error_field_is_documented() -> None:
    """PROTOCOL.md names every key a vector's JSON holds and every error field a vector expects."""
    doc = (ROOT / "docs" / "PROTOCOL.md").read_text()
    keys = {k for v in VECTORS if "json" in v for k in v["json"]}
    for key in keys:
        assert re.fullmatch(r"px\.tlv\.t\d+", key) or f"`{key}`" in doc, key
    for field in {v["error"]["field"] for v in VECTORS if "error" in v}:
        assert f"`{field}`" in doc or f"`px.{field}`" in doc, field
