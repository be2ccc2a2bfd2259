"""``python -m pxproto.wire FILE...``: decode every frame of capture files with the reference codec."""

from __future__ import annotations

import argparse
import sys

from pxproto.capture import CaptureError, read_packets
from pxproto.errors import ProtocolError
from pxproto.wire.codec import decode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pxproto.wire", description=__doc__)
    ap.add_argument("files", nargs="+", help="pcap or pcapng files")
    args = ap.parse_args(argv)
    status = 0
    for path in args.files:
        good = bad = 0
        try:
            with open(path, "rb") as f:
                for i, pkt in enumerate(read_packets(f), 1):
                    try:
                        fr = decode(pkt.data)
                        good += 1
                        d = fr.to_dict()
                        what = (
                            d.get("px.cmd") or d.get("px.disc.op") or d.get("px.hb.state") or d.get("px.data.channel")
                        )
                        print(
                            f"{path}:{i} {fr.cls.name} {fr.src_dime}.{fr.src_thread} > {fr.dst_dime}.{fr.dst_thread} "
                            f"seq {fr.seq} {what} len {len(pkt.data)}"
                        )
                    except ProtocolError as exc:
                        bad += 1
                        note = f" ({pkt.comment})" if pkt.comment else ""
                        print(f"{path}:{i} [malformed: {exc.field} at byte {exc.offset}: {exc.reason}]{note}")
        except OSError as exc:
            print(f"{path}: {exc.strerror}", file=sys.stderr)
            status = 1
            continue
        except CaptureError as exc:
            print(
                f"{path}: corrupt capture, read {good + bad} frames, stopped at byte {exc.offset}: {exc.reason}",
                file=sys.stderr,
            )
            status = 1
        print(f"{path}: {good} frames decoded, {bad} malformed")
    return status


if __name__ == "__main__":
    sys.exit(main())
