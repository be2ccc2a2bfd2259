"""The bare-metal kernel's build: its wire format is px_codec.h's, its crypto is FIPS/RFC-exact.

These need gcc and make, not QEMU (one quick boot test does, and skips without it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pxproto.wire.codes import Capability, CounterId, Direction, Param, ServerCounterId

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "kernel"
CODEC = ROOT / "pxproto" / "fastpath" / "px_codec.h"
SOURCES = sorted([*KERNEL.glob("*.c"), *KERNEL.glob("*.h"), *KERNEL.glob("*.S")])
# the files that build, parse or address frames
PROTOCOL = [
    KERNEL / n
    for n in ("wire.c", "wire.h", "dime.c", "dime.h", "server.c", "auth.c", "auth.h", "channel.c", "channel.h",
              "plane.c", "mice.c", "request.h")
]  # fmt: skip

# the EtherTypes px_codec.h defines (from the spec): no kernel source may spell one itself
ETHERTYPES = {int(v) for v in re.findall(r"#define PX_ETHERTYPE_\w+ (\d+)", CODEC.read_text())}
needs_cc = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None, reason="no gcc/make")


def test_the_codec_header_is_included_not_copied() -> None:
    assert CODEC.exists(), "px_codec.h must come from pxproto/fastpath (generated from the spec)"
    assert not list(KERNEL.rglob("px_codec*")), "a copy of the codec header in kernel/"
    makefile = (KERNEL / "Makefile").read_text()
    assert re.search(r"^CODEC_DIR := \.\./pxproto/fastpath$", makefile, re.M)
    assert "-I$(CODEC_DIR)" in makefile
    for path in PROTOCOL:
        assert '#include "px_codec.h"' in path.read_text(), f"{path.name} handles frames without px_codec.h"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_wire_literals_beside_the_codec(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"#\s*define\s+PX_", text), "PX_ names belong to px_codec.h"
    numbers = re.findall(r"\b(0x[0-9a-f]+|\d+)\b", text, re.I)
    ethertypes = [t for t in numbers if int(t, 16 if t[:2].lower() == "0x" else 10) in ETHERTYPES]
    assert not ethertypes, f"EtherType literals {ethertypes}: use PX_ETHERTYPE_* / the PxEtherTypes map"
    if path in PROTOCOL:
        offsets = re.findall(r"\b(?:raw|frame|buf|b|out|h)\s*(?:\+|\[)\s*\d+", text)
        assert not offsets, f"literal frame offsets {offsets}: use the PX_* offsets"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_only_the_codecs_public_encoders(path: Path) -> None:
    """px__* are px_codec.h's internals: the kernel builds every frame with a public px_encode_*."""
    internal = re.findall(r"\bpx__\w+", path.read_text())
    assert not internal, f"{path.name} calls the codec's internals {sorted(set(internal))}"


@needs_cc
def test_make_uses_the_generated_header() -> None:
    out = subprocess.run(["make", "-C", str(KERNEL), "-B", "-n"], capture_output=True, text=True, check=True).stdout
    compiles = [line for line in out.splitlines() if " -c " in line and line.split()[-3].endswith(".c")]
    assert compiles and all("-I../pxproto/fastpath" in line for line in compiles)
    subprocess.run(["make", "-C", str(KERNEL), "-s"], check=True)
    deps = subprocess.run(
        ["gcc", "-M", "-I../pxproto/fastpath", "-I.", "wire.c"], cwd=KERNEL, capture_output=True, text=True, check=True
    ).stdout
    assert "../pxproto/fastpath/px_codec.h" in deps
    image = (KERNEL / "build" / "dime.elf").read_bytes()
    codec_hash = re.search(r'#define PX_CODEC_HASH "([0-9a-f]+)"', CODEC.read_text())
    assert codec_hash and codec_hash.group(1).encode() in image, "the image does not embed this codec's hash"


@needs_cc
def test_multiboot_header() -> None:
    subprocess.run(["make", "-C", str(KERNEL), "-s"], check=True)
    image = (KERNEL / "build" / "dime.elf").read_bytes()
    at = image.find((0x1BADB002).to_bytes(4, "little"))
    assert 0 <= at < 8192 and at % 4 == 0
    magic, flags, checksum = (int.from_bytes(image[at + 4 * i : at + 4 * i + 4], "little") for i in range(3))
    assert (magic + flags + checksum) & 0xFFFFFFFF == 0 and flags & 0x10000


