"""The in-kernel fast path: learned unicast DATA frames between AF_PACKET ports, forwarded without a copy to userspace.

Two small eBPF programs per switch, built here at run time (:mod:`pxproto.switch.bpf`), share four maps:

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
from pxproto.switch.bpf import FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, Asm
from pxproto.wire import spec
from pxproto.wire.codes import PROTOCOL_VERSION, HeaderFlag

ETH_OVERHEAD = 18
MAX_PORTS = 256
FDB_MAX = 1 << 16
"""Entries of the kernel's copy of the table at most (a hash map is allocated whole); past it, frames to the
entries left out take the userspace path."""
MODE_NONE, MODE_REDIRECT, MODE_PEER = 0, 1, 2
SNAP = 0x40000
"""What the data socket's filter returns for a frame it keeps (as the classic filter did)."""
TCX_NEXT = -1

BODY = spec.BODY_OFFSET
BUF = -46
"""Where the filter copies a frame's first BODY bytes on its stack: byte 6 (the source MAC) lands 8-aligned."""
KEY = -8
SCRATCH = -12
HDR = {"version": 14, "flags": 15, "length": 16, "src_dime": 18, "dst_dime": 22, "mark": 30}

FDB_VALUE = struct.Struct("=HHI")  # port, pad, hit
PORT_VALUE = struct.Struct("=IHBx")  # ifindex, max_len, mode
STATS_VALUE = struct.Struct("=QQQQ")  # rx, rx_bytes, tx, tx_bytes
SLOT_SIZE = 24  # in_ifindex, out_ifindex, len, mark (u32 each), in_port, out_port (u16), mode (u8)


def fdb_bytes(key: int) -> bytes:
    """The kernel map's key for a forwarding-table key (MAC in the low 48 bits, DIME id above)."""
    return (key & 0xFFFFFFFFFFFF).to_bytes(6, "big") + (key >> 48).to_bytes(2, "big")


def fdb_int(raw: bytes) -> int:
    return int.from_bytes(raw[:6], "big") | (int.from_bytes(raw[6:8], "big") << 48)


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


# ---------------------------------------------------------------- the programs


def _lookup(a: Asm, map_fd: int, key_off: int) -> None:
    a.ld_map(R1, map_fd)
    a.mov(R2, FP)
    a.addi(R2, key_off)
    a.call(bpf.MAP_LOOKUP)


def _src_check(a: Asm, fdb: int, port: int, done: str) -> None:
    """Look up the key at KEY: it must be learned on ``port``; mark it hit."""
    _lookup(a, fdb, KEY)
    a.jimm("==", R0, 0, "keep")
    a.ldx(2, R2, R0, 0)
    a.jimm("!=", R2, port, "keep")
    a.ldx(4, R2, R0, 4)
    a.jimm("!=", R2, 0, done)
    a.sti(4, R0, 4, 1)


