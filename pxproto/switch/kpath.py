"""The in-kernel fast path: learned unicast DATA frames between AF_PACKET ports, and between UDP ports on loopback,
forwarded without a copy to userspace.

The eBPF programs (:mod:`pxproto.switch.kprog`, built at run time) share five maps:

``fdb``
    a copy of the switch's forwarding table (key: the MAC's six bytes, then the
    DIME id as on the wire, 0xffff for the MAC alone; value: the port id and a
    hit flag), written by :meth:`KernelPath.sync`.
``ports``
    per port id: the interface index, the largest frame it takes (MTU + 18) and
    how to send there (0: not from the kernel, 1: ``bpf_redirect`` to the
    interface's output, 2: ``bpf_redirect_peer``, straight into a veth's peer).
``stats``
    per CPU and port id: frames and bytes in and out of the fast path.
``slot``
    per CPU: the decision on the frame being received.
``udp``
    a UDP port's (IPv4 address, port) -> its id.

The **decision** is the data socket's filter (SO_ATTACH_BPF on the port's
AF_PACKET data socket, in place of the classic EtherType filter, which it
keeps doing).  A frame takes the fast path only when the userspace path would
send it to exactly one port and learn nothing from it: a DATA frame whose
header passes the switch's ``header`` validation (version, flags, DIME scope,
length exactly the frame's, a destination DIME), unicast source and
destination, the source (MAC and (MAC, DIME)) already learned on this port,
the destination learned on another port that the kernel can send to, and no
longer than either port allows.  The filter then records the decision in the
CPU's slot and drops the frame from the socket; every other frame goes to
the switch as before.

The **forwarding** is a tcx ingress program on the port's interface: it runs
for the same frame right after the socket's filter (packet taps come first in
the receive path), checks that the slot is this frame's (interface, length,
four bytes of its header), counts it and redirects it.  So the decision is
taken once per frame, against one state of the table.

Learning stays in userspace: a frame from an unknown or moved source goes up,
is learned there (with the port's limits), and :meth:`KernelPath.sync` copies
the table.  A fast frame marks its source entries hit; :meth:`KernelPath.refresh`
turns the marks into the switch's own refresh, so aging works as before.
Mirroring and ``full`` validation turn the fast path off (the daemon's choice).

UDP ports on loopback need no slot: one tcx ingress program on ``lo`` (``udp_program``) takes the same decision
for a datagram from a port's peer to the port's address and re-addresses it, as the switch would send it, to
the output port's peer; it goes on up the stack to that peer's socket.
Needs root (CAP_BPF, CAP_NET_ADMIN) and tcx (Linux 6.6 or later).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from typing import Any

from pxproto.switch import bpf
from pxproto.switch.kprog import (
    ETH_OVERHEAD,
    FDB_MAX,
    FDB_VALUE,
    MAX_PORTS,
    MODE_NONE,
    MODE_PEER,
    MODE_REDIRECT,
    MODE_UDP,
    PORT_VALUE,
    SLOT_SIZE,
    STATS_VALUE,
    fdb_bytes,
    fdb_int,
    filter_program,
    port_value,
    tc_program,
    udp_program,
)


def loopback4(host: str) -> bool:
    """An IPv4 address in 127.0.0.0/8."""
    try:
        return socket.inet_aton(host)[0] == 127 and host.count(".") == 3
    except OSError:
        return False


def is_veth(ifname: str) -> bool:
    """Whether the interface's driver is veth (ETHTOOL_GDRVINFO): a frame can go straight into its peer."""
    info = ctypes.create_string_buffer(struct.pack("I", 3), 196)  # struct ethtool_drvinfo, cmd ETHTOOL_GDRVINFO
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(info))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s.fileno(), 0x8946, ifr)  # SIOCETHTOOL
        except OSError:
            return False
    return info.raw[4:36].split(b"\0", 1)[0] == b"veth"


# ---------------------------------------------------------------- the driver


