"""Port drivers: each moves whole Ethernet frames between the switch core and one wire.

Every driver is non-blocking and has the same small interface
(:class:`Port`): ``fileno()`` to poll, ``recv_batch()`` for the frames that
are waiting, ``send_batch()`` that takes as many frames as the wire will
accept now, ``close()``.  A port that vanishes (interface deleted, peer
closed) raises :class:`PortGone` from any of them; the daemon reports it and
keeps the other ports forwarding.  Bad bytes from a peer are counted in
``errors`` and never raise.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pxproto.fastpath import select
from pxproto.link import VIRTUAL_MTU
from pxproto.switch.offload import PLAIN as PLAIN_VNET_HDR
from pxproto.switch.offload import VNET_HDR_LEN
from pxproto.switch.offload import complete as complete_offload

MAX_FRAME = 65535
"""Longest frame any port takes (QEMU's stream and dgram backends stay under it)."""
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
VXLAN_PORT = 4789
VXLAN_FLAG_I = 0x08
VXLAN_HDR = struct.Struct("!B3xI")  # flags, reserved(3), VNI << 8 | reserved(1)
GONE_ERRNOS = {errno.ENETDOWN, errno.ENXIO, errno.ENODEV, errno.EBADF, errno.ECONNRESET, errno.EPIPE}


def port_error(exc: BaseException) -> str:
    """The reason an open failed, in one line (``[Errno 98] Address already in use`` -> ``address already in use``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:] + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


def claim_unix_path(path: str) -> None:
    """Make ``path`` free for a listening UNIX socket: refuse one a live process listens on (or any other file);
    remove a stale socket left by a process that ended."""
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, "exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        if st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, f"stale socket owned by uid {st.st_uid}", path) from None
        os.unlink(path)  # nobody listens: a leftover
        return
    except OSError:
        pass
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "in use by another live process (another switch?)", path)


class PortGone(Exception):
    """The port's wire is gone: its interface was deleted or its peer closed."""


def _addr(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a socket address."""
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"address {text!r}: expected HOST:PORT")
        host, port = text, str(default_port)
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"address {text!r}: port {port!r} is not a number") from None
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"address {text!r}: port {number} out of range")
    return host.strip("[]") or "0.0.0.0", number


class Port:
    """Base of every driver."""

    kind = "port"
    mtu = 1500
    """The MTU the port takes when its spec gives none."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: dict[str, int] = {}

    def count(self, what: str, n: int = 1) -> None:
        self.errors[what] = self.errors.get(what, 0) + n

    def fileno(self) -> int | None:
        raise NotImplementedError

    def filenos(self) -> tuple[int, ...]:
        """Every descriptor to poll for input; the first is also polled for output."""
        fd = self.fileno()
        return () if fd is None else (fd,)

    def recv_batch(self, max_n: int = 64) -> list[bytes]:
        raise NotImplementedError

    def send_batch(self, frames: list[bytes]) -> int:
        raise NotImplementedError

    def wants_write(self) -> bool:
        """True while bytes the port accepted are still waiting for the wire."""
        return False

    def flush(self) -> None:
        """Push bytes already accepted (stream ports)."""

    def check(self) -> None:
        """Raise PortGone if the wire has vanished (polled about once a second)."""

    @property
    def up(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "up": self.up, "errors": dict(self.errors)}

    def close(self) -> None:
        raise NotImplementedError


class DatagramPort(Port):
    """Shared by the ports that carry one frame per datagram."""

    sock: socket.socket

    def fileno(self) -> int | None:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _recv(self, max_n: int) -> list[tuple[bytes, Any]]:
        out = []
        for _ in range(max_n):
            try:
                out.append(self.sock.recvfrom(MAX_FRAME + 64))
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:  # an ICMP error for an earlier send
                self.count("icmp_refused")
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    raise PortGone(f"{self.name}: {exc.strerror}") from None
                self.count(f"recv_{errno.errorcode.get(exc.errno or 0, 'error').lower()}")
                break
        return out

    def _sendto(self, data: bytes, addr: Any) -> bool:
        """False when the socket is full now."""
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionRefusedError:
            self.count("icmp_refused")
        except OSError as exc:
            if exc.errno in GONE_ERRNOS:
                raise PortGone(f"{self.name}: {exc.strerror}") from None
            if exc.errno == errno.ENOBUFS:
                return False
            self.count(f"send_{errno.errorcode.get(exc.errno or 0, 'error').lower()}")
        return True


class UdpPort(DatagramPort):
    """One Ethernet frame per UDP datagram: QEMU's ``-netdev dgram`` (and ``-netdev socket,udp=``).

    With no ``remote``, frames go to the address the last datagram came from.
    """

    mtu = VIRTUAL_MTU
    """A virtual wire carries the jumbo frames the node sends on it (pxproto.link.VIRTUAL_MTU)."""

    kind = "udp"

    def __init__(self, name: str, local: str, remote: str | None = None) -> None:
        super().__init__(name)
        laddr = _addr(local)
        fam = socket.AF_INET6 if ":" in laddr[0] else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        # No SO_REUSEADDR: a UDP port another process holds is an error, not a silent takeover.
        try:
            self.sock.bind(laddr)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.remote: Any = _addr(remote) if remote else None
        self._fixed_remote = remote is not None
        self._batch: Any = None
        if remote is not None:
            # Connected: the kernel drops other senders, and the compiled layer moves up to 64 datagrams per
            # recvmmsg/sendmmsg.
            try:
                self.sock.connect(_addr(remote))
            except OSError:
                self.sock.close()
                raise
            self._batch = select.compiled("pxproto.switch._afpacket")

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]  # type: ignore[no-any-return]

    def recv_batch(self, max_n: int = 64) -> list[bytes]:
        if self._batch is not None:
            try:
                return self._batch.recv_batch(self.sock.fileno(), max_n)  # type: ignore[no-any-return]
            except ConnectionRefusedError:  # an ICMP error for an earlier send
                self.count("icmp_refused")
                return []
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    raise PortGone(f"{self.name}: {exc.strerror}") from None
                self.count(f"recv_{errno.errorcode.get(exc.errno or 0, 'error').lower()}")
                return []
        out = []
        for data, addr in self._recv(max_n):
            if self._fixed_remote and addr[:2] != self.remote[:2]:
                self.count("foreign_sender")
                continue
            self.remote = addr
            out.append(data)
        return out

    def send_batch(self, frames: list[bytes]) -> int:
        if self.remote is None:
            self.count("no_peer_yet", len(frames))
            return len(frames)  # nobody to send to: consumed, counted
        if self._batch is not None and frames:
            try:
                return self._batch.send_batch(self.sock.fileno(), frames)  # type: ignore[no-any-return]
            except ConnectionRefusedError:
                self.count("icmp_refused")
                return 1
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    raise PortGone(f"{self.name}: {exc.strerror}") from None
                self.count(f"send_{errno.errorcode.get(exc.errno or 0, 'error').lower()}")
                return 1  # e.g. EMSGSIZE: that frame is dropped
        for i, f in enumerate(frames):
            if not self._sendto(f, self.remote):
                return i
        return len(frames)


class StreamPort(Port):
    """Frames on a byte stream, each after a 4-byte big-endian length: QEMU's ``-netdev stream``.

    ``listen`` waits for one peer at a time (a new one may come after the
    last one closed); otherwise the port connects.  ``address`` is a path
    (UNIX socket) or ``host:port`` (TCP).
    """

    mtu = VIRTUAL_MTU
    """A virtual wire carries the jumbo frames the node sends on it (pxproto.link.VIRTUAL_MTU)."""

    kind = "stream"
    OUT_LIMIT = 1 << 20

    def __init__(self, name: str, address: str, listen: bool = False) -> None:
        super().__init__(name)
        self.listen = listen
        self.unix = "/" in address or not address.rpartition(":")[2].isdigit()
        self._in = bytearray()
        self._out = bytearray()
        self.conn: socket.socket | None = None
        self.server: socket.socket | None = None
        self.address = address
        if self.unix:
            fam, addr = socket.AF_UNIX, address
        else:
            host, port = _addr(address)
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            addr = (host, port)  # type: ignore[assignment]
        if listen:
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                if self.unix:
                    claim_unix_path(address)  # a live listener's path is refused, a stale one replaced
                else:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TCP: TIME_WAIT only, never a takeover
                s.bind(addr)
                s.listen(1)
            except OSError:
                s.close()
                raise
            s.setblocking(False)
            self.server = s
            if not self.unix:
                self.address = "{}:{}".format(*s.getsockname()[:2])
        else:
            c = socket.socket(fam, socket.SOCK_STREAM)
            try:
                c.connect(addr)
            except OSError:
                c.close()
                raise
            self._adopt(c)

    def _adopt(self, c: socket.socket) -> None:
        c.setblocking(False)
        if c.family != socket.AF_UNIX:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = c
        self._in.clear()
        self._out.clear()

    @property
    def up(self) -> bool:
        return self.conn is not None

    def fileno(self) -> int | None:
        if self.conn is not None:
            return self.conn.fileno()
        return self.server.fileno() if self.server is not None else None

    def _lost(self, why: str) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.count(why)
        if not self.listen:
            raise PortGone(f"{self.name}: {why}")

    def recv_batch(self, max_n: int = 64) -> list[bytes]:
        if self.conn is None:
            if self.server is None:
                return []
            try:
                c, _ = self.server.accept()
            except (BlockingIOError, InterruptedError):
                return []
            self._adopt(c)
            return []
        try:
            chunk = self.conn.recv(262144)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            self._lost(f"peer_error_{errno.errorcode.get(exc.errno or 0, 'unknown').lower()}")
            return []
        if not chunk:
            self._lost("peer_closed")
            return []
        buf = self._in
        buf += chunk
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= 4:
            n = int.from_bytes(buf[pos : pos + 4], "big")
            if n == 0 or n > MAX_FRAME:
                # The stream is out of step: nothing after this can be trusted.
                self.count("bad_length_prefix")
                self._lost("framing_lost")
                return out
            if len(buf) - pos - 4 < n:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        del buf[:pos]
        return out

    def send_batch(self, frames: list[bytes]) -> int:
        if self.conn is None:
            return len(frames)  # no peer: the frames have nowhere to go
        taken = 0
        for f in frames:
            if len(self._out) >= self.OUT_LIMIT:
                break
            self._out += len(f).to_bytes(4, "big")
            self._out += f
            taken += 1
        self.flush()
        return taken

    def wants_write(self) -> bool:
        return bool(self._out) and self.conn is not None

    def flush(self) -> None:
        if self.conn is None or not self._out:
            return
        try:
            sent = self.conn.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"peer_error_{errno.errorcode.get(exc.errno or 0, 'unknown').lower()}")
            return
        del self._out[:sent]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.server is not None:
            self.server.close()
            self.server = None
            if self.unix and os.path.exists(self.address):
                os.unlink(self.address)


