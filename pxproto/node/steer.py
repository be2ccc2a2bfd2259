"""Frames for a DIME straight from the wire to the DIME: one socket each, steered in the kernel.

Without this, every frame for a DIME crosses the server process: the server
reads it from the wire socket and relays it over the DIME's SOCK_SEQPACKET
socketpair (a wake-up and two copies more per frame).  Here the server opens
one UDP socket per DIME on its own wire address, in one SO_REUSEPORT group
with its own socket (index 0; the DIMEs' are 1..N in DIME order), and
attaches a classic BPF program (SO_ATTACH_REUSEPORT_CBPF, which sees the UDP
payload, i.e. the Ethernet frame, at offset 0) that picks the socket of the
DIME a frame is for.  The DIME inherits its socket and reads it with the same
recvmmsg batch the server uses; its sends go out on it too (one source address
for the whole server, as before).  On an AF_PACKET wire the group is a
PACKET_FANOUT group of type CBPF on the interface (PACKET_FANOUT_DATA gives it
the same program, reading at SKF_LL_OFF: there the data starts after the
Ethernet header), which ignores what its sockets send.  A stream wire has no
such group: its frames all pass the relay.

Steered to DIME k: a Parallax data or signaling frame (the EtherTypes of
:func:`pxproto.wire.ethertypes.current`), at least a common header long,
unicast to this server's MAC, with the SCOPE_DIME flag and destination DIME k
< N.  The relay forwarded exactly these frames to the DIME without looking
further (its checks, the leader fence and authentication among them, are the
DIME's; an encrypted frame's header is in clear), so the DIME takes them the
same way.  Everything else goes to index 0, the server: system scope (0xffff),
other or group MACs, heartbeats, discovery, unknown DIMEs and short frames; an
index outside the group would make the kernel hash instead, so the program
never returns one.

The server keeps every socket open for its life: a DIME that dies and is
started again inherits the same socket (closing one would move the group's
last socket into its place and break the index order), and the server drops
the frames its predecessor left unread, as closing its socketpair did.
"""

from __future__ import annotations

import socket
import struct

from pxproto.link import SOL_PACKET, PacketPort, Port, UdpPort
from pxproto.switch import udpsteer
from pxproto.wire import ethertypes, spec
from pxproto.wire.codes import FrameClass, HeaderFlag

SO_ATTACH_REUSEPORT_CBPF = udpsteer.SO_ATTACH_REUSEPORT_CBPF
OFF_ETH_TYPE = 12
OFF_FLAGS = spec.HEADER_OFFSET + 1
OFF_DST_DIME = spec.HEADER_OFFSET + 8
MAX_DIMES = 255
"""The most DIMEs one group steers: a PACKET_FANOUT group holds 256 sockets on kernels before 5.13 (the server's
among them); a server with more relays everything."""

SKF_LL_OFF = -0x200000
"""Classic BPF loads at SKF_LL_OFF + k read the frame from its link-layer (Ethernet) header."""
PACKET_FANOUT_DATA = 22
SO_MEMINFO = 55
SK_MEMINFO_DROPS = 8

STEERED = (FrameClass.DATA, FrameClass.SIGNALING)
"""The frame classes a DIME takes from its own socket; heartbeats and discovery stay the server's."""

# classic BPF opcodes (linux/filter.h)
LD_LEN = 0x80  # A = packet length
LD_W = 0x20  # A = word at [k]
LD_H = 0x28  # A = half word at [k]
LD_B = 0x30  # A = byte at [k]
JEQ = 0x15
JGE = 0x35
JSET = 0x45
ADD = 0x04  # A += k
RET_A = 0x16
RET_K = 0x06

Insn = udpsteer.Insn


def steer_program(mac: bytes, dimes: int, link_layer: bool = False) -> bytes:
    """The reuseport program of a server with MAC ``mac`` and DIMEs 0..dimes-1: index 1 + DIME for a frame one of
    them takes directly, 0 (the server) for every other.  ``link_layer``: the PACKET_FANOUT program instead, which
    runs on a received frame whose data starts after its Ethernet header: the fields are read at SKF_LL_OFF."""
    if len(mac) != 6:
        raise ValueError(f"steering program: a MAC is 6 bytes, not {len(mac)}")
    if not 1 <= dimes <= MAX_DIMES:
        raise ValueError(f"steering program: 1..{MAX_DIMES} DIMEs, not {dimes}")
    et = ethertypes.current()
    types = [et.of(c) for c in STEERED]
    at, short = (SKF_LL_OFF, spec.HEADER_OFFSET) if link_layer else (0, 0)
    ins: list[Insn | str] = [
        (LD_LEN, 0, 0, 0),
        (JGE, 0, "server", spec.BODY_OFFSET - short),
        (LD_W, 0, 0, at),
        (JEQ, 0, "server", int.from_bytes(mac[:4], "big")),
        (LD_H, 0, 0, at + 4),
        (JEQ, 0, "server", int.from_bytes(mac[4:], "big")),
        (LD_H, 0, 0, at + OFF_ETH_TYPE),
    ]
    for i, t in enumerate(types):
        ins.append((JEQ, "scope", 0 if i < len(types) - 1 else "server", t))
    ins += [
        "scope",
        (LD_B, 0, 0, at + OFF_FLAGS),
        (JSET, 0, "server", int(HeaderFlag.SCOPE_DIME)),
        (LD_H, 0, 0, at + OFF_DST_DIME),
        (JGE, "server", 0, dimes),
        (ADD, 0, 0, 1),
        (RET_A, 0, 0, 0),
        "server",
        (RET_K, 0, 0, 0),
    ]
    return udpsteer.assemble(ins)


def open_group(wire: Port, mac: bytes, dimes: int) -> list[socket.socket]:
    """One steered socket per DIME, in DIME order, on ``wire``: a UDP wire's address (SO_REUSEPORT) or an AF_PACKET
    wire's interface (PACKET_FANOUT); [] when the wire cannot steer (a stream wire, a kernel without the group
    or its program): the relay carries everything then."""
    if not 1 <= dimes <= MAX_DIMES:
        return []
    if isinstance(wire, UdpPort):
        socks = wire.reuseport_group(dimes)
        level, option, program = socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, steer_program(mac, dimes)
    elif isinstance(wire, PacketPort):
        socks = wire.fanout_group(dimes)
        level, option, program = SOL_PACKET, PACKET_FANOUT_DATA, steer_program(mac, dimes, link_layer=True)
    else:
        return []
    if not socks:
        return []
    try:
        udpsteer.attach(socks[0], option, program, level)
    except OSError:
        for s in socks:
            s.close()
        return []
    return socks


def dropped(sock: socket.socket) -> int:
    """Datagrams the kernel dropped at ``sock`` (its receive buffer full: the DIME behind), SO_MEMINFO; 0 when
    the kernel does not say."""
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (SK_MEMINFO_DROPS + 1))
    except OSError:
        return 0
    return int(struct.unpack_from("I", info, 4 * SK_MEMINFO_DROPS)[0]) if len(info) >= 4 * (SK_MEMINFO_DROPS + 1) else 0
