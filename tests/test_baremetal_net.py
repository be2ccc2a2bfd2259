"""The bare-metal DIME kernel on the wire: QEMU (TCG) with virtio-net on a UDP datagram netdev.

The test is the other end of the wire: it sends frames encoded by the reference codec and
decodes the guest's with it, so the kernel and pxproto must agree byte for byte.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pxproto.errors import ProtocolError
from pxproto.node.testbed import SIGNER
from pxproto.wire import decode, encode, ethertypes
from pxproto.wire.auth import sign
from pxproto.wire.codes import (
    Command,
    DimeState,
    DiscoveryOp,
    FrameClass,
    Op,
    Scope,
    ServerCounterId,
    Status,
    TlvType,
)
from pxproto.wire.frame import Discovery, Frame, Heartbeat, Signaling, Tlv

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "kernel" / "build" / "dime.elf"
QEMU = shutil.which("qemu-system-x86_64")
GUEST_MAC = bytes.fromhex("525400aa0001")
OUR_MAC = bytes.fromhex("02000000be01")
KEY_ID = 7
KEY = bytes(range(32))
VK = f"vk={SIGNER.key_id}:{SIGNER.public_bytes().hex()}"
"""The boot argument giving the guest the package signing key's public half (LOAD checks PACKAGE_SIG)."""
BOOT_TIMEOUT = 90.0  # TCG on a loaded 2-core host: allow for it

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed (apt install qemu-system-x86)"),
    pytest.mark.skipif(shutil.which("make") is None or shutil.which("gcc") is None, reason="no make/gcc to build"),
]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Guest:
    """One QEMU guest running the kernel, its NIC a UDP datagram pipe to this process."""

    def __init__(
        self, smp: int = 1, append: str = "", logdir: Path | None = None, remote_port: int = 0, netdev: str = "",
        extra: tuple[str, ...] = (), image: Path = IMAGE,
    ) -> None:  # fmt: skip
        """``remote_port``: where QEMU sends its frames (a switch's port); by default, this object's socket.
        ``netdev``: another QEMU -netdev (id n0) instead of the UDP datagram pipe. ``extra``: more QEMU options
        (a second ``-serial``: the server's store). ``image``: another build of the kernel (a bench's baseline)."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        ours = remote_port or self.sock.getsockname()[1]
        theirs = _free_udp_port()
        self.qemu_port = theirs
        self.peer = ("127.0.0.1", theirs)
        self.log = (logdir or Path(tempfile.mkdtemp())) / "serial.log"
        netdev = netdev or (
            f"dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={theirs},"
            f"remote.type=inet,remote.host=127.0.0.1,remote.port={ours}"
        )
        self.proc = subprocess.Popen(
            [str(QEMU), "-m", "256", "-smp", str(smp), "-display", "none", "-monitor", "none", "-no-reboot",
             "-serial", f"file:{self.log}", *extra, "-kernel", str(image), "-append", append,
             "-netdev", netdev, "-device", f"virtio-net-pci,netdev=n0,disable-modern=on,mac={GUEST_MAC.hex(':')}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.counter = 1
        self.announce: Frame | None = None
        """The gratuitous announce of the boot (see :meth:`booted`)."""

    def booted(self, dimes: int) -> Guest:
        """Wait for the boot, and keep its gratuitous announce (tests may run in any order)."""
        self.wait_serial(f"boot: {dimes} DIME(s) up")
        self.announce, _ = self.expect(is_gratuitous)
        return self

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.sock.close()

    def serial(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_serial(self, text: str, timeout: float = BOOT_TIMEOUT) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in (out := self.serial()):
                return out
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not on the serial console; it shows:\n{self.serial()}")

    def send(self, frame: Frame, signed: bool = True) -> bytes:
        raw = sign(frame, KEY_ID, self.counter, KEY) if signed else encode(frame)
        self.counter += 1
        self.sock.sendto(raw, self.peer)
        return raw

    def send_raw(self, raw: bytes) -> None:
        self.sock.sendto(raw, self.peer)

    def frames(self, timeout: float) -> Iterator[tuple[Frame, bytes]]:
        """Decoded frames from the guest until ``timeout`` seconds pass."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                raw = self.sock.recv(2048)
            except TimeoutError:
                return
            yield decode(raw), raw

    def expect(self, match: Callable[[Frame], bool], timeout: float = BOOT_TIMEOUT) -> tuple[Frame, bytes]:
        for frame, raw in self.frames(timeout):
            if match(frame):
                return frame, raw
        raise AssertionError(f"no matching frame within {timeout}s; serial:\n{self.serial()}")