class TapPort(Port):
    """A Linux TAP device (created if missing, brought up); one frame per read/write."""

    kind = "tap"

    def __init__(self, name: str, ifname: str) -> None:
        super().__init__(name)
        if not 0 < len(ifname.encode()) < 16:
            raise ValueError(f"TAP name {ifname!r}: 1 to 15 bytes")
        self.ifname = ifname
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        try:
            fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH22x", ifname.encode(), IFF_TAP | IFF_NO_PI))
        except OSError:
            os.close(self.fd)
            raise
        set_link_up(ifname)

    def fileno(self) -> int | None:
        return self.fd

    def recv_batch(self, max_n: int = 64) -> list[bytes]:
        out: list[bytes] = []
        for _ in range(max_n):
            try:
                out.append(os.read(self.fd, MAX_FRAME))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in GONE_ERRNOS or exc.errno == errno.EIO:
                    raise PortGone(f"{self.name}: {exc.strerror}") from None
                self.count("read_error")
                break
        return out

    def send_batch(self, frames: list[bytes]) -> int:
        for i, f in enumerate(frames):
            try:
                os.write(self.fd, f)
            except (BlockingIOError, InterruptedError):
                return i
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    raise PortGone(f"{self.name}: {exc.strerror}") from None
                self.count("write_error")  # e.g. EIO while the link is down
        return len(frames)

    def close(self) -> None:
        os.close(self.fd)


