"""``pxswitch``: run a switch, or ask a running one for its counters and table.

pxswitch run --port udp:local=127.0.0.1:5000 --port afpacket:interface=veth0
pxswitch run --config switch.toml
pxswitch stats [--control PATH] [--json]
pxswitch fdb [--control PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pxproto.fastpath import heap
from pxproto.switch.config import (
    DEFAULT_CONTROL,
    SCHED_KEYS,
    ConfigError,
    PortValueError,
    SwitchConfig,
    load_file,
    parse_port_arg,
    sched_value,
)
from pxproto.switch.core import SwitchPolicy

PORTS_HELP = """\
ports (--port TYPE:key=value,key=value; name=NAME is optional):
  udp:local=HOST:PORT[,remote=HOST:PORT][,kernel=true|false]
      one frame per datagram (QEMU -netdev dgram); without remote, replies go
      to the last sender. A UDP port another process holds is refused. Control
      frames are steered to a second socket on the address (SO_REUSEPORT and
      a BPF program), read first, so data saturation cannot drop them.
      kernel (default: where it can, as root on Linux 6.6+, with this port and
      its peer on IPv4 loopback): learned unicast DATA datagrams between such
      ports are re-addressed inside the kernel (a tcx program on lo), never
      copied to the switch; true: the port does not open without it.
  stream:address=PATH|HOST:PORT[,listen=true]
      frames after a 4-byte big-endian length (QEMU -netdev stream); listen
      waits for one peer at a time, else the switch connects.
  tap:interface=NAME
      a TAP device the switch creates (or opens) and brings up; plain frames
      (no IFF_VNET_HDR: the kernel checksums and segments before the switch).
  afpacket:interface=NAME[,rcvbuf=BYTES][,ring=0|2|3][,offload=true|false]
          [,txring=true|false][,kernel=true|false]
      an existing interface (veth, NIC, a QEMU tap), promiscuous; ring 2
      (default): PACKET_MMAP TPACKET_V2 (each frame handed over as it lands;
      a GSO segment longer than a slot read whole from the socket), 3:
      TPACKET_V3 blocks (handed over full or after 1 ms: up to 1 ms more
      latency), 0: recvmmsg (about half the throughput); offload (default true):
      PACKET_VNET_HDR, so TCP checksum/segmentation offloads of a veth peer or
      a virtio-net guest are carried (or done in software towards other ports);
      txring (default true): send through a PACKET_MMAP transmit ring (false:
      sendmmsg; frames longer than the MTU, GSO segments, always take it);
      kernel (default: where it can, as root on Linux 6.6+): learned unicast
      DATA frames between afpacket ports are forwarded inside the kernel
      (eBPF: the data socket's filter decides, a tcx ingress program
      redirects), never copied to the switch; true: the port does not open
      without it; false: userspace only.
  vxlan:remote=HOST[:PORT][,remote=...],vni=N[,local=HOST:PORT][,aging=S]
      Ethernet in UDP (RFC 7348) to remote VTEPs, default port 4789.
  every port: mtu=BYTES (frames up to mtu+18 bytes pass, in and out; default
      65000 on udp and stream ports, an afpacket port's interface MTU, else
      1500) and max_macs=N (table entries the port may learn, default
      --max-macs 2048; 0: no limit). Refusals show in `pxswitch stats` as
      rx_oversize, tx_oversize and learn_refused.

non-Parallax frames (ARP, IP, ...) are forwarded like any L2 switch would and
counted as class "other"; --non-parallax drop refuses them.

QEMU guests (no root needed):
  pxswitch run -p udp:name=vm1,local=127.0.0.1:10001,remote=127.0.0.1:10002 \\
               -p stream:name=vm2,address=/tmp/vm2.sock,listen=true
  qemu-system-x86_64 ... -nic none -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01 \\
    -netdev dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=10002,\\
remote.type=inet,remote.host=127.0.0.1,remote.port=10001
  qemu-system-x86_64 ... -nic none -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:02 \\
    -netdev stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/vm2.sock
