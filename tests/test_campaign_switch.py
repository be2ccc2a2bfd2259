"""The hostile-frame campaign at a running pxswitch (a subprocess), mixed with legitimate traffic.

Hostile frames go in on a stream port (reliable, so every frame is counted);
a UDP port carries the legitimate side.  The switch runs with full
validation, so its malformed-by-field counters must equal, field for field,
the reference decoder's verdicts on what was sent; frames with a foreign
EtherType must be counted as "other", not as malformed.  Between bursts a
marked DATA frame must cross the switch; legitimate frames must keep
flowing both ways; the switch's RSS must stay within a stated bound.

Short form in the default run; ``pytest -m slow`` sends 1,000,000 frames.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pxproto.fuzz import Campaign, Case, ForwardProbe, FrameGenerator, Report, StreamWire, UdpWire, process_rss_kib
from pxproto.fuzz.verdict import OK, reference_verdict
from pxproto.switch.control import query
from pxproto.switch.frames import data, heartbeat, mac

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
FUZZ_MAC = mac(0xF0)
LEGIT_MAC = mac(0xA1)
RSS_GROWTH_BOUND_KIB = 64 * 1024
"""The switch may grow by at most 64 MiB over the campaign: its table (8192 entries) and
queues (1024 + 4096 frames per port) are bounded, so growth beyond that is a leak."""


@dataclass
class SwitchUnderTest:
    proc: subprocess.Popen[bytes]
    control: str
    fuzz: StreamWire
    legit: UdpWire

    def stats(self) -> dict[str, Any]:
        return query(self.control, "stats")  # type: ignore[no-any-return]

    def port(self, name: str) -> dict[str, Any]:
        return self.stats()["ports"][name]  # type: ignore[no-any-return]


def _listening(path: str) -> bool:
    """Whether a Unix stream socket at ``path`` accepts a connection now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:  # not there yet, or bound and not yet listening (ECONNREFUSED)
            return False
    return True