def set_link_up(ifname: str) -> None:
    """``ip link set IFNAME up`` through SIOCGIFFLAGS/SIOCSIFFLAGS."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", ifname.encode(), 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH22x", ifname.encode(), flags | iff_up))


def ethertype_filter(ethertypes: tuple[int, ...], accept: bool) -> bytes:
    """A classic BPF program: frames whose EtherType is in ``ethertypes`` pass if ``accept``, the rest if not."""
    snap = 0x40000
    n = len(ethertypes)
    prog = [(0x28, 0, 0, 12)]  # ldh [12]
    for i, et in enumerate(ethertypes):
        prog.append((0x15, n - i, 0, et))  # jeq et -> the "match" return
    prog.append((0x06, 0, 0, 0 if accept else snap))  # no match
    prog.append((0x06, 0, 0, snap if accept else 0))  # match
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """SO_ATTACH_FILTER with a sock_fprog pointing at ``program``."""
    import ctypes

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def control_ethertypes() -> tuple[int, ...]:
    from pxproto.wire import ethertypes

    m = ethertypes.current()
    return (m.signaling, m.discovery, m.heartbeat)


DEFAULT_RING = 3
"""An AF_PACKET port's data socket receives into a TPACKET_V3 ring unless told otherwise: in bench/switch.py it
forwards about twice the frames of recvmmsg (the copy into the ring happens in the sender's softirq, not on the
switch's CPU), at the cost of up to the 1 ms block timeout of latency for data (control frames have their own
socket and are read at once)."""


def _compiled() -> bool:
    return select.compiled("pxproto.switch._afpacket") is not None


class AfPacketPort(Port):
    """A Linux interface (veth, NIC) through AF_PACKET sockets, promiscuous.

    Two sockets, split by a BPF filter on the EtherType: signaling, discovery
    and heartbeat frames get their own receive buffer and are read first, so
    a data flood cannot push them out before the switch sees them.  Batched
    with recvmmsg/sendmmsg when the compiled ``_afpacket`` module is built
    (or, with ``ring`` 2 or 3, the data socket receives into a PACKET_MMAP
    ring); the daemon's fast loop then forwards between these ports at C
    level.  The data socket's buffer is small on purpose (``rcvbuf``): when
    the switch falls behind, a deep buffer only turns into latency.

    Offloads (``offload``, on by default): the data socket uses
    PACKET_VNET_HDR, so a TCP sender's partial checksums and 64 KiB GSO
    segments (a veth peer's, or a QEMU guest's on a tap with vnet_hdr) arrive
    described; between two such ports the header is passed on and the kernel
    cuts and checksums on output, towards any other port
    :mod:`pxproto.switch.offload` does it in software.  With ``offload=false``
    such frames are forwarded as the socket shows them: partial checksums and
    oversize segments, which is why TCP stalled before.
    """

    kind = "afpacket"

    CTRL_BUF = 4 << 20
    """Receive buffer of the control socket: deep, so a burst of signaling waits rather than drops."""

    TX_RING = 1 << 20
    """Bytes of the transmit ring (``txring``): 512 slots of 2 KiB."""

    def __init__(
        self,
        name: str,
        ifname: str,
        rcvbuf: int = 1 << 20,
        ring: int | None = None,
        offload: bool = True,
        txring: bool | None = None,
    ) -> None:
        super().__init__(name)
        self.vnet = offload
        if rcvbuf < 4096:
            raise ValueError(f"port {name}: rcvbuf {rcvbuf}: at least 4096 bytes")
        if ring is None:  # TPACKET_V3 where it is built: the kernel fills blocks in the sender's softirq
            ring = DEFAULT_RING if _compiled() else 0
        if ring not in (0, 2, 3):
            raise ValueError(f"port {name}: ring {ring}: 0 (recvmmsg), 2 (TPACKET_V2) or 3 (TPACKET_V3)")
        self.ring: Any = None
        self._drops = 0
        self.ifname = ifname
        try:
            self.ifindex = socket.if_nametoindex(ifname)
        except OSError:
            raise OSError(errno.ENODEV, f"no interface {ifname!r}") from None
        self.mtu = self._if_mtu()
        self.rcvbuf = rcvbuf
        ctrl = control_ethertypes()
        self._ctrl_program = ethertype_filter(ctrl, True)
        self.ctrl = self._open(self._ctrl_program, self.CTRL_BUF)  # control frames are never offloaded
        self._batch: Any = select.compiled("pxproto.switch._afpacket")
        if ring and self._batch is None:
            self.ctrl.close()
            raise ValueError(f"port {name}: ring {ring} needs the compiled pxproto.switch._afpacket")
        if txring is None:  # where it is built: the fast loop sends through a PACKET_TX_RING
            txring = self._batch is not None
        if txring and self._batch is None:
            self.ctrl.close()
            raise ValueError(f"port {name}: txring needs the compiled pxproto.switch._afpacket")
        self.tx: Any = None  # the fast loop's PACKET_TX_RING, on a socket of its own
        self.tx_sock: socket.socket | None = None
        try:
            self.sock = self._open(ethertype_filter(ctrl, False), rcvbuf, ring)
            if txring and self._batch is not None:
                self.tx_sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
                self.tx = self._batch.TxRing(self.tx_sock.fileno(), self.mtu, self.TX_RING)
                self.tx_sock.bind((ifname, 0))
        except OSError:
            self.tx = None
            for s in (self.ctrl, getattr(self, "sock", None), self.tx_sock):
                if s is not None:
                    s.close()
            raise
        self.fd = self.sock.fileno()

    def _open(self, program: bytes, bufsize: int, ring: int = 0) -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: nothing arrives before bind
        try:
            attach_filter(s, program)
            vnet = self.vnet and program is not self._ctrl_program
            if ring:
                # the ring's size plays the part of the receive buffer: it bounds the backlog
                frame = 1 << 17 if vnet and ring == 3 else self._ring_frame()  # V3: room for a 64 KiB segment
                self.ring = self._batch.PacketRing(s.fileno(), ring, max(bufsize, 1 << 20), 1, frame, vnet)
            elif vnet:
                s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            s.bind((self.ifname, ETH_P_ALL))
            mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            for opt in (PACKET_IGNORE_OUTGOING, PACKET_QDISC_BYPASS):
                try:
                    s.setsockopt(SOL_PACKET, opt, 1)
                except OSError:
                    pass
            for opt, force, size in ((socket.SO_RCVBUF, 33, bufsize), (socket.SO_SNDBUF, 32, self.CTRL_BUF)):
                try:
                    s.setsockopt(socket.SOL_SOCKET, force, size)  # SO_*BUFFORCE: root may pass rmem_max
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, opt, size)
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        return s

    def _if_mtu(self) -> int:
        try:
            with open(f"/sys/class/net/{self.ifname}/mtu") as f:
                return int(f.read())
        except (OSError, ValueError):
            return 1500

    def _ring_frame(self) -> int:
        """A ring slot that holds the interface's largest frame with the ring's headers (about 100 bytes)."""
        size = 2048
        while size < self.mtu + 18 + 128 and size < 1 << 17:
            size *= 2
        return size

    def fileno(self) -> int | None:
        return self.fd

    def filenos(self) -> tuple[int, ...]:
        return (self.fd, self.ctrl.fileno())

    def _gone(self, exc: OSError) -> PortGone:
        return PortGone(f"{self.name}: {self.ifname}: {exc.strerror}")

    def _recv_one(self, s: socket.socket, max_n: int) -> list[bytes]:
        raw: list[bytes]
        if self.ring is not None and s is self.sock:
            raw = self.ring.recv_batch(max_n)
        elif self._batch is not None:
            raw = self._batch.recv_batch(s.fileno(), max_n)
        else:
            raw = []
            for _ in range(max_n):
                try:
                    raw.append(s.recv(MAX_FRAME + VNET_HDR_LEN))
                except (BlockingIOError, InterruptedError):
                    break
        if not (self.vnet and s is self.sock):
            return raw
        out: list[bytes] = []
        for r in raw:
            try:
                out.extend(complete_offload(r[:VNET_HDR_LEN], r[VNET_HDR_LEN:]))
            except (ValueError, IndexError):
                self.count("offload_error")
        return out

    def recv_batch(self, max_n: int = 64) -> list[bytes]:
        try:
            return self._recv_one(self.ctrl, max_n) + self._recv_one(self.sock, max_n)
        except OSError as exc:
            if exc.errno in GONE_ERRNOS:
                raise self._gone(exc) from None
            self.count("recv_error")
            return []

    def send_batch(self, frames: list[bytes]) -> int:
        if self.vnet:
            frames = [PLAIN_VNET_HDR + f for f in frames]
        try:
            if self._batch is not None:
                return self._batch.send_batch(self.fd, frames)  # type: ignore[no-any-return]
            for i, f in enumerate(frames):
                try:
                    self.sock.send(f)
                except (BlockingIOError, InterruptedError):
                    return i
            return len(frames)
        except OSError as exc:
            if exc.errno in GONE_ERRNOS:
                raise self._gone(exc) from None
            if exc.errno in (errno.ENOBUFS, errno.EAGAIN):
                return 0
            self.count("send_error")  # e.g. EMSGSIZE: the frame is dropped
            return 1

    def check(self) -> None:
        try:
            if socket.if_nametoindex(self.ifname) == self.ifindex:
                return
        except OSError:
            pass
        raise PortGone(f"{self.name}: interface {self.ifname} vanished")

    def kernel_drops(self) -> int:
        """Frames the kernel dropped because the data socket's buffer (or ring) was full, since the port opened."""
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        except OSError:
            return self._drops
        self._drops += struct.unpack_from("II", raw)[1]  # tp_packets, tp_drops; reading resets them
        return self._drops

    def describe(self) -> dict[str, Any]:
        ring = f"TPACKET_V{self.ring.version}, {self.ring.slots} slots" if self.ring is not None else None
        return {
            **super().describe(),
            "rcvbuf": self.rcvbuf,
            "ring": ring,
            "txring": f"TPACKET_V2, {self.tx.slots} slots" if self.tx is not None else None,
            "offload": "virtio_net_hdr" if self.vnet else "off",
            "kernel_drops": self.kernel_drops(),
        }

    def close(self) -> None:
        self.ring = self.tx = None  # unmapped before the sockets close
        self.ctrl.close()
        self.sock.close()
        if self.tx_sock is not None:
            self.tx_sock.close()