"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pxswitch", description="A userspace L2 switch that understands Parallax.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser(
        "run", help="run a switch", epilog=PORTS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    run.add_argument("--config", "-c", help="TOML file ([switch] and [[port]] tables); SIGHUP re-reads it")
    run.add_argument("--port", "-p", action="append", default=[], help="TYPE:key=value,... (repeatable; see below)")
    run.add_argument("--control", help=f"control socket path (default {DEFAULT_CONTROL})")
    run.add_argument("--mirror", help="write every received frame to this pcapng file")
    run.add_argument("--validation", choices=("none", "header", "full"))
    run.add_argument("--malformed", choices=("drop", "pass"))
    run.add_argument("--non-parallax", choices=("pass", "drop"))
    run.add_argument("--fdb-capacity", type=int)
    run.add_argument("--aging", type=float)
    run.add_argument("--queue-data", type=int)
    run.add_argument("--queue-control", type=int)
    run.add_argument("--max-macs", type=int, metavar="N", help="table entries a port may learn (default 2048)")
    run.add_argument("--realtime", type=int, metavar="PRIO", help="run under SCHED_FIFO at PRIO (1..99)")
    run.add_argument("--busy-poll", type=int, metavar="US", help="keep polling US microseconds after a frame")
    run.add_argument(
        "--busy-adaptive",
        type=int,
        metavar="US",
        help="poll without sleeping while frames keep coming, sleep after US microseconds of silence "
        "(default 50; 0: sleep after every batch)",
    )
    run.add_argument(
        "--busy-nap",
        type=int,
        metavar="US",
        help="while polling, a look that found nothing sleeps US microseconds on a timer (default 0: looks again)",
    )
    run.add_argument(
        "--slice",
        type=int,
        metavar="US",
        help="time slice asked of the normal scheduler (100..100000; default 0: the kernel's)",
    )
    run.add_argument("--workers", type=int, metavar="N", help="threads forwarding AF_PACKET data (default 1)")
    for name in ("stats", "fdb"):
        q = sub.add_parser(name, help=f"print a running switch's {name}")
        q.add_argument("--control", default=DEFAULT_CONTROL)
        q.add_argument("--json", action="store_true", help="raw JSON")
    return ap


def build_config(args: argparse.Namespace) -> SwitchConfig:
    cfg = load_file(args.config) if args.config else SwitchConfig()
    for text in args.port:
        cfg.ports.append(parse_port_arg(text, len(cfg.ports)))  # udp0, udp1, ... after the file's ports
    names = [p.name for p in cfg.ports]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"two ports are named {sorted(dup)[0]!r}")
    overrides = {
        k: getattr(args, k)
        for k in (
            "validation",
            "malformed",
            "non_parallax",
            "fdb_capacity",
            "aging",
            "queue_data",
            "queue_control",
            "max_macs",
        )
        if getattr(args, k) is not None
    }
    if overrides:
        try:
            cfg.policy = SwitchPolicy(**{**cfg.policy.__dict__, **overrides})
        except ValueError as exc:  # "fdb_capacity 0: ...": the option's name first, as the policy says it
            key, _, why = str(exc).partition(" ")
            raise ConfigError(
                f"--{key.replace('_', '-')} {why}" if key in overrides else f"command line: {exc}"
            ) from None
    if args.control:
        cfg.control = args.control
    if args.mirror:
        cfg.mirror = args.mirror
    for key in SCHED_KEYS:
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, sched_value(key, value, f"--{key.replace('_', '-')} "))
    return cfg


