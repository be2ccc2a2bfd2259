"""pxswitch in network namespaces: veth ports (AF_PACKET), a vanishing port, and VXLAN interop with Linux.

Each test creates its namespaces and veth pairs and deletes them afterwards;
the switch runs as ``pxswitch run`` inside its namespace and the test talks
to it through a UNIX stream port (a path, reachable from any namespace).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxproto.switch.frames import data, heartbeat, mac, signaling
from tests._helpers import NETNS

pytestmark = NETNS
ROOT = str(Path(__file__).resolve().parents[1])
TAG = f"sw-{os.getpid() % 10000}"

LISTEN = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 3))
s.settimeout(0.1)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        print(s.recv(65535).hex(), flush=True)
    except socket.timeout:
        pass
"""
SEND = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((sys.argv[1], 3))
for h in sys.argv[2:]:
    s.send(bytes.fromhex(h))
"""


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, capture_output=True)


class Net:
    def __init__(self) -> None:
        self.ns: list[str] = []

    def add(self, name: str) -> str:
        ns = f"{TAG}{name}"
        sh(f"ip netns add {ns}")
        self.ns.append(ns)
        sh(f"ip netns exec {ns} ip link set lo up")
        sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        return ns

    def veth(self, a_ns: str, a: str, b_ns: str, b: str) -> None:
        sh(f"ip link add {a} netns {a_ns} type veth peer name {b} netns {b_ns}")
        sh(f"ip netns exec {a_ns} ip link set {a} up")
        sh(f"ip netns exec {b_ns} ip link set {b} up")

    def close(self) -> None:
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


LISTEN_S = 4.0
"""How long a listener waits: long enough for the sender's interpreter to start on a loaded host."""


def listen(ns: str, dev: str, seconds: float) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", LISTEN, dev, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def heard(p: subprocess.Popen[str]) -> list[bytes]:
    out = p.communicate(timeout=30)[0]
    return [bytes.fromhex(line) for line in out.split()]


def send(ns: str, dev: str, *frames: bytes) -> None:
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SEND, dev, *(f.hex() for f in frames)], check=True)


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        n.close()


def start_switch(ns: str, tmp: Path, *ports: str, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", str(tmp / "c.sock"), *extra]
    for p in ports:
        args += ["--port", p]
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], env={**os.environ, "PYTHONPATH": ROOT})
    wait_ready(proc, tmp)
    return proc


def wait_ready(proc: subprocess.Popen[bytes], tmp: Path) -> None:
    """Until the switch's control socket answers: it listens once every port is open."""
    end = time.monotonic() + 10
    while True:
        assert proc.poll() is None and time.monotonic() < end, "pxswitch did not start"
        try:
            query(tmp, "stats")
            return
        except OSError:
            time.sleep(0.05)


def query(tmp: Path, what: str) -> object:
    from pxproto.switch.control import query as q

    return q(str(tmp / "c.sock"), what)


@pytest.mark.parametrize("workers", [1, 3])
def test_veth_forwarding_and_vanished_port(net: Net, tmp_path: Path, workers: int) -> None:
    """With ``--workers 3`` two threads beside the main loop take data from PACKET_FANOUT sockets, and
    restart without a port that vanished."""
    sw, h1, h2, h3 = net.add("sw"), net.add("h1"), net.add("h2"), net.add("h3")
    for i, h in enumerate((h1, h2, h3)):
        net.veth(h, "eth0", sw, f"s{i}")
    ports = (f"afpacket:interface=s{i},name=s{i}" for i in range(3))
    proc = start_switch(sw, tmp_path, *ports, extra=("--workers", str(workers)))
    try:
        assert query(tmp_path, "stats")["switch"].get("workers", 1) == workers  # type: ignore[index]
        l2, l3 = listen(h2, "eth0", LISTEN_S), listen(h3, "eth0", LISTEN_S)
        hb = heartbeat(mac(1), dime=3)
        send(h1, "eth0", hb)
        assert hb in heard(l2) and hb in heard(l3)
        l1, l3 = listen(h1, "eth0", LISTEN_S), listen(h3, "eth0", LISTEN_S)
        d = data(mac(1), mac(2), dst_dime=3)
        send(h2, "eth0", d)
        assert d in heard(l1) and d not in heard(l3)  # learned: no flood
        subprocess.run(["ip", "netns", "del", h3], check=True)  # s2's peer goes, and with it s2
        net.ns.remove(h3)
        end = time.monotonic() + 5
        while "gone" not in query(tmp_path, "stats")["ports"]["s2"]:  # type: ignore[index]
            assert time.monotonic() < end, "the vanished port was not reported"
            time.sleep(0.2)
        l1 = listen(h1, "eth0", LISTEN_S)
        send(h2, "eth0", d)
        assert d in heard(l1)
        fdb = query(tmp_path, "fdb")
        assert isinstance(fdb, list)
        assert {"mac": "02:00:00:00:00:01", "dime": 3, "port": "s0"}.items() <= next(
            r
            for r in fdb
            if r["dime"] == 3  # type: ignore[union-attr, index]
        ).items()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM: a clean shutdown


