"""The switch's PACKET_MMAP transmit ring on a veth pair in a namespace of its own: what goes in comes out
byte for byte (up to a full-MTU frame), slots come back so the ring never stalls, and a frame longer than
a slot is refused rather than cut; and the receive ring's ``has_frames`` look."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 for network namespaces"
    ),
]
pytest.importorskip("pxproto.switch._afpacket")
ROOT = str(Path(__file__).resolve().parents[1])
NS = f"switch-txr-{os.getpid() % 100000}"

# Inside the namespace: a TxRing on ``txa``, a plain AF_PACKET receiver on its peer ``txb``.
SCRIPT = r"""
import json, os, socket, sys
from pxproto.switch import _afpacket
frames = [bytes.fromhex(h) for h in json.loads(sys.argv[1])]
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
rx.bind(("txb", 3))
rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
rx.settimeout(0.5)
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
ring = _afpacket.TxRing(tx.fileno(), 1500, 1 << 16)
tx.bind(("txa", 0))
took = []
for k in range(0, len(frames), 16):
    took.append(ring.send_batch(frames[k:k + 16]))
got = []
while True:
    try:
        f = rx.recv(70000)
    except socket.timeout:
        break
    if f[12:14] == b"\x88\xb5":  # not the IPv6 chatter of a new link
        got.append(f.hex())
print(json.dumps({"took": took, "got": got, "cap": ring.cap, "slots": ring.slots}))
"""


@pytest.fixture
def ns() -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for cmd in ("ip link add txa type veth peer name txb", "ip link set txa up", "ip link set txb up"):
            subprocess.run(["ip", "netns", "exec", NS, *cmd.split()], check=True)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


def run(ns: str, frames: list[bytes]) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT, json.dumps([f.hex() for f in frames])],
        env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def frame(i: int, size: int) -> bytes:
    body = bytes((i * 7 + k) & 0xFF for k in range(size - 14))
    return bytes.fromhex("02000000bb01") + bytes.fromhex("02000000aa01") + b"\x88\xb5" + body


def test_frames_come_out_whole_and_in_order(ns: str) -> None:
    sizes = [60, 61, 1000, 1514, 1518]  # 1518: a full MTU frame with a VLAN tag's room
    frames = [frame(i, sizes[i % len(sizes)]) for i in range(40)]
    res = run(ns, frames)
    assert res["cap"] == 1518 and sum(res["took"]) == len(frames)
    assert res["got"] == [f.hex() for f in frames]


def test_slots_come_back_so_the_ring_does_not_stall(ns: str) -> None:
    frames = [frame(i, 100) for i in range(200)]  # a 64 KiB ring: 32 slots, each used six times over
    res = run(ns, frames)
    assert res["slots"] == 32
    assert sum(res["took"]) == 200 and len(res["got"]) == 200


def test_a_frame_longer_than_a_slot_is_refused_not_cut(ns: str) -> None:
    frames = [frame(0, 60), frame(1, 1519), frame(2, 60)]
    res = run(ns, frames)
    assert res["took"] == [1]  # it stops at the long frame: the caller sends that one another way
    assert res["got"] == [frames[0].hex()]


# PacketRing.ready (``has_frames``), the look at a receive ring's memory the AF_PACKET loop makes instead of a
# poll while it busy-polls: a ring on ``txb`` for the data EtherType only (no IPv6 chatter), frames from ``txa``.
PEEK = r"""
import json, socket, sys, time
from pxproto.switch import _afpacket
from pxproto.switch.frames import data
f = data(bytes.fromhex("020000000b01"), bytes.fromhex("020000000a01"), size=60)
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
ring = _afpacket.PacketRing(rx.fileno(), int(sys.argv[1]), 1 << 16, 1)
rx.bind(("txb", int.from_bytes(f[12:14], "big")))
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
tx.bind(("txa", 0))
out = {"empty": ring.has_frames()}
sent, end = 0, time.monotonic() + 5.0
while not ring.has_frames() and time.monotonic() < end:
    tx.send(f)  # (until the new link carries)
    sent += 1
    time.sleep(0.01)  # (a V3 block is handed over after its 1 ms timeout)
out["ready"] = ring.has_frames()
time.sleep(0.05)
got = []
while time.monotonic() < end and len(got) < sent:
    got += ring.recv_batch()
out["got_all"] = 0 < len(got) <= sent and all(g == f for g in got)
out["after"] = ring.has_frames()
print(json.dumps(out))
"""


@pytest.mark.parametrize("version", [2, 3])
def test_ring_ready_sees_frames_handed_over_and_none_once_read(ns: str, version: int) -> None:
    r = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", PEEK, str(version)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"empty": False, "ready": True, "got_all": True, "after": False}