def _stats_lines(st: dict[str, Any]) -> list[str]:
    """The table ``pxswitch stats`` prints (made whole before any is printed: a reply of the wrong shape prints
    nothing)."""
    out: list[str] = []
    add = out.append
    cols = ("rx", "tx", "rx_malformed", "tx_queue_drop", "tx_queue_drop_control", "queued")
    refusals = ("rx_oversize", "tx_oversize", "learn_refused", "fdb_entries")
    add(f"{'port':<16}{'up':<4}" + "".join(f"{c:>22}" for c in cols))
    for name, p in st["ports"].items():
        add(f"{name:<16}{'y' if p.get('up') else 'n':<4}" + "".join(f"{p.get(c, '-'):>22}" for c in cols))
    add(f"{'port':<16}{'mtu':>6}{'max_macs':>10}" + "".join(f"{c:>16}" for c in refusals))
    for name, p in st["ports"].items():
        if "mtu" in p:
            add(
                f"{name:<16}{p['mtu']:>6}{p['max_macs'] or '-':>10}" + "".join(f"{p.get(c, '-'):>16}" for c in refusals)
            )
        if p.get("gone"):
            add(f"  gone: {p['gone']}")
        if p.get("errors"):
            add(f"  errors: {p['errors']}")
    for name, p in st["ports"].items():
        if "rx_class" in p:
            add(f"{name:<16} rx by class {p['rx_class']}  tx by class {p['tx_class']}")
    for name, p in st["ports"].items():
        if "kernel" in p:
            k = p["kernel"]
            add(f"{name:<16} in the kernel fast path ({k['how']}): rx {k['rx']}, tx {k['tx']} (in the counts above)")
    add("switch: " + ", ".join(f"{k}={v}" for k, v in st["switch"].items()))
    if st["malformed"]:
        add("malformed by field: " + ", ".join(f"{k}={v}" for k, v in st["malformed"].items()))
    return out


def _fdb_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = [f"{'mac':<19}{'dime':>6}  {'port':<16}{'age s':>8}"]
    for r in rows:
        dime = "-" if r["dime"] is None else str(r["dime"])
        out.append(f"{r['mac']:<19}{dime:>6}  {r['port']:<16}{r['age']:>8.1f}")
    return out


def _reply_lines(cmd: str, reply: Any, raw: bool) -> list[str]:
    """What to print for a ``stats`` or ``fdb`` reply; ValueError if it is not the reply a pxswitch gives."""
    if not isinstance(reply, dict if cmd == "stats" else list):
        raise ValueError
    try:
        lines = _stats_lines(reply) if isinstance(reply, dict) else _fdb_lines(reply)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        raise ValueError from None
    return [json.dumps(reply, indent=2)] if raw else lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "run":
        from pxproto.switch.daemon import Daemon, StartError

        try:
            cfg = build_config(args)
        except PortValueError as exc:  # the port cannot open: as a StartError
            print(f"pxswitch: {exc}", file=sys.stderr)
            return 1
        except ConfigError as exc:
            print(f"pxswitch: {exc}", file=sys.stderr)
            return 2
        if not cfg.ports:
            print("pxswitch: no ports (give --port or a --config with [[port]] tables)", file=sys.stderr)
            return 2
        try:
            d = Daemon(cfg, args.config)
        except StartError as exc:
            print(f"pxswitch: {exc}", file=sys.stderr)
            return 1
        d.install_signals()
        heap.keep_heap()  # frames relayed in bursts reuse the heap, not fresh pages
        return d.run()
    from pxproto.ctlsock import ReplyTooLong
    from pxproto.switch.control import query

    try:
        reply = query(args.control, args.cmd)
    except OSError as exc:
        print(f"pxswitch: control socket {args.control}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ReplyTooLong as exc:
        print(f"pxswitch: control socket {args.control}: {exc}", file=sys.stderr)
        return 1
    except (ValueError, RecursionError):  # empty (a switch that died while answering), not JSON, not UTF-8
        reply = None
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        print(f"pxswitch: control socket {args.control}: {reply['error']}", file=sys.stderr)
        return 1
    try:
        lines = _reply_lines(args.cmd, reply, args.json)
    except ValueError:
        print(f"pxswitch: control socket {args.control}: not a pxswitch {args.cmd} reply", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from pxproto.console import run

    sys.exit(run(main))
