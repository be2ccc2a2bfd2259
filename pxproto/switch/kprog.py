"""The in-kernel fast path's eBPF programs, built at run time (see :mod:`pxproto.switch.kpath` for how they work).

- :func:`filter_program`: an AF_PACKET port's data socket filter, which decides.
- :func:`tc_program`: the tcx ingress program of every AF_PACKET fast port, which forwards what its filter decided.
- :func:`udp_program`: a tcx ingress program on ``lo`` for UDP ports on loopback addresses, which decides and
  forwards in one: a datagram that carries a frame from one such port's peer to another's is re-addressed as the
  switch would send it (addresses, ports, checksums), and goes on up the stack to that peer's socket.

The EtherTypes, a port's id and limits are immediates; the maps are :class:`pxproto.switch.kpath.KernelPath`'s.
"""

from __future__ import annotations

import struct

from pxproto.switch import bpf
from pxproto.switch.bpf import FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, Asm
from pxproto.wire import spec
from pxproto.wire.codes import PROTOCOL_VERSION, HeaderFlag

ETH_OVERHEAD = 18
MAX_PORTS = 256
FDB_MAX = 1 << 16
"""Entries of the kernel's copy of the table at most (a hash map is allocated whole); past it, frames to the
entries left out take the userspace path."""
MODE_NONE, MODE_REDIRECT, MODE_PEER, MODE_UDP = 0, 1, 2, 3
SNAP = 0x40000
"""What the data socket's filter returns for a frame it keeps (as the classic filter did)."""
TCX_NEXT = -1

BODY = spec.BODY_OFFSET
BUF = -46
"""Where the filter copies a frame's first BODY bytes on its stack: byte 6 (the source MAC) lands 8-aligned."""
KEY = -8
SCRATCH = -12
IN_PORT = -16
"""Where the UDP program keeps the input port's id (the AF_PACKET filter has it as an immediate)."""
HDR = {"version": 14, "flags": 15, "length": 16, "src_dime": 18, "dst_dime": 22, "mark": 30}

FDB_VALUE = struct.Struct("=HHI")  # port, pad, hit
PORT_VALUE = struct.Struct("=IHBx4s4s2s2s")
"""ifindex, max_len, mode; a UDP port's local and remote address and port (network order)."""
STATS_VALUE = struct.Struct("=QQQQ")  # rx, rx_bytes, tx, tx_bytes
SLOT_SIZE = 24  # in_ifindex, out_ifindex, len, mark (u32 each), in_port, out_port (u16), mode (u8)


def fdb_bytes(key: int) -> bytes:
    """The kernel map's key for a forwarding-table key (MAC in the low 48 bits, DIME id above)."""
    return (key & 0xFFFFFFFFFFFF).to_bytes(6, "big") + (key >> 48).to_bytes(2, "big")


def fdb_int(raw: bytes) -> int:
    return int.from_bytes(raw[:6], "big") | (int.from_bytes(raw[6:8], "big") << 48)


# ---------------------------------------------------------------- the programs


def _lookup(a: Asm, map_fd: int, key_off: int) -> None:
    a.ld_map(R1, map_fd)
    a.mov(R2, FP)
    a.addi(R2, key_off)
    a.call(bpf.MAP_LOOKUP)


def _is_in(a: Asm, reg: int, in_port: int | None, label: str) -> None:
    """Jump to ``label`` when ``reg`` holds the input port's id: the immediate ``in_port``, or (None) the u32 at
    fp+IN_PORT."""
    if in_port is not None:
        a.jimm("==", reg, in_port, label)
    else:
        a.ldx(4, R3, FP, IN_PORT)
        a.jreg("==", reg, R3, label)


def _src_check(a: Asm, fdb: int, in_port: int | None, done: str, out: str) -> None:
    """Look up the key at KEY: it must be learned on the input port (else to ``out``); mark it hit."""
    _lookup(a, fdb, KEY)
    a.jimm("==", R0, 0, out)
    a.ldx(2, R2, R0, 0)
    _is_in(a, R2, in_port, "src_here_" + done)
    a.jmp(out)
    a.label("src_here_" + done)
    a.ldx(4, R2, R0, 4)
    a.jimm("!=", R2, 0, done)
    a.sti(4, R0, 4, 1)