class VxlanPort(DatagramPort):
    """A VXLAN (RFC 7348) uplink: Ethernet frames in UDP to remote VTEPs, one VNI.

    Floods go to every remote (head-end replication); a unicast frame goes to
    the VTEP its destination MAC was last seen behind, for ``aging`` seconds
    after it was last seen (a bounded table, oldest out first); after that it
    is flooded again, so a MAC that moved to another VTEP is found.
    """

    kind = "vxlan"
    LEARN_CAP = 4096

    def __init__(
        self,
        name: str,
        local: str,
        remotes: list[str],
        vni: int,
        aging: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name)
        if not 0 <= vni < 1 << 24:
            raise ValueError(f"VNI {vni}: must fit 24 bits")
        if aging <= 0:
            raise ValueError(f"port {name}: aging {aging}: must be positive")
        self.vni = vni
        self.aging = aging
        self.clock = clock
        laddr = _addr(local, VXLAN_PORT)
        self.sock = socket.socket(socket.AF_INET6 if ":" in laddr[0] else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(laddr)  # no SO_REUSEADDR, as for UdpPort
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.remotes = [_addr(r, VXLAN_PORT) for r in remotes]
        self.where: OrderedDict[bytes, tuple[tuple[str, int], float]] = OrderedDict()
        """Source MAC -> (VTEP, when last seen), least recently seen first."""
        self._hdr = VXLAN_HDR.pack(VXLAN_FLAG_I, vni << 8)

    def recv_batch(self, max_n: int = 64) -> list[bytes]:
        out = []
        now = self.clock()
        for data, addr in self._recv(max_n):
            if len(data) < VXLAN_HDR.size + 14:
                self.count("vxlan_truncated")
                continue
            flags, word = VXLAN_HDR.unpack_from(data)
            if not flags & VXLAN_FLAG_I:
                self.count("vxlan_no_vni_flag")
                continue
            if word >> 8 != self.vni:
                self.count("vxlan_other_vni")
                continue
            inner = data[VXLAN_HDR.size :]
            if not inner[6] & 1:
                # Remote VTEPs reply to the port they sent from; we send to their
                # listening port (4789 or the configured one).
                src = inner[6:12]
                self.where[src] = ((addr[0], self._remote_port(addr[0])), now)
                self.where.move_to_end(src)
                if len(self.where) > self.LEARN_CAP:
                    self.where.popitem(last=False)
            out.append(inner)
        return out

    def _remote_port(self, host: str) -> int:
        for h, p in self.remotes:
            if h == host:
                return p
        return VXLAN_PORT

    def vtep(self, mac: bytes) -> tuple[str, int] | None:
        """Where a unicast frame to ``mac`` goes, or None (flood) when unknown or aged out."""
        hit = self.where.get(mac)
        if hit is None:
            return None
        if self.clock() - hit[1] >= self.aging:
            del self.where[mac]
            return None
        return hit[0]

    def expire(self) -> int:
        """Drop every entry older than ``aging``; return how many."""
        limit = self.clock() - self.aging
        n = 0
        while self.where:
            mac, (_, seen) = next(iter(self.where.items()))
            if seen > limit:
                break
            del self.where[mac]
            n += 1
        return n

    def check(self) -> None:
        self.expire()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "vteps_learned": len(self.where)}

    def send_batch(self, frames: list[bytes]) -> int:
        for i, f in enumerate(frames):
            dst = self.vtep(f[0:6]) if not f[0] & 1 else None
            data = self._hdr + f
            if dst is not None:
                if not self._sendto(data, dst):
                    return i
            else:
                for r in self.remotes:
                    if not self._sendto(data, r):
                        return i
        return len(frames)
