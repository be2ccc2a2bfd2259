"""``pxdump``: sniff, read, filter, decode and write Parallax traffic, tcpdump style.

pxdump -i eth0 cmd PING and dime 3          live, the filter compiled to BPF
pxdump -r trace.pcapng -e not heartbeat     a file, one line per frame
pxdump -r trace.pcapng -q                   statistics
pxdump -i eth0 -w out.pcapng --print        write and print
pxdump -i eth0 -w out.pcapng -C 100         write undecoded, a new file every 100 MB

Live capture (:mod:`pxproto.dump.live`) drains a TPACKET_V3 ring in batches; Ctrl-C or SIGTERM stops
it within a poll interval, and the counts (captured, received by filter, dropped by kernel) go to
stderr with exit 0.  Files and pipes are read in bounded memory, a batch printed as soon as it is decoded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import BinaryIO, NoReturn

import numpy as np

from pxproto.dime.keys import KeyFileError
from pxproto.dump import accel, detail, oneline
from pxproto.dump.columns import KIND_OTHER, Batch, fastpath_available
from pxproto.dump.filter import FilterError, Node, parse
from pxproto.dump.opener import Opener
from pxproto.dump.output import CaptureWriter
from pxproto.dump.source import (
    CaptureEndsEarly,
    Frames,
    InputError,
    capture_frames,
    load,
    reference_batches,
    stream_frames,
)
from pxproto.dump.stats import Stats, gap_text, unanswered_text
from pxproto.dump.track import NONE, HeartbeatWatch, Reassembled, Reassembler, RequestMatcher
from pxproto.errors import ProtocolError
from pxproto.wire import decode, ethertypes
from pxproto.wire.codes import FrameClass
from pxproto.wire.frame import Data

PROG = "pxdump"


class UsageError(Exception):
    """Bad command line: printed as one line (or a filter with a caret), exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Sniff, read, filter, decode and write Parallax frames.",
        epilog="filter words: signaling data discovery heartbeat parallax malformed auth encrypted; scope system|dime; "
        "[src|dst] dime N; [src|dst] thread N; [src|dst] mac XX:..; cmd NAME; op request|response; "
        "fcaps F|C|A|P|S; status NAME; channel N; seq N | seq A-B; and, or, not, parentheses.",
    )
    src = p.add_argument_group("input")
    src.add_argument("-i", dest="iface", metavar="IFACE", help="capture live on this interface")
    src.add_argument("-r", dest="read", metavar="FILE", help="read a pcap or pcapng file ('-' for stdin)")
    src.add_argument("-c", dest="count", type=int, metavar="N", help="stop after N frames")
    src.add_argument("-s", dest="snaplen", type=int, default=262144, metavar="SNAPLEN", help="bytes kept per frame")
    src.add_argument(
        "-B", dest="buffer_kib", type=int, default=32768, metavar="KIB", help="capture ring size in KiB (live)"
    )
    src.add_argument("-p", dest="no_promisc", action="store_true", help="do not put the interface in promiscuous mode")
    src.add_argument("-F", dest="bpf", metavar="BPF", help="a raw BPF expression, ANDed with the Parallax filter")
    src.add_argument("--ethertypes", metavar="MAP", help="EtherType map, e.g. signaling=0x88b5,data=0x88b6")
    src.add_argument("--reference", action="store_true", help="decode with the reference codec, not the fast path")
    src.add_argument(
        "--key",
        metavar="FILE",
        help="open encrypted frames with this cluster key file (pxkernel --key's format; 0600 or refused)",
    )
    out = p.add_argument_group("output")
    out.add_argument("-w", dest="write", metavar="FILE", help="write the frames (untouched) to a pcapng file")
    out.add_argument(
        "-C", dest="file_size", type=int, metavar="MB", help="with -w: a new file (FILE1, ...) every MB x 10^6 bytes"
    )
    out.add_argument("--print", dest="also_print", action="store_true", help="print frames while writing with -w")
    out.add_argument("-e", dest="ether", action="store_true", help="show MACs and EtherType")
    out.add_argument("-v", dest="verbose", action="count", default=0, help="a decode tree per frame (-vv: bytes)")
    out.add_argument("-x", dest="hex", action="store_true", help="hex dump of each frame")
    out.add_argument("-X", dest="hex_ascii", action="store_true", help="hex and ASCII dump of each frame")
    out.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per Parallax frame, keys exactly Frame.to_dict()'s (px.*); a malformed frame "
        'prints {"_malformed": {"field": F, "offset": N, "reason": R}} instead (the only key outside px.*)',
    )
    out.add_argument("-q", dest="stats", action="store_true", help="print statistics only")
    out.add_argument("-l", dest="line_buffered", action="store_true", help="flush after every batch of lines")
    out.add_argument(
        "-t", dest="epoch", action="count", default=0, help="no time stamp (-tt: seconds since the epoch), as tcpdump"
    )
    out.add_argument("-n", dest="numeric", action="store_true", help="accepted for tcpdump habits (always numeric)")
    out.add_argument("--hide-other", action="store_true", help="hide non-Parallax frames")
    out.add_argument("--reassemble", action="store_true", help="reassemble DATA messages, report gaps")
    p.add_argument("filter", nargs="*", help="Parallax filter expression")
    return p