class KernelPath:
    """The maps and the shared ingress program of one switch, and each fast port's filter and link."""

    def __init__(self, capacity: int, data_et: int, control_ets: tuple[int, ...]) -> None:
        self.data_et = data_et
        self.control_ets = control_ets
        self.ncpu = bpf.possible_cpus()
        self.maps: dict[str, int] = {}
        self.ports: dict[int, dict[str, Any]] = {}
        self.copy: dict[bytes, int] = {}
        """The table as the kernel holds it: map key -> port id."""
        self.generation = -1
        self.refused = 0
        """Table entries the kernel's map had no room for (their frames take the userspace path)."""
        self.tc = -1
        self.udp_prog = -1
        self.udp_link = -1
        self.udp: dict[int, bytes] = {}
        """UDP ports in the path: id -> its ``udp`` map key."""
        try:
            entries = max(1, min(capacity, FDB_MAX))
            self.maps["fdb"] = bpf.map_create(bpf.MAP_HASH, 8, FDB_VALUE.size, entries, "pxs_fdb")
            self.maps["ports"] = bpf.map_create(bpf.MAP_ARRAY, 4, PORT_VALUE.size, MAX_PORTS, "pxs_ports")
            self.maps["stats"] = bpf.map_create(bpf.MAP_PERCPU_ARRAY, 4, STATS_VALUE.size, MAX_PORTS, "pxs_stats")
            self.maps["slot"] = bpf.map_create(bpf.MAP_PERCPU_ARRAY, 4, SLOT_SIZE, 1, "pxs_slot")
            self.maps["udp"] = bpf.map_create(bpf.MAP_HASH, 8, 4, MAX_PORTS, "pxs_udp")
            self.tc = bpf.prog_load(bpf.PROG_SCHED_CLS, tc_program(self.maps), "pxs_fwd", bpf.ATTACH_TCX_INGRESS)
        except OSError:
            self.close()
            raise

    def add_port(self, pid: int, ifname: str, ifindex: int, mtu: int, sockets: list[socket.socket]) -> str:
        """Take port ``pid`` into the fast path: its filter on ``sockets`` (the data socket, and any worker lane's),
        the ingress program on its interface.  Returns how frames leave through it (``peer`` or ``redirect``)."""
        if not 0 <= pid < MAX_PORTS:
            raise OSError(0, f"port id {pid}: the kernel path covers ids below {MAX_PORTS}")
        max_len = min(mtu + ETH_OVERHEAD, 0xFFFF)
        prog = bpf.prog_load(
            bpf.PROG_SOCKET_FILTER,
            filter_program(self.maps, pid, ifindex, max_len, self.data_et, self.control_ets),
            f"pxs_in{pid}",
        )
        link = -1
        try:
            link = bpf.link_create(self.tc, ifindex, bpf.ATTACH_TCX_INGRESS)
            for s in sockets:
                s.setsockopt(socket.SOL_SOCKET, bpf.SO_ATTACH_BPF, prog)
        except OSError:
            for fd in (prog, link):
                if fd >= 0:
                    os.close(fd)
            raise
        mode = MODE_PEER if is_veth(ifname) else MODE_REDIRECT
        self.ports[pid] = {"prog": prog, "link": link, "ifindex": ifindex, "max_len": max_len, "mode": mode}
        self.set_up(pid, True)
        return "peer" if mode == MODE_PEER else "redirect"

    def attach(self, pid: int, sock: socket.socket) -> None:
        """The port's filter on another of its data sockets (a worker lane's)."""
        p = self.ports.get(pid)
        if p is not None:
            sock.setsockopt(socket.SOL_SOCKET, bpf.SO_ATTACH_BPF, p["prog"])

    def set_up(self, pid: int, up: bool) -> None:
        """A port that is down takes no frame from the kernel (its table entries go with the next sync)."""
        p = self.ports.get(pid)
        if p is None:
            return
        value = port_value(p["ifindex"], p["max_len"], p["mode"]) if up else port_value(0, 0, MODE_NONE)
        bpf.map_update(self.maps["ports"], struct.pack("I", pid), value)

    def remove_port(self, pid: int) -> None:
        """Out of the fast path: no frame goes there, the ingress program leaves the interface."""
        p = self.ports.pop(pid, None)
        if p is None:
            return
        bpf.map_update(self.maps["ports"], struct.pack("I", pid), port_value(0, 0, MODE_NONE))
        bpf.map_update(self.maps["stats"], struct.pack("I", pid), bytes(STATS_VALUE.size * self.ncpu))
        for fd in (p["link"], p["prog"]):
            os.close(fd)

    def add_udp(self, pid: int, local: tuple[str, int], remote: tuple[str, int] | None, mtu: int) -> None:
        """UDP port ``pid`` (bound to ``local``, its peer at ``remote``, None while unknown) into the path: both
        must be IPv4 loopback addresses, where the datagrams cross ``lo``.  Called again when the peer moves."""
        if not 0 <= pid < MAX_PORTS:
            raise OSError(0, f"port id {pid}: the kernel path covers ids below {MAX_PORTS}")
        for what, addr in (("local", local), ("remote", remote)):
            if addr is not None and not loopback4(addr[0]):
                raise OSError(0, f"{what} address {addr[0]}: only IPv4 loopback ports cross lo")
        if self.udp_prog < 0:
            self.udp_prog = bpf.prog_load(
                bpf.PROG_SCHED_CLS, udp_program(self.maps, self.data_et), "pxs_udp", bpf.ATTACH_TCX_INGRESS
            )
            self.udp_link = bpf.link_create(self.udp_prog, socket.if_nametoindex("lo"), bpf.ATTACH_TCX_INGRESS)
        key = socket.inet_aton(local[0]) + struct.pack("!H", local[1]) + b"\0\0"
        max_len = min(mtu + ETH_OVERHEAD, 0xFFFF)
        here = (socket.inet_aton(local[0]), struct.pack("!H", local[1]))
        if remote is None:
            value = port_value(0, 0, MODE_NONE)
        else:
            value = port_value(0, max_len, MODE_UDP, here, (socket.inet_aton(remote[0]), struct.pack("!H", remote[1])))
        bpf.map_update(self.maps["udp"], key, struct.pack("I", pid))
        bpf.map_update(self.maps["ports"], struct.pack("I", pid), value)
        self.udp[pid] = key

    def remove_udp(self, pid: int) -> None:
        key = self.udp.pop(pid, None)
        if key is None:
            return
        bpf.map_update(self.maps["ports"], struct.pack("I", pid), port_value(0, 0, MODE_NONE))
        bpf.map_delete(self.maps["udp"], key)
        bpf.map_update(self.maps["stats"], struct.pack("I", pid), bytes(STATS_VALUE.size * self.ncpu))

    def sync(self, fdb: Any, now: float, force: bool = False) -> int:
        """Copy the switch's live table into the kernel's when it changed (or ``force``); the changes made."""
        if not force and fdb.generation == self.generation:
            return 0
        self.generation = fdb.generation
        want = {fdb_bytes(key): port for key, port, _ in fdb.entries(now)}
        m = self.maps["fdb"]
        n = 0
        for k in [k for k in self.copy if k not in want]:
            bpf.map_delete(m, k)
            del self.copy[k]
            n += 1
        for k, port in want.items():
            if self.copy.get(k) == port:
                continue
            try:
                bpf.map_update(m, k, FDB_VALUE.pack(port, 0, 0))
            except OSError:
                self.refused += 1  # (the map is full: this entry's frames take the userspace path)
                continue
            self.copy[k] = port
            n += 1
        return n

    def refresh(self, fdb: Any, now: float) -> int:
        """The switch's table refreshed for every entry a fast frame used since the last call; how many.  (Not an
        entry the switch has moved or aged out since the last copy: the next :meth:`sync` takes it from the
        kernel.)"""
        m = self.maps["fdb"]
        n = 0
        for k, port in list(self.copy.items()):
            raw = bpf.map_lookup(m, k, FDB_VALUE.size)
            if raw is None or not FDB_VALUE.unpack(raw)[2]:
                continue
            key = fdb_int(k)
            if fdb.lookup(key, now) == port:
                fdb.learn(key, port, now)
            bpf.map_update(m, k, FDB_VALUE.pack(port, 0, 0))
            n += 1
        return n

    def counters(self, pid: int) -> tuple[int, int, int, int]:
        """(rx, rx_bytes, tx, tx_bytes) of port ``pid`` in the fast path, summed over CPUs."""
        raw = bpf.map_lookup(self.maps["stats"], struct.pack("I", pid), STATS_VALUE.size * self.ncpu)
        if raw is None:
            return (0, 0, 0, 0)
        tot = [0, 0, 0, 0]
        for i in range(self.ncpu):
            for j, v in enumerate(STATS_VALUE.unpack_from(raw, i * STATS_VALUE.size)):
                tot[j] += v
        return (tot[0], tot[1], tot[2], tot[3])

    def close(self) -> None:
        for pid in list(self.ports):
            try:
                self.remove_port(pid)
            except OSError:
                pass
        for fd in (self.udp_link, self.udp_prog, self.tc, *self.maps.values()):
            if fd >= 0:
                os.close(fd)
        self.tc = self.udp_link = self.udp_prog = -1
        self.maps = {}
