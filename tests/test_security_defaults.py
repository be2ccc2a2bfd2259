"""Secure by default (issue 15): no keyless nodes, private key files, private and verified state.

Each test is a finding of issue 15 turned into a regression test: it failed on the code before the fix.
"""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto import package
from pxproto.dime.endpoint import Address, frame_to
from pxproto.dime.keys import KeyFileError, add_trailer, fresh_keys, load_keyfile, write_keyfile
from pxproto.node import state
from pxproto.node.testbed import ENV, KEY, Cluster
from pxproto.wire.codec import encode
from pxproto.wire.codes import Command, CounterId, TlvType
from pxproto.wire.frame import Signaling, Tlv
from tests._helpers import packaged_cluster

STRANGER = bytes.fromhex("02bb00000077")
MANIFEST = '[service]\nname = "sec"\n\n[[stage]]\nname = "idle"\nentry = "stages:idle"\n'
STAGES = "def idle(item, ctx):\n    return ()\n"
PLANTED = "import os\nos.system('touch /tmp/pwned')\ndef idle(item, ctx):\n    return ()\n"


def run_cli(module: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-W", "ignore", "-m", module, *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def one_line(p: subprocess.CompletedProcess[str], prog: str, says: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: ") and says in lines[0], p.stderr


# ---------------------------------------------------------------- 1. no keyless nodes or orchestrators


def test_pxkernel_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    p = run_cli("pxproto.node.cli", "--port", "udp:127.0.0.1:5999", "--state-dir", str(tmp_path / "s"))
    one_line(p, "pxkernel", "--insecure")


def test_pxorch_run_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    p = run_cli("pxproto.orch.cli", "run", "--port", "udp:127.0.0.1:5998", "--control", str(tmp_path / "c"))
    one_line(p, "pxorch", "--insecure")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused_like_ssh(tmp_path: Path, mode: int) -> None:
    keyfile = tmp_path / "cluster.key"
    keyfile.write_text(f"1 {os.urandom(32).hex()}\n")
    keyfile.chmod(mode)
    with pytest.raises(KeyFileError, match="refused"):
        load_keyfile(keyfile)
    p = run_cli("pxproto.node.cli", "--port", "udp:127.0.0.1:5997", "--key", str(keyfile))
    one_line(p, "pxkernel", "chmod 600")
    keyfile.chmod(0o600)
    assert len(load_keyfile(keyfile)[1]) == 32


def test_a_key_path_that_is_a_directory_is_one_line_everywhere(tmp_path: Path) -> None:
    """`--key /tmp` ended in an IsADirectoryError traceback (pxkernel) or "[Errno 21] ...: 3" (pxorch, pxdump)."""
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_keyfile(tmp_path)
    p = run_cli("pxproto.node.cli", "--port", "udp:127.0.0.1:5996", "--key", str(tmp_path))
    one_line(p, "pxkernel", "not a regular file")
    p = run_cli(
        "pxproto.orch.cli",
        "run",
        "--port",
        "udp:127.0.0.1:5995",
        "--key",
        str(tmp_path),
        "--control",
        str(tmp_path / "c"),
    )
    one_line(p, "pxorch", "not a regular file")


def test_a_key_file_over_the_limit_is_refused_not_cut(tmp_path: Path) -> None:
    """A key file was read to 64 KiB and parsed: a 32-byte key whose line crossed that mark came out 16 bytes."""
    from pxproto.dime.keys import KEY_FILE_MAX
    from pxproto.signing import load_verify_keys

    line = f"1 {os.urandom(32).hex()}\n"
    keyfile = tmp_path / "big.key"
    keyfile.write_text("#" * (KEY_FILE_MAX - len(line) + 32) + "\n" + line)
    keyfile.chmod(0o600)
    for load in (load_keyfile, load_verify_keys):
        with pytest.raises(KeyFileError, match=f"big.key: larger than {KEY_FILE_MAX} bytes"):
            load(keyfile)
    p = run_cli("pxproto.node.cli", "--port", "udp:127.0.0.1:5994", "--key", str(keyfile))
    one_line(p, "pxkernel", f"{keyfile}: larger than {KEY_FILE_MAX} bytes")
    keyfile.write_text("#" * (KEY_FILE_MAX - len(line) - 1) + "\n" + line)  # exactly the limit: read whole
    assert keyfile.stat().st_size == KEY_FILE_MAX and len(load_keyfile(keyfile)[1]) == 32