@pytest.fixture()
def switch(tmp_path: Path) -> Iterator[SwitchUnderTest]:
    sock = str(tmp_path / "fuzz.sock")
    udp = UdpWire("127.0.0.1:9")  # its remote is set below, once the switch's port is known
    legit_port = _free_udp_port()
    control = str(tmp_path / "ctl.sock")
    args = [sys.executable, "-m", "pxproto.switch.cli", "run", "--control", control, "--validation", "full"]
    # the largest MTU: every fuzz frame reaches the decoder (the MTU refusal is tested in test_switch_ports)
    args += ["--port", f"stream:name=fuzz,address={sock},listen=true,mtu=65517"]
    args += ["--port", f"udp:name=legit,local=127.0.0.1:{legit_port}"]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 10
        while not (os.path.exists(sock) and _listening(control)):  # (the control path is bound before it listens)
            assert proc.poll() is None and time.monotonic() < end, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        udp.remote = ("127.0.0.1", legit_port)
        fuzz = StreamWire(sock)
        sut = SwitchUnderTest(proc, control, fuzz, udp)
        # Both sides introduce themselves so the switch learns where they are.
        udp.send([heartbeat(LEGIT_MAC)])
        fuzz.send([heartbeat(FUZZ_MAC)])
        _until(lambda: sut.port("legit")["rx"] == 1 and sut.port("fuzz")["rx"] == 1)
    except BaseException:  # a set-up that fails leaves no switch running
        proc.kill()
        proc.wait(timeout=10)
        raise
    yield sut
    fuzz.close()
    udp.close()
    proc.terminate()
    proc.wait(timeout=10)
    assert proc.returncode in (0, -15), proc.stderr.read() if proc.stderr else ""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(cond: Any, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out waiting for the switch"
        time.sleep(0.05)


def run_switch_campaign(sut: SwitchUnderTest, count: int, seed: int, tmp_path: Path, save: bool) -> None:
    verdicts: Counter[str] = Counter()
    sizes_under_eth: Counter[str] = Counter()

    def book(cases: Sequence[Case]) -> None:
        for c in cases:
            v = reference_verdict(c.raw)
            verdicts[v] += 1
            if v == "eth.type" and len(c.raw) >= 14:
                sizes_under_eth["other"] += 1

    legit_back = [0]

    def legit(n: int) -> list[bytes]:
        # Legitimate traffic the other way: a heartbeat and a DATA frame from the UDP side to the fuzzer's MAC.
        sut.legit.send([heartbeat(LEGIT_MAC, seq=n + 1), data(FUZZ_MAC, LEGIT_MAC, seq=n)])
        legit_back[0] += 1
        return [heartbeat(FUZZ_MAC, seq=n + 1)]  # and the fuzz side keeps its place in the table

    probe = ForwardProbe(
        sut.fuzz, sut.legit, lambda marker: data(LEGIT_MAC, FUZZ_MAC, seq=int.from_bytes(marker, "big")), timeout=5.0
    )
    rss_start = [0]

    def check(r: Report) -> list[str]:
        rss = process_rss_kib(sut.proc.pid)
        if r.bursts == 1:
            rss_start[0] = rss
        if sut.proc.poll() is not None:
            return [f"the switch exited with status {sut.proc.returncode}"]
        if rss - rss_start[0] > RSS_GROWTH_BOUND_KIB:
            return [f"switch RSS grew {rss - rss_start[0]} KiB (bound {RSS_GROWTH_BOUND_KIB})"]
        return []

    gen = FrameGenerator(seed, min_len=1, pool_size=256)
    campaign = Campaign(
        sut.fuzz,
        gen,
        probe=probe,
        count=count,
        burst=200,
        verdict=None,
        legit=legit,
        check=check,
        on_burst=book,
        probe_every=max(1, count // 200 // 50),
        save=tmp_path / "switch.pcapng" if save else None,
    )
    report = campaign.run()
    assert report.alive, report.summary()
    # Every frame the fuzz side sent reached the switch and was judged.
    sent_on_fuzz = 1 + report.sent + report.legit_sent + probe.sent
    _until(lambda: sut.port("fuzz")["rx"] == sent_on_fuzz, timeout=600)
    stats = sut.stats()
    port = stats["ports"]["fuzz"]
    expected_malformed = {k: v for k, v in verdicts.items() if k not in (OK, "eth.type")}
    expected_malformed["eth"] = expected_malformed.get("eth", 0)  # short frames: "eth" in both
    assert {k: v for k, v in stats["malformed"].items()} == {k: v for k, v in expected_malformed.items() if v}
    assert port["rx_malformed"] == sum(expected_malformed.values())
    assert port["rx_class"]["other"] == sizes_under_eth["other"]
    parallax_ok = verdicts[OK] + report.legit_sent + probe.sent + 1
    assert sum(port["rx_class"][c] for c in ("signaling", "data", "discovery", "heartbeat")) == parallax_ok
    # Legitimate traffic went through both ways.
    assert probe.arrived == probe.sent
    assert stats["ports"]["legit"]["rx"] == 1 + 2 * legit_back[0]
    assert stats["ports"]["fuzz"]["tx_class"]["data"] >= legit_back[0] - stats["ports"]["fuzz"]["tx_queue_drop"]
    print(report.summary())
    print(f"switch RSS {process_rss_kib(sut.proc.pid)} KiB; malformed by field {stats['malformed']}")


def test_switch_survives_a_short_campaign_and_counts_every_rejected_frame(
    switch: SwitchUnderTest, tmp_path: Path
) -> None:
    run_switch_campaign(switch, 3000, seed=1, tmp_path=tmp_path, save=True)


@pytest.mark.slow
def test_switch_survives_a_million_hostile_frames(switch: SwitchUnderTest, tmp_path: Path) -> None:
    run_switch_campaign(switch, 1_000_000, seed=2, tmp_path=tmp_path, save=False)
