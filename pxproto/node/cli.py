"""``pxkernel``: start one server's DIMEs on a wire.

pxkernel --port udp:127.0.0.1:5001 --dimes 4 --memory-chunks 32 --key cluster.key --store /srv/px-store
pxkernel --iface veth0                 # AF_PACKET (root); the server takes the interface's MAC
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from pxproto.dime.keys import KeyFileError, load_keyfile
from pxproto.fastpath import heap
from pxproto.link import VIRTUAL_MTU, VIRTUAL_MTU_MAX, WireError, open_port
from pxproto.node import memcg, state
from pxproto.node.channels import FLUSH_US
from pxproto.node.server import Server, ServerConfig, usable_cores
from pxproto.signing import load_verify_keys
from pxproto.wire import aead, spec

MAX_MEMORY_CHUNKS = (1 << 8 * spec.HeartbeatBody.mem_limit.sizeof()) - 1
"""The most a DIME's limit can be: HEARTBEAT ``mem_limit`` (and a DIME record's ``mem_total``) is 32 bits."""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pxkernel", description="Make every core of this server a DIME.")
    wire = ap.add_mutually_exclusive_group(required=True)
    wire.add_argument("--port", help="udp:HOST:PORT or stream:PATH (a pxswitch port; rootless)")
    wire.add_argument("--iface", help="a NIC or veth, via AF_PACKET (root)")
    ap.add_argument("--dimes", type=int, help="how many DIMEs (default: one per usable core)")
    ap.add_argument("--memory-chunks", type=int, default=64, help="each DIME's limit in 2 MiB chunks (default 64)")
    ap.add_argument("--key", help="cluster key file (KEY_ID HEXKEY per line, mode 0600); signaling must be signed")
    ap.add_argument("--insecure", action="store_true", help="run without --key: anyone on the wire commands the DIMEs")
    ap.add_argument(
        "--encrypt",
        default="",
        metavar="CLASSES",
        help="frame classes sent encrypted (AES-256-GCM, needs --key): e.g. data,signaling, all, none (default)",
    )
    ap.add_argument(
        "--verify-key", help="Ed25519 public keys (KEY_ID HEX per line) package signatures must verify with"
    )
    ap.add_argument("--store", help="the orchestrator's central package store (a directory)")
    ap.add_argument("--state-dir", help="epochs and MAC across restarts, 0700 (default: per wire, $XDG_RUNTIME_DIR)")
    ap.add_argument("--local-store", help="this server's local store (default: STATE_DIR/store)")
    ap.add_argument("--mac", help="the server's MAC (default: the interface's, or one kept in the state dir)")
    ap.add_argument("--heartbeat-ms", type=int, default=100, help="initial heartbeat period (default 100)")
    ap.add_argument(
        "--mtu",
        type=int,
        help=f"data frame MTU (default: the interface's, or {VIRTUAL_MTU} on a virtual wire; max {VIRTUAL_MTU_MAX})",
    )
    ap.add_argument(
        "--flush-us",
        type=int,
        default=FLUSH_US,
        help=f"longest a data frame less than full waits for more items, microseconds (default {FLUSH_US}; 0: never)",
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin DIMEs to cores")
    ap.add_argument(
        "--mice-memory",
        choices=("auto", "cgroup", "rlimit"),
        default="auto",
        help="enforce each MICE's chunks with a memory cgroup, RLIMIT_AS, or a cgroup where writable (default)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cores = usable_cores()
    n = args.dimes if args.dimes is not None else len(cores)
    if not 1 <= n <= 0xFFFE:
        print(f"pxkernel: --dimes {n}: must be 1..65534", file=sys.stderr)
        return 2
    if not 0 <= args.memory_chunks <= MAX_MEMORY_CHUNKS:
        print(f"pxkernel: --memory-chunks {args.memory_chunks}: must be 0..{MAX_MEMORY_CHUNKS}", file=sys.stderr)
        return 2
    if not 1 <= args.heartbeat_ms <= 0xFFFF:
        print("pxkernel: --heartbeat-ms must be 1..65535", file=sys.stderr)
        return 2
    keys: dict[int, bytes] = {}
    if args.key:
        try:
            keys = load_keyfile(args.key)
        except KeyFileError as exc:
            print(f"pxkernel: {exc}", file=sys.stderr)
            return 2
    elif not args.insecure:
        print("pxkernel: no --key: refusing to obey anyone on the wire (use --key FILE or --insecure)", file=sys.stderr)
        return 2
    try:
        encrypt = aead.parse_classes(args.encrypt)
    except ValueError as exc:
        print(f"pxkernel: {exc}", file=sys.stderr)
        return 2
    if encrypt and not keys:
        print("pxkernel: --encrypt needs --key (the cluster key encrypts)", file=sys.stderr)
        return 2
    if not 0 <= args.flush_us <= 1_000_000:
        print("pxkernel: --flush-us must be 0..1000000", file=sys.stderr)
        return 2
    if args.mtu is not None and not 576 <= args.mtu <= VIRTUAL_MTU_MAX:
        print(f"pxkernel: --mtu must be 576..{VIRTUAL_MTU_MAX}", file=sys.stderr)
        return 2
    verify: dict[int, bytes] = {}
    if args.verify_key:
        try:
            verify = load_verify_keys(args.verify_key).raw()
        except KeyFileError as exc:
            print(f"pxkernel: {exc}", file=sys.stderr)
            return 2
    if args.mice_memory == "cgroup" and memcg.own_memory_cgroup() is None:
        print("pxkernel: --mice-memory cgroup: no writable memory cgroup (v1 or v2) here; use auto or rlimit",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        given_mac = state.parse_station_mac(args.mac) if args.mac else None
    except ValueError as exc:
        print(f"pxkernel: --mac: {exc}", file=sys.stderr)
        return 2
    where = args.iface or args.port
    try:
        state_dir = str(state.private_dir(args.state_dir) if args.state_dir else state.default_state_dir(where))
        probe = Path(state_dir) / ".pxkernel-writable"
        probe.touch()
        probe.unlink()
        local_store = str(state.private_dir(args.local_store or Path(state_dir) / "store"))
    except state.StateDirError as exc:
        print(f"pxkernel: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        shown = args.state_dir or exc.filename
        print(f"pxkernel: --state-dir {shown}: not a writable directory ({exc.strerror or exc})", file=sys.stderr)
        return 2
    heap.keep_heap()  # the relay's frames reuse the heap (the DIMEs it execs keep glibc's defaults)
    try:
        wire = open_port(args.port, args.iface)
    except WireError as exc:  # a --port spec that names no wire: the message names it
        print(f"pxkernel: cannot open the wire: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        opt = f"--iface {args.iface}" if args.iface else f"--port {args.port}"
        why = "no such interface" if args.iface and exc.errno == errno.ENODEV else exc.strerror or str(exc)
        print(f"pxkernel: {opt}: cannot open the wire: {why}", file=sys.stderr)
        return 2
    try:
        mac = given_mac or wire.mac or state.server_mac(state_dir)
    except OSError as exc:
        print(f"pxkernel: --state-dir {state_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    cfg = ServerConfig(
        mac=mac,
        dimes=n,
        cores=cores,
        mem_chunks=args.memory_chunks,
        state_dir=state_dir,
        local_store=local_store,
        store=args.store,
        keys=keys,
        verify_keys=verify,
        insecure=not keys,
        heartbeat_ms=args.heartbeat_ms,
        pin=not args.no_pin,
        mtu=args.mtu or wire.mtu,
        flush_us=args.flush_us,
        mice_memory=args.mice_memory,
        encrypt=tuple(sorted(int(c) for c in encrypt)),
    )
    if not keys:
        print("pxkernel: WARNING: --insecure: no key, anyone on the wire can load and run code here", file=sys.stderr)
    return Server(cfg, wire).run()


if __name__ == "__main__":
    sys.exit(main())
