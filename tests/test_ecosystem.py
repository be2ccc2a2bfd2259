"""scapy, dpkt and pxdump decode every frame of captures/ to the reference's to_dict(), key for key."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from pxproto.capture.pcapng import read_packets
from pxproto.dump import cli
from pxproto.wire import decode, ethertypes
from pxproto.wire.codes import FrameClass

scapy_all = pytest.importorskip("scapy.all")
dpkt = pytest.importorskip("dpkt")

from pxproto.interop import dpkt as pxd  # noqa: E402
from pxproto.interop import scapy as pxs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ALL = ROOT / "captures" / "all.pcapng"


def reference(path: Path) -> list[dict[str, object]]:
    with open(path, "rb") as f:
        return [json.loads(json.dumps(decode(p.data).to_dict())) for p in read_packets(f)]


@pytest.fixture
def bound() -> Iterator[None]:
    pxs.bind()
    pxd.register()
    yield
    pxs.unbind()
    pxd.unregister()


def test_every_class_is_in_the_capture() -> None:
    classes = {d["px.class"] for d in reference(ALL)}
    assert classes == {c.name for c in FrameClass}


def test_scapy_dpkt_and_pxdump_agree_with_the_reference(bound: None) -> None:
    want = reference(ALL)
    got_scapy = [json.loads(json.dumps(pxs.to_dict(p))) for p in scapy_all.rdpcap(str(ALL))]
    with open(ALL, "rb") as f:
        got_dpkt = [json.loads(json.dumps(pxd.to_dict(dpkt.ethernet.Ethernet(p.data)))) for p in read_packets(f)]
    out = io.BytesIO()
    assert cli.run(cli.build_parser().parse_args(["-r", str(ALL), "--json"]), out) == 0
    got_pxdump = [json.loads(line) for line in out.getvalue().decode().splitlines()]
    assert len(want) == len(got_scapy) == len(got_dpkt) == len(got_pxdump) > 0
    for i, w in enumerate(want):
        assert got_scapy[i] == w, f"scapy, frame {i + 1}"
        assert got_dpkt[i] == w, f"dpkt, frame {i + 1}"
        assert got_pxdump[i] == w, f"pxdump --json, frame {i + 1}"


def test_no_bindings_on_import() -> None:
    code = (
        "import dpkt.ethernet, scapy.layers.l2 as l2\n"
        "import pxproto.interop.scapy, pxproto.interop.dpkt\n"
        "assert all(c.__module__ != 'pxproto.interop.scapy' for _, c in l2.Ether.payload_guess)\n"
        "assert all(getattr(c, '__module__', '') != 'pxproto.interop.dpkt'"
        " for c in dpkt.ethernet.Ethernet._typesw.values())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_unbind_and_unregister_restore() -> None:
    pxs.bind()
    pxd.register()
    pxs.unbind()
    pxd.unregister()
    raw = next(read_packets(open(ALL, "rb"))).data
    assert not isinstance(dpkt.ethernet.Ethernet(raw).data, pxd.PxFrame)
    assert pxs.PxHeader not in scapy_all.Ether(raw)


def test_bind_follows_the_configured_ethertypes() -> None:
    before = ethertypes.current()
    try:
        ethertypes.configure("signaling=0x88b5,data=0x88b6,discovery=0x88b7,heartbeat=0x88b8")
        assert pxs.bind()[0x88B5] is FrameClass.SIGNALING
        assert pxd.register()[0x88B8] is FrameClass.HEARTBEAT
        pkt = pxs.frame(FrameClass.HEARTBEAT, version=1, src_dime=3, dst_dime=0xFFFF)
        raw = bytes(pkt)
        assert raw[12:14] == b"\x88\xb8"
        again = scapy_all.Ether(raw)
        assert again[pxs.PxHeartbeat] and again[pxs.PxHeader].src_dime == 3
        assert isinstance(dpkt.ethernet.Ethernet(raw).data, pxd.PxHeartbeatFrame)
    finally:
        pxs.unbind()
        pxd.unregister()
        ethertypes.configure(before)


def test_show_sniff_and_fuzz(bound: None) -> None:
    pkts = scapy_all.sniff(offline=str(ALL), count=5)
    assert len(pkts) == 5 and all(pxs.PxHeader in p for p in pkts)
    text = io.StringIO()
    with redirect_stdout(text):
        pkts[0].show()
    assert "###[ Parallax ]###" in text.getvalue() and "cmd" in text.getvalue()
    for cls in FrameClass:
        for _ in range(5):
            raw = bytes(scapy_all.fuzz(pxs.frame(cls)))
            back = scapy_all.Ether(raw)
            assert back[pxs.PxHeader] and isinstance(back[pxs.PxHeader].payload, pxs.BODIES[cls])


def test_built_frames_decode_with_the_reference(bound: None) -> None:
    """A scapy-built heartbeat and a signaling request with a TLV: lengths and counts filled on build."""
    from pxproto.wire.codes import Command, Op, Scope

    hb = pxs.frame(FrameClass.HEARTBEAT, version=1, src_dime=3, dst_dime=0xFFFF)
    hb[pxs.PxHeartbeat].state = 1
    hb[pxs.PxHeartbeat].period_ms = 100
    f = decode(bytes(hb))
    assert f.scope is Scope.SYSTEM and f.body.period_ms == 100  # type: ignore[union-attr]
    sig = pxs.frame(FrameClass.SIGNALING, version=1, flags="SCOPE_DIME", src_dime=1, dst_dime=2)
    sig[pxs.PxSignaling].cmd = int(Command.PING)
    sig[pxs.PxSignaling].op = int(Op.REQUEST)
    sig[pxs.PxSignaling].params = [pxs.PxTlv(type=27, value=b"12345678")]
    f = decode(bytes(sig))
    assert f.body.params[0].value == b"12345678"  # type: ignore[union-attr]


def test_malformed_frames_do_not_crash_the_bindings(bound: None) -> None:
    with open(ROOT / "captures" / "malformed.pcapng", "rb") as f:
        for p in read_packets(f):
            scapy_all.Ether(p.data)  # lenient: whatever scapy makes of it
            dpkt.ethernet.Ethernet(p.data)  # NeedData/UnpackError are kept as raw bytes by dpkt