def test_a_fifo_as_a_key_file_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO for reading waited for a writer: pxkernel --key, --verify-key and pxdump --key hung."""
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo, 0o600)
    state_dir = tmp_path / "s"
    for option in ("--key", "--verify-key"):
        p = run_cli("pxproto.node.cli", "--insecure", "--port", "udp:127.0.0.1:5993", "--state-dir", str(state_dir),
                    option, str(fifo), timeout=20)  # fmt: skip
        one_line(p, "pxkernel", f"{fifo}: not a regular file")
    capture = Path(__file__).resolve().parent.parent / "captures" / "all.pcapng"
    p = run_cli("pxproto.dump.cli", "--key", str(fifo), "-r", str(capture), timeout=20)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert f"{fifo}: not a regular file" in p.stderr and not p.stdout, p.stderr


def test_key_files_are_written_0600_and_fresh_keys_are_random(tmp_path: Path) -> None:
    keys = fresh_keys()
    write_keyfile(tmp_path / "k", keys)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert load_keyfile(tmp_path / "k") == keys
    assert fresh_keys() != keys and keys[1] != bytes(range(32)) and KEY != bytes(range(32))
    with pytest.raises(FileExistsError):  # never over an existing file (or through a planted symlink)
        write_keyfile(tmp_path / "k", keys)


def test_the_demo_key_is_random_per_run_and_written_0600(tmp_path: Path) -> None:
    from pxproto.orch.demo import Demo

    a, b = Demo(workdir=tmp_path / "a", quiet=True), Demo(workdir=tmp_path / "b", quiet=True)
    assert a.key != b.key and len(a.key) == 32 and a.key != bytes(range(32))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = packaged_cluster(tmp_path_factory.mktemp("stranger"), MANIFEST, STAGES, kernels=1, dimes=1)
    yield c
    c.close()


_counter = itertools.count(1 << 40)


def test_a_strangers_load_start_key_install_acl_set_reset_are_refused(keyed: Cluster) -> None:
    c = keyed
    dest = c.dime(0, 0)
    archive: bytes = c.archive  # type: ignore[attr-defined]
    epoch = c.ask(dest, Command.PING, Tlv(TlvType.ECHO, b"")).param(TlvType.EPOCH)

    def counter(cid: int) -> int:
        return int(c.ask(dest, Command.COUNTERS, Tlv(TlvType.COUNTER_ID, cid)).param(TlvType.VALUE))  # type: ignore[arg-type]

    unauth0, auth0 = counter(CounterId.REJECTED_UNAUTHENTICATED), counter(CounterId.REJECTED_AUTH)
    attacks = [
        (Command.LOAD, (Tlv(TlvType.SERVICE_ID, 66), Tlv(TlvType.STAGE, 0), Tlv(TlvType.MICE_NAME, "idle"),
                        Tlv(TlvType.PACKAGE_DIGEST, package.digest(archive)),
                        Tlv(TlvType.PACKAGE_SIZE, len(archive)), Tlv(TlvType.PACKAGE_SIG, b""))),
        (Command.START, (Tlv(TlvType.SERVICE_ID, 66), Tlv(TlvType.STAGE, 0))),
        (Command.KEY_INSTALL, (Tlv(TlvType.KEY_ID, 9), Tlv(TlvType.KEY, b"\x09" * 32))),
        (Command.ACL_SET, (Tlv(TlvType.ACL, STRANGER + b"\x1f\x00"),)),
        (Command.RESET, ()),
    ]  # fmt: skip
    own_key = os.urandom(32)  # the stranger signs under a key of its own: no better than unsigned
    for cmd, params in attacks:
        body = Signaling(cmd, req_id=next(_counter) & 0xFFFFFF or 1, params=params)
        raw = encode(frame_to(Address(STRANGER), dest, body))
        c.client.send_raw(raw)
        c.client.send_raw(add_trailer(raw, 1, next(_counter), own_key))
    c.client.wait_for(lambda: False, 0.5)
    assert counter(CounterId.REJECTED_UNAUTHENTICATED) == unauth0 + len(attacks)
    assert counter(CounterId.REJECTED_AUTH) == auth0 + len(attacks)
    # Nothing changed: same epoch (no RESET), no ACL, no key 9, nothing loaded to START.
    assert c.ask(dest, Command.PING, Tlv(TlvType.ECHO, b"")).param(TlvType.EPOCH) == epoch
    assert c.ask(dest, Command.ACL_GET).param(TlvType.ACL) == b""
    assert c.ask(dest, Command.KEY_ROTATE, Tlv(TlvType.KEY_ID, 9)).status.name == "NOT_FOUND"
    assert c.ask(dest, Command.START, Tlv(TlvType.SERVICE_ID, 66), Tlv(TlvType.STAGE, 0)).status.name == "NOT_FOUND"


# ---------------------------------------------------------------- 2. private, verified state


def test_a_state_dir_open_to_others_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    with pytest.raises(state.StateDirError, match="chmod 700"):
        state.private_dir(d)
    p = run_cli("pxproto.node.cli", "--port", "udp:127.0.0.1:5996", "--insecure", "--state-dir", str(d))
    assert p.returncode == 2 and "chmod 700" in p.stderr and "Traceback" not in p.stderr, p.stderr
    d.chmod(0o700)
    assert state.private_dir(d) == d


@pytest.mark.parametrize("mode", [0o740, 0o720, 0o710, 0o704, 0o702, 0o701])
def test_a_state_dir_any_group_or_other_bit_opens_is_refused(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    d.chmod(mode)
    with pytest.raises(state.StateDirError, match=f"mode {mode:04o}"):
        state.private_dir(d)


def test_a_symlinked_state_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(state.StateDirError, match="symlink"):
        state.private_dir(tmp_path / "link")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to hand a directory to another user")
def test_a_state_dir_another_user_planted_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "planted"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(state.StateDirError, match="owned by uid 65534"):
        state.private_dir(d)


def test_the_default_state_dir_is_private_and_per_user(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    d = state.default_state_dir("udp:127.0.0.1:5001", {"XDG_RUNTIME_DIR": str(run)})
    assert d.parent == run / "pxkernel" and not str(d).startswith("/tmp/pxkernel-")
    for p in (d, d.parent):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700 and p.stat().st_uid == os.getuid()
    d2 = state.default_state_dir("udp:127.0.0.1:5001", {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "st")})
    assert d2.parent == tmp_path / "st" / "pxkernel"
    # Someone opened the base to others (or planted it so): refused, not used.
    (run / "pxkernel").chmod(0o777)
    with pytest.raises(state.StateDirError):
        state.default_state_dir("udp:127.0.0.1:5001", {"XDG_RUNTIME_DIR": str(run)})


def _package(tmp_path: Path) -> tuple[Path, bytes]:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "service.toml").write_text(MANIFEST)
    (pkg / "stages.py").write_text(STAGES)
    store = tmp_path / "central"
    archive = package.pack(pkg)
    package.store_put(store, archive)
    return store, archive


def test_a_planted_local_store_directory_is_not_trusted(tmp_path: Path) -> None:
    store, archive = _package(tmp_path)
    d = package.digest(archive)
    local = state.private_dir(tmp_path / "local")
    planted = local / "packages" / d.hex()
    planted.mkdir(parents=True)
    (planted / "service.toml").write_text(MANIFEST)
    (planted / "stages.py").write_text(PLANTED)
    (planted / "extra.py").write_text(PLANTED)
    path, manifest, files = package.fetch_tree(store, local, d, len(archive), b"", None)
    assert path == planted and manifest.stages[0].entry == "stages:idle"
    assert (path / "stages.py").read_text() == STAGES and not (path / "extra.py").exists()
    package.verify_tree(path, files)
    assert stat.S_IMODE((path / "stages.py").stat().st_mode) == 0o600


@pytest.mark.parametrize("tamper", ["change", "add", "pycache", "remove", "symlink"])
def test_package_files_are_verified_before_every_import(tmp_path: Path, tamper: str) -> None:
    store, archive = _package(tmp_path)
    d = package.digest(archive)
    path, _, files = package.fetch_tree(store, state.private_dir(tmp_path / "local"), d, len(archive), b"", None)
    package.verify_tree(path, files)
    if tamper == "change":
        (path / "stages.py").write_text(PLANTED)
    elif tamper == "add":
        (path / "os.py").write_text(PLANTED)
    elif tamper == "pycache":
        (path / "__pycache__").mkdir()
        (path / "__pycache__" / "stages.cpython-311.pyc").write_bytes(b"\0" * 16)
    elif tamper == "remove":
        (path / "stages.py").unlink()
    else:
        (path / "stages.py").unlink()
        (path / "stages.py").symlink_to(tmp_path / "pkg" / "stages.py")
    with pytest.raises(package.PackageError):
        package.verify_tree(path, files)


# ---------------------------------------------------------------- 3. signatures and wrapped keys


def test_a_key_install_sniffed_off_the_wire_does_not_reveal_the_key() -> None:
    from pxproto.dime.keys import KeyRing, unwrap_key, wrap_key

    new = os.urandom(32)
    body = Signaling(Command.KEY_INSTALL, req_id=1, params=(Tlv(TlvType.KEY_ID, 2),
                     Tlv(TlvType.WRAPPED_KEY, wrap_key(1, KEY, 2, new))))  # fmt: skip
    raw = encode(frame_to(Address(STRANGER), Address(STRANGER, 0), body))
    assert new not in raw and new[:8] not in raw
    assert unwrap_key(KeyRing({1: KEY}), 2, wrap_key(1, KEY, 2, new), 0.0) == new
    with pytest.raises(ValueError):  # a listener with another key, or the value relabelled for another id
        unwrap_key(KeyRing({1: os.urandom(32)}), 2, wrap_key(1, KEY, 2, new), 0.0)
    with pytest.raises(ValueError):
        unwrap_key(KeyRing({1: KEY}), 3, wrap_key(1, KEY, 2, new), 0.0)


def test_a_kernels_cluster_key_cannot_mint_a_package() -> None:
    import hashlib
    import hmac

    from pxproto.node.testbed import SIGNER
    from pxproto.signing import VerifyKeys, fresh_signing_key

    archive = b"archive bytes"
    keys = VerifyKeys.from_raw({1: SIGNER.public_bytes()})
    assert keys.verify(archive, package.sign(archive, SIGNER))
    assert not keys.verify(archive, hmac.new(KEY, archive, hashlib.sha256).digest())  # the old HMAC "signature"
    assert not keys.verify(archive, package.sign(archive, fresh_signing_key()))
    assert not keys.verify(archive + b"x", package.sign(archive, SIGNER))


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_verify_key_file_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    """Public keys may be read by anyone, but whoever can write the file chooses which code the kernel runs."""
    from pxproto.node.testbed import SIGNER
    from pxproto.signing import write_verify_keys

    keyfile, pub = tmp_path / "cluster.key", tmp_path / "verify.pub"
    write_keyfile(keyfile, {1: KEY})
    write_verify_keys(pub, [SIGNER])
    pub.chmod(mode)
    p = run_cli("pxproto.node.cli", "--port", "udp:127.0.0.1:5996", "--key", str(keyfile), "--verify-key", str(pub))
    one_line(p, "pxkernel", "writable by group or others")


def test_a_signing_key_others_can_read_or_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    from pxproto.signing import fresh_signing_key, write_signing_key

    keyfile, signing = tmp_path / "cluster.key", tmp_path / "signing.key"
    write_keyfile(keyfile, {1: KEY})
    write_signing_key(signing, fresh_signing_key())
    signing.chmod(0o644)
    args = ("run", "--port", "udp:127.0.0.1:5995", "--control", str(tmp_path / "c"), "--key", str(keyfile))
    one_line(run_cli("pxproto.orch.cli", *args, "--signing-key", str(signing)), "pxorch", "chmod 600")
    signing.write_text(f"1 {os.urandom(31).hex()}\n")
    signing.chmod(0o600)
    one_line(run_cli("pxproto.orch.cli", *args, "--signing-key", str(signing)), "pxorch", "31 bytes")
