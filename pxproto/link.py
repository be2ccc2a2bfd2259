"""Links: how a program attaches to a Parallax network, whole Ethernet frames in and out.

One module for every attachment, in two shapes:

- **Ports** (:class:`Port`, non-blocking, one frame per ``send``, ``recv_batch`` of what is waiting,
  ``fileno`` for a selector): the node server's and the demo's attachment. Opened by
  :func:`open_port` from ``--port``/``--iface``:

  - ``udp:HOST:PORT``  one frame per datagram, to a pxswitch UDP port (rootless);
  - ``stream:PATH``    a UNIX stream socket (or ``stream:HOST:PORT``, TCP), each frame
    preceded by its length as 4 bytes big-endian (QEMU ``-netdev stream`` framing);
  - ``--iface IF``     AF_PACKET on a NIC or veth (root); the port takes the interface's MAC.

- **Wires** (:class:`Wire`, blocking, ``send(frames)``/``recv(timeout)``): where pxfuzz sends frames
  and watches a target's answers. Opened by :func:`open_wire`:

  - :class:`UdpWire`: one frame per UDP datagram (QEMU ``-netdev dgram``, pxswitch ``udp`` ports);
  - :class:`StreamWire`: a byte stream (UNIX or TCP), each frame after a 4-byte big-endian length;
  - :class:`AfPacketWire`: an interface, through an AF_PACKET socket (root);
  - :class:`FunctionWire`: an in-process handler, ``bytes -> replies``, for sans-I/O targets in tests.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from pxproto.fastpath import select as fastpath_select

MAX_FRAME = 65535
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
PACKET_FANOUT = 18
PACKET_FANOUT_CBPF = 6
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000
VIRTUAL_MTU_MAX = MAX_FRAME - 64
"""The largest MTU a virtual wire can be given (``pxkernel --mtu``): a frame must fit one UDP datagram."""
VIRTUAL_MTU = 65000
"""MTU of the rootless virtual wires (UDP, stream): frames of up to about 64 KB (a UDP datagram on loopback
is not fragmented up to 65,507 bytes), so many items share one frame and the costs per frame (a syscall at
each hop, the channel's per-fragment work) are paid once per 64 KB: bench/channel.py, 1400-byte items: 45
a frame against 6 at 9000."""


def free_udp_ports(n: int) -> list[int]:
    """``n`` local UDP port numbers free right now (for test beds and the demo)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# ---------------------------------------------------------------- ports (non-blocking)


class WireError(ValueError):
    """A port or wire spec that cannot be used; the message says why."""


class Port:
    """Base: ``fileno``, ``recv_batch``, ``send``, ``close``; ``mac`` is set for a NIC."""

    mac: bytes | None = None
    shareable = False
    """Whether other processes may send whole frames on this socket too (a datagram socket: yes)."""
    mtu = VIRTUAL_MTU
    """The largest Ethernet payload the wire carries: a virtual wire allows jumbo frames, a NIC says its own."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.errors = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self, max_n: int = 256) -> list[bytes] | None:
        """Frames waiting now; None when the wire is gone."""
        out: list[bytes] = []
        for _ in range(max_n):
            try:
                data = self.sock.recv(MAX_FRAME)
            except BlockingIOError:
                break
            except ConnectionRefusedError:  # nobody on the UDP port yet
                break
            except OSError:
                return None
            out.append(data)
        return out

    def send(self, frame: bytes) -> None:
        try:
            self.sock.send(frame)
        except (BlockingIOError, ConnectionRefusedError):
            self.errors += 1

    def close(self) -> None:
        self.sock.close()


class UdpPort(Port):
    shareable = True
    BUF = 8 << 20
    """Receive and send buffer of each socket."""

    def __init__(self, host: str, port: int) -> None:
        s = self._connected(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port))
        super().__init__(s, f"udp:{host}:{port}")
        self._batch = fastpath_select.compiled("pxproto.switch._afpacket")
        """recvmmsg, 64 datagrams a call (None: one recv each)."""
        self.peer: tuple[str, int] | None = None
        """The switch's address once the socket is unconnected (:meth:`reuseport_group`; None: connected)."""
        self.dest: bytes | None = None
        """``peer`` as a raw struct sockaddr (sendmmsg's msg_name, the heartbeat sender's ``sendto``)."""

    @classmethod
    def _socket(cls, family: int) -> socket.socket:
        """A UDP socket with the port's buffers."""
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cls.BUF)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cls.BUF)
        return s

    @classmethod
    def _connected(cls, family: int, peer: tuple[str, int]) -> socket.socket:
        """The port's one connected, non-blocking socket."""
        s = cls._socket(family)
        s.connect(peer)
        s.setblocking(False)
        return s

    def reuseport_group(self, n: int) -> list[socket.socket]:
        """Make this port's socket the first of an SO_REUSEPORT group of 1 + ``n`` unconnected sockets on its local
        address and return the ``n`` others, in order (the caller attaches the group's program and keeps them open:
        closing one reorders the group); [] when the kernel refuses, with the port as it was.

        A connected socket would take every datagram from the switch before a reuseport program runs, so none is:
        a socket filter on each takes only the switch's datagrams, as ``connect`` did, and frames go out with
        ``sendto`` (:attr:`peer`, :attr:`dest`) from the same address, so the switch sees one sender as before.
        """
        from pxproto.switch import udpsteer

        old = self.sock
        local, peer, fam = old.getsockname()[:2], old.getpeername()[:2], old.family
        old.close()  # first: the group takes its address again
        socks: list[socket.socket] = []
        try:
            for i in range(1 + n):
                s = self._socket(fam)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                udpsteer.attach(s, udpsteer.SO_ATTACH_FILTER, udpsteer.sender_program(peer, fam))
                if i:
                    s.bind(socks[0].getsockname()[:2])
                else:
                    try:
                        s.bind(local)
                    except OSError:
                        s.bind((local[0], 0))  # taken meanwhile: a new port (the switch learns a sender's)
                s.setblocking(False)
        except OSError:
            for s in socks:
                s.close()
            self.sock = self._connected(fam, peer)  # as the port was: one connected socket
            return []
        self.sock, self.peer, self.dest = socks[0], peer, udpsteer.sockaddr(peer, fam)
        return socks[1:]

    def send(self, frame: bytes) -> None:
        if self.peer is None:
            super().send(frame)
            return
        try:
            self.sock.sendto(frame, self.peer)
        except BlockingIOError:
            self.errors += 1

    def recv_batch(self, max_n: int = 256) -> list[bytes] | None:
        if self._batch is None:
            return super().recv_batch(max_n)
        out: list[bytes] = []
        fd = self.sock.fileno()
        try:
            while len(out) < max_n:
                got = self._batch.recv_batch(fd)
                if not got:
                    break
                out += got
        except ConnectionRefusedError:  # nobody on the UDP port yet
            pass
        except OSError:
            return None
        return out


