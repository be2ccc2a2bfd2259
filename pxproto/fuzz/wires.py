"""Where pxfuzz sends frames: a virtual wire (UDP or stream), a network interface, or a function.

Every wire sends whole Ethernet frames and gives back the frames that came
the other way, so probes can watch a target's answers:

* :class:`UdpWire`: one frame per UDP datagram (QEMU ``-netdev dgram``, pxswitch ``udp`` ports);
* :class:`StreamWire`: a byte stream (UNIX or TCP), each frame after a 4-byte big-endian length
  (QEMU ``-netdev stream``, pxswitch ``stream`` ports);
* :class:`AfPacketWire`: an interface, through an AF_PACKET socket (root);
* :class:`FunctionWire`: an in-process handler, ``bytes -> replies``, for sans-I/O targets in tests.
"""

from __future__ import annotations

import select
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

MAX_FRAME = 65535
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class Wire(Protocol):
    def send(self, frames: Sequence[bytes]) -> int:
        """Send frames in order; return how many went out."""
        ...

    def recv(self, timeout: float) -> list[bytes]:
        """Frames that arrived, waiting up to ``timeout`` seconds for the first."""
        ...

    def close(self) -> None: ...


def _split_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {text!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


class UdpWire:
    """One Ethernet frame per datagram, to ``remote`` (``HOST:PORT``), from ``local``."""

    def __init__(self, remote: str, local: str = "127.0.0.1:0", rcvbuf: int = 4 << 20) -> None:
        self.remote = _split_hostport(remote)
        laddr = _split_hostport(local)
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
            host, port = _split_hostport(address)
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
    raise ValueError(f"target {spec!r}: expected udp:HOST:PORT[@LOCAL], stream:ADDRESS or afpacket:IFNAME")
