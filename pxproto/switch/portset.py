"""Ports from their specs, and a running switch's set of ports changed to a new config as a whole (SIGHUP).

A reload either takes effect whole or not at all: a port that cannot open refuses it, and the ports that ran
before run on as they were.  New ports open beside the old ones, before any closes; a changed port (the same
name) closes first, as its new self may need its address, and if a port then cannot open, those closed are
opened again as they were (their table entries went with them).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from pxproto.switch.config import MTU_RANGE, ConfigError, PortSpec, SwitchConfig
from pxproto.switch.ports import AfPacketPort, Port, StreamPort, TapPort, UdpPort, VxlanPort, port_error

if TYPE_CHECKING:
    from pxproto.switch.daemon import Daemon


def log(msg: str) -> None:
    print(f"pxswitch: {msg}", file=sys.stderr, flush=True)


AFPACKET_RCVBUF = 1 << 20
"""Receive buffer of an AF_PACKET data socket: a deep buffer only turns a stall into latency (see bench/switch.py)."""


def open_port(spec: PortSpec, aging: float = 300.0) -> Port:
    """The driver a PortSpec describes; ``aging`` is the switch's, for a VXLAN port's remote table."""
    g = spec.get
    if spec.type == "udp":
        return UdpPort(spec.name, g("local"), g("remote"))
    if spec.type == "stream":
        return StreamPort(spec.name, g("address"), bool(g("listen", False)))
    if spec.type == "tap":
        return TapPort(spec.name, g("interface"))
    if spec.type == "afpacket":
        return AfPacketPort(
            spec.name,
            g("interface"),
            int(g("rcvbuf", AFPACKET_RCVBUF)),
            g("ring"),
            bool(g("offload", True)),
            g("txring"),
        )
    if spec.type == "vxlan":
        return VxlanPort(
            spec.name, g("local", "0.0.0.0:4789"), list(g("remote")), int(g("vni")), float(g("aging", aging))
        )
    raise ConfigError(f"port {spec.name}: unknown type {spec.type!r}")


def open_checked(spec: PortSpec, aging: float) -> Port:
    """Open the port ``spec`` describes, with an MTU the core takes, or ValueError naming it and the reason."""
    try:
        port = open_port(spec, aging)
    except (OSError, ValueError) as exc:
        raise ValueError(f"port {spec.name} ({spec.type}): cannot open: {port_error(exc)}") from None
    mtu = int(spec.get("mtu", port.mtu))
    if not MTU_RANGE[0] <= mtu <= MTU_RANGE[1]:  # (an interface's own MTU, unchecked until now)
        port.close()
        raise ValueError(f"port {spec.name} ({spec.type}): mtu {mtu}: {MTU_RANGE[0]}..{MTU_RANGE[1]}")
    return port


def close_all(opened: list[tuple[PortSpec, Port]]) -> None:
    """Close the ports a refused reload opened (and forget them)."""
    for _, port in opened:
        try:
            port.close()
        except OSError:
            pass
    opened.clear()


def reload_ports(d: Daemon, new: SwitchConfig) -> None:
    """Make ``d``'s ports those of ``new``, whole, or log why not and leave them as they were."""
    wanted = {s.name: s for s in new.ports}
    have = {spec.name: spec for spec in d.specs.values()}
    drop = [pid for pid, spec in d.specs.items() if wanted.get(spec.name) != spec]
    opened: list[tuple[PortSpec, Port]] = []
    closed: list[PortSpec] = []
    later = [spec for spec in new.ports if spec.name in have and have[spec.name] != spec]
    try:
        for spec in new.ports:
            if spec.name in have:
                continue
            try:
                opened.append((spec, open_checked(spec, d.core.policy.aging)))
            except ValueError:
                if not drop:
                    raise
                later.append(spec)  # (a port this reload closes may hold what it needs: again once it has)
        closed = [d.specs[pid] for pid in drop]
        for pid in drop:
            d._remove(pid)
        try:
            for spec in later:
                opened.append((spec, open_checked(spec, d.core.policy.aging)))
        except ValueError:
            close_all(opened)  # (a changed port's new self holds its address)
            for spec in closed:  # as they were (their table entries went with them)
                d._add(spec, announce=False)
            raise
    except ValueError as exc:
        close_all(opened)
        log(f"reload refused: {exc}; the switch runs on with {len(d.ports)} ports as they were")
        return
    for spec in closed:
        log(f"port {spec.name} closed by reload")
    for spec, port in opened:
        d._add(spec, port=port)
    for name in list(d.gone):
        if name not in wanted:
            del d.gone[name]
    log(f"reloaded {d.config_path}: {len(d.ports)} ports, {len(d.core.fdb)} table entries kept")
