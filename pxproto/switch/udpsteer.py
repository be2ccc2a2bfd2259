"""Two UDP sockets on one local address, control frames steered to their own in the kernel.

A UDP port with one socket loses control frames with data when the switch is
not scheduled for longer than the socket's buffer lasts: the kernel drops
datagrams without looking at them.  Here the port binds two sockets in one
SO_REUSEPORT group; a classic BPF program (SO_ATTACH_REUSEPORT_CBPF, which sees
the UDP payload, i.e. the Ethernet frame, at offset 0) sends the control
EtherTypes (signaling, discovery, heartbeat, also behind one 802.1Q tag) to
the second socket, so data saturation fills only the first one's buffer.

A port without a fixed remote gets the same pair, without the sender filter.
The sockets stay unconnected (the kernel gives a connected socket every
datagram before any reuseport program runs): a socket filter on both drops
datagrams from any address but the remote, as ``connect`` did, and frames go
out with the remote's address.

The group is kept closed: the address is first bound without SO_REUSEPORT (so
a socket another process holds refuses the port) and a lock file per address,
held for the port's life, refuses a second pxswitch.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import tempfile
from collections.abc import Sequence
from typing import Any

SO_ATTACH_FILTER = 26
SO_ATTACH_REUSEPORT_CBPF = 51
SKF_NET_OFF = -0x100000
ACCEPT = 0x40000
VLAN = 0x8100


Insn = tuple[int, int | str, int | str, int]
"""A classic BPF instruction (code, jt, jf, k); a jump target may name a label."""


def assemble(ins: Sequence[Insn | str]) -> bytes:
    """Classic BPF from (code, jt, jf, k) tuples whose jump targets are offsets or label names (a str item is a
    label); the steering programs here and in :mod:`pxproto.node.steer`."""
    labels: dict[str, int] = {}
    code: list[Insn] = []
    for item in ins:
        if isinstance(item, str):
            labels[item] = len(code)
        else:
            code.append(item)
    out = bytearray()
    for pc, (op, jt, jf, k) in enumerate(code):
        rel = [labels[j] - pc - 1 if isinstance(j, str) else j for j in (jt, jf)]
        if not all(0 <= r <= 255 for r in rel):
            raise ValueError(f"BPF program: jump {rel} at instruction {pc} out of range")
        out += struct.pack("HBBI", op, rel[0], rel[1], k & 0xFFFFFFFF)
    return bytes(out)


def steer_program(control: tuple[int, ...]) -> bytes:
    """Reuseport program: index 1 for a frame whose EtherType (or the one after an 802.1Q tag) is in ``control``,
    index 0 otherwise."""
    n = len(control)
    ins = [(0x28, 0, 0, 12)]  # ldh [12]
    for i, et in enumerate(control):
        ins.append((0x15, 2 * n + 2 - i, 0, et))  # jeq et -> ret 1
    ins.append((0x15, 0, n + 1, VLAN))  # not a tag -> ret 0
    ins.append((0x28, 0, 0, 16))  # ldh [16]: the EtherType behind the tag
    for i, et in enumerate(control):
        ins.append((0x15, n - i, 0, et))
    ins.append((0x06, 0, 0, 0))
    ins.append((0x06, 0, 0, 1))
    return assemble(ins)


def sender_program(remote: tuple[str, int], family: int) -> bytes:
    """Socket filter: accept only datagrams from ``remote`` (source address in the IP header, source port at
    offset 0, the UDP header)."""
    if family == socket.AF_INET:
        words = [struct.unpack("!I", socket.inet_aton(remote[0]))[0]]
        first = 12
    else:
        raw = socket.inet_pton(socket.AF_INET6, remote[0])
        words = list(struct.unpack("!4I", raw))
        first = 8
    ins: list[tuple[int, int, int, int]] = []
    n = len(words)
    for i, w in enumerate(words):
        ins.append((0x20, 0, 0, SKF_NET_OFF + first + 4 * i))  # ld [net + off]
        ins.append((0x15, 0, 2 * (n - i) + 1, w))  # mismatch -> drop
    ins.append((0x28, 0, 0, 0))  # ldh [0]: source port
    ins.append((0x15, 0, 1, remote[1]))
    ins.append((0x06, 0, 0, ACCEPT))
    ins.append((0x06, 0, 0, 0))
    return assemble(ins)


def attach(sock: socket.socket, option: int, program: bytes, level: int = socket.SOL_SOCKET) -> None:
    """Give the kernel a classic BPF ``program`` (a struct sock_fprog) with setsockopt ``level``/``option``."""
    import ctypes

    buf = ctypes.create_string_buffer(program, len(program))
    sock.setsockopt(level, option, struct.pack("HL", len(program) // 8, ctypes.addressof(buf)))


def sockaddr(addr: tuple[str, int], family: int) -> bytes:
    """The raw struct sockaddr_in / sockaddr_in6 of ``addr`` (sendmmsg's msg_name)."""
    if family == socket.AF_INET:
        return struct.pack("=HH4s8x", family, socket.htons(addr[1]), socket.inet_aton(addr[0]))
    return struct.pack("=HHI16sI", family, socket.htons(addr[1]), 0, socket.inet_pton(family, addr[0]), 0)


def address(raw: bytes) -> tuple[str, int]:
    """The (host, port) of a raw struct sockaddr_in / sockaddr_in6 (the inverse of :func:`sockaddr`)."""
    if len(raw) < 4:
        raise ValueError(f"a sockaddr of {len(raw)} bytes is too short")
    family, port = struct.unpack_from("=HH", raw)
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntoa(raw[4:8]), socket.ntohs(port)
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(family, raw[8:24]), socket.ntohs(port)
    raise ValueError(f"a sockaddr of family {family} and {len(raw)} bytes is not an IPv4 or IPv6 address")


def lock_dir() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return runtime if runtime and os.path.isdir(runtime) else tempfile.gettempdir()


def lock_path(host: str, port: int) -> str:
    return os.path.join(lock_dir(), f"pxswitch-{os.getuid()}-udp-{host}-{port}.lock")


def unlock_address(host: str, port: int, fd: int) -> None:
    """Remove the lock file (while still holding it: a newcomer that opened it before fails its LOCK_NB), close."""
    try:
        os.unlink(lock_path(host, port))
    except OSError:
        pass
    os.close(fd)


def lock_address(host: str, port: int) -> int:
    """Hold the lock file of a local UDP address; OSError (address in use) if another pxswitch holds it."""
    path = lock_path(host, port)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise OSError(98, "address already in use by another pxswitch", path) from None
    return fd


def open_pair(
    laddr: tuple[str, int], remote: tuple[str, int] | None, control: tuple[int, ...]
) -> tuple[socket.socket, socket.socket, int]:
    """(data socket, control socket, lock fd) bound to ``laddr`` in one closed reuseport group; with a ``remote``,
    both take only its datagrams."""
    fam = socket.AF_INET6 if ":" in laddr[0] else socket.AF_INET
    probe = socket.socket(fam, socket.SOCK_DGRAM)
    socks: list[socket.socket] = []
    lock = -1
    try:
        probe.bind(laddr)  # no SO_REUSEPORT: an address anybody holds is refused here
        bound = probe.getsockname()[:2]
        lock = lock_address(str(bound[0]), int(bound[1]))
        probe.close()
        for _ in range(2):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if remote is not None:
                attach(s, SO_ATTACH_FILTER, sender_program(remote, fam))
            s.bind(bound)
            s.setblocking(False)
        attach(socks[0], SO_ATTACH_REUSEPORT_CBPF, steer_program(control))
    except BaseException:
        probe.close()
        for s in socks:
            s.close()
        if lock >= 0:
            unlock_address(str(bound[0]), int(bound[1]), lock)
        raise
    return socks[0], socks[1], lock


def resolve(addr: tuple[str, int], family: int) -> Any:
    """``addr`` with its host as a numeric address (the BPF filter compares bytes)."""
    info = socket.getaddrinfo(addr[0], addr[1], family, socket.SOCK_DGRAM)
    return info[0][4][:2]