def filter_program(
    maps: dict[str, int], port: int, ifindex: int, max_len: int, data_et: int, control_ets: tuple[int, ...]
) -> bytes:
    """The data socket's filter for port ``port`` (interface ``ifindex``, frames up to ``max_len``)."""
    a = Asm()
    b = BUF
    a.mov(R6, R1)
    a.ldx(4, R7, R6, 0)  # skb->len
    a.jimm("<", R7, 14, "drop")  # as the classic filter: no EtherType, no frame
    a.jimm("<", R7, BODY, "short")
    a.mov(R1, R6)
    a.movi(R2, 0)
    a.mov(R3, FP)
    a.addi(R3, b)
    a.movi(R4, BODY)
    a.call(bpf.SKB_LOAD_BYTES)
    a.jimm("!=", R0, 0, "keep")
    a.ldx(2, R2, FP, b + 12)
    for et in control_ets:
        a.jimm("==", R2, bpf.swap16(et), "drop")
    a.jimm("!=", R2, bpf.swap16(data_et), "keep")
    a.ldx(1, R2, FP, b + 0)
    a.jimm("&", R2, 1, "keep")  # a group destination floods: userspace
    a.ldx(1, R2, FP, b + 6)
    a.jimm("&", R2, 1, "keep")
    a.ldx(1, R2, FP, b + HDR["version"])
    a.jimm("!=", R2, PROTOCOL_VERSION, "keep")
    a.ldx(1, R8, FP, b + HDR["flags"])
    dime = int(HeaderFlag.SCOPE_DIME)
    auth = dime | int(HeaderFlag.AUTH)
    a.movi(R9, 0)
    a.jimm("==", R8, dime, "length")
    a.movi(R9, spec.AUTH_LEN)
    a.jimm("==", R8, auth, "length")
    a.jimm("==", R8, auth | int(HeaderFlag.ENCRYPTED), "length")
    a.jmp("keep")
    a.label("length")
    a.ldx(1, R2, FP, b + HDR["length"])
    a.lshi(R2, 8)
    a.ldx(1, R3, FP, b + HDR["length"] + 1)
    a.orr(R2, R3)
    a.addi(R2, BODY)
    a.add(R2, R9)
    a.jreg("!=", R2, R7, "keep")  # exactly the frame: padding and trailing bytes are userspace's to judge
    a.jimm(">", R7, max_len, "keep")
    a.ldx(2, R2, FP, b + HDR["dst_dime"])
    a.jimm("==", R2, 0xFFFF, "keep")
    # the source MAC alone, then with its DIME: learned here
    for i in range(0, 6, 2):
        a.ldx(2, R2, FP, b + 6 + i)
        a.stx(2, FP, KEY + i, R2)
    a.sti(2, FP, KEY + 6, 0xFFFF)
    _src_check(a, maps["fdb"], port, "src_dime")
    a.label("src_dime")
    a.ldx(2, R2, FP, b + HDR["src_dime"])
    a.jimm("==", R2, 0xFFFF, "dst")
    a.stx(2, FP, KEY + 6, R2)
    _src_check(a, maps["fdb"], port, "dst")
    a.label("dst")
    for i in range(0, 6, 2):
        a.ldx(2, R2, FP, b + i)
        a.stx(2, FP, KEY + i, R2)
    a.ldx(2, R2, FP, b + HDR["dst_dime"])
    a.stx(2, FP, KEY + 6, R2)
    _lookup(a, maps["fdb"], KEY)
    a.jimm("!=", R0, 0, "found")
    a.sti(2, FP, KEY + 6, 0xFFFF)
    _lookup(a, maps["fdb"], KEY)
    a.jimm("==", R0, 0, "keep")  # unknown: flooded by userspace
    a.label("found")
    a.ldx(2, R8, R0, 0)
    a.jimm("==", R8, port, "keep")  # filtered there, and counted
    a.stx(4, FP, SCRATCH, R8)
    _lookup(a, maps["ports"], SCRATCH)
    a.jimm("==", R0, 0, "keep")
    a.mov(R9, R0)
    a.ldx(1, R2, R9, 6)
    a.jimm("==", R2, MODE_NONE, "keep")
    a.ldx(2, R3, R9, 4)
    a.jreg(">", R7, R3, "keep")
    a.sti(4, FP, SCRATCH, 0)
    _lookup(a, maps["slot"], SCRATCH)
    a.jimm("==", R0, 0, "keep")
    a.sti(4, R0, 0, ifindex)
    a.ldx(4, R2, R9, 0)
    a.stx(4, R0, 4, R2)
    a.stx(4, R0, 8, R7)
    a.ldx(4, R2, FP, b + HDR["mark"])
    a.stx(4, R0, 12, R2)
    a.sti(2, R0, 16, port)
    a.stx(2, R0, 18, R8)
    a.ldx(1, R2, R9, 6)
    a.stx(1, R0, 20, R2)
    a.label("drop")
    a.ret(0)
    a.label("short")  # 14 to BODY - 1 bytes: the classic filter's answer
    a.raw(0x28, 0, 0, 0, 12)  # r0 = ldh [12] (LD_ABS, host order; r6 is the skb)
    for et in control_ets:
        a.jimm("==", R0, et, "drop")
    a.label("keep")
    a.ret(SNAP)
    return a.code()


def _count(a: Asm, maps: dict[str, int], port_off: int, field: int, name: str) -> None:
    """stats[slot's port at ``port_off``] frames += 1 and bytes += the slot's length, at ``field``."""
    a.ldx(2, R2, R7, port_off)
    a.stx(4, FP, -8, R2)
    _lookup(a, maps["stats"], -8)
    a.jimm("==", R0, 0, name)
    a.ldx(8, R2, R0, field)
    a.addi(R2, 1)
    a.stx(8, R0, field, R2)
    a.ldx(8, R2, R0, field + 8)
    a.ldx(4, R3, R7, 8)
    a.add(R2, R3)
    a.stx(8, R0, field + 8, R2)
    a.label(name)