def _decide(a: Asm, maps: dict[str, int], f: int, out: str, in_port: int | None, modes: tuple[int, ...]) -> None:
    """The rules a DATA frame must pass to be forwarded in the kernel, for a frame whose first BODY bytes are on
    the stack at fp+``f`` and whose length is in R7: unicast source and destination; the header's version,
    flags (DIME scope, a tag when encrypted), length exactly the frame's and a destination DIME; the source
    (MAC, then (MAC, DIME)) learned on the input port (``in_port``, or the id at fp+IN_PORT); the destination
    learned on another port whose mode is in ``modes`` and whose MTU the frame fits.  A frame that fails any
    of them jumps to ``out``.  Ends with R8 = the output port's id and R9 = its ``ports`` value."""
    a.ldx(1, R2, FP, f + 0)
    a.jimm("&", R2, 1, out)  # a group destination floods: userspace
    a.ldx(1, R2, FP, f + 6)
    a.jimm("&", R2, 1, out)
    a.ldx(1, R2, FP, f + HDR["version"])
    a.jimm("!=", R2, PROTOCOL_VERSION, out)
    a.ldx(1, R8, FP, f + HDR["flags"])
    dime = int(HeaderFlag.SCOPE_DIME)
    auth = dime | int(HeaderFlag.AUTH)
    a.movi(R9, 0)
    a.jimm("==", R8, dime, "length")
    a.movi(R9, spec.AUTH_LEN)
    a.jimm("==", R8, auth, "length")
    a.jimm("==", R8, auth | int(HeaderFlag.ENCRYPTED), "length")
    a.jmp(out)
    a.label("length")
    a.ldx(1, R2, FP, f + HDR["length"])
    a.lshi(R2, 8)
    a.ldx(1, R3, FP, f + HDR["length"] + 1)
    a.orr(R2, R3)
    a.addi(R2, BODY)
    a.add(R2, R9)
    a.jreg("!=", R2, R7, out)  # exactly the frame: padding and trailing bytes are userspace's to judge
    a.ldx(2, R2, FP, f + HDR["dst_dime"])
    a.jimm("==", R2, 0xFFFF, out)
    # the source MAC alone, then with its DIME: learned here
    for k in range(0, 6, 2):
        a.ldx(2, R2, FP, f + 6 + k)
        a.stx(2, FP, KEY + k, R2)
    a.sti(2, FP, KEY + 6, 0xFFFF)
    _src_check(a, maps["fdb"], in_port, "src_dime", out)
    a.label("src_dime")
    a.ldx(2, R2, FP, f + HDR["src_dime"])
    a.jimm("==", R2, 0xFFFF, "dst")
    a.stx(2, FP, KEY + 6, R2)
    _src_check(a, maps["fdb"], in_port, "dst", out)
    a.label("dst")
    for k in range(0, 6, 2):
        a.ldx(2, R2, FP, f + k)
        a.stx(2, FP, KEY + k, R2)
    a.ldx(2, R2, FP, f + HDR["dst_dime"])
    a.stx(2, FP, KEY + 6, R2)
    _lookup(a, maps["fdb"], KEY)
    a.jimm("!=", R0, 0, "found")
    a.sti(2, FP, KEY + 6, 0xFFFF)
    _lookup(a, maps["fdb"], KEY)
    a.jimm("==", R0, 0, out)  # unknown: flooded by userspace
    a.label("found")
    a.ldx(2, R8, R0, 0)
    _is_in(a, R8, in_port, out)  # filtered there, and counted
    a.stx(4, FP, SCRATCH, R8)
    _lookup(a, maps["ports"], SCRATCH)
    a.jimm("==", R0, 0, out)
    a.mov(R9, R0)
    a.ldx(1, R2, R9, 6)
    for m in modes:
        a.jimm("==", R2, m, "mode_ok")
    a.jmp(out)
    a.label("mode_ok")
    a.ldx(2, R3, R9, 4)
    a.jreg(">", R7, R3, out)


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
    a.jimm(">", R7, max_len, "keep")  # (counted by userspace)
    _decide(a, maps, b, "keep", port, (MODE_REDIRECT, MODE_PEER))
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