class StreamPort(Port):
    def __init__(self, address: str) -> None:
        host, sep, port = address.rpartition(":")
        if sep and port.isdigit() and not Path(address).exists():
            if not 1 <= int(port) <= 0xFFFF:
                raise WireError(f"--port stream:{address}: the TCP port must be 1..65535, not {port}")
            s = socket.create_connection((host, int(port)))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(address)
        s.setblocking(False)
        self.buf = bytearray()
        self.out = bytearray()
        super().__init__(s, f"stream:{address}")

    def recv_batch(self, max_n: int = 256) -> list[bytes] | None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            data = None
        except OSError:
            return None
        if data == b"":
            return None
        if data:
            self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = struct.unpack_from("!I", self.buf)
            if n > MAX_FRAME:
                return None  # the peer broke the framing: the wire is unusable
            if len(self.buf) < 4 + n:
                break
            out.append(bytes(self.buf[4 : 4 + n]))
            del self.buf[: 4 + n]
        return out

    def send(self, frame: bytes) -> None:
        self.out += struct.pack("!I", len(frame)) + frame
        self.flush()

    def flush(self) -> None:
        while self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                self.sock.setblocking(True)  # keep frames whole: wait for room rather than drop
                try:
                    n = self.sock.send(self.out)
                finally:
                    self.sock.setblocking(False)
            except OSError:
                self.out.clear()
                return
            del self.out[:n]


