"""The node runtime's sans-I/O DIME machine, its layering, and the pxkernel papercuts (issue 12)."""

from __future__ import annotations

import ast
import gzip
import io
import os
import subprocess
import sys
import tarfile
from collections import deque
from pathlib import Path

import pytest

from pxproto import package
from pxproto.dime.endpoint import Address
from pxproto.dime.signaling import Requester, ResponseReceived, RetransmitPolicy
from pxproto.fastpath import decode, encode
from pxproto.node.machine import DimeMachine, Loaded, MachineConfig, Mice, UnmeteredMice
from pxproto.node.testbed import ENV
from pxproto.signing import VerifyKeys
from pxproto.wire.codes import (
    Command,
    CounterId,
    DimeState,
    Direction,
    FaultCode,
    Param,
    Status,
    TlvType,
)
from pxproto.wire.frame import Data, Heartbeat, Signaling, Tlv

ROOT = Path(__file__).resolve().parents[1]
DIME = Address(b"\x02\x00\x00\x00\x01\x00", 3, 0)
ME = Address(b"\x02\x00\x00\x00\x00\xfe", 0xFFFF, 0)
LOAD_ONLY = (
    Tlv(TlvType.SERVICE_ID, 5),
    Tlv(TlvType.STAGE, 0),
    Tlv(TlvType.MICE_NAME, "only"),
    Tlv(TlvType.PACKAGE_DIGEST, bytes(32)),
    Tlv(TlvType.PACKAGE_SIZE, 1),
    Tlv(TlvType.PACKAGE_SIG, b""),
)
"""A LOAD of FakeHost's one-stage package (unsigned)."""