class Dumper:
    """Feeds each batch through the filter, the trackers and the chosen views."""

    def __init__(self, args: argparse.Namespace, node: Node | None, out: BinaryIO) -> None:
        self.args = args
        self.node = node
        self.out = out
        self.raw_bpf = None
        if args.bpf and not args.iface:
            import pcapy

            try:
                self.raw_bpf = pcapy.compile(pcapy.DLT_EN10MB, args.snaplen, args.bpf, 1, 0)
            except pcapy.PcapError as exc:
                raise UsageError(f"-F {args.bpf!r}: {exc}") from None
        self.printing = not args.stats and (not args.write or args.also_print)
        stamp = (oneline.TIME_OF_DAY, oneline.TIME_NONE, oneline.TIME_EPOCH)[args.epoch]
        self.opts = oneline.LineOptions(args.ether, stamp, oneline.local_utc_offset())
        self.matcher = RequestMatcher()
        self.heartbeats = HeartbeatWatch()
        self.reassembler = Reassembler() if args.reassemble else None
        self.stats = Stats() if args.stats else None
        self.writer: CaptureWriter | None = None
        self.shown = 0
        self.per_frame = bool(args.verbose or args.hex or args.hex_ascii or args.reassemble)
        self.scratch = Stats()
        self.opener: Opener | None = None
        if args.key:
            if args.write:
                raise UsageError("--key with -w: -w writes frames untouched; give --key when reading them back")
            try:
                self.opener = Opener.from_file(args.key)
            except KeyFileError as exc:
                raise UsageError(f"--key: {exc}") from None

    def open_writer(self) -> None:
        if not self.args.write:
            return
        rotate = self.args.file_size * 1_000_000 if self.args.file_size else None
        self.writer = CaptureWriter(self.args.write, self.args.snaplen, rotate)

    def done(self) -> bool:
        return self.args.count is not None and self.shown >= self.args.count

    def select(self, b: Batch) -> Batch:
        keep = np.ones(len(b), bool)
        if self.node is not None:
            keep &= self.node.mask(b)
        if self.args.hide_other:
            keep &= (b.kind != KIND_OTHER) | b.malformed
        if self.raw_bpf is not None:
            prog = self.raw_bpf
            keep &= np.fromiter((prog.filter(b.frame(i)) != 0 for i in range(len(b))), bool, len(b))
        if self.args.count is not None:
            room = self.args.count - self.shown
            keep &= np.cumsum(keep) <= room
        if keep.all():
            return b
        return b.take(keep)

    def straight(self) -> bool:
        """Whether indexed frames go to the compiled views without being decoded into a Batch:
        everything is shown (no filter, count or hiding) and the view is -q or one line per frame."""
        a = self.args
        if accel.count is None or accel.lines is None or self.writer is not None:
            return False
        if self.node is not None or self.raw_bpf is not None or a.count is not None or a.hide_other:
            return False
        return self.stats is not None or (self.printing and not a.json and not self.per_frame)

    def write_only(self) -> bool:
        """Whether frames go to ``-w`` undecoded: nothing printed, counted or selected."""
        a = self.args
        return (
            self.writer is not None
            and not self.printing
            and self.stats is None
            and self.node is None
            and self.raw_bpf is None
            and not a.hide_other
        )

    def feed(self, item: Batch | Frames) -> None:
        if self.opener is not None:
            item = self.opener.frames(item) if isinstance(item, Frames) else self.opener.batch(item)
        if isinstance(item, Frames):
            if self.write_only():
                self.write_frames(item)
                return
            if self.straight():
                self.feed_frames(item)
                return
            item = item.batch()
        self.feed_batch(item)

    def write_frames(self, f: Frames) -> None:
        assert self.writer is not None
        n = len(f)
        if self.args.count is not None:
            n = min(n, self.args.count - self.shown)
        self.shown += n
        self.writer.write_rows(f.buf, f.offset[:n], f.caplen[:n], f.wirelen[:n], f.ts_ns[:n])
        if self.args.line_buffered:
            self.writer.flush()

    def feed_frames(self, f: Frames) -> None:
        """-q or one line per frame, compiled, straight from the capture bytes."""
        self.shown += len(f)
        if self.stats is not None:
            self.stats.feed_frames(
                f.buf, f.offset, f.caplen, f.wirelen, f.ts_ns, f.first, self.matcher, self.heartbeats
            )
            return
        assert accel.count is not None
        counters = self.scratch._counters()
        _, _, _, hi, sig, hb = accel.count.count_frames(
            f.buf, f.offset, f.caplen, f.wirelen, f.ts_ns, f.first, *counters
        )
        rtt = np.full(len(f), NONE, np.int64)
        rtt[sig["frame"] - f.first - 1] = self.matcher.match(
            sig["is_req"], sig["mac"], sig["rc"], sig["ep"], sig["ts"], sig["frame"]
        )
        gaps = np.full(len(f), NONE, np.int64)
        gaps[hb["frame"] - f.first - 1] = self.heartbeats.watch(hb["dime"], hb["ts"], hb["period"], hb["frame"], hi)
        opts = self.opts

        def malformed(i: int) -> bytes:
            return oneline.malformed_line(f.row_batch(i), 0, opts)

        oneline.write_compiled(self.out, f, opts, rtt, gaps, malformed=malformed)
        if self.args.line_buffered:
            self.out.flush()

    def feed_batch(self, batch: Batch) -> None:
        b = self.select(batch)
        if not len(b):
            return
        self.shown += len(b)
        rtt = self.matcher.feed(b)
        gaps = self.heartbeats.feed(b)
        if self.stats is not None:
            self.stats.feed(b)
        if self.writer is not None:
            self.writer.write_rows(b.buf, b.offset, b.caplen, b.wirelen, b.ts_ns)
            if self.args.line_buffered:
                self.writer.flush()
        if not self.printing:
            return
        if self.args.json:
            for i in range(len(b)):
                line = detail.json_line(b.frame(i))
                if line is not None:
                    self.out.write(line.encode() + b"\n")
        elif self.per_frame:
            self.print_per_frame(b, rtt, gaps)
        else:
            oneline.write(self.out, b, self.opts, rtt, gaps)
        if self.args.line_buffered:
            self.out.flush()

    def print_per_frame(self, b: Batch, rtt: np.ndarray, gaps: np.ndarray) -> None:
        a = self.args
        w = self.out.write
        numbers = b.frame_numbers()
        for i, line in enumerate(oneline.lines(b, self.opts, rtt, gaps)):
            raw = b.frame(i)
            w(line)
            if a.verbose:
                w(detail.tree(raw, int(numbers[i]), int(b.ts_ns[i]), int(b.wirelen[i]), a.verbose).encode())
            if a.hex or a.hex_ascii:
                w(detail.hexdump(raw, a.hex_ascii).encode())
            if self.reassembler is not None and b.kind[i] == FrameClass.DATA and b.valid[i]:
                frame = decode(raw)
                assert isinstance(frame.body, Data)
                done = self.reassembler.feed(
                    int(numbers[i]), (frame.src_dime, frame.src_thread), (frame.dst_dime, frame.dst_thread), frame.body
                )
                if done is not None:
                    w(reassembled_text(done).encode())
                    if a.hex or a.hex_ascii:
                        w(detail.hexdump(done.message.payload(), a.hex_ascii).encode())

    def finish(self) -> None:
        unanswered = self.matcher.finish()
        gaps = self.heartbeats.finish()
        if self.stats is not None:
            self.out.write(self.stats.report(self.matcher.rtts(), unanswered, gaps).encode())
        elif self.printing:
            report = [f"unanswered: {unanswered_text(u)}" for u in unanswered]
            report += [f"heartbeat gap: {gap_text(g)}" for g in gaps]
            if self.reassembler is not None:
                for m in self.reassembler.finish():
                    report.append(f"reassembly gap: {_message_name(m.key)} ({m.msg_len} bytes): {m.missing()}")
            text = "".join(line + "\n" for line in report)
            if self.args.json:
                sys.stderr.write(text)
            else:
                self.out.write(text.encode())
        if self.writer is not None:
            self.writer.close()
        self.out.flush()