class PacketPort(Port):
    shareable = True

    def __init__(self, ifname: str) -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((ifname, 0))
        with contextlib.suppress(OSError):
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setblocking(False)
        super().__init__(s, f"iface:{ifname}")
        try:
            self.mtu = int(Path(f"/sys/class/net/{ifname}/mtu").read_text())
        except (OSError, ValueError):
            self.mtu = 1500
        try:
            self.mac = bytes.fromhex(Path(f"/sys/class/net/{ifname}/address").read_text().strip().replace(":", ""))
        except OSError:
            self.mac = None
        self.ifname = ifname

    def fanout_group(self, n: int) -> list[socket.socket]:
        """Put this port's socket first in a PACKET_FANOUT group of type CBPF with ``n`` more packet sockets on
        the interface and return those, in order (the caller attaches the group's program, PACKET_FANOUT_DATA,
        and keeps them open: closing one reorders the group); [] when the kernel refuses, with the port as it was.
        Frames the group's sockets send are not looped back to it (PACKET_FANOUT_FLAG_IGNORE_OUTGOING)."""
        flags = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_IGNORE_OUTGOING
        socks: list[socket.socket] = []
        joined = False
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (flags | PACKET_FANOUT_FLAG_UNIQUEID) << 16)
            joined = True
            group = int(self.sock.getsockopt(SOL_PACKET, PACKET_FANOUT)) & 0xFFFF
            for _ in range(n):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: nothing arrives before bind
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                s.bind((self.ifname, ETH_P_ALL))
                s.setsockopt(SOL_PACKET, PACKET_FANOUT, group | flags << 16)
                s.setblocking(False)
        except OSError:
            for s in socks:
                s.close()
            if joined:  # a packet socket cannot leave its group: the port takes a new socket, as it was
                self.sock.close()
                fresh = PacketPort(self.ifname)
                self.sock = fresh.sock
            return []
        return socks


def open_port(port: str | None, iface: str | None) -> Port:
    """Open the wire a command line names."""
    if iface:
        return PacketPort(iface)
    if not port:
        raise WireError("give --port udp:HOST:PORT, --port stream:PATH or --iface IF")
    kind, _, rest = port.partition(":")
    if kind == "udp":
        host, sep, p = rest.rpartition(":")
        if not sep or not p.isdigit():
            raise WireError(f"--port {port!r}: expected udp:HOST:PORT")
        if not 1 <= int(p) <= 0xFFFF:
            raise WireError(f"--port {port!r}: the UDP port must be 1..65535, not {p}")
        return UdpPort(host.strip("[]") or "127.0.0.1", int(p))
    if kind == "stream":
        if not rest:
            raise WireError(f"--port {port!r}: expected stream:PATH")
        return StreamPort(rest)
    raise WireError(f"--port {port!r}: the type must be udp or stream")


# ---------------------------------------------------------------- wires (blocking, for probing)


class Wire(Protocol):
    def send(self, frames: Sequence[bytes]) -> int:
        """Send frames in order; return how many went out."""
        ...

    def recv(self, timeout: float) -> list[bytes]:
        """Frames that arrived, waiting up to ``timeout`` seconds for the first."""
        ...

    def close(self) -> None: ...


def split_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise WireError(f"address {text!r}: expected HOST:PORT")
    if int(port) > 0xFFFF:
        raise WireError(f"address {text!r}: the port must be 0..65535")
    return host.strip("[]") or "127.0.0.1", int(port)


class UdpWire:
    """One Ethernet frame per datagram, to ``remote`` (``HOST:PORT``), from ``local``."""

    def __init__(self, remote: str, local: str = "127.0.0.1:0", rcvbuf: int = 4 << 20) -> None:
        self.remote = split_hostport(remote)
        laddr = split_hostport(local)
        fam = socket.AF_INET6 if ":" in self.remote[0] else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
        self.sock.bind(laddr)
        self.sent_bytes = 0

    @property
    def local(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]  # type: ignore[no-any-return]

    def send(self, frames: Sequence[bytes]) -> int:
        for f in frames:
            self.sock.sendto(f, self.remote)
            self.sent_bytes += len(f)
        return len(frames)

    def recv(self, timeout: float) -> list[bytes]:
        out: list[bytes] = []
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        while ready:
            try:
                out.append(self.sock.recv(MAX_FRAME + 64, socket.MSG_DONTWAIT))
            except BlockingIOError:
                break
        return out

    def close(self) -> None:
        self.sock.close()