class FakeHost(UnmeteredMice):
    """A host that records what the machine asked of it (no process, no clock)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.started: list[tuple[int, int]] = []
        self.stopped = 0
        self.lines: list[str] = []
        self.relimits: list[int] = []
        self.stage_chunks = 2
        self.cpu = (0, 0)
        self.mice_chunks: int | None = None

    def log(self, text: str) -> None:
        self.lines.append(text)

    def next_epoch(self) -> int:
        self.epoch += 1
        return self.epoch

    def fetch(self, digest: bytes, size: int, sig: bytes, key: VerifyKeys | None) -> tuple[Path, package.Manifest]:
        stage = package.Stage(0, "only", "m:f", memory_chunks=self.stage_chunks)
        return Path("."), package.Manifest("svc", "1", (stage,))

    def start_mice(self, loaded: Loaded, first: int, epoch: int, limit: int) -> int:
        self.started.append((loaded.stage, first))
        return 4242

    def stop_mice(self, m: Mice) -> None:
        self.stopped += 1

    def relimit(self, m: Mice, chunks: int) -> None:
        self.relimits.append(chunks)

    def cpu_ns(self, m: Mice | None) -> tuple[int, int]:
        return self.cpu

    def mice_mem_chunks(self, m: Mice) -> int | None:
        return self.mice_chunks


def machine(**kw: object) -> tuple[DimeMachine, FakeHost]:
    host = FakeHost()
    m = DimeMachine(MachineConfig(DIME, has_store=True, insecure=True, **kw), host)  # type: ignore[arg-type]
    m.start(10.0)
    return m, host


def ask(m: DimeMachine, cmd: Command, *params: Tlv, now: float = 10.0) -> ResponseReceived:
    req = Requester(ME, RetransmitPolicy(retries=0))
    _, out = req.request(DIME, cmd, list(params), now=now)
    for f in out.frames:
        m.on_frame(encode(f), now)
    answers = [decode(raw) for raw, _ in m.take_outbox()]
    for f in answers:
        if isinstance(f.body, Signaling):
            for ev in req.receive(f, now).events:
                if isinstance(ev, ResponseReceived):
                    return ev
    raise AssertionError(f"{cmd.name}: no answer in {answers}")


def test_machine_answers_with_the_time_it_is_given() -> None:
    m, _ = machine()
    r = ask(m, Command.PING, Tlv(TlvType.ECHO, b"hi"))
    assert r.status is Status.OK and r.param(TlvType.ECHO) == b"hi" and r.param(TlvType.EPOCH) == 1
    # The first heartbeat is due at once; the next one period later, on the machine's clock only.
    assert m.get_timer() == 0.0
    m.handle_timer(10.0)
    beats = [decode(raw) for raw, _ in m.take_outbox()]
    assert [type(f.body) for f in beats] == [Heartbeat] and beats[0].body.state is DimeState.FREE
    assert m.hb.get_timer() == pytest.approx(10.1)
    r = ask(m, Command.SET_PARAM, Tlv(TlvType.PARAM_ID, int(Param.HEARTBEAT_PERIOD_MS)), Tlv(TlvType.VALUE, 40))
    assert r.status is Status.OK and m.hb.get_timer() == pytest.approx(10.04)
    r = ask(m, Command.SET_PARAM, Tlv(TlvType.PARAM_ID, int(Param.LOG_LEVEL)), Tlv(TlvType.VALUE, 6))
    assert r.status is Status.BAD_PARAM


LOAD = list(LOAD_ONLY)


def test_a_stage_is_loaded_only_within_the_memory_limit() -> None:
    m, host = machine()
    m.set_limit(4)
    host.stage_chunks = 5
    r = ask(m, Command.LOAD, *LOAD)
    assert r.status is Status.NO_MEMORY and m.loaded is None
    host.stage_chunks = 4  # (another service id: not the same request again, which is answered from the cache)
    assert ask(m, Command.LOAD, Tlv(TlvType.SERVICE_ID, 6), *LOAD[1:]).status is Status.OK and m.loaded is not None


def test_load_start_stop_go_through_the_host() -> None:
    m, host = machine()
    load = list(LOAD_ONLY)
    assert ask(m, Command.LOAD, *load).status is Status.OK
    assert m.state is DimeState.FREE, "LOAD alone does not make the DIME busy"
    r = ask(m, Command.START, Tlv(TlvType.SERVICE_ID, 5), Tlv(TlvType.STAGE, 0), Tlv(TlvType.VALUE, 17))
    assert r.status is Status.OK and host.started == [(0, 17)] and m.state is DimeState.BUSY
    assert ask(m, Command.LOAD, *load).status is Status.BUSY
    limit = Tlv(TlvType.PARAM_ID, int(Param.MEM_LIMIT_CHUNKS))
    assert ask(m, Command.SET_PARAM, limit, Tlv(TlvType.VALUE, 8)).status is Status.OK
    assert host.relimits == [8], "a new memory limit reaches the running MICE"
    assert ask(m, Command.STOP, Tlv(TlvType.SERVICE_ID, 5), Tlv(TlvType.STAGE, 1)).status is Status.NOT_FOUND
    assert ask(m, Command.STOP, Tlv(TlvType.SERVICE_ID, 5), Tlv(TlvType.STAGE, 0)).status is Status.OK
    assert host.stopped == 1 and m.mice is None and m.state is DimeState.FREE


def test_a_mice_crash_is_reported_to_its_manager() -> None:
    m, _ = machine()
    m.loaded = Loaded(5, 0, "only", Path("."), package.Stage(0, "only", "m:f"))
    m.start_mice(0)
    m.manager = ME
    m.mice_exited(int(FaultCode.MICE_CRASHED), "MICE only killed by signal 9", 11.0)
    frames = [decode(raw) for raw, _ in m.take_outbox()]
    reports = [f for f in frames if isinstance(f.body, Signaling) and f.body.cmd is Command.FAULT_REPORT]
    assert len(reports) == 1 and reports[0].dst_dime == ME.dime
    assert reports[0].body.param(TlvType.FAULT_CODE) == FaultCode.MICE_CRASHED
    assert m.counter(CounterId.FAULTS) == 1 and m.state is DimeState.FREE


def test_threshold_raises_one_overload_per_crossing() -> None:
    m, _ = machine()
    r = ask(m, Command.SET_THRESHOLD, Tlv(TlvType.COUNTER_ID, int(CounterId.FRAMES_RX)), Tlv(TlvType.THRESHOLD, 3))
    assert r.status is Status.OK
    ask(m, Command.PING)
    ask(m, Command.PING)
    for t in (10.0, 10.2, 10.4):
        m.handle_timer(t)
    frames = [decode(raw) for raw, _ in m.take_outbox()]
    overloads = [
        f
        for f in frames
        if isinstance(f.body, Signaling)
        and f.body.cmd is Command.FAULT_REPORT
        and f.body.param(TlvType.FAULT_CODE) == FaultCode.OVERLOAD
    ]
    assert len(overloads) == 1


def test_connect_refuses_completion_channels_and_dime_all() -> None:
    m, _ = machine()
    peer = [Tlv(TlvType.DIRECTION, Direction.OUTPUT), Tlv(TlvType.PEER_MAC, ME.mac), Tlv(TlvType.PEER_THREAD, 0)]
    r = ask(m, Command.CONNECT, Tlv(TlvType.CHANNEL, 0x8000), *peer, Tlv(TlvType.PEER_DIME, 1))
    assert r.status is Status.BAD_PARAM
    r = ask(m, Command.CONNECT, Tlv(TlvType.CHANNEL, 1), *peer, Tlv(TlvType.PEER_DIME, 0xFFFF))
    assert r.status is Status.BAD_PARAM
    r = ask(m, Command.CONNECT, Tlv(TlvType.CHANNEL, 1), *peer, Tlv(TlvType.PEER_DIME, 1))
    assert r.status is Status.OK and 1 in m.plane.outputs
    r = ask(m, Command.DISCONNECT, Tlv(TlvType.CHANNEL, 2), Tlv(TlvType.DIRECTION, Direction.OUTPUT))
    assert r.status is Status.NOT_FOUND


def test_the_machine_opens_no_socket_and_reads_no_clock() -> None:
    for name in ("machine.py", "fcaps.py", "channels.py"):
        tree = ast.parse((ROOT / "pxproto" / "node" / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
            (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        }
        assert not imported & {"socket", "selectors", "signal", "time", "os", "subprocess"}, name


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module:
            out.add(n.module)
            out |= {f"{n.module}.{a.name}" for a in n.names}
    return out


def test_the_orchestrator_imports_nothing_from_the_node() -> None:
    files = sorted((ROOT / "pxproto" / "orch").rglob("*.py"))
    assert files
    bad = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m == "pxproto.node" or m.startswith("pxproto.node."))
        for p in files
    }
    assert not {k: v for k, v in bad.items() if v}


def test_node_modules_stay_small() -> None:
    for p in [*(ROOT / "pxproto" / "node").glob("*.py"), ROOT / "pxproto" / "sim.py", ROOT / "pxproto" / "link.py"]:
        assert len(p.read_text().splitlines()) <= 600, p


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "udp:127.0.0.1:99999"], "the UDP port must be 1..65535"),
        (["--port", "stream:127.0.0.1:99999"], "the TCP port must be 1..65535"),
        (["--port", "udp:127.0.0.1:5999", "--state-dir", "/proc/x"], "--state-dir /proc/x"),
        (["--port", "udp:127.0.0.1:5999", "--flush-us", "-1"], "--flush-us must be 0..1000000"),
        (["--port", "udp:127.0.0.1:5999", "--mac", "zz"], "--mac: 'zz' is not a MAC address (six bytes, xx:xx:"),
        (["--port", "udp:127.0.0.1:5999", "--mac", "02:00:00:00:01"], "--mac: '02:00:00:00:01' is not a MAC address"),
        (["--port", "udp:127.0.0.1:5999", "--mac", "ff:ff:ff:ff:ff:ff"], "--mac: 'ff:ff:ff:ff:ff:ff' is a broadcast"),
        (["--port", "udp:127.0.0.1:5999", "--mac", "01:00:00:00:00:01"], "--mac: '01:00:00:00:00:01' is a multicast"),
        (["--port", "udp:127.0.0.1:5999", "--mac", "00:00:00:00:00:00"], "is the all-zero address"),
        (
            ["--port", "udp:127.0.0.1:5999", "--memory-chunks", "4294967296"],
            "--memory-chunks 4294967296: must be 0..4294967295",
        ),
        (["--port", "udp:127.0.0.1:5999", "--memory-chunks", "-1"], "--memory-chunks -1: must be 0..4294967295"),
        (["--iface", "nonexist0"], "--iface nonexist0: cannot open the wire: "),
        (["--port", "stream:/nonexistent/px.sock"], "--port stream:/nonexistent/px.sock: cannot open the wire: "),
    ],
)
def test_pxkernel_refuses_bad_arguments_in_one_line(args: list[str], says: str, tmp_path: Path) -> None:
    """One line naming the option, its value and what is wrong (before: ``--mac zz`` said "non-hexadecimal number
    found in fromhex() arg", ``--iface nonexist0`` "cannot open the wire: [Errno 19] No such device")."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    p = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "pxproto.node.cli", "--insecure", "--state-dir", str(state_dir), *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pxkernel: ") and says in lines[0], p.stderr
    if args[0] == "--iface" and os.geteuid() == 0:  # without root, AF_PACKET is refused first
        assert lines[0].endswith("cannot open the wire: no such interface"), p.stderr


def _archive(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


MANIFEST = b'[service]\nname = "x"\n\n[[stage]]\nname = "s"\nentry = "m:f"\n'


@pytest.mark.parametrize("evil", ["../x", "a/../../x"])
def test_an_archive_member_leaving_the_package_is_refused(tmp_path: Path, evil: str) -> None:
    dest = tmp_path / "store" / "packages" / "abc"
    dest.parent.mkdir(parents=True)
    archive = _archive({"service.toml": MANIFEST, "m.py": b"def f(x): return x\n", evil: b"owned"})
    with pytest.raises(package.PackageError, match="leaves the package"):
        package.unpack(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "store" / "packages" / "x").exists() and not (tmp_path / "store" / "x").exists()
    # The same archive without the evil member unpacks: the refusal is about that member.
    assert package.unpack(_archive({"service.toml": MANIFEST, "m.py": b""}), dest).name == "x"


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE])
def test_an_archive_member_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: bytes) -> None:
    dest = tmp_path / "store" / "packages" / "abc"
    dest.parent.mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in {"service.toml": MANIFEST, "m.py": b""}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        odd = tarfile.TarInfo("odd")
        odd.type, odd.linkname = kind, "/etc/passwd"
        tar.addfile(odd)
    with pytest.raises(package.PackageError, match="only regular files"):
        package.unpack(gzip.compress(raw.getvalue(), mtime=0), dest)
    assert not dest.exists()