def test_vxlan_interop_with_linux(net: Net, tmp_path: Path) -> None:
    sw, a = net.add("sw"), net.add("vx")
    net.veth(a, "u0", sw, "u1")
    sh(f"ip netns exec {a} ip addr add 10.77.0.1/24 dev u0")
    sh(f"ip netns exec {sw} ip addr add 10.77.0.2/24 dev u1")
    sh(f"ip netns exec {a} ip link add vx0 type vxlan id 42 remote 10.77.0.2 dstport 4789 dev u0")
    sh(f"ip netns exec {a} ip link set vx0 address 02:00:00:00:00:0a up")
    sock = str(tmp_path / "guest.sock")
    proc = start_switch(
        sw, tmp_path, "vxlan:local=10.77.0.2:4789,remote=10.77.0.1,vni=42,name=up", f"stream:address={sock},listen=true"
    )
    try:
        guest = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        guest.connect(sock)
        time.sleep(0.3)
        lv = listen(a, "vx0", 1.5)
        hb = heartbeat(mac(5), dime=1)
        guest.sendall(len(hb).to_bytes(4, "big") + hb)
        assert hb in heard(lv)  # pxswitch -> VXLAN -> Linux vxlan device
        reply = data(mac(5), bytes.fromhex("02000000000a"), dst_dime=1, src_dime=4)
        send(a, "vx0", reply)  # Linux vxlan device -> VXLAN -> pxswitch -> stream guest
        guest.settimeout(3)
        got = b""
        while len(got) < 4 + len(reply):
            got += guest.recv(65536)
        assert got[:4] == len(reply).to_bytes(4, "big") and got[4 : 4 + len(reply)] == reply
        st = query(tmp_path, "stats")
        assert st["ports"]["up"]["rx_class"]["data"] == 1  # type: ignore[index]
        guest.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def stats(tmp: Path) -> dict:  # type: ignore[type-arg]
    return query(tmp, "stats")  # type: ignore[return-value]


