"""The dissector opens AEAD frames given the key: its plain-Lua AES-256-GCM, SHA-256, HMAC and HKDF
against ``cryptography``/hashlib (under lua5.2, lua5.4 and tshark's own Lua), and the real tshark on
captures of encrypted frames of every class: with the key every field equals what ``pxdump --key``
prints and the reference codec decodes from the opened frame; a wrong key or a changed byte gives
the "authentication failed" expert; no key leaves them opaque, as before."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from test_dissector_tshark import LUA, TSHARK, dissected, expected

from pxproto.capture.pcapng import PcapngWriter
from pxproto.dime.keys import write_keyfile
from pxproto.errors import ProtocolError
from pxproto.wire import aead, codec, samples, spec
from pxproto.wire.codes import FrameClass, HeaderFlag
from pxproto.wire.frame import Frame
from pxproto.wire.gen_lua import EXTRA_FIELDS, aead_crypto

KEY = samples.SAMPLE_KEY
KEY_ID = 7
CLEAR = samples.signaling_samples() + samples.data_samples() + samples.discovery_samples() + samples.heartbeat_samples()
INTEL_MAC = bytes.fromhex("001b21123456")
"""A globally administered source MAC: tshark shows it as IntelCor_12:34:56 unless -n."""


# ------------------------------------------------------------------ the Lua crypto chunk alone


def _lua_str(b: bytes) -> str:
    return '"' + "".join(f"\\{c}" for c in b) + '"'


def _vectors(rng: random.Random) -> tuple[str, list[str]]:
    """A Lua script printing one line per check (hex, or 'nil'), and the lines it must print."""
    lines = [
        "local C = (function()\n" + aead_crypto() + "\nend)()",
        "local function hex(s) if s == nil then return 'nil' end"
        " return 'x' .. s:gsub('.', function(c) return string.format('%02x', c:byte()) end) end",
    ]
    want: list[str] = []

    def check(expr: str, value: bytes | None) -> None:
        lines.append(f"print(hex({expr}))")
        want.append("nil" if value is None else "x" + value.hex())

    def rand(n: int) -> bytes:
        return bytes(rng.randrange(256) for _ in range(n))

    for n in (0, 1, 55, 56, 63, 64, 65, 119, 120, 1000):  # every padding case of FIPS 180-4 5.1.1
        m = rand(n)
        check(f"C.sha256({_lua_str(m)})", hashlib.sha256(m).digest())
    for klen in (16, 23, 32, 64, 65, 100):  # keys shorter than, equal to and longer than the block
        k, m = rand(klen), rand(rng.randrange(200))
        check(f"C.hmac_sha256({_lua_str(k)}, {_lua_str(m)})", hmac.new(k, m, "sha256").digest())
        info = rand(rng.randrange(40))
        for length in (32, 42, 64):
            okm = HKDF(hashes.SHA256(), length, None, info).derive(k)
            check(f"C.hkdf_sha256(nil, {_lua_str(k)}, {_lua_str(info)}, {length})", okm)
    # FIPS 197 appendix C.3 (AES-256)
    fips_key, fips_pt = bytes(range(32)), bytes.fromhex("00112233445566778899aabbccddeeff")
    fips_ct = bytes.fromhex("8ea2b7ca516745bfeafc49904b496089")
    check(f"C.aes256_block({_lua_str(fips_key)}, {_lua_str(fips_pt)})", fips_ct)
    for n in (0, 1, 15, 16, 17, 31, 100, 1500, 9000):
        key, iv, pt, aad = rand(32), rand(12), rand(n), rand(rng.randrange(80))
        sealed = AESGCM(key).encrypt(iv, pt, aad)
        ct, tag = sealed[:-16], sealed[-16:]
        args = f"C.gcm_key({_lua_str(key)}), {_lua_str(iv)}"
        check(f"C.gcm_open({args}, {_lua_str(ct)}, {_lua_str(aad)}, {_lua_str(tag)})", pt)
        bad_tag = tag[:-1] + bytes([tag[-1] ^ 1])
        check(f"C.gcm_open({args}, {_lua_str(ct)}, {_lua_str(aad)}, {_lua_str(bad_tag)})", None)
        check(f"C.gcm_open({args}, {_lua_str(ct)}, {_lua_str(aad + b'x')}, {_lua_str(tag)})", None)
        if n:
            bad_ct = bytes([ct[0] ^ 0x80]) + ct[1:]
            check(f"C.gcm_open({args}, {_lua_str(bad_ct)}, {_lua_str(aad)}, {_lua_str(tag)})", None)
    return "\n".join(lines) + "\n", want


LUAS = [name for name in ("lua5.2", "lua5.3", "lua5.4", "luajit") if shutil.which(name)]
"""bit32 (5.2), native operators (5.3, 5.4), LuaBitOp (LuaJIT): each of the chunk's three ways."""