def _bump(a: Asm, maps: dict[str, int], port_off: int, field: int, len_reg: int, name: str) -> None:
    """stats[the port id at fp+``port_off``]: frames += 1, bytes += ``len_reg`` (a register the call keeps)."""
    _lookup(a, maps["stats"], port_off)
    a.jimm("==", R0, 0, name)
    a.ldx(8, R2, R0, field)
    a.addi(R2, 1)
    a.stx(8, R0, field, R2)
    a.ldx(8, R2, R0, field + 8)
    a.add(R2, len_reg)
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
    a.ldx(4, R8, R7, 8)  # the frame's length
    for port_off, field, name in ((16, 0, "counted_in"), (18, 16, "counted_out")):
        a.ldx(2, R2, R7, port_off)
        a.stx(4, FP, -8, R2)
        _bump(a, maps, -8, field, R8, name)
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


def port_value(
    ifindex: int,
    max_len: int,
    mode: int,
    local: tuple[bytes, bytes] = (b"", b""),
    remote: tuple[bytes, bytes] = (b"", b""),
) -> bytes:
    """A ``ports`` map value; ``local`` and ``remote`` are a UDP port's (IPv4 address, port), 4 and 2 bytes."""
    return PORT_VALUE.pack(ifindex, max_len, mode, local[0], remote[0], local[1], remote[1])


# ---------------------------------------------------------------- UDP ports on loopback

UB = -94
"""Where the UDP program copies a datagram's first 76 bytes: Ethernet (lo's), IPv4, UDP, then the frame's first
BODY bytes; the IPv4 addresses land 4-aligned."""
IP_CSUM, IP_SRC, IP_DST, UDP_SPORT, UDP_DPORT, UDP_CSUM = 24, 26, 30, 34, 36, 40
INNER = 42
OUT_PORT = -104
"""Where the UDP program keeps the output port's id (below the datagram's copy at UB, 4-aligned)."""
F_PSEUDO_HDR, F_MARK_MANGLED_0 = 0x10, 0x20
L3_CSUM_REPLACE, L4_CSUM_REPLACE, SKB_STORE_BYTES = 10, 11, 9


def _rewrite(a: Asm, off: int, value_off: int, size: int, pseudo: bool) -> None:
    """Header field at ``off`` (``size`` bytes) := the out port's value at ``value_off`` (R9 points at it), with
    the IPv4 header checksum (addresses) and the UDP checksum fixed up."""
    a.ldx(size, R8, FP, UB + off)  # old
    a.ldx(size, R2, R9, value_off)
    a.stx(size, FP, -12, R2)  # new, for store_bytes
    if pseudo:
        a.mov(R1, R6)
        a.movi(R2, IP_CSUM)
        a.mov(R3, R8)
        a.ldx(size, R4, FP, -12)
        a.movi(R5, size)
        a.call(L3_CSUM_REPLACE)
        a.jimm("!=", R0, 0, "fail")
    a.mov(R1, R6)
    a.movi(R2, UDP_CSUM)
    a.mov(R3, R8)
    a.ldx(size, R4, FP, -12)
    a.movi(R5, size | F_MARK_MANGLED_0 | (F_PSEUDO_HDR if pseudo else 0))
    a.call(L4_CSUM_REPLACE)
    a.jimm("!=", R0, 0, "fail")
    a.mov(R1, R6)
    a.movi(R2, off)
    a.mov(R3, FP)
    a.addi(R3, -12)
    a.movi(R4, size)
    a.movi(R5, 0)
    a.call(SKB_STORE_BYTES)
    a.jimm("!=", R0, 0, "fail")