def tc_program(maps: dict[str, int]) -> bytes:
    """The ingress program every fast port shares: forward the frame its filter decided on."""
    a = Asm()
    a.mov(R6, R1)
    a.sti(4, FP, -4, 0)
    _lookup(a, maps["slot"], -4)
    a.jimm("==", R0, 0, "pass")
    a.mov(R7, R0)
    a.ldx(4, R2, R7, 0)
    a.jimm("==", R2, 0, "pass")
    a.sti(4, R7, 0, 0)  # taken: a frame the filter did not see cannot reuse it
    a.ldx(4, R3, R6, 36)  # skb->ingress_ifindex
    a.jreg("!=", R2, R3, "pass")
    a.ldx(4, R3, R6, 0)  # skb->len
    a.ldx(4, R2, R7, 8)
    a.jreg("!=", R2, R3, "pass")
    # (a copy: a frame from a PACKET_TX_RING sender holds little more than its Ethernet header in line)
    a.mov(R1, R6)
    a.movi(R2, HDR["mark"])
    a.mov(R3, FP)
    a.addi(R3, -16)
    a.movi(R4, 4)
    a.call(bpf.SKB_LOAD_BYTES)
    a.jimm("!=", R0, 0, "pass")
    a.ldx(4, R4, FP, -16)
    a.ldx(4, R5, R7, 12)
    a.jreg("!=", R4, R5, "pass")
    _count(a, maps, 16, 0, "counted_in")
    _count(a, maps, 18, 16, "counted_out")
    a.ldx(4, R1, R7, 4)
    a.movi(R2, 0)
    a.ldx(1, R3, R7, 20)
    a.jimm("==", R3, MODE_PEER, "peer")
    a.call(bpf.REDIRECT)
    a.exit()
    a.label("peer")
    a.call(bpf.REDIRECT_PEER)
    a.exit()
    a.label("pass")
    a.ret(TCX_NEXT)
    return a.code()


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
        try:
            entries = max(1, min(capacity, FDB_MAX))
            self.maps["fdb"] = bpf.map_create(bpf.MAP_HASH, 8, FDB_VALUE.size, entries, "pxs_fdb")
            self.maps["ports"] = bpf.map_create(bpf.MAP_ARRAY, 4, PORT_VALUE.size, MAX_PORTS, "pxs_ports")
            self.maps["stats"] = bpf.map_create(bpf.MAP_PERCPU_ARRAY, 4, STATS_VALUE.size, MAX_PORTS, "pxs_stats")
            self.maps["slot"] = bpf.map_create(bpf.MAP_PERCPU_ARRAY, 4, SLOT_SIZE, 1, "pxs_slot")
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
        value = PORT_VALUE.pack(p["ifindex"], p["max_len"], p["mode"]) if up else PORT_VALUE.pack(0, 0, MODE_NONE)
        bpf.map_update(self.maps["ports"], struct.pack("I", pid), value)

    def remove_port(self, pid: int) -> None:
        """Out of the fast path: no frame goes there, the ingress program leaves the interface."""
        p = self.ports.pop(pid, None)
        if p is None:
            return
        bpf.map_update(self.maps["ports"], struct.pack("I", pid), PORT_VALUE.pack(0, 0, MODE_NONE))
        bpf.map_update(self.maps["stats"], struct.pack("I", pid), bytes(STATS_VALUE.size * self.ncpu))
        for fd in (p["link"], p["prog"]):
            os.close(fd)

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
        """The switch's table refreshed for every entry a fast frame used since the last call; how many."""
        m = self.maps["fdb"]
        n = 0
        for k, port in list(self.copy.items()):
            raw = bpf.map_lookup(m, k, FDB_VALUE.size)
            if raw is None or not FDB_VALUE.unpack(raw)[2]:
                continue
            fdb.learn(fdb_int(k), port, now)
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
        for fd in (self.tc, *self.maps.values()):
            if fd >= 0:
                os.close(fd)
        self.tc = -1
        self.maps = {}


REFRESH_PERIOD = 1.0
"""Seconds between two passes that carry the fast path's hits into the switch's table (and drop the kernel's copy
of entries that aged out there)."""
SYNC_GAP = 0.01
"""Seconds between two copies of a changing table at least (under a flood of new source MACs, a copy per batch
would be the attack)."""