def test_tap_mirror_ring_and_full_validation(net: Net, tmp_path: Path) -> None:
    """A TAP port beside a veth port on a TPACKET_V2 ring; validation=full in the fast loop; the mirror file."""
    from pxproto.capture.pcapng import read_packets

    sw, h1, h2 = net.add("sw"), net.add("h1"), net.add("h2")
    net.veth(h1, "eth0", sw, "s0")
    net.veth(h2, "eth0", sw, "s1")
    mirror = tmp_path / "m.pcapng"
    tap = f"{TAG}t"
    proc = start_switch(
        sw,
        tmp_path,
        "afpacket:interface=s0,name=s0,ring=2",
        "afpacket:interface=s1,name=s1,ring=2",
        f"tap:interface={tap},name=tap",
        extra=("--validation", "full", "--mirror", str(mirror)),
    )
    try:
        assert stats(tmp_path)["ports"]["s0"]["ring"].startswith("TPACKET_V2")
        lt, l2 = listen(sw, tap, 1.5), listen(h2, "eth0", 1.5)
        hb = heartbeat(mac(1), dime=3)
        send(h1, "eth0", hb)
        assert hb in heard(lt) and hb in heard(l2)  # flooded to the TAP and the other veth
        l1 = listen(h1, "eth0", 1.5)
        reply = data(mac(1), mac(7), dst_dime=3)
        send(sw, tap, reply)  # a frame the TAP's user side (a VM) sends
        assert reply in heard(l1)
        # veth to veth through the compiled loop, which validates every body rule with px_view
        l1 = listen(h1, "eth0", 1.5)
        good = signaling(mac(1), mac(2), dst_dime=3)
        bad = bytearray(good)
        bad[34 + 4] = 0xEE  # an unknown command: the header is fine, the body is not
        send(h2, "eth0", bytes(bad), good)
        got = heard(l1)
        assert good in got and bytes(bad) not in got
        st = stats(tmp_path)
        assert st["malformed"].get("cmd") == 1 and st["ports"]["s1"]["rx_malformed"] == 1
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    with open(mirror, "rb") as fh:
        pkts = [(p.data, p.comment) for p in read_packets(fh)]
    assert (hb, "in s0") in pkts and (reply, "in tap") in pkts and (good, "in s1") in pkts
    assert not any(p == bytes(bad) for p, _ in pkts)  # a dropped malformed frame is not mirrored (as in the core)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reload_keeps_table(net: Net, tmp_path: Path, workers: int) -> None:
    """SIGHUP adds a port from the edited file and closes a removed one; learned entries survive (TPACKET_V3 ports;
    with a worker thread, which restarts on the new set of ports)."""
    sw, h1, h2, h3 = net.add("sw"), net.add("h1"), net.add("h2"), net.add("h3")
    for i, h in enumerate((h1, h2, h3)):
        net.veth(h, "eth0", sw, f"s{i}")
    conf = tmp_path / "sw.toml"

    def write(ports: tuple[int, ...]) -> None:
        text = f'[switch]\ncontrol = "{tmp_path / "c.sock"}"\nworkers = {workers}\n'
        for i in ports:
            text += f'\n[[port]]\nname = "s{i}"\ntype = "afpacket"\ninterface = "s{i}"\nring = 3\n'
        conf.write_text(text)

    write((0, 1))
    proc = subprocess.Popen(
        ["ip", "netns", "exec", sw, sys.executable, "-m", "pxproto.switch.cli", "run", "--config", str(conf)],
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        wait_ready(proc, tmp_path)
        send(h1, "eth0", heartbeat(mac(1), dime=3))
        end = time.monotonic() + 5
        while not any(r["dime"] == 3 for r in query(tmp_path, "fdb")):  # type: ignore[attr-defined]
            assert time.monotonic() < end, "the heartbeat was not learned"  # a V3 block waits for its timeout
            time.sleep(0.1)
        write((0, 2))
        proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 5
        while set(stats(tmp_path)["ports"]) != {"s0", "s2"}:
            assert time.monotonic() < end, "the reload did not happen"
            time.sleep(0.1)
        assert any(r["dime"] == 3 and r["port"] == "s0" for r in query(tmp_path, "fdb"))  # type: ignore[attr-defined]
        l1 = listen(h1, "eth0", 2.0)
        d = data(mac(1), mac(3), dst_dime=3)
        send(h3, "eth0", d)  # through the new port, to the entry learned before the reload
        assert d in heard(l1)
        assert proc.poll() is None
        assert stats(tmp_path)["switch"].get("workers", 1) == workers
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


TCP_SINK = r"""
import hashlib, socket, sys
s = socket.socket()
s.bind((sys.argv[1], 5001))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest(), flush=True)
"""
TCP_SOURCE = r"""
import hashlib, socket, sys
blob = bytes(range(256)) * 4096  # 1 MiB
c = socket.create_connection((sys.argv[1], 5001), timeout=60)
for _ in range(int(sys.argv[2])):
    c.sendall(blob)
c.close()
print(hashlib.sha256(blob * int(sys.argv[2])).hexdigest(), flush=True)
"""


@pytest.mark.parametrize("far", ["afpacket", "afpacket-ring3", "tap"])
def test_tcp_through_veth_with_offloads_on(net: Net, tmp_path: Path, far: str) -> None:
    """Regression (issue 16): TCP through AF_PACKET ports stalled while the veths kept their checksum and
    segmentation offloads (on by default).  Towards another AF_PACKET port the virtio_net_hdr is passed on and
    the kernel cuts on output; towards the switch's own TAP (plain frames) the switch cuts and checksums in
    software, and the receiving stack checks every checksum.  On the default TPACKET_V2 ring a 64 KiB segment
    does not fit a slot: it comes whole from the socket's queue (PACKET_COPY_THRESH); ``afpacket-ring3``
    receives into TPACKET_V3 blocks instead."""
    sw, a = net.add("sw"), net.add("a")
    net.veth(a, "eth0", sw, "s0")
    sh(f"ip netns exec {a} ip addr add 10.16.0.1/24 dev eth0")
    ring = ",ring=3" if far == "afpacket-ring3" else ""
    if far.startswith("afpacket"):
        b = net.add("b")
        net.veth(b, "eth0", sw, "s1")
        sh(f"ip netns exec {b} ip addr add 10.16.0.2/24 dev eth0")
        far_port = f"afpacket:interface=s1,name=s1{ring}"
    else:
        b = sw  # the far host is the switch's own namespace, behind the TAP the switch opens
        far_port = "tap:interface=pxs16tap,name=s1"
    proc = start_switch(sw, tmp_path, f"afpacket:interface=s0,name=s0{ring}", far_port)
    try:
        if far == "tap":
            sh(f"ip netns exec {sw} ip addr add 10.16.0.2/24 dev pxs16tap")
        sink = subprocess.Popen(
            ["ip", "netns", "exec", b, sys.executable, "-c", TCP_SINK, "10.16.0.2"], stdout=subprocess.PIPE, text=True
        )
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        mib = 32
        src = subprocess.run(
            ["ip", "netns", "exec", a, sys.executable, "-c", TCP_SOURCE, "10.16.0.2", str(mib)],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert src.returncode == 0, src.stderr
        n, digest = sink.communicate(timeout=30)[0].split()
        assert int(n) == mib << 20 and digest == src.stdout.strip()
        st = query(tmp_path, "stats")
        assert st["ports"]["s0"]["offload"] == "virtio_net_hdr"  # type: ignore[index]
        assert not st["ports"]["s0"]["errors"].get("offload_error")  # type: ignore[index]
        s0 = st["ports"]["s0"]  # type: ignore[index]
        if ring:
            assert s0["ring"].startswith("TPACKET_V3") and s0["ring_copied"] is None
        else:  # the segments longer than a 2 KiB slot came whole from the socket
            assert s0["ring"].startswith("TPACKET_V2") and s0["ring_copied"] > 0, s0
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


SPLIT = r"""
import json, sys, time
from pxproto.switch.linkports import AfPacketPort
port = AfPacketPort("p", sys.argv[1], 1 << 20, None, True, None)
print(json.dumps({"split": port.split_in_kernel(), "describe": port.describe()["split"]}), flush=True)
got = {"ctrl": [], "data": []}
def drain(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, sock in (("ctrl", port.ctrl), ("data", port.sock)):
            got[key] += [f.hex() for f in port._recv_one(sock, 64)]
        time.sleep(0.01)
drain(float(sys.argv[2]))
heard = {k: len(v) for k, v in got.items()}
port.send_batch([bytes.fromhex(h) for h in sys.argv[3:]])  # its own frames must not come back
drain(0.5)
print(json.dumps({"heard": heard, **got}), flush=True)
port.close()
"""


def test_control_and_data_split_in_one_fanout_group(net: Net) -> None:
    """The port's control and data sockets in one PACKET_FANOUT group: each frame reaches exactly the socket
    its EtherType names (control frames the control socket, the rest the data socket), none is lost, and the
    frames the port sends do not come back to either."""
    import json

    sw, h = net.add("sw"), net.add("h")
    net.veth(h, "eth0", sw, "s0")
    ctrl = [heartbeat(mac(1), dime=2, seq=i) for i in range(20)] + [signaling(mac(9), mac(1), seq=i) for i in range(20)]
    other = bytes.fromhex("0200000000090200000000010800") + bytes(46)  # IPv4: neither control nor Parallax
    datas = [data(mac(9), mac(1), seq=i) for i in range(40)] + [other]
    out = [data(mac(1), mac(9), seq=100 + i) for i in range(5)] + [heartbeat(mac(9), seq=100)]
    p = subprocess.Popen(
        ["ip", "netns", "exec", sw, sys.executable, "-c", SPLIT, "s0", "3", *(f.hex() for f in out)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert p.stdout is not None
    first = json.loads(p.stdout.readline())
    assert first == {"split": True, "describe": "kernel (one PACKET_FANOUT group)"}
    mixed = [f for pair in zip(ctrl, datas, strict=False) for f in pair] + datas[len(ctrl) :]
    send(h, "eth0", *mixed)
    result = json.loads(p.communicate(timeout=30)[0])
    assert [bytes.fromhex(f) for f in result["ctrl"]] == ctrl
    assert [bytes.fromhex(f) for f in result["data"]] == datas
    assert result["heard"] == {"ctrl": len(ctrl), "data": len(datas)}  # nothing after the port's own sends