def _message_name(key: tuple[int, int, int, int, int, int]) -> str:
    s, st, d, dt, ch, msg = key
    return f"DATA {'*' if s == 0xFFFF else s}.{st} > {d}.{dt} ch {ch} msg {msg}"


def reassembled_text(r: Reassembled) -> str:
    m = r.message
    return (
        f"  reassembled {_message_name(m.key)}: {m.msg_len} bytes in {m.frag_count} fragments "
        f"(frames {m.first_frame}..{r.frame})\n"
    )


def _file_batches(path: str, reference: bool) -> Iterator[Batch | Frames]:
    """Batches of a capture file or stream, in bounded memory: a regular file is mapped and indexed
    a window at a time, anything else (a pipe, a FIFO, a device) is read and indexed as it comes."""
    if path == "-":
        yield from _stream_batches(sys.stdin.buffer, reference)
        return
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise RuntimeError(f"{path}: {exc.strerror}") from None
    with f:
        yield from _stream_batches(f, reference)


def _stream_batches(f: BinaryIO, reference: bool) -> Iterator[Batch | Frames]:
    if reference or not fastpath_available():
        try:
            yield from reference_batches(f)
        except OSError as exc:
            raise InputError(f"{getattr(f, 'name', '-')}: {exc.strerror or exc}") from None
        return
    mapped = load(f)
    if mapped is None:
        yield from stream_frames(f)
        return
    try:
        yield from capture_frames(mapped)
    except OSError as exc:  # a mapped file shrunk under us, or an I/O error paging it in
        raise InputError(f"{getattr(f, 'name', '-')}: {exc.strerror or exc}") from None