def udp_program(maps: dict[str, int], data_et: int) -> bytes:
    """The tcx ingress program on ``lo`` for the switch's UDP ports (``udp`` map: local address and port ->
    port id)."""
    a = Asm()
    b = UB
    i = UB + INNER
    a.mov(R6, R1)
    a.ldx(4, R7, R6, 0)  # skb->len
    a.jimm("<", R7, INNER + BODY, "pass")
    a.ldx(4, R2, R6, 16)  # skb->protocol, network order
    a.jimm("!=", R2, bpf.swap16(0x0800), "pass")
    a.mov(R1, R6)
    a.movi(R2, 0)
    a.mov(R3, FP)
    a.addi(R3, b)
    a.movi(R4, INNER + BODY)
    a.call(bpf.SKB_LOAD_BYTES)
    a.jimm("!=", R0, 0, "pass")
    a.ldx(1, R2, FP, b + 14)
    a.jimm("!=", R2, 0x45, "pass")  # IPv4 without options
    a.ldx(1, R2, FP, b + 23)
    a.jimm("!=", R2, 17, "pass")  # UDP
    a.ldx(2, R2, FP, b + 20)
    a.andi(R2, 0xFF3F)  # (the fragment field, as a little-endian load reads it) MF and offset
    a.jimm("!=", R2, 0, "pass")
    a.ldx(1, R2, FP, b + 16)  # total length == the packet after lo's Ethernet header
    a.lshi(R2, 8)
    a.ldx(1, R3, FP, b + 17)
    a.orr(R2, R3)
    a.addi(R2, 14)
    a.jreg("!=", R2, R7, "pass")
    a.ldx(1, R2, FP, b + 38)  # UDP length == the rest
    a.lshi(R2, 8)
    a.ldx(1, R3, FP, b + 39)
    a.orr(R2, R3)
    a.addi(R2, INNER - 8)
    a.jreg("!=", R2, R7, "pass")
    a.addi(R7, -INNER)  # from here R7 is the frame's length
    # the port the datagram came to: (destination address, port)
    a.ldx(4, R2, FP, b + IP_DST)
    a.stx(4, FP, KEY, R2)
    a.ldx(2, R2, FP, b + UDP_DPORT)
    a.stx(2, FP, KEY + 4, R2)
    a.sti(2, FP, KEY + 6, 0)
    _lookup(a, maps["udp"], KEY)
    a.jimm("==", R0, 0, "pass")
    a.ldx(4, R2, R0, 0)
    a.stx(4, FP, IN_PORT, R2)
    _lookup(a, maps["ports"], IN_PORT)
    a.jimm("==", R0, 0, "pass")
    a.ldx(1, R2, R0, 6)
    a.jimm("!=", R2, MODE_UDP, "pass")
    a.ldx(2, R2, R0, 4)
    a.jreg(">", R7, R2, "pass")
    a.ldx(4, R2, R0, 12)  # from the port's peer only
    a.ldx(4, R3, FP, b + IP_SRC)
    a.jreg("!=", R2, R3, "pass")
    a.ldx(2, R2, R0, 18)
    a.ldx(2, R3, FP, b + UDP_SPORT)
    a.jreg("!=", R2, R3, "pass")
    # the frame: the AF_PACKET filter's rules
    a.ldx(2, R2, FP, i + 12)
    a.jimm("!=", R2, bpf.swap16(data_et), "pass")
    _decide(a, maps, i, "pass", None, (MODE_UDP,))
    a.stx(4, FP, OUT_PORT, R8)  # the out port's id, for its counters
    # re-address it as the switch would send it: from the out port's address to its peer
    _rewrite(a, IP_SRC, 8, 4, True)
    _rewrite(a, IP_DST, 12, 4, True)
    _rewrite(a, UDP_SPORT, 16, 2, False)
    _rewrite(a, UDP_DPORT, 18, 2, False)
    _bump(a, maps, IN_PORT, 0, R7, "counted_in")
    _bump(a, maps, OUT_PORT, 16, R7, "counted_out")
    a.ret(0)  # TCX_PASS: on up the stack, to the peer's socket
    a.label("fail")
    a.ret(2)  # TCX_DROP: a half re-addressed datagram (the kernel could not make it writable) goes nowhere
    a.label("pass")
    a.ret(TCX_NEXT)
    return a.code()