def test_management_numbers_match_pxproto() -> None:
    text = (KERNEL / "codes.h").read_text()
    defs = {m[0]: int(m[1], 0) for m in re.findall(r"#define (\w+) (0x[0-9a-fA-F]+|\d+)u?\b", text)}
    assert defs["CAP_AUTH"] == Capability.AUTH
    for name, value in defs.items():
        if name.startswith("PARAM_"):
            assert Param[name.removeprefix("PARAM_")] == value
        elif name.startswith("CID_") and name != "CID_MAX":
            assert CounterId[name.removeprefix("CID_")] == value
        elif name.startswith("SCID_") and name != "SCID_MAX":
            assert ServerCounterId[name.removeprefix("SCID_")] == value
        elif name.startswith("DIR_"):
            assert Direction[name.removeprefix("DIR_")] == value
    assert defs["SCID_MAX"] == max(ServerCounterId)
    from pxproto.node.server import SW_VERSION

    assert defs["SW_VERSION"] == SW_VERSION


DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "sha256.h"
static size_t unhex(const char *s, uint8_t *out) {
    size_t n = 0;
    for (; s[0] && s[1]; s += 2) { char b[3] = {s[0], s[1], 0}; out[n++] = (uint8_t)strtoul(b, 0, 16); }
    return n;
}
int main(int argc, char **argv) {
    static uint8_t key[4096], msg[1 << 16];
    uint8_t out[32];
    size_t kl = unhex(argv[1], key), ml = unhex(argv[2], msg);
    if (argc > 3) { struct sha256 s; sha256_init(&s); sha256_update(&s, msg, ml); sha256_final(&s, out); }
    else hmac_sha256(key, kl, msg, ml, out);
    for (int i = 0; i < 32; i++) printf("%02x", out[i]);
    return 0;
}
"""

VECTORS = [
    (b"", b""),
    (b"key", b"The quick brown fox jumps over the lazy dog"),
    (b"\x0b" * 20, b"Hi There"),  # RFC 4231 case 1
    (b"Jefe", b"what do ya want for nothing?"),  # case 2
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First"),  # case 6
    (bytes(range(64)), bytes(range(256)) * 3),
    (b"k" * 65, b"a" * 55),
    (b"k" * 64, b"a" * 56),
    (b"k", b"a" * 64),
]


@needs_cc
def test_sha256_and_hmac_match_hashlib(tmp_path: Path) -> None:
    (tmp_path / "drv.c").write_text(DRIVER)
    exe = tmp_path / "drv"
    subprocess.run(["gcc", "-O2", f"-I{KERNEL}", "-o", str(exe), str(tmp_path / "drv.c"), str(KERNEL / "sha256.c")],
                   check=True)  # fmt: skip
    for key, msg in VECTORS:
        got = subprocess.run([str(exe), key.hex(), msg.hex()], capture_output=True, text=True, check=True).stdout
        assert got == hmac.new(key, msg, hashlib.sha256).hexdigest(), (key, msg)
        got = subprocess.run([str(exe), "", msg.hex(), "sha"], capture_output=True, text=True, check=True).stdout
        assert got == hashlib.sha256(msg).hexdigest(), msg


@needs_cc
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed")
def test_boots_under_qemu_and_logs(tmp_path: Path) -> None:
    subprocess.run(["make", "-C", str(KERNEL), "-s"], check=True)
    log = tmp_path / "serial.log"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-m", "64", "-display", "none", "-monitor", "none", "-no-reboot", "-net", "none",
         "-serial", f"file:{log}", "-kernel", str(KERNEL / "build" / "dime.elf"), "-append", "hb=100 chunks=1"],
    )  # fmt: skip
    try:
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "boot: 1 DIME(s) up" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert "pxdime: Parallax bare-metal DIME kernel, long mode up" in text
    assert "hb 100 ms, chunks 1" in text and "net: no virtio-net-pci" in text and "boot: 1 DIME(s) up" in text
