"""The generated dissector's own logic under every Lua Debian offers (5.1, 5.2, 5.3, 5.4, LuaJIT).

Wireshark 4.0 embeds Lua 5.2, 4.2/4.4 embed 5.4 (some distributions 5.1 or LuaJIT), and only
4.0 is installed here. So each interpreter loads ``dissectors/parallax.lua`` against
``tests/lua/wireshark_stub.lua``, a small stand-in for the Wireshark Lua API, and dissects the
canonical samples: every field value must equal ``to_dict()``, every malformed sample must get
the expert ``px.malformed.<field>`` with the reference decoder's text. What this proves: the
file parses and its parsing, checks, arithmetic (integers vs floats in 5.3+) and text agree
under that Lua. What it does not: that Wireshark's C side of the API behaves like the stub
(that is what the tshark tests check, on 4.0).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pxproto.errors import ProtocolError
from pxproto.wire import samples
from pxproto.wire.codec import decode
from pxproto.wire.gen_lua import EXTRA_FIELDS, field_types

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "dissectors" / "parallax.lua"
STUB = Path(__file__).resolve().parent / "lua"
INTERPRETERS = ["lua5.1", "lua5.2", "lua5.3", "lua5.4", "luajit"]
UNKNOWN_TLV = re.compile(r"px\.tlv\.t\d+")
TYPES = field_types()


def _run(exe: str, raws: list[bytes], tmp: Path) -> list[tuple[str, str, dict[str, list[str]]]]:
    frames = tmp / "frames.txt"
    frames.write_text("".join(raw.hex() + "\n" for raw in raws))
    p = subprocess.run(
        [exe, str(STUB / "run_dissector.lua"), str(STUB), str(LUA), str(frames)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    out = []
    for line in p.stdout.splitlines():
        _, abbr, text, *pairs = line.split("\t")
        fields: dict[str, list[str]] = {}
        for pair in pairs:
            k, v = pair.split("=", 1)
            fields.setdefault(k, []).append(v.replace("\\x09", "\t").replace("\\x0a", "\n").replace("\\x5c", "\\"))
        out.append((abbr, text, fields))
    assert len(out) == len(raws)
    return out


def _expected(raw: bytes) -> dict[str, list[str]]:
    want: dict[str, list[str]] = {}
    for key, value in decode(raw).to_dict().items():
        if UNKNOWN_TLV.fullmatch(key):
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, bool):
                text = "1" if v else "0"
            elif isinstance(v, str) and TYPES.get(key) == "string":
                text = v.replace("\0", "\\x00")
            else:
                text = str(v)
            want.setdefault(key, []).append(text)
    return want


@pytest.fixture(params=INTERPRETERS)
def lua(request: pytest.FixtureRequest) -> str:
    exe = shutil.which(request.param)
    if exe is None:
        pytest.skip(f"{request.param} not installed (apt-get install {request.param})")
    return exe


def test_valid_samples_match_the_codec(lua: str, tmp_path: Path) -> None:
    raws = [raw for _, raw in samples.valid_samples()]
    for i, (raw, (abbr, text, got)) in enumerate(zip(raws, _run(lua, raws, tmp_path), strict=True)):
        assert not abbr.startswith("px.malformed"), f"sample {i}: {abbr} {text}"
        for k in [k for k in got if k in EXTRA_FIELDS or k in ("px.tlv.type", "px.tlv.length")]:
            del got[k]
        assert got == _expected(raw), f"sample {i}"


def test_malformed_samples_get_their_field_expert(lua: str, tmp_path: Path) -> None:
    cases = [(field, raw) for _, field, _, raw in samples.malformed_samples() if field not in ("eth", "eth.type")]
    results = _run(lua, [raw for _, raw in cases], tmp_path)
    for (field, raw), (abbr, text, got) in zip(cases, results, strict=True):
        with pytest.raises(ProtocolError) as exc:
            decode(raw)
        assert (abbr, text) == (f"px.malformed.{field}", str(exc.value))
        assert got["px.malformed"] == ["1"]


def test_lua_syntax(lua: str) -> None:
    """The interpreter's own compiler accepts the file (luac -p, without needing luac)."""
    p = subprocess.run([lua, "-e", f"assert(loadfile({str(LUA)!r}))"], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