def test_outputs_of_the_mice_go_out_on_a_wired_channel_and_come_back_on_rewire() -> None:
    from pxproto.node import mice
    from pxproto.wire.frame import Data

    m, _ = machine()
    m.loaded = Loaded(5, 1, "only", Path("."), package.Stage(1, "only", "m:f"))
    m.start_mice(0)
    peer = Address(b"\x02\x00\x00\x00\x02\x00", 1, 0)
    out = [Tlv(TlvType.DIRECTION, Direction.OUTPUT), Tlv(TlvType.PEER_MAC, peer.mac), Tlv(TlvType.PEER_THREAD, 0)]
    assert ask(m, Command.CONNECT, Tlv(TlvType.CHANNEL, 1), *out, Tlv(TlvType.PEER_DIME, 1)).status is Status.OK
    m.mice_message(mice.REC.pack(mice.OUT, 77, 3) + b"abc", 10.1)
    m.mice_batch_done(10.1)
    sent = [(decode(raw), route) for raw, route in m.take_outbox()]
    data = [(f, route) for f, route in sent if isinstance(f.body, Data)]
    assert len(data) == 1 and data[0][1] == "relay" and data[0][0].dst_dime == 1
    assert m.counter(CounterId.ITEMS_OUT) == 1 and m.counter(CounterId.RETAINED) == 1
    # Re-wiring the channel queues what it had not completed again (REPLAYED).
    assert ask(m, Command.DISCONNECT, Tlv(TlvType.CHANNEL, 1), Tlv(TlvType.DIRECTION, Direction.OUTPUT)).status is (
        Status.OK
    )
    assert m.counter(CounterId.REPLAYED) == 1


