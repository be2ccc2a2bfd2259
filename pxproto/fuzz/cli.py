"""``pxfuzz``: fire generated and mutated Parallax frames at a live target.

pxfuzz run udp:127.0.0.1:5000 --count 100000 --rate 20000 --probe ping:02:00:00:00:00:01 --save sent.pcapng
pxfuzz run stream:/tmp/vm1.sock --kinds truncate,flip --from-pcap captures/all.pcapng
pxfuzz run afpacket:veth0 --probe heartbeat --count 1000000
pxfuzz replay sent.pcapng udp:127.0.0.1:5000 --start 4096 --end 4159 --probe ping:02:00:00:00:00:01
pxfuzz gen --count 10000 -o hostile.pcapng
pxfuzz kinds

Exit status: 0 the target answered throughout, 1 it stopped answering (or a
check failed), 2 a usage or I/O error.  ``replay`` sends a capture as it reads
it: one damaged part way goes out up to the damage, and then exits 2 naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pxproto.capture.pcapng import CaptureError, read_packets
from pxproto.errors import ProtocolError
from pxproto.fuzz.campaign import Campaign, Report, replay
from pxproto.fuzz.generate import FrameGenerator
from pxproto.fuzz.probe import HeartbeatProbe, PingProbe, Probe
from pxproto.fuzz.verdict import reference_verdict
from pxproto.link import AfPacketWire, StreamWire, Wire, open_wire
from pxproto.testing.hostile import KINDS, MUTATIONS
from pxproto.wire.codes import DIME_ALL


def _mac(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    except ValueError:  # its own message names no option: "non-hexadecimal number found in fromhex()"
        raw = b""
    if len(raw) != 6:
        raise argparse.ArgumentTypeError(f"MAC {text!r}: six bytes, like 02:00:00:00:00:01")
    return raw


def _mac_dime(text: str) -> tuple[bytes | None, int | None]:
    if not text:
        return None, None
    mac, _, dime = text.partition("/")
    if not dime:
        return _mac(mac), None
    try:
        number = int(dime, 0)
    except ValueError:
        number = -1
    if not 0 <= number <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"DIME {dime!r}: a number 0..65535")
    return _mac(mac), number


def make_probe(text: str, wire: Wire, timeout: float) -> Probe | None:
    """``none``, ``ping:MAC[/DIME]`` or ``heartbeat[:MAC[/DIME]]``."""
    kind, _, rest = text.partition(":")
    if kind == "none":
        return None
    if kind not in ("ping", "heartbeat"):
        raise argparse.ArgumentTypeError(f"--probe {text!r}: none, ping:MAC[/DIME] or heartbeat[:MAC[/DIME]]")
    try:
        mac, dime = _mac_dime(rest)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"--probe {text!r}: {exc}") from None
    if kind == "heartbeat":
        return HeartbeatProbe(wire, mac, dime, timeout=timeout)
    if mac is None:
        raise argparse.ArgumentTypeError("--probe ping needs the target's MAC: ping:MAC[/DIME]")
    return PingProbe(wire, mac, DIME_ALL if dime is None else dime, timeout=timeout)


def _generator(args: argparse.Namespace, wire: Wire | None) -> FrameGenerator:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else list(KINDS)
    pool = None
    if args.from_pcap:
        try:
            with open(args.from_pcap, "rb") as f:
                pool = [p.data for p in read_packets(f) if p.data]
        except CaptureError as exc:  # "pcapng.block at byte N: ..." alone named no file
            raise ValueError(f"{args.from_pcap}: {exc}") from None
        if not pool:
            raise ValueError(f"{args.from_pcap}: no frames to mutate")
    gen = FrameGenerator(args.seed, kinds, pool=pool, min_len=1 if isinstance(wire, StreamWire) else 0)
    if isinstance(wire, AfPacketWire):
        # Short frames are padded to the Ethernet header and long ones cannot pass the interface: make
        # exactly what goes on the wire, so the saved file and the verdicts say what the target got.
        gen.min_len, gen.max_len = 14, wire.max_frame
    return gen


def _add_target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="udp:HOST:PORT[@LOCAL], stream:PATH|HOST:PORT, or afpacket:IFNAME")
    p.add_argument("--probe", default="none", help="none | ping:MAC[/DIME] | heartbeat[:MAC[/DIME]] (default none)")
    p.add_argument("--probe-timeout", type=float, default=1.0, help="seconds to wait for an answer (default 1)")
    p.add_argument("--rate", type=float, help="frames per second (default: as fast as the wire takes them)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pxfuzz", description="Fire hostile Parallax frames at a live target.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a campaign against a target")
    _add_target_options(run)
    run.add_argument("--count", "-n", type=int, default=10_000, help="frames to send (default 10000)")
    run.add_argument("--burst", type=int, default=64, help="frames between probes (default 64)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--kinds", help=f"comma-separated mutators (default all): {', '.join(KINDS)}")
    run.add_argument("--from-pcap", help="mutate the frames of this capture instead of generated valid frames")
    run.add_argument("--save", "-w", help="write every frame sent to this pcapng file")
    run.add_argument("--no-verdicts", action="store_true", help="skip the reference decoder's per-frame verdicts")
    rp = sub.add_parser("replay", help="send a saved campaign's frames again")
    rp.add_argument(
        "file", help="a pcapng written by pxfuzz run --save (or any capture; sent as read, up to any damage)"
    )
    _add_target_options(rp)
    rp.add_argument("--start", type=int, default=0, help="first frame index (default 0)")
    rp.add_argument("--end", type=int, help="last frame index, inclusive (default: the last)")
    rp.add_argument("--burst", type=int, default=1, help="frames between probes (default 1: find the exact frame)")
    gen = sub.add_parser("gen", help="write generated frames to a pcapng file, sending nothing")
    gen.add_argument("--count", "-n", type=int, default=10_000)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--kinds", help=f"comma-separated mutators (default all): {', '.join(KINDS)}")
    gen.add_argument("--from-pcap", help="mutate the frames of this capture")
    gen.add_argument("--output", "-o", required=True)
    gen.add_argument("--json", action="store_true")
    sub.add_parser("kinds", help="list the mutators")
    return ap


class _NullWire:
    def send(self, frames: object) -> int:
        return 0

    def recv(self, timeout: float) -> list[bytes]:
        return []

    def close(self) -> None:
        pass


def _print(report: Report, as_json: bool) -> None:
    print(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse counts and frame ranges that would send nothing or fail inside the loop, naming the option."""
    for name in ("count", "burst"):
        if getattr(args, name, 1) < 1:
            raise ValueError(f"--{name} must be at least 1")
    if args.cmd == "replay":
        if args.start < 0:
            raise ValueError(f"--start {args.start}: must be at least 0 (a frame index)")
        if args.end is not None and args.end < args.start:
            raise ValueError(f"--start {args.start} --end {args.end}: the end comes before the start: no frame")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "kinds":
        for k in KINDS:
            print(f"{k:<10} {MUTATIONS[k].help}")
        return 0
    try:
        _check_numbers(args)  # gen -n -5 wrote an empty file and exited 0; replay --burst 0 failed in range()
        if args.cmd == "gen":
            gen = _generator(args, None)
            report = Campaign(_NullWire(), gen, count=args.count, burst=1024, save=args.output).run()
            _print(report, args.json)
            return 0
        wire = open_wire(args.target)
    except (OSError, ValueError, ProtocolError) as exc:
        print(f"pxfuzz: {exc}", file=sys.stderr)
        return 2
    try:
        probe = make_probe(args.probe, wire, args.probe_timeout)
        if args.cmd == "run":
            report = Campaign(
                wire,
                _generator(args, wire),
                probe=probe,
                count=args.count,
                burst=args.burst,
                rate=args.rate,
                save=args.save,
                verdict=None if args.no_verdicts else reference_verdict,
            ).run()
        else:
            if not Path(args.file).exists():
                raise ValueError(f"{args.file}: no such file")
            try:
                report = replay(args.file, wire, probe, args.start, args.end, args.burst, rate=args.rate)
            except CaptureError as exc:
                raise ValueError(f"{args.file}: {exc}") from None
    except (argparse.ArgumentTypeError, ValueError, ProtocolError, OSError) as exc:
        print(f"pxfuzz: {exc}", file=sys.stderr)
        return 2
    finally:
        wire.close()
    _print(report, args.json)
    if report.capture_error is not None:  # sent up to the damage: said, and not a clean exit
        print(f"pxfuzz: {args.file}: {report.capture_error}", file=sys.stderr)
        return 2
    return 0 if report.alive else 1


if __name__ == "__main__":
    from pxproto.console import run

    sys.exit(run(main))
