"""``pxorch demo --bare-metal``: a QEMU guest of the kernel runs a stage of the demo workflow between Linux
DIMEs, is killed mid-stream, and the answer is still exact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pxproto.baremetal.demo import VM_MAC, BareMetalDemo
from pxproto.capture.pcapng import read_packets
from pxproto.orch import demo
from pxproto.wire import decode
from pxproto.wire.frame import Data


def test_the_bare_metal_demo_refuses_a_package_the_image_does_not_carry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(demo_class=BareMetalDemo, workdir=tmp_path, rate=500, quiet=True) == 1
    err = capsys.readouterr().err
    assert "--bare-metal: the image carries the package with rate 400" in err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed")
@pytest.mark.skipif(shutil.which("make") is None or shutil.which("gcc") is None, reason="no make/gcc to build")
def test_the_bare_metal_demo_is_exact(tmp_path: Path) -> None:
    d = BareMetalDemo(workdir=tmp_path, quiet=True)
    res = d.run()
    assert d.on_vm, "no stage ran on the bare-metal DIMEs"
    assert d.killed_stage in d.on_vm  # the kill was the VM's, with a stage on it
    assert res.lost == 0 and res.duplicated == 0 and res.wrong == 0, res
    assert res.ok, (res, d.logs())
    assert res.detection is not None and res.repair is not None
    assert "loaded service 42 stage" in (tmp_path / "baremetal.log").read_text()
    # the guest's DIME did the work: item messages from its MAC on the wire (the switch's mirror)
    with open(res.capture, "rb") as f:
        frames = [decode(p.data) for p in read_packets(f) if p.data[6:12] == VM_MAC]
    items = [f for f in frames if isinstance(f.body, Data) and f.body.frag_count and f.body.channel < 0x8000]
    assert len(items) >= 10, f"{len(items)} item messages from the bare-metal server"