def _bpf_for_live(args: argparse.Namespace, node: Node | None) -> str | None:
    parts = []
    if node is not None:
        expr = node.bpf()
        if expr is not None:
            parts.append(expr)
    if args.hide_other:
        from pxproto.dump.filter import IsClass

        parts.append(IsClass(None).bpf())
    if args.bpf:
        parts.append(f"({args.bpf})")
    return " and ".join(parts) or None


def run(args: argparse.Namespace, out: BinaryIO) -> int:
    if args.ethertypes:
        try:
            ethertypes.configure(args.ethertypes)
        except ValueError as exc:
            raise UsageError(f"--ethertypes: {exc}") from None
    if bool(args.iface) == bool(args.read):
        raise UsageError("give exactly one of -i IFACE (live capture) or -r FILE (read a capture)")
    if args.count is not None and args.count < 1:
        raise UsageError(f"-c {args.count}: the frame count must be at least 1")
    if not 1 <= args.snaplen <= 262144:
        raise UsageError(f"-s {args.snaplen}: the snap length must be within 1..262144")
    if args.file_size is not None and (args.file_size < 1 or not args.write or args.write == "-"):
        raise UsageError(f"-C {args.file_size}: goes with -w FILE and a size of at least 1 (MB)")
    if args.also_print and not args.write:
        raise UsageError("--print goes with -w FILE")
    if args.write == "-" and args.also_print:
        raise UsageError("-w - writes the capture to stdout; --print cannot share it")
    if args.epoch > 2:
        raise UsageError("-t: no time stamp, -tt: seconds since the epoch; -ttt and more are not supported")
    if sum(map(bool, (args.json, args.stats, args.verbose))) > 1:
        raise UsageError("choose one of --json, -q and -v")
    try:
        node = parse(" ".join(args.filter)) if args.filter else None
    except FilterError as exc:
        raise UsageError(f"bad filter: {exc}") from None
    dumper = Dumper(args, node, out)
    dumper.open_writer()
    if args.read:
        rc = 0
        try:
            for batch in _file_batches(args.read, args.reference):
                dumper.feed(batch)
                if dumper.done():
                    break
                dumper.out.flush()  # a pipe's reader sees each batch as it is decoded
        except CaptureEndsEarly as exc:
            dumper.finish()
            e = exc.error
            sys.stderr.write(
                f"{PROG}: {args.read}: capture ends early at byte {e.offset} after {exc.frames} frames: "
                f"{e.field}: {e.reason}\n"
            )
            return 1
        dumper.finish()
        return rc
    return _run_live(args, node, dumper)


