"""``pxorch``: the orchestrator's command line.

pxorch demo [--netns|--ha|--bare-metal]       the main job: switch, 3 servers x 4 DIMEs, deploy, scale, kill, repair
pxorch chaos [--kills 30 --loss 2]           real processes under frame loss: kills of every kind, exact answer
pxorch demo|chaos [--encrypt data,signaling]  the same with those frame classes encrypted end to end (AES-256-GCM)
pxorch check SERVICE.toml                     check a service file (errors name the line and field)
pxorch run --port udp:127.0.0.1:5004 [--key FILE] [--store DIR] [--control PATH]
pxorch run --iface veth0 ...                  (AF_PACKET, root)
pxorch run ... --etcd http://127.0.0.1:2379   plan in etcd; several run, one leads (lease), the others follow
pxorch deploy SERVICE.toml [--control PATH]   deploy through a running orchestrator
pxorch scale SERVICE STAGE N [--control PATH]
pxorch status [--control PATH] [--watch SECONDS] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pxproto.orch import service
from pxproto.orch.daemon import DEFAULT_CONTROL

HA_TAKES = "--rate, --workdir, --quiet and --encrypt"
"""The demo options ``pxorch demo --ha`` honours; it refuses the others."""


def _count(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} is below {low}")
        return v

    return parse


def _between(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer in low..high, the range ``what`` has in a service file."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"{v} is not in {low}..{high} (as {what} in a service file)")
        return v

    return parse


def _number_from(low: float, what: str) -> Callable[[str], float]:
    """An argparse type: a number >= low, the range ``what`` has in a service file."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v != v:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} is below {low} (as {what} in a service file)")
        return v

    return parse