def _data_frames(m: DimeMachine) -> list[Data]:
    return [f.body for f in (decode(raw) for raw, _ in m.take_outbox()) if isinstance(f.body, Data)]


@pytest.mark.parametrize("flush_us", [0, 100, 5000])
def test_a_frame_less_than_full_waits_the_flush_delay_and_a_full_one_goes_at_once(flush_us: int) -> None:
    from pxproto.node import mice

    m, _ = machine(mtu=9000)
    m.plane.flush_delay = flush_us / 1e6
    m.loaded = Loaded(5, 1, "only", Path("."), package.Stage(1, "only", "m:f"))
    m.start_mice(0)
    peer = Address(b"\x02\x00\x00\x00\x02\x00", 1, 0)
    out = [Tlv(TlvType.DIRECTION, Direction.OUTPUT), Tlv(TlvType.PEER_MAC, peer.mac), Tlv(TlvType.PEER_THREAD, 0)]
    assert ask(m, Command.CONNECT, Tlv(TlvType.CHANNEL, 1), *out, Tlv(TlvType.PEER_DIME, 1)).status is Status.OK
    m.take_outbox()
    t = 10.1
    small, _ = mice.pack_run(mice.OUT, 1 << 48 | 1, [b"x" * 16] * 10, 0, 1 << 20, mice.MAX_ITEM)
    m.mice_message(small, t)
    m.mice_batch_done(t)
    if flush_us == 0:
        assert len(_data_frames(m)) == 1  # no delay: at once
        return
    assert _data_frames(m) == []
    assert m.get_timer() is not None and m.get_timer() <= t + flush_us / 1e6  # type: ignore[operator]
    m.handle_timer(t + flush_us / 2e6)
    assert _data_frames(m) == []
    # More items make a frame's worth: full frames go at once, the 10 held items first.
    big, _ = mice.pack_run(mice.OUT, 1 << 48 | 11, [b"y" * 16] * 400, 0, 1 << 20, mice.MAX_ITEM)
    m.mice_message(big, t + flush_us / 2e6)
    m.mice_batch_done(t + flush_us / 2e6)
    frames = _data_frames(m)
    assert len(frames) == 1 and frames[0].payload[8:16] == (1 << 48 | 1).to_bytes(8, "big")
    m.handle_timer(t + 2 * flush_us / 1e6)  # the rest, less than a frame, once the delay has passed
    rest = _data_frames(m)
    assert len(rest) == 1 and m.plane.flow.queue == deque()