def _run_live(args: argparse.Namespace, node: Node | None, dumper: Dumper) -> int:
    from pxproto.dump.live import LiveCapture

    if not 1 <= args.buffer_kib <= 4 << 20:
        raise UsageError(f"-B {args.buffer_kib}: the buffer size must be within 1..4194304 KiB")
    cap = LiveCapture(args.iface, args.snaplen, not args.no_promisc, _bpf_for_live(args, node), args.buffer_kib * 1024)
    sys.stderr.write(
        f"{PROG}: listening on {args.iface}, link-type EN10MB (Ethernet), snapshot length {args.snaplen} bytes\n"
    )
    stop = _StopOnSignal()
    with stop:
        for frames in cap.frames(stop.requested):
            with stop.held():
                dumper.feed(frames)
                if not args.line_buffered:
                    dumper.out.flush()
            if dumper.done():
                break
        with stop.held():
            dumper.finish()
    c = cap.close_counts()
    sys.stderr.write(
        f"{dumper.shown} frames captured\n{c.received} frames received by filter\n"
        f"{c.dropped} frames dropped by kernel\n"
    )
    return 0


class _StopOnSignal:
    """SIGINT and SIGTERM ask the capture loop to stop (it looks between batches and every
    poll interval) instead of raising in the middle of a write; the old handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.stop = False
        self.old: list[object] = []

    def requested(self) -> bool:
        return self.stop

    def _handle(self, signum: int, frame: object) -> None:
        self.stop = True

    def __enter__(self) -> _StopOnSignal:
        self.old = [signal.signal(s, self._handle) for s in self.SIGNALS]
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in zip(self.SIGNALS, self.old, strict=True):
            signal.signal(s, old)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The signals wait while output is written: a signal that interrupts a blocked write to a
        pipe can cut it short and lose lines.  They are seen when the capture next waits."""
        signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        rc = run(args, sys.stdout.buffer)
        if args.iface and argv is None:
            _exit_now(rc)
        return rc
    except UsageError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        if not str(exc).startswith("bad filter"):
            sys.stderr.write(f"{PROG}: try '{PROG} --help'\n")
        return 2
    except (RuntimeError, ProtocolError, InputError) as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 1
    except BrokenPipeError:
        # Reader went away (pxdump ... | head): stop quietly, as tcpdump does.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:  # writing the output (stdout on a full disk, say)
        where = f"{exc.filename}: " if exc.filename else "output: "
        sys.stderr.write(f"{PROG}: {where}{exc.strerror or exc}\n")
        return 1
    except MemoryError:
        sys.stderr.write(f"{PROG}: out of memory\n")
        return 1
    except Exception as exc:  # LiveError and friends: one line, no traceback
        from pxproto.dump.live import LiveError

        if isinstance(exc, LiveError):
            sys.stderr.write(f"{PROG}: {exc}\n")
            return 1
        raise


def _exit_now(rc: int) -> NoReturn:
    """End a command-line live capture at once: its output is flushed and closed, and the
    interpreter's teardown (modules, numpy) would take a loaded host 100-200 ms after Ctrl-C."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