def is_gratuitous(f: Frame) -> bool:
    return isinstance(f.body, Discovery) and f.body.op is DiscoveryOp.GRATUITOUS


def request(cmd: Command, dime: int, req_id: int, *params: Tlv) -> Frame:
    return Frame(
        Signaling(cmd, Op.REQUEST, req_id, Status.OK, params), scope=Scope.DIME, src_dime=0xFFFF,
        dst_dime=dime, dst_mac=GUEST_MAC, src_mac=OUR_MAC,
    )  # fmt: skip


def response_to(req_id: int) -> Callable[[Frame], bool]:
    return lambda f: isinstance(f.body, Signaling) and f.body.op is Op.RESPONSE and f.body.req_id == req_id


def build() -> Path:
    subprocess.run(["make", "-C", str(ROOT / "kernel"), "-s"], check=True)
    return IMAGE


@pytest.fixture(scope="module")
def built() -> Path:
    return build()


@pytest.fixture(scope="module")
def guest(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    g = Guest(smp=1, append=f"key={KEY_ID}:{KEY.hex()} {VK} hb=200 chunks=3", logdir=tmp_path_factory.mktemp("guest"))
    try:
        yield g.booted(1)
    finally:
        g.close()


def test_boot_announce_and_heartbeat(guest: Guest) -> None:
    frame = guest.announce
    assert frame is not None and frame.src_mac == GUEST_MAC and frame.auth is not None and frame.auth.key_id == KEY_ID
    body = frame.body
    assert isinstance(body, Discovery)
    assert [(d.dime, d.state, d.mem_total) for d in body.dimes] == [(0, DimeState.FREE, 3)]
    hb, _ = guest.expect(lambda f: isinstance(f.body, Heartbeat))
    assert hb.src_dime == 0 and isinstance(hb.body, Heartbeat) and hb.body.period_ms == 200
    assert "pxdime: Parallax bare-metal DIME kernel" in guest.serial()


def probe(probe_id: int) -> Frame:
    return Frame(Discovery(DiscoveryOp.PROBE, probe_id), src_mac=OUR_MAC)


def test_probe_is_answered(guest: Guest) -> None:
    guest.send(probe(4242))
    frame, _ = guest.expect(lambda f: isinstance(f.body, Discovery) and f.body.op is DiscoveryOp.ANNOUNCE)
    assert isinstance(frame.body, Discovery) and frame.body.probe_id == 4242 and frame.dst_mac == OUR_MAC
    assert [d.dime for d in frame.body.dimes] == [0]


def call(guest: Guest, req: Frame) -> Signaling:
    assert isinstance(req.body, Signaling)
    guest.send(req)
    frame, _ = guest.expect(response_to(req.body.req_id), timeout=30)
    assert frame.auth is not None and frame.src_dime == req.dst_dime and frame.dst_mac == OUR_MAC
    assert isinstance(frame.body, Signaling) and frame.body.cmd == req.body.cmd
    return frame.body


def test_signed_ping_and_management(guest: Guest) -> None:
    assert call(guest, request(Command.RESET, 0, 90)).status is Status.OK  # a clean DIME, whatever ran before
    ping = call(guest, request(Command.PING, 0, 1, Tlv(TlvType.ECHO, b"bare")))
    assert ping.status is Status.OK and ping.param(TlvType.ECHO) == b"bare"
    got = call(guest, request(Command.GET_PARAM, 0, 2, Tlv(TlvType.PARAM_ID, 1)))
    assert got.status is Status.OK and got.param(TlvType.VALUE) == 200
    too_big = call(guest, request(Command.SET_PARAM, 0, 3, Tlv(TlvType.PARAM_ID, 2), Tlv(TlvType.VALUE, 5)))
    assert too_big.status is Status.BAD_PARAM  # the partition has 3 chunks
    put = call(guest, request(Command.SET_PARAM, 0, 30, Tlv(TlvType.PARAM_ID, 2), Tlv(TlvType.VALUE, 2)))
    assert put.status is Status.OK
    assert call(guest, request(Command.GET_PARAM, 0, 4, Tlv(TlvType.PARAM_ID, 2))).param(TlvType.VALUE) == 2
    alloc = call(guest, request(Command.MEM_ALLOC, 0, 5, Tlv(TlvType.MEM_CHUNKS, 2)))
    assert alloc.status is Status.OK and alloc.param(TlvType.MEM_CHUNKS) == 2
    assert call(guest, request(Command.MEM_ALLOC, 0, 6, Tlv(TlvType.MEM_CHUNKS, 1))).status is Status.NO_MEMORY
    freed = call(guest, request(Command.MEM_FREE, 0, 31, Tlv(TlvType.MEM_CHUNKS, 1)))
    assert freed.status is Status.OK and freed.param(TlvType.MEM_CHUNKS) == 1
    limit = call(guest, request(Command.MEM_LIMIT, 0, 32, Tlv(TlvType.MEM_CHUNKS, 3)))
    assert limit.status is Status.OK and limit.param(TlvType.MEM_CHUNKS) == 3
    usage = call(guest, request(Command.USAGE, 0, 7))
    assert usage.status is Status.OK and isinstance(usage.param(TlvType.FRAMES_RX), int)
    fault = call(guest, request(Command.FAULT_REPORT, 0, 8, Tlv(TlvType.TEXT, "from the test")))
    assert fault.status is Status.OK
    assert call(guest, request(Command.SET_THRESHOLD, 0, 9)).status is Status.UNKNOWN_COMMAND
    assert call(guest, request(Command.LOAD, 0, 10)).status is Status.NOT_FOUND  # no package named
    assert "fault report from dime 65535: from the test" in guest.wait_serial("from the test", 10)


def counter(guest: Guest, cid: int, req_id: int) -> int:
    value = call(guest, request(Command.COUNTERS, 0, req_id, Tlv(TlvType.COUNTER_ID, cid))).param(TlvType.VALUE)
    assert isinstance(value, int)
    return value


def server_counter(guest: Guest, cid: int, req_id: int) -> int:
    """A counter of the server itself (frames that reached no DIME: a truncated one names none it can trust)."""
    req = Frame(
        Signaling(Command.COUNTERS, Op.REQUEST, req_id, Status.OK, (Tlv(TlvType.COUNTER_ID, cid),)),
        dst_mac=GUEST_MAC, src_mac=OUR_MAC,
    )  # fmt: skip
    guest.send(req)
    frame, _ = guest.expect(response_to(req_id), timeout=30)
    assert isinstance(frame.body, Signaling) and frame.src_dime == 0xFFFF
    value = frame.body.param(TlvType.VALUE)
    assert isinstance(value, int)
    return value


REJECTED_AUTH, REJECTED_REPLAY, REJECTED_UNAUTHENTICATED = 12, 13, 20  # a DIME's CounterId


def test_forged_replayed_truncated_unsigned_are_refused_and_counted(guest: Guest) -> None:
    before = {cid: counter(guest, cid, 100 + cid) for cid in (REJECTED_AUTH, REJECTED_REPLAY, REJECTED_UNAUTHENTICATED)}
    good = guest.send(request(Command.PING, 0, 200))
    guest.expect(response_to(200), timeout=30)
    guest.send_raw(good)  # replayed
    forged = bytearray(sign(request(Command.PING, 0, 201), KEY_ID, guest.counter + 1000, KEY))
    forged[-1] ^= 1
    guest.send_raw(bytes(forged))
    guest.send_raw(sign(request(Command.PING, 0, 202), KEY_ID, guest.counter + 1001, b"\x00" * 32))  # wrong key
    guest.send(request(Command.PING, 0, 203), signed=False)
    truncated = sign(request(Command.PING, 0, 204, Tlv(TlvType.ECHO, b"x" * 40)), KEY_ID, guest.counter + 1002, KEY)
    guest.send_raw(truncated[:-5])
    for frame, _ in guest.frames(3.0):
        assert not (isinstance(frame.body, Signaling) and frame.body.req_id in (201, 202, 203, 204))
    malformed_before = server_counter(guest, ServerCounterId.MALFORMED, 400)
    guest.send_raw(sign(request(Command.PING, 0, 205), KEY_ID, guest.counter + 1003, KEY)[:-5])
    assert server_counter(guest, ServerCounterId.MALFORMED, 401) - malformed_before == 1
    after = {cid: counter(guest, cid, 300 + cid) for cid in before}
    assert after[REJECTED_REPLAY] - before[REJECTED_REPLAY] == 1
    assert after[REJECTED_AUTH] - before[REJECTED_AUTH] == 2
    assert after[REJECTED_UNAUTHENTICATED] - before[REJECTED_UNAUTHENTICATED] == 1


def test_a_retransmitted_request_is_answered_not_run_again(guest: Guest) -> None:
    assert call(guest, request(Command.RESET, 0, 499)).status is Status.OK
    first = call(guest, request(Command.MEM_ALLOC, 0, 500, Tlv(TlvType.MEM_CHUNKS, 1)))
    again = call(guest, request(Command.MEM_ALLOC, 0, 500, Tlv(TlvType.MEM_CHUNKS, 1)))  # new counter, same req_id
    assert again.status is first.status and again.params == first.params
    held = call(guest, request(Command.MEM_FREE, 0, 501, Tlv(TlvType.MEM_CHUNKS, 0))).param(TlvType.MEM_CHUNKS)
    assert held == first.param(TlvType.MEM_CHUNKS)


def _counted_malformed(raw: bytes) -> bool:
    """Whether the kernel's server should count ``raw`` as malformed: a Parallax EtherType other than
    heartbeat (other servers' heartbeats are not its business), and the reference decoder refuses it."""
    if len(raw) < 14:
        return False
    cls = ethertypes.EtherTypeMap().classify(int.from_bytes(raw[12:14], "big"))
    if cls is None or cls is FrameClass.HEARTBEAT:
        return False
    try:
        decode(raw)
    except ProtocolError:
        return True
    return False


def test_hostile_frames_agree_with_the_reference_decoder_and_never_hang(guest: Guest) -> None:
    vectors = json.loads((ROOT / "docs" / "conformance.json").read_text())["vectors"]
    frames = [raw for v in vectors if len(raw := bytes.fromhex(v["hex"])) <= 1514]  # the guest's MTU
    rng = random.Random(18)
    for base in list(frames):
        for _ in range(2):
            b = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            frames.append(bytes(b[: rng.randint(min(14, len(b)), len(b))] if rng.random() < 0.3 else b))
    before = server_counter(guest, ServerCounterId.MALFORMED, 600)
    for i, raw in enumerate(frames):
        guest.send_raw(raw)
        if i % 32 == 31:
            time.sleep(0.05)  # stay inside the NIC's receive ring
    after = server_counter(guest, ServerCounterId.MALFORMED, 601)
    expected = sum(map(_counted_malformed, frames))
    assert expected > 100 and after - before == expected
    assert call(guest, request(Command.PING, 0, 602)).status is Status.OK


def system_request(cmd: Command, req_id: int, *params: Tlv) -> Frame:
    return Frame(Signaling(cmd, Op.REQUEST, req_id, Status.OK, params), dst_mac=GUEST_MAC, src_mac=OUR_MAC)


def test_the_server_answers_as_the_linux_server_does(guest: Guest) -> None:
    def ask(req: Frame) -> Signaling:
        guest.send(req)
        assert isinstance(req.body, Signaling)
        frame, _ = guest.expect(response_to(req.body.req_id), timeout=30)
        assert isinstance(frame.body, Signaling) and frame.src_dime == 0xFFFF and frame.auth is not None
        return frame.body

    assert ask(system_request(Command.PING, 700, Tlv(TlvType.ECHO, b"srv"))).param(TlvType.ECHO) == b"srv"
    usage = ask(system_request(Command.USAGE, 701))
    frames_rx = usage.param(TlvType.FRAMES_RX)
    assert usage.status is Status.OK and isinstance(frames_rx, int) and frames_rx > 0
    reports = ask(system_request(Command.COUNTERS, 702, Tlv(TlvType.COUNTER_ID, ServerCounterId.FAULT_REPORTS)))
    ask(system_request(Command.FAULT_REPORT, 703, Tlv(TlvType.TEXT, "to the server")))
    after = ask(system_request(Command.COUNTERS, 704, Tlv(TlvType.COUNTER_ID, ServerCounterId.FAULT_REPORTS)))
    assert after.param(TlvType.VALUE) == reports.param(TlvType.VALUE) + 1  # type: ignore[operator]
    assert ask(system_request(Command.COUNTERS, 705, Tlv(TlvType.COUNTER_ID, 99))).status is Status.NOT_FOUND
    assert ask(system_request(Command.LOAD, 706)).status is Status.UNSUPPORTED
    unknown = ask(system_request(Command.COUNTERS, 707, Tlv(TlvType.COUNTER_ID, ServerCounterId.UNKNOWN_DIME)))
    guest.send(request(Command.PING, 9, 708))  # no DIME 9 on a one-core guest
    time.sleep(0.5)
    again = ask(system_request(Command.COUNTERS, 709, Tlv(TlvType.COUNTER_ID, ServerCounterId.UNKNOWN_DIME)))
    assert again.param(TlvType.VALUE) == unknown.param(TlvType.VALUE) + 1  # type: ignore[operator]