def _percent(text: str) -> float:
    """An argparse type: a loss percentage, 0 <= x < 100 (100 would drop everything: nothing could finish)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v < 100:
        raise argparse.ArgumentTypeError(f"{v} is not in 0..100 (exclusive)")
    return v


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pxorch", description="Parallax orchestrator: discover, deploy, scale, repair.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="run the paper's demo on this machine (rootless)")
    demo.add_argument("--out-dir", help="where demo.pcapng and demo-timeline.png go (default: the work dir)")
    demo.add_argument("--rate", type=_count(0),
                      help="source lines per second (default 0: unthrottled; --bare-metal: 400)")  # fmt: skip
    demo.add_argument("--passes", type=_count(1),
                      help="times the source streams its 2,400-line corpus (default 8; --bare-metal: 1)")  # fmt: skip
    demo.add_argument("--work-us", type=_count(0), help="the transform's busy work per line (default 0 us)")
    demo.add_argument("--no-kill", action="store_true", help="do not kill a DIME")
    demo.add_argument("--kill-stage", default="transform", choices=("source", "parse", "transform", "sink"),
                      help="whose DIME is killed (default transform)")  # fmt: skip
    demo.add_argument("--quiet", "-q", action="store_true")
    demo.add_argument("--encrypt", default="", metavar="CLASSES",
                      help="classes sent encrypted end to end (AES-256-GCM): e.g. data,signaling")  # fmt: skip
    demo.add_argument("--workdir", help="state, logs, capture and timeline (default: a fresh pxorch-demo-* temp dir)")
    demo.add_argument("--bare-metal", action="store_true", help="add a QEMU guest of the bare-metal kernel (kernel/)")
    demo.add_argument("--netns", action="store_true", help="network namespaces, veth and AF_PACKET (root)")
    demo.add_argument("--ha", action="store_true",
                      help="a local etcd and three orchestrators: kill the leader mid-stream, then a DIME "
                           f"(takes only {HA_TAKES})")  # fmt: skip
    demo.add_argument("--heartbeat-ms", type=_between(*service.HEARTBEAT_MS, "heartbeat_ms"),
                      help="override the workflow's heartbeat period (default 50, 1..60000)")  # fmt: skip
    demo.add_argument("--missed", type=_number_from(service.MISSED_MIN, "missed"),
                      help="override: silent periods before suspicion (default 2, at least 1)")  # fmt: skip
    demo.add_argument("--confirm-ms", type=_between(*service.CONFIRM_MS, "confirm_ms"),
                      help="override: ping retransmit interval when confirming (default 8, 1..60000)")  # fmt: skip
    ch = sub.add_parser("chaos", help="many kills of every stage kind and of whole servers, under frame loss")
    ch.add_argument("--kills", type=_count(0), default=30, help="kills in all (default 30), spread over every kind")
    ch.add_argument("--loss", type=_percent, default=2.0,
                    help="frames dropped per hop and direction, percent (default 2)")  # fmt: skip
    ch.add_argument("--rate", type=_count(0), default=250, help="source lines per second (default 250)")
    ch.add_argument("--passes", type=_count(1), help="times through the corpus (default: enough to outlast the kills)")
    ch.add_argument("--seed", type=int, default=1)
    ch.add_argument("--netns", action="store_true", help="namespaces, veth, AF_PACKET, tc netem (root, sch_netem)")
    ch.add_argument("--workdir", help="state and logs (default: a fresh pxorch-demo-* temp dir)")
    ch.add_argument("--quiet", "-q", action="store_true")
    ch.add_argument("--encrypt", default="", metavar="CLASSES",
                    help="classes sent encrypted end to end (AES-256-GCM): e.g. data,signaling")  # fmt: skip
    chk = sub.add_parser("check", help="check a service file")
    chk.add_argument("file")
    run = sub.add_parser("run", help="run the orchestrator")
    wire = run.add_mutually_exclusive_group(required=True)
    wire.add_argument("--port", help="udp:HOST:PORT or stream:PATH, a pxswitch port (rootless)")
    wire.add_argument("--iface", help="an interface, via AF_PACKET (root)")
    run.add_argument("--key", help="cluster key file (KEY_ID HEXKEY per line, mode 0600)")
    run.add_argument("--insecure", action="store_true", help="run without --key: anyone can fake DIMEs and faults")
    run.add_argument("--signing-key", help="Ed25519 package signing key file (KEY_ID HEX, mode 0600)")
    run.add_argument("--encrypt", default="", metavar="CLASSES",
                     help="classes sent encrypted (AES-256-GCM; --key): e.g. signaling, all")  # fmt: skip
    run.add_argument("--store", help="the central package store directory (the kernels' --store)")
    run.add_argument("--control", default=DEFAULT_CONTROL)
    run.add_argument("--service", help="a service file whose regulator sets the failure detector")
    run.add_argument("--etcd", help="URL[,URL...]: keep the plan in etcd and lead only when elected (several may run)")
    run.add_argument("--name", help="this orchestrator's name in the election (default: its MAC)")
    run.add_argument("--lease-ttl", type=_count(1), default=1, help="leader lease, seconds (default 1)")
    run.add_argument("--peer", default="127.0.0.1", metavar="HOST|none",
                     help="address followers reach this orchestrator's TCP port on, to see it die (default "
                          "127.0.0.1: every orchestrator on this host; none: the lease alone)")  # fmt: skip
    dep = sub.add_parser("deploy", help="deploy a service file through a running orchestrator")
    dep.add_argument("file")
    dep.add_argument("--control", default=DEFAULT_CONTROL)
    sc = sub.add_parser("scale", help="set a stage's replica count")
    sc.add_argument("service")
    sc.add_argument("stage")
    sc.add_argument("replicas", type=int)
    sc.add_argument("--control", default=DEFAULT_CONTROL)
    st = sub.add_parser("status", help="the pool and the services, as a table")
    st.add_argument("--control", default=DEFAULT_CONTROL)
    st.add_argument("--watch", type=float, help="refresh every SECONDS (a live table)")
    st.add_argument("--json", action="store_true")
    return ap


def _ask(control: str, req: dict[str, object], want: tuple[str, ...] = ("ok",)) -> dict[str, object] | None:
    """The reply of a running ``pxorch run``, or None after one line on stderr: no socket, an error reply, or
    a reply that is not a pxorch one (empty, not JSON, missing ``want``: another program's socket, a daemon
    that died mid-request)."""
    from pxproto.orch.daemon import ReplyError, query

    try:
        reply = query(control, req)
    except OSError as exc:
        print(f"pxorch: control socket {control}: {exc.strerror or exc} (is `pxorch run` running?)", file=sys.stderr)
        return None
    except ReplyError as exc:
        print(f"pxorch: control socket {control}: {exc}", file=sys.stderr)
        return None
    if isinstance(reply.get("error"), str):
        print(f"pxorch: {reply['error']}", file=sys.stderr)
        return None
    if not all(k in reply for k in want):
        print(f"pxorch: control socket {control}: not a pxorch reply", file=sys.stderr)
        return None
    return reply


STATUS_KEYS = ("rows", "pool", "services", "events")
"""What a status reply holds (pxorch status --json prints it whole)."""


def _status(args: argparse.Namespace) -> int:
    while True:
        reply = _ask(args.control, {"cmd": "status"}, STATUS_KEYS)
        if reply is None:
            return 1
        if args.json:
            print(json.dumps(reply, indent=2))
        else:
            try:
                text = _status_text(reply)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError):
                print(f"pxorch: control socket {args.control}: not a pxorch reply", file=sys.stderr)
                return 1
            if args.watch:
                print("\x1b[2J\x1b[H", end="")
            print(text)
        if not args.watch:
            return 0
        time.sleep(args.watch)


def _status_text(reply: dict[str, Any]) -> str:
    """The status table, pool, wire counters, services and recent events, as ``pxorch status`` prints them."""
    from pxproto.orch.status import table

    out = [table(reply["rows"])]
    if reply.get("insecure"):
        out.append("\nWARNING: insecure: this orchestrator runs without a key (pxorch run --insecure)")
    out.append(f"\npool: {reply['pool']}")
    wire = reply.get("wire") or {}
    dropped = {k: v for k, v in wire.items() if k in ("malformed", "not_for_us") or k.startswith("rejected")}
    out.append(f"wire: rx {wire.get('rx', 0)} tx {wire.get('tx', 0)} dropped {dropped}")
    if reply.get("pool_refused"):
        out.append(f"pool refused: {reply['pool_refused']}")
    for name, stages in reply["services"].items():
        out.append(f"service {name}: " + ", ".join(f"{s} x{len(k)}" for s, k in stages.items()))
    out.append("\nrecent events:")
    out += [f"  [{e['t']:10.3f}] {e['text']}" for e in reply["events"][-10:]]
    return "\n".join(out)


def _bad_classes(text: str) -> str | None:
    """Why ``--encrypt text`` names no frame classes we know, or None when it is good."""
    from pxproto.wire import aead

    try:
        aead.parse_classes(text)
    except ValueError as exc:
        return str(exc)
    return None


def _bad_dirs(args: argparse.Namespace) -> str | None:
    """Why --workdir or --out-dir cannot be a directory (something else is there), or None."""
    for opt in ("workdir", "out_dir"):
        value = getattr(args, opt, None)
        if value and Path(value).exists() and not Path(value).is_dir():
            return f"--{opt.replace('_', '-')} {value}: exists and is not a directory"
    return None


def _ha_refused(args: argparse.Namespace) -> str | None:
    """Why ``pxorch demo --ha`` cannot run with these options (one it does not honour is set), or None."""
    if args.cmd != "demo" or not args.ha:
        return None
    given = [opt for opt, on in (("--out-dir", args.out_dir is not None), ("--passes", args.passes is not None),
                                 ("--work-us", args.work_us is not None), ("--no-kill", args.no_kill),
                                 ("--kill-stage", args.kill_stage != "transform"), ("--netns", args.netns),
                                 ("--bare-metal", args.bare_metal), ("--heartbeat-ms", args.heartbeat_ms is not None),
                                 ("--missed", args.missed is not None), ("--confirm-ms", args.confirm_ms is not None))
             if on]  # fmt: skip
    if not given:
        return None
    return f"--ha takes only {HA_TAKES}; leave {', '.join(given)}"


def _run_demo(args: argparse.Namespace) -> int:
    """``pxorch demo`` (plain, --ha, --bare-metal, --netns) and ``pxorch chaos``."""
    if args.cmd == "demo":
        from pxproto.orch import demo

        if args.ha:
            from pxproto.orch import demo_ha

            return demo_ha.main(Path(args.workdir) if args.workdir else None, rate=args.rate or 0, quiet=args.quiet,
                                encrypt=args.encrypt)  # fmt: skip
        reg = {k: v for k, v in (("heartbeat_ms", args.heartbeat_ms), ("missed", args.missed),
                                 ("confirm_ms", args.confirm_ms)) if v is not None}  # fmt: skip
        kind: type[demo.Demo] | None = None
        rate, passes = 0, demo.PASSES
        if args.bare_metal:
            from pxproto.baremetal import builtin
            from pxproto.baremetal.demo import BareMetalDemo

            kind = BareMetalDemo
            rate, passes = builtin.RATE, builtin.PASSES  # the package the image carries
        rate = rate if args.rate is None else args.rate
        passes = passes if args.passes is None else args.passes
        return demo.main(args.out_dir, demo_class=kind, rate=rate, kill=not args.no_kill, quiet=args.quiet,
                         workdir=Path(args.workdir) if args.workdir else None, regulator=reg,
                         netns=args.netns, kill_stage=args.kill_stage, passes=passes,
                         work_us=args.work_us, encrypt=args.encrypt)  # fmt: skip
    from pxproto.orch import chaos

    return chaos.main(Path(args.workdir) if args.workdir else None, kills=args.kills, loss=args.loss,
                      rate=args.rate, passes=args.passes, seed=args.seed, netns=args.netns,
                      quiet=args.quiet, encrypt=args.encrypt)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd in ("demo", "chaos"):
        bad = _ha_refused(args) or _bad_classes(args.encrypt) or _bad_dirs(args)
        if bad:
            print(f"pxorch {args.cmd}: {bad}", file=sys.stderr)
            return 2
        try:
            return _run_demo(args)
        except OSError as exc:  # a work dir that cannot be made or written, a full disk: one line
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"pxorch {args.cmd}: {exc.strerror or exc}{where}", file=sys.stderr)
            return 1
    if args.cmd == "check":
        from pxproto.orch.service import ServiceError, load_service

        try:
            spec = load_service(args.file)
        except ServiceError as exc:
            print(f"pxorch: {exc}", file=sys.stderr)
            return 1
        print(f"{args.file}: service {spec.name} (id {spec.id}), " + " -> ".join(s.name for s in spec.topo_order()))
        return 0
    if args.cmd == "run":
        from pxproto.dime.keys import KeyFileError, load_keyfile
        from pxproto.link import WireError, open_port
        from pxproto.orch.daemon import Daemon, make_core, print_event
        from pxproto.orch.driver import Driver, raise_priority
        from pxproto.orch.service import ServiceError
        from pxproto.signing import load_signing_key

        if not args.key and not args.insecure:
            print("pxorch: no --key: refusing unsigned heartbeats and discovery (give --key FILE, or --insecure)",
                  file=sys.stderr)  # fmt: skip
            return 2
        if not args.key:
            print("pxorch: WARNING: --insecure: no key, anyone on the wire can invent DIMEs or fake their deaths",
                  file=sys.stderr)  # fmt: skip
        from pxproto.wire import aead

        try:
            encrypt = aead.parse_classes(args.encrypt)
        except ValueError as exc:
            print(f"pxorch: {exc}", file=sys.stderr)
            return 2
        if encrypt and not args.key:
            print("pxorch: --encrypt needs --key (the cluster key encrypts)", file=sys.stderr)
            return 2
        kv = None
        if args.etcd:
            from pxproto.orch.store import EtcdKv, KvError

            try:
                kv = EtcdKv(args.etcd)
            except KvError as exc:
                print(f"pxorch: --etcd {args.etcd!r}: {exc}", file=sys.stderr)
                return 2
        try:
            keys = load_keyfile(args.key) if args.key else {}
            signer = load_signing_key(args.signing_key) if args.signing_key else None
            wire = open_port(args.port, args.iface)
            core = make_core(args.service)
        except (KeyFileError, WireError, ServiceError, OSError) as exc:
            print(f"pxorch: {exc}", file=sys.stderr)
            return 2
        raise_priority()
        print(f"pxorch: orchestrator {core.local.mac.hex(':')} on {args.port or args.iface}; control {args.control}")
        driver = Driver(core, wire, keys, print_event, encrypt=encrypt)
        leadership = None
        if kv is not None:
            from pxproto.orch.leader import Leadership

            peer = None if args.peer == "none" else args.peer
            try:
                leadership = Leadership(driver, kv, args.name or core.local.mac.hex(":"),
                                        args.lease_ttl, peer_host=peer)  # fmt: skip
            except OSError as exc:
                print(f"pxorch: --peer {args.peer}: cannot listen there: {exc}", file=sys.stderr)
                return 2
            leadership.keyring_version = max(keys, default=0)
            print(f"pxorch: plan and election in etcd {args.etcd}; following until elected", flush=True)
        try:
            daemon = Daemon(driver, args.control, args.store, leadership=leadership, signer=signer)
        except (OSError, ValueError) as exc:  # a missing directory, a path too long or with a NUL
            if leadership is not None:
                leadership.stop()
            print(f"pxorch: --control {args.control}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return 2
        return daemon.run()
    if args.cmd == "deploy":
        reply = _ask(args.control, {"cmd": "deploy", "file": str(Path(args.file).resolve())})
    elif args.cmd == "scale":
        reply = _ask(args.control, {"cmd": "scale", "service": args.service, "stage": args.stage,
                                    "replicas": args.replicas})  # fmt: skip
    else:
        return _status(args)
    if reply is None:
        return 1
    print(reply.get("ok"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
