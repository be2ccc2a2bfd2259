"""Issue 15, finding 7: a MICE may hold no more memory than its chunks, shared mappings included.

The hostile stage of the finding holds 64 anonymous ``mmap.mmap(-1, 2 MiB)`` blocks (MAP_SHARED, Python's
default) under a limit of 8 chunks (16 MiB); under the old RLIMIT_DATA it kept all 128 MiB.  Now a memory
cgroup per MICE kills it at its limit (where one is writable) and RLIMIT_AS refuses the mapping elsewhere;
both end in FAULT_REPORT MEMORY_EXCEEDED.  And heartbeats report the MICE's real usage from the first beat.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto import package
from pxproto.node import memcg, memory
from pxproto.node.testbed import SIGNER, Cluster
from pxproto.wire.codes import Command, FaultCode, Status, TlvType
from pxproto.wire.frame import Tlv

BLOCK = 2 << 20
CHUNKS = 8

SHM_HOG = """
import mmap

def shm_hog(ctx):
    keep = []
    for _ in range(64):  # 128 MiB of shared anonymous memory, every page touched
        m = mmap.mmap(-1, 2 << 20)
        m.write(b"x" * (2 << 20))
        keep.append(m)
    ctx.log(f"kept {len(keep)} shared blocks")
    while True:
        yield b""

def holder(ctx):
    keep = bytearray(6 << 20)  # 6 MiB, touched: 3 chunks
    for i in range(0, len(keep), 4096):
        keep[i] = 1
    while True:
        import time
        time.sleep(0.05)
        yield b""
"""

SERVICE_TOML = """
[service]
name = "memtest"
version = "1"

[[stage]]
name = "shm_hog"
entry = "stages:shm_hog"