class StreamWire:
    """Frames on a stream socket, each after a 4-byte big-endian length.

    ``address`` is a UNIX socket path or ``HOST:PORT``.  A zero-length frame
    cannot be sent this way (the length prefix 0 means a broken stream):
    :meth:`send` refuses it rather than desynchronise the peer.
    """

    def __init__(self, address: str, connect_timeout: float = 5.0) -> None:
        if "/" in address or not address.rpartition(":")[2].isdigit():
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = address
        else:
            host, port = split_hostport(address)
            self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            target = (host, port)
        self.sock.settimeout(connect_timeout)
        self.sock.connect(target)
        self.sock.settimeout(None)
        self._in = bytearray()

    def send(self, frames: Sequence[bytes]) -> int:
        out = bytearray()
        for f in frames:
            if not 0 < len(f) <= MAX_FRAME:
                raise ValueError(f"a stream wire carries frames of 1..{MAX_FRAME} bytes, not {len(f)}")
            out += len(f).to_bytes(4, "big")
            out += f
        self._sendall(bytes(out))
        return len(frames)

    def _sendall(self, data: bytes) -> None:
        # Keep draining what the peer sends while we write, or two full buffers deadlock.
        view = memoryview(data)
        while view:
            _, writable, _ = select.select([], [self.sock], [], 0.05)
            if writable:
                n = self.sock.send(view)
                view = view[n:]
            else:
                self._read_some(0.0)

    def _read_some(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        if not ready:
            return False
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise ConnectionError("the peer closed the stream")
        self._in += chunk
        return True

    def recv(self, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        out: list[bytes] = []
        while True:
            buf = self._in
            pos = 0
            while len(buf) - pos >= 4:
                n = int.from_bytes(buf[pos : pos + 4], "big")
                if len(buf) - pos - 4 < n:
                    break
                out.append(bytes(buf[pos + 4 : pos + 4 + n]))
                pos += 4 + n
            del buf[:pos]
            if out:
                if pos and self._read_some(0.0):  # more is already here: take the whole frames in it too
                    continue
                return out
            left = deadline - time.monotonic()
            if left <= 0 or not self._read_some(left):
                return out

    def close(self) -> None:
        self.sock.close()


class AfPacketWire:
    """Raw frames on a network interface (needs root or CAP_NET_RAW)."""

    def __init__(self, interface: str, rcvbuf: int = 8 << 20) -> None:
        self.interface = interface
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((interface, 0))
        try:
            with open(f"/sys/class/net/{interface}/mtu") as f:
                self.mtu = int(f.read())
        except (OSError, ValueError):
            self.mtu = 1500
        self.oversize = 0
        """Frames longer than the interface takes (MTU + Ethernet header), not sent."""

    @property
    def max_frame(self) -> int:
        return self.mtu + 14

    def send(self, frames: Sequence[bytes]) -> int:
        sent = 0
        for f in frames:
            if len(f) < 14:
                # The kernel will not put a frame shorter than its link header on the wire.
                f = f + bytes(14 - len(f))
            if len(f) > self.max_frame:
                self.oversize += 1
                continue
            self.sock.send(f)
            sent += 1
        return sent

    def recv(self, timeout: float) -> list[bytes]:
        out: list[bytes] = []
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        while ready:
            try:
                data, addr = self.sock.recvfrom(MAX_FRAME + 64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if addr[2] != PACKET_OUTGOING:
                out.append(data)
        return out

    def close(self) -> None:
        self.sock.close()


class FunctionWire:
    """A target in this process: ``handler(frame)`` returns the frames it answers with."""

    def __init__(self, handler: Callable[[bytes], Iterable[bytes] | None]) -> None:
        self.handler = handler
        self._replies: deque[bytes] = deque()

    def send(self, frames: Sequence[bytes]) -> int:
        for f in frames:
            self._replies.extend(self.handler(f) or ())
        return len(frames)

    def recv(self, timeout: float) -> list[bytes]:
        out = list(self._replies)
        self._replies.clear()
        return out

    def close(self) -> None:
        pass


def open_wire(spec: str) -> Wire:
    """A wire from its command-line form: ``udp:HOST:PORT[@LOCAL]``, ``stream:ADDRESS``, ``afpacket:IFNAME``."""
    kind, _, rest = spec.partition(":")
    if kind == "udp":
        remote, _, local = rest.partition("@")
        return UdpWire(remote, local or "127.0.0.1:0")
    if kind == "stream":
        return StreamWire(rest)
    if kind in ("afpacket", "interface", "if"):
        return AfPacketWire(rest)
    raise WireError(f"target {spec!r}: expected udp:HOST:PORT[@LOCAL], stream:ADDRESS or afpacket:IFNAME")
