"""Write ``captures/``: the sample frames, recorded off a real veth link.

``python -m pxproto.wire.record captures/`` (root) makes a network namespace
with a veth pair, starts dumpcap on one end, sends every sample frame from
the other end through an AF_PACKET socket, and keeps what dumpcap recorded,
adding each frame's description as a pcapng comment.  Without root (or with
``--direct``) it writes the same frames straight to pcapng.  Frames a NIC
cannot carry (shorter than an Ethernet header) are only in the direct file
and in the test vectors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pxproto.capture import PcapngWriter, read_packets
from pxproto.wire import ethertypes, spec
from pxproto.wire.samples import malformed_samples, valid_samples

NETNS = "pxrecord"
_SENDER = """
import socket, sys
frames = [bytes.fromhex(line) for line in sys.stdin.read().split()]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for f in frames:
    s.send(f)
"""


def send_in_netns(netns: str, dev: str, frames: list[bytes], timeout: float | None = None) -> None:
    """Send ``frames`` as they are out of interface ``dev`` of network namespace ``netns`` (AF_PACKET; root)."""
    subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", _SENDER, dev],
        input=" ".join(f.hex() for f in frames).encode(),
        check=True,
        timeout=timeout,
    )


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def record_over_veth(frames: list[bytes], out: Path) -> list[bytes]:
    """Send ``frames`` across a veth pair in a fresh namespace; return what dumpcap saw."""
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    _sh("ip", "netns", "add", NETNS)
    try:
        _sh("ip", "-n", NETNS, "link", "add", "pxrec0", "type", "veth", "peer", "name", "pxrec1")
        for dev in ("pxrec0", "pxrec1"):  # jumbo frames are among the samples
            _sh("ip", "-n", NETNS, "link", "set", dev, "mtu", "9000", "up")
        types = ethertypes.current().as_dict().values()
        bpf = " or ".join(f"ether proto 0x{t:04x}" for t in types)
        dump = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, "dumpcap", "-q", "-i", "pxrec1", "-f", bpf, "-w", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not out.exists() or out.stat().st_size == 0:
            if time.monotonic() > deadline or dump.poll() is not None:
                dump.kill()
                raise RuntimeError(f"dumpcap did not start: {dump.stderr.read().decode() if dump.stderr else ''}")
            time.sleep(0.05)
        time.sleep(0.3)
        send_in_netns(NETNS, "pxrec0", frames)
        time.sleep(0.5)
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    with open(out, "rb") as f:
        return [p.data for p in read_packets(f)]


def write(path: Path, frames: list[tuple[bytes, str]], recorded: dict[bytes, int] | None, comment: str) -> None:
    """Write ``frames`` with their comments; keep recorded timestamps where there are some."""
    with open(path, "wb") as f:
        w = PcapngWriter(f, comment=comment)
        t0 = time.time_ns()
        for i, (raw, note) in enumerate(frames):
            ts = recorded.get(raw, t0 + i * 1000) if recorded else t0 + i * 1000
            w.write(raw, ts, comment=note)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pxproto.wire.record", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--direct", action="store_true", help="write the frames without sending them over a veth link")
    args = ap.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    valid = [(raw, name) for name, raw in valid_samples()]
    bad = [(raw, f"{reason} [expect {field} at byte {off}]") for reason, field, off, raw in malformed_samples()]
    sendable = [(raw, note) for raw, note in bad if len(raw) >= spec.ETH_LEN]
    direct = args.direct or os.geteuid() != 0 or not shutil.which("dumpcap")
    for name, frames in (("all.pcapng", valid), ("malformed.pcapng", sendable)):
        stamps: dict[bytes, int] | None = None
        how = "written directly by pxproto.wire.record"
        if not direct:
            with tempfile.TemporaryDirectory() as tmp:
                raw_out = Path(tmp) / "raw.pcapng"
                os.chmod(tmp, 0o777)
                seen = record_over_veth([r for r, _ in frames], raw_out)
                if seen != [r for r, _ in frames]:
                    print(
                        f"{name}: the link changed or lost frames ({len(seen)} of {len(frames)} seen)", file=sys.stderr
                    )
                    return 1
                with open(raw_out, "rb") as f:
                    stamps = {p.data: p.ts_ns for p in read_packets(f)}
            how = "recorded by dumpcap off a veth pair, sent through AF_PACKET by pxproto.wire.record"
        write(args.outdir / name, frames, stamps, f"pxproto sample frames, {how}")
        print(f"{args.outdir / name}: {len(frames)} frames ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