[[stage]]
name = "holder"
entry = "stages:holder"
"""


def _map_blocks_in_child(cg: memcg.MiceCgroup | None) -> tuple[int, int, str]:
    """Fork a child that takes the MICE's limit of CHUNKS, then maps and touches 64 shared 2 MiB blocks.

    Returns (blocks it got, its wait status, how it ended as it told us)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            import mmap

            memory.limit_self(CHUNKS, cg)
            keep = []
            try:
                for _ in range(64):
                    m = mmap.mmap(-1, BLOCK)
                    m.write(b"x" * BLOCK)
                    keep.append(m)
                    os.write(w, b"+")
                os.write(w, b" kept all")
            except OSError as exc:
                os.write(w, f" {exc.strerror}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()  # until the child's end closes it: its exit, or the OOM killer's SIGKILL
    _, status = os.waitpid(pid, 0)
    return data.count(b"+"), status, data.replace(b"+", b"").decode().strip()


def test_rlimit_as_refuses_shared_mappings_past_the_chunks() -> None:
    got, status, how = _map_blocks_in_child(None)
    # the limit is the baseline plus CHUNKS: exactly CHUNKS blocks fit when nothing else grows meanwhile
    assert got <= CHUNKS and how == "Cannot allocate memory", (got, how)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_a_memory_cgroup_kills_a_mice_mapping_past_its_chunks() -> None:
    base = memcg.own_memory_cgroup()
    if base is None:
        pytest.skip("no writable memory cgroup here (not root, no delegated subtree)")
    cg = memcg.create(base)
    assert cg is not None and cg.path.is_dir()
    try:
        got, status, how = _map_blocks_in_child(cg)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (got, status, how)
        assert got <= CHUNKS and cg.oom_kills() == 1
    finally:
        cg.remove()
    assert not cg.path.exists()


def test_mice_chunks_before_ready_is_zero_not_the_whole_process() -> None:
    """The first beats after START used to count the whole DIME process (baseline 0 until READY): 52/8."""
    assert memory.proc_status().get("VmSize", 0) > 20 * (2 << 20)
    assert memory.mice_chunks(os.getpid(), 0, None) == 0
    vm = memory.proc_status()["VmSize"]
    assert memory.mice_chunks(os.getpid(), vm - 3 * (2 << 20), None) in (3, 4)


@pytest.fixture(scope="module", params=["auto", "rlimit"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    mode = str(request.param)
    tmp = tmp_path_factory.mktemp(f"memcluster-{mode}")
    pkg = tmp_path_factory.mktemp("mempkg")
    (pkg / "service.toml").write_text(SERVICE_TOML)
    (pkg / "stages.py").write_text(SHM_HOG)
    archive = package.pack(pkg)
    c = Cluster(tmp, kernels=1, dimes=2, key=True, chunks=CHUNKS, extra=("--mice-memory", mode))
    try:
        package.store_put(c.store, archive)
        c.archive = archive  # type: ignore[attr-defined]
        yield c
    finally:
        c.close()


def _start(c: Cluster, dime: int, service: int, stage: int, name: str) -> None:
    archive: bytes = c.archive  # type: ignore[attr-defined]
    dest = c.dime(0, dime)
    sig = package.sign(archive, SIGNER)
    r = c.ask(dest, Command.LOAD, Tlv(TlvType.SERVICE_ID, service), Tlv(TlvType.STAGE, stage),
              Tlv(TlvType.MICE_NAME, name), Tlv(TlvType.PACKAGE_DIGEST, package.digest(archive)),
              Tlv(TlvType.PACKAGE_SIZE, len(archive)), Tlv(TlvType.PACKAGE_SIG, sig))  # fmt: skip
    assert r.status is Status.OK, r
    r = c.ask(dest, Command.START, Tlv(TlvType.SERVICE_ID, service), Tlv(TlvType.STAGE, stage))
    assert r.status is Status.OK, r


def test_a_stage_holding_shared_memory_past_its_chunks_faults(cluster: Cluster) -> None:
    c = cluster
    dest = c.dime(0, 0)
    c.client.seen.faults.clear()
    _start(c, 0, 21, 0, "shm_hog")
    assert c.client.wait_for(lambda: bool(c.client.seen.faults), 30), c.log_text()
    _, peer, body = c.client.seen.faults[0]
    text = str(body.param(TlvType.TEXT))
    assert peer.peer == dest.peer and body.param(TlvType.FAULT_CODE) == FaultCode.MEMORY_EXCEEDED, text
    assert "memory limit" in text, text
    assert "kept 64 shared blocks" not in c.log_text()
    assert c.ask(dest, Command.USAGE).param(TlvType.MEM_USED) == 0
    base = memcg.own_memory_cgroup()
    if base is not None:  # the MICE's cgroup (auto mode) is gone with it
        pid = c.dime_pid(0, 0)
        assert not list(base[0].glob(f"{memcg.PREFIX}{pid}-*"))


def test_heartbeats_report_the_mices_real_usage_from_the_first_beat(cluster: Cluster) -> None:
    c = cluster
    dest = c.dime(0, 1)
    c.client.seen.heartbeats.clear()
    t0 = time.monotonic()
    _start(c, 1, 22, 1, "holder")

    def busy() -> list[int]:
        return [hb.mem_used for t, mac, d, hb in c.client.seen.heartbeats
                if (mac, d) == dest.peer and t >= t0 and hb.state.name == "BUSY"]  # fmt: skip

    # The stage touches its 6 MiB soon after START; on a loaded host (the MICE runs at nice 5) that may take seconds.
    c.client.wait_for(lambda: len(busy()) >= 5 and busy()[-1] >= 3, 20)
    used_seen = busy()
    assert len(used_seen) >= 5 and used_seen[-1] >= 3, used_seen  # 6 MiB held: 3 chunks, not 0
    beats = [hb for t, mac, d, hb in c.client.seen.heartbeats if (mac, d) == dest.peer and t >= t0]
    assert all(hb.mem_used <= hb.mem_limit == CHUNKS for hb in beats), [(hb.mem_used, hb.mem_limit) for hb in beats]
    used = c.ask(dest, Command.USAGE).param(TlvType.MEM_USED)
    assert isinstance(used, int) and 3 <= used <= CHUNKS
    c.ask(dest, Command.STOP, Tlv(TlvType.SERVICE_ID, 22), Tlv(TlvType.STAGE, 1))


def test_cgroup_mode_is_refused_where_no_cgroup_is_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pxproto.node import cli

    monkeypatch.setattr(memcg, "own_memory_cgroup", lambda: None)
    rc = cli.main(["--port", "udp:127.0.0.1:9", "--insecure", "--mice-memory", "cgroup",
                   "--state-dir", str(tmp_path / "s")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--mice-memory cgroup: no writable memory cgroup" in err, err
    assert not (tmp_path / "s").exists()  # refused before anything was made


def test_a_cgroup_the_mice_cannot_join_falls_back_to_rlimit_as(tmp_path: Path) -> None:
    """The child says why on stderr, takes RLIMIT_AS, and leaves no directory (the DIME's sign of the fallback)."""
    bogus = memcg.MiceCgroup(tmp_path / "no-such-hierarchy" / "pxmice-1-1", 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import resource
            import sys

            sys.stderr = os.fdopen(w, "w")
            base = memory.limit_self(CHUNKS, bogus)
            soft, _ = resource.getrlimit(resource.RLIMIT_AS)
            code = 0 if base > 0 and soft == base + CHUNKS * BLOCK else 4  # baseline: VmSize at the limit
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, said)
    assert "RLIMIT_AS instead" in said and not bogus.path.exists()