def test_the_simulated_servers_answer_with_the_real_handlers() -> None:
    from pxproto.sim import SimServer

    s = SimServer(b"\x02\x00\x00\x01\x00\x00", 2, period=0.05)
    s.handle_timer(0.0)
    assert all(d.booted for d in s.dimes.values())
    d = s.dimes[1]
    assert isinstance(d.machine, DimeMachine)
    req = Requester(ME, RetransmitPolicy(retries=0))
    dest = Address(s.mac, 1, 0)
    answers = []
    for cmd, params in [
        (Command.SET_PARAM, [Tlv(TlvType.PARAM_ID, int(Param.HEARTBEAT_PERIOD_MS)), Tlv(TlvType.VALUE, 0)]),
        (Command.COUNTERS, [Tlv(TlvType.COUNTER_ID, int(CounterId.FRAMES_RX))]),
    ]:
        _, o = req.request(dest, cmd, params, now=1.0)
        for f in o.frames:
            for g in s.receive(f, 1.0).frames:
                answers += [e for e in req.receive(g, 1.0).events if isinstance(e, ResponseReceived)]
    # The kernel's bounds (a period of 0 ms is refused) and its counters, not a copy's.
    assert [a.status for a in answers] == [Status.BAD_PARAM, Status.OK]
    assert answers[1].param(TlvType.VALUE) == 2 and d.period == pytest.approx(0.05)


def test_a_kernel_without_verify_keys_loads_no_package_unless_insecure() -> None:
    """No --verify-key and no --insecure: a LOAD cannot have its signature checked, so it is DENIED and counted."""
    host = FakeHost()
    m = DimeMachine(MachineConfig(DIME, has_store=True, insecure=False), host)
    m.start(10.0)
    load = list(LOAD_ONLY)
    r = ask(m, Command.LOAD, *load)
    assert r.status is Status.DENIED and "no --verify-key" in str(r.param(TlvType.TEXT))
    assert m.counters[CounterId.REJECTED_AUTH] == 1 and m.loaded is None
    m2, _ = machine()  # --insecure: the same LOAD is taken (and says so at start)
    assert ask(m2, Command.LOAD, *load).status is Status.OK
