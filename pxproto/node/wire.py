"""The server's attachment to the network: one port, whole Ethernet frames in and out.

- ``udp:HOST:PORT``  one frame per datagram, to a pxswitch UDP port (rootless);
- ``stream:PATH``    a UNIX stream socket (or ``stream:HOST:PORT``, TCP), each frame
  preceded by its length as 4 bytes big-endian (QEMU ``-netdev stream`` framing);
- ``--iface IF``     AF_PACKET on a NIC or veth (root); the server takes the interface's MAC.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path

MAX_FRAME = 65535
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23


class WireError(ValueError):
    """A port spec that cannot be used; the message says why."""


class Wire:
    """Base: ``fileno``, ``recv_batch``, ``send``, ``close``; ``mac`` is set for a NIC."""

    mac: bytes | None = None
    shareable = False
    """Whether other processes may send whole frames on this socket too (a datagram socket: yes)."""

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


class UdpWire(Wire):
    shareable = True

    def __init__(self, host: str, port: int) -> None:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        s.connect((host, port))
        s.setblocking(False)
        super().__init__(s, f"udp:{host}:{port}")


class StreamWire(Wire):
    def __init__(self, address: str) -> None:
        host, sep, port = address.rpartition(":")
        if sep and port.isdigit() and not Path(address).exists():
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


class PacketWire(Wire):
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
            self.mac = bytes.fromhex(Path(f"/sys/class/net/{ifname}/address").read_text().strip().replace(":", ""))
        except OSError:
            self.mac = None


def open_wire(port: str | None, iface: str | None) -> Wire:
    """Open the wire a command line names."""
    if iface:
        return PacketWire(iface)
    if not port:
        raise WireError("give --port udp:HOST:PORT, --port stream:PATH or --iface IF")
    kind, _, rest = port.partition(":")
    if kind == "udp":
        host, sep, p = rest.rpartition(":")
        if not sep or not p.isdigit():
            raise WireError(f"--port {port!r}: expected udp:HOST:PORT")
        return UdpWire(host.strip("[]") or "127.0.0.1", int(p))
    if kind == "stream":
        if not rest:
            raise WireError(f"--port {port!r}: expected stream:PATH")
        return StreamWire(rest)
    raise WireError(f"--port {port!r}: the type must be udp or stream")