class KernelPorts:
    """The daemon's side of the fast path: which AF_PACKET ports are in it, when to copy the table, the counters.

    A port's ``kernel`` key: absent, the port joins when it can (once a switch, a line says why not); ``true``,
    a port that cannot join does not open; ``false``, it stays out.  The whole path is off with ``full``
    validation (the kernel checks headers only) and with a mirror (the mirror sees every frame)."""

    def __init__(self, validation: str, mirror: bool, log: Any) -> None:
        self.why_off: str | None = None
        if validation == "full":
            self.why_off = "validation full"
        elif mirror:
            self.why_off = "a mirror"
        self.kp: KernelPath | None = None
        self.log = log
        self._told = False
        self._refresh_at = 0.0
        self._sync_at = 0.0

    @property
    def active(self) -> bool:
        """Some port is in the fast path."""
        return self.kp is not None and bool(self.kp.ports)

    def due(self, fdb: Any, now: float) -> float | None:
        """Seconds until :meth:`tick` has work (a changed table to copy, or the refresh), or None."""
        if not self.active:
            return None
        assert self.kp is not None
        at = self._refresh_at
        if fdb.generation != self.kp.generation:
            at = min(at, self._sync_at)
        return max(0.0, at - now)

    def add(self, pid: int, port: Any, want: bool | None, mtu: int, capacity: int) -> None:
        """Take ``port`` (an AfPacketPort) in unless ``want`` is False; OSError when ``want`` is True and it cannot."""
        if want is False:
            return
        try:
            if self.why_off is not None:
                raise OSError(0, f"off with {self.why_off}")
            if self.kp is None:
                from pxproto.switch.linkports import control_ethertypes
                from pxproto.wire import ethertypes

                self.kp = KernelPath(capacity, ethertypes.current().data, control_ethertypes())
            socks = [port.sock, *(lane.sock for lane in port.lanes)]
            how = self.kp.add_port(pid, port.ifname, port.ifindex, mtu, socks)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if want:
                raise OSError(exc.errno, f"kernel fast path: {why}") from None
            if not self._told:
                self._told = True
                self.log(f"kernel fast path off ({why}): AF_PACKET ports forward in userspace")
            return
        self.log(f"port {port.name}: kernel fast path ({how})")

    def attach_lanes(self, pid: int, port: Any) -> None:
        if self.kp is not None and pid in self.kp.ports:
            for lane in port.lanes:
                self.kp.attach(pid, lane.sock)

    def set_up(self, pid: int, up: bool) -> None:
        if self.kp is not None:
            self.kp.set_up(pid, up)

    def remove(self, pid: int) -> None:
        if self.kp is not None:
            self.kp.remove_port(pid)

    def tick(self, fdb: Any, now: float) -> None:
        """After the table's timers: carry hits into it every REFRESH_PERIOD, then copy it when it changed."""
        if self.kp is None or not self.kp.ports:
            return
        force = now >= self._refresh_at
        if force:
            self._refresh_at = now + REFRESH_PERIOD
            self.kp.refresh(fdb, now)
        elif now < self._sync_at:
            return
        if self.kp.sync(fdb, now, force):
            self._sync_at = now + SYNC_GAP

    def add_stats(self, st: dict[str, Any], names: dict[int, str]) -> None:
        """The fast path's frames into each port's counters (and by themselves, under ``kernel``)."""
        if self.kp is None:
            return
        for pid in self.kp.ports:
            name = names.get(pid)
            if name is None or name not in st["ports"]:
                continue
            rx, rx_bytes, tx, tx_bytes = self.kp.counters(pid)
            p = st["ports"][name]
            for key, v in (("rx", rx), ("rx_bytes", rx_bytes), ("tx", tx), ("tx_bytes", tx_bytes)):
                p[key] = p.get(key, 0) + v
            p["rx_class"]["data"] = p["rx_class"].get("data", 0) + rx
            p["tx_class"]["data"] = p["tx_class"].get("data", 0) + tx
            p["kernel"] = {"rx": rx, "tx": tx, "how": "peer" if self.kp.ports[pid]["mode"] == MODE_PEER else "redirect"}
        st["switch"]["kernel_fdb"] = len(self.kp.copy)
        st["switch"]["kernel_fdb_refused"] = self.kp.refused

    def close(self) -> None:
        if self.kp is not None:
            self.kp.close()
            self.kp = None