@pytest.mark.parametrize("lua", LUAS or [pytest.param("lua5.2", marks=pytest.mark.skip("no lua5.2 or lua5.4"))])
def test_lua_crypto_matches_cryptography(lua: str, rng: random.Random, tmp_path: Path) -> None:
    script, want = _vectors(rng)
    path = tmp_path / "vectors.lua"
    path.write_text(script)
    p = subprocess.run([lua, str(path)], capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    got = p.stdout.split("\n")[:-1]
    assert len(got) == len(want)
    bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, f"{lua}: checks {bad} differ, first: {got[bad[0]][:80]} != {want[bad[0]][:80]}"


@pytest.mark.skipif(shutil.which("lua5.1") is None, reason="no lua5.1")
def test_a_lua_without_bit_operations_loads_the_chunk_and_says_why_it_cannot_decrypt(tmp_path: Path) -> None:
    path = tmp_path / "nobits.lua"
    path.write_text(
        "bit, bit32 = nil, nil\nlocal C = (function()\n" + aead_crypto() + "\nend)()\n"
        "print(C.unavailable)\nprint(select(2, pcall(C.gcm_key, string.rep('k', 32))))\n"
    )
    p = subprocess.run(["lua5.1", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    why = "this Lua has no bit32, bit operators or bit library: cannot decrypt"
    assert p.stdout.splitlines()[0] == why and p.stdout.splitlines()[1].endswith(why), p.stdout


def _tshark(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    assert TSHARK is not None
    env = {**os.environ, "HOME": str(home), "WIRESHARK_CONFIG_DIR": str(home / "ws")}
    return subprocess.run([TSHARK, *args], capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_lua_crypto_in_tsharks_own_lua(rng: random.Random, tmp_path: Path) -> None:
    """The same vectors in Wireshark's Lua (5.2 in Debian's 4.0), printed to stderr at load time."""
    script, want = _vectors(rng)
    path = tmp_path / "vectors.lua"
    path.write_text("local print = function(s) io.stderr:write('V ' .. s .. '\\n') end\n" + script)
    pcap = tmp_path / "one.pcapng"
    _write_pcap(pcap, [codec.encode(CLEAR[0][1])])
    p = _tshark(["-n", "-X", f"lua_script:{path}", "-r", str(pcap)], tmp_path)
    assert p.returncode == 0, p.stderr
    got = [line[2:] for line in p.stderr.splitlines() if line.startswith("V ")]
    assert got == want


# ------------------------------------------------------------------ tshark on encrypted captures


def _write_pcap(path: Path, raws: list[bytes]) -> None:
    with path.open("wb") as f:
        w = PcapngWriter(f)
        for i, raw in enumerate(raws):
            w.write(raw, 1_000_000 * (i + 1))


def _sealed_capture() -> list[bytes]:
    """Every sample frame of every class sealed under KEY, from two senders (one MAC a vendor's)."""
    out = []
    for i, (_, frame) in enumerate(CLEAR):
        if i % 2:
            frame = dataclasses.replace(frame, src_mac=INTEL_MAC)
        out.append(aead.seal(frame, KEY_ID, (3 << 32) | (i + 1), KEY))
    assert {codec.decode(raw).cls for raw in out} == set(FrameClass)
    return out


def _json(pcap: Path, home: Path, *opts: str, resolve: bool = False) -> list[dict[str, Any]]:
    args = [] if resolve else ["-n"]
    for o in opts:
        args += ["-o", o]
    p = _tshark(
        [*args, "-X", f"lua_script:{LUA}", "-r", str(pcap), "-T", "json", "--no-duplicate-keys", "-J", "px"], home
    )
    assert p.returncode == 0, p.stderr
    assert "Lua" not in p.stderr and "px.dissector_bug" not in p.stdout, p.stderr
    return [pkt["_source"]["layers"] for pkt in json.loads(p.stdout)]


def _pxdump_json(pcap: Path, keyfile: Path) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "pxproto.dump.cli", "-r", str(pcap), "--key", str(keyfile), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def _wire_flags(want: dict[str, list[Any]], raw: bytes) -> dict[str, list[Any]]:
    """The opened frame's fields as the dissector shows them: the header's flags as on the wire
    (ENCRYPTED still set), the body's fields from the clear body."""
    flags = raw[spec.HEADER_OFFSET + 1]
    return {**want, "px.flags": [flags], "px.flags.encrypted": ["1"]}


def _experts(layers: dict[str, Any]) -> list[tuple[str | None, str]]:
    return dissected(layers)[1]


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.key"
    write_keyfile(path, {KEY_ID: KEY})
    return path


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("how", ["key", "key_file", "resolved names"])
def test_with_the_key_every_field_is_the_opened_frames(how: str, tmp_path: Path, keyfile: Path) -> None:
    raws = _sealed_capture()
    pcap = tmp_path / "sealed.pcapng"
    _write_pcap(pcap, raws)
    opt = f"px.key_file:{keyfile}" if how == "key_file" else f"px.key:{KEY_ID}:{KEY.hex()}"
    packets = _json(pcap, tmp_path, opt, resolve=how == "resolved names")
    printed = _pxdump_json(pcap, keyfile)
    assert len(packets) == len(printed) == len(raws)
    for i, (raw, layers, shown) in enumerate(zip(raws, packets, printed, strict=True)):
        opened = codec.decode(aead.open_raw(raw, KEY) or b"")
        assert shown == opened.to_dict(), f"frame {i + 1}: pxdump --key"
        check_opened(i, raw, layers, opened)


def check_opened(i: int, raw: bytes, layers: dict[str, Any], opened: Frame) -> None:
    """tshark's fields of the sealed frame ``raw`` are those of its opened frame, flags as on the wire."""
    got, experts = dissected(layers)
    assert got.pop("px.decrypted") == ["1"], f"frame {i + 1}"
    assert not [e for e in experts if e[0] and e[0].startswith(("px.malformed", "px.aead"))], experts
    want = _wire_flags(expected(opened), raw)
    for extra in set(EXTRA_FIELDS) - set(want):  # TLV headers, request/response and fragment links
        got.pop(extra, None)
    assert got == want, f"frame {i + 1}: " + ", ".join(
        f"{k}: tshark {got.get(k)!r} codec {want.get(k)!r}"
        for k in sorted(set(got) | set(want))
        if got.get(k) != want.get(k)
    )


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_wrong_key_or_changed_byte_is_authentication_failed(tmp_path: Path) -> None:
    raws = _sealed_capture()
    tampered = bytearray(raws[0])
    tampered[spec.BODY_OFFSET + 2] ^= 0x01  # one ciphertext bit
    relabelled = bytearray(raws[1])
    relabelled[spec.HEADER_OFFSET + 19] ^= 0x01  # the clear header's seq (associated data)
    pcap = tmp_path / "sealed.pcapng"
    _write_pcap(pcap, [bytes(tampered), bytes(relabelled), *raws])
    for opt, frames in ((f"px.key:{bytes(32).hex()}", range(len(raws) + 2)), (f"px.key:{KEY.hex()}", range(2))):
        packets = _json(pcap, tmp_path, opt)
        for i in frames:
            got, experts = dissected(packets[i])
            assert (
                "px.aead.auth_failed",
                f"authentication failed: the AES-256-GCM tag does not verify under key {KEY_ID}",
            ) in experts, (opt, i, experts)
            assert "px.decrypted" not in got and not any(k.startswith(("px.cmd", "px.hb.", "px.data.ch")) for k in got)
    # the right key opens the frames nobody changed
    packets = _json(pcap, tmp_path, f"px.key:{KEY.hex()}")
    assert all(dissected(p)[0].get("px.decrypted") == ["1"] for p in packets[2:])


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_without_the_key_frames_stay_opaque(tmp_path: Path) -> None:
    raws = _sealed_capture()
    pcap = tmp_path / "sealed.pcapng"
    _write_pcap(pcap, raws)
    for opts in ((), (f"px.key:{KEY_ID + 1}:{KEY.hex()}",)):
        for raw, layers in zip(raws, _json(pcap, tmp_path, *opts), strict=True):
            got, experts = dissected(layers)
            assert got == expected(codec.decode(raw))  # the Sealed body: header, trailer, no body field
            notes = [e for e in experts if e[0] and e[0].startswith("px.aead")]
            assert notes == ([("px.aead.no_key", f"no key for key id {KEY_ID} in the key preferences")] if opts else [])


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize(
    "opt,text",
    [
        ("px.key:zz" + "00" * 16, 'key preference, entry "zz' + "00" * 16 + '": key is not hex'),
        ("px.key:" + "00" * 8, 'key preference, entry "' + "00" * 8 + '": key of 8 bytes, at least 16 needed'),
        ("px.key:0:" + "00" * 16, 'key preference, entry "0:' + "00" * 16 + '": key id is not in 1..65535'),
        ("px.key_file:/nonexistent/px.key", "key file /nonexistent/px.key: No such file or directory"),
    ],
)
def test_a_bad_key_preference_is_named(opt: str, text: str, tmp_path: Path) -> None:
    pcap = tmp_path / "sealed.pcapng"
    _write_pcap(pcap, _sealed_capture()[:1])
    (layers,) = _json(pcap, tmp_path, opt)
    assert ("px.aead.key_error", text) in _experts(layers)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_bad_key_file_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text(f"# comment\n{KEY_ID} {KEY.hex()}\n3 nothex\n")
    pcap = tmp_path / "sealed.pcapng"
    _write_pcap(pcap, _sealed_capture()[:1])
    (layers,) = _json(pcap, tmp_path, f"px.key_file:{path}")
    assert ("px.aead.key_error", f"key file {path} line 3: key is not hex") in _experts(layers)


def _seal_clear_raw(frame: Frame, patch: tuple[int, int]) -> bytes:
    raw = bytearray(codec.encode(dataclasses.replace(frame, auth=None, padding=0)))
    raw[patch[0]] = patch[1]
    return aead.seal_raw(bytes(raw), KEY_ID, 99, KEY)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_an_opened_body_that_breaks_the_rules_is_malformed_as_the_codec_says(tmp_path: Path) -> None:
    hb = dict(CLEAR)["heartbeat BUSY"]
    sig = dict(CLEAR)["PING request"]
    raws = [
        _seal_clear_raw(hb, (spec.BODY_OFFSET + 7, 0xFF)),  # cpu_permille over 1000
        _seal_clear_raw(sig, (spec.BODY_OFFSET + 4, 0xEE)),  # an unknown command
    ]
    pcap = tmp_path / "bad.pcapng"
    _write_pcap(pcap, raws)
    packets = _json(pcap, tmp_path, f"px.key:{KEY.hex()}")
    for raw, layers in zip(raws, packets, strict=True):
        assert raw[spec.HEADER_OFFSET + 1] & HeaderFlag.ENCRYPTED
        with pytest.raises(ProtocolError) as err:
            codec.decode(aead.open_raw(raw, KEY) or b"")
        malformed = [m for a, m in _experts(layers) if a and a.startswith("px.malformed.")]
        assert malformed == [str(err.value)]


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_mutated_sealed_frames_with_the_key_agree_with_the_codec(rng: random.Random, tmp_path: Path) -> None:
    """Sealed frames with bytes flipped, cut or grown, under the key preference: each is what the
    reference says (its decode error, an authentication failure, or the opened frame's fields), and
    no mutation makes the dissector raise a Lua error."""
    base = _sealed_capture()
    raws: list[bytes] = []
    for _ in range(300):
        m = bytearray(rng.choice(base))
        how = rng.randrange(3)
        if how == 0:
            for _ in range(rng.randrange(1, 4)):
                m[rng.randrange(len(m))] ^= 1 << rng.randrange(8)
        elif how == 1:
            del m[rng.randrange(spec.BODY_OFFSET, len(m)) :]
        else:
            m[spec.HEADER_OFFSET + 2 : spec.HEADER_OFFSET + 4] = rng.randrange(1 << 16).to_bytes(2, "big")
        raws.append(bytes(m))
    pcap = tmp_path / "mutated.pcapng"
    _write_pcap(pcap, raws)
    outcomes: Counter[str] = Counter()
    for i, (raw, layers) in enumerate(zip(raws, _json(pcap, tmp_path, f"px.key:{KEY.hex()}"), strict=True)):
        got, experts = dissected(layers)
        malformed = [m for a, m in experts if a and a.startswith("px.malformed.")]
        failed = [m for a, m in experts if a == "px.aead.auth_failed"]
        try:
            frame = codec.decode(raw)
        except ProtocolError as exc:
            if exc.field in ("eth", "eth.type"):
                continue
            assert malformed == [str(exc)], f"frame {i + 1}: {malformed} != {exc}"
            outcomes["malformed"] += 1
            continue
        if not frame.flags & HeaderFlag.ENCRYPTED:
            outcomes["clear"] += 1
            continue
        clear = aead.open_raw(raw, KEY)
        if clear is None:
            assert failed and "px.decrypted" not in got, f"frame {i + 1}: {experts}"
            outcomes["auth failed"] += 1
            continue
        assert got.get("px.decrypted") == ["1"], f"frame {i + 1}: {experts}"
        try:
            opened = codec.decode(clear)
        except ProtocolError as exc:
            assert malformed == [str(exc)], f"frame {i + 1}: {malformed} != {exc}"
            outcomes["opened, malformed"] += 1
            continue
        check_opened(i, raw, layers, opened)
        outcomes["opened"] += 1
    assert outcomes["malformed"] > 50 and outcomes["auth failed"] > 50, outcomes
