"""Socket-carried ports: frames over UDP (QEMU ``-netdev dgram``), a byte stream (QEMU ``-netdev stream``)
and VXLAN to remote VTEPs."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pxproto.fastpath import select
from pxproto.link import VIRTUAL_MTU
from pxproto.switch import udpsteer
from pxproto.switch.linkports import control_ethertypes
from pxproto.switch.portbase import GONE_ERRNOS, MAX_FRAME, DatagramPort, Port, PortGone, claim_unix_path

VXLAN_PORT = 4789
VXLAN_FLAG_I = 0x08
VXLAN_HDR = struct.Struct("!B3xI")  # flags, reserved(3), VNI << 8 | reserved(1)


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


class UdpPort(DatagramPort):
    """One Ethernet frame per UDP datagram: QEMU's ``-netdev dgram`` (and ``-netdev socket,udp=``).

    With no ``remote``, frames go to the address the last datagram came from.  Both kinds are read and written by
    the daemon's compiled loop (recvmmsg/sendmmsg, 64 a call) once a destination is known: at once with a fixed
    ``remote``; without one, from the first datagram on, the loop then following the sender of the last datagram.
    """

    mtu = VIRTUAL_MTU
    """A virtual wire carries the jumbo frames the node sends on it (pxproto.link.VIRTUAL_MTU)."""

    kind = "udp"

    BUF = 4 << 20
    """Receive and send buffer of the (data) socket."""

    CTRL_BUF = 4 << 20
    """Receive and send buffer of the control socket: its own room, which data never fills."""

    def __init__(self, name: str, local: str, remote: str | None = None) -> None:
        super().__init__(name)
        laddr = _addr(local)
        fam = socket.AF_INET6 if ":" in laddr[0] else socket.AF_INET
        fixed: tuple[str, int] | None = udpsteer.resolve(_addr(remote), fam) if remote else None
        self.remote: Any = fixed
        self._fixed_remote = remote is not None
        self._family = fam
        self.dest: bytes | None = None
        """The raw sockaddr frames go to (None: no remote learned yet)."""
        self._batch: Any = select.compiled("pxproto.switch._afpacket")
        # Two sockets, control frames steered to their own in the kernel (no SO_REUSEADDR: a UDP port another
        # process holds is an error, not a silent takeover).
        self.sock, ctrl, self._lock = udpsteer.open_pair(laddr, fixed, control_ethertypes())
        self.ctrl = ctrl
        if fixed is not None:
            # The compiled layer moves up to 64 datagrams per recvmmsg/sendmmsg, the kernel drops other senders.
            self.dest = udpsteer.sockaddr(fixed, fam)
        for s, size in ((self.sock, self.BUF), (self.ctrl, self.CTRL_BUF)):
            for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):
                try:  # room for a burst
                    s.setsockopt(socket.SOL_SOCKET, force, size)  # SO_*BUFFORCE: root may pass rmem_max
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, opt, size)

    def filenos(self) -> tuple[int, ...]:
        return (self.sock.fileno(), self.ctrl.fileno())

    def close(self) -> None:
        host, port = self.address if self._lock >= 0 else ("", 0)
        self.sock.close()
        self.ctrl.close()
        if self._lock >= 0:
            udpsteer.unlock_address(host, port, self._lock)
            self._lock = -1

    @property
    def connected(self) -> bool:
        """A destination (fixed or learned) and the compiled layer: the daemon's fast loop may read and write the
        sockets."""
        return self._batch is not None and self.dest is not None

    @property
    def follows(self) -> bool:
        """No fixed remote: the destination is the sender of the last datagram."""
        return not self._fixed_remote

    def follow(self, dest: bytes) -> None:
        """The compiled loop's destination (its raw sockaddr) is the remote from now on."""
        if dest and dest != self.dest:
            self.dest = dest
            self.remote = udpsteer.address(dest)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]  # type: ignore[no-any-return]

    def recv_batch(self, max_n: int = 64) -> list[bytes]:
        if self._batch is not None and self._fixed_remote:
            try:
                ctrl = self._batch.recv_batch(self.ctrl.fileno(), max_n)
                return ctrl + self._batch.recv_batch(self.sock.fileno(), max_n)  # type: ignore[no-any-return]
            except ConnectionRefusedError:  # an ICMP error for an earlier send
                self.count("icmp_refused")
                return []
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    raise PortGone(f"{self.name}: {exc.strerror}") from None
                self.count(f"recv_{errno.errorcode.get(exc.errno or 0, 'error').lower()}")
                return []
        out = []
        for data, addr in self._recv(max_n, self.ctrl) + self._recv(max_n):
            if self._fixed_remote and addr[:2] != self.remote[:2]:
                self.count("foreign_sender")
                continue
            if addr != self.remote:
                self.remote = addr
                self.dest = udpsteer.sockaddr(addr[:2], self._family)
            out.append(data)
        return out

    def send_batch(self, frames: list[bytes]) -> int:
        if self.remote is None:
            self.count("no_peer_yet", len(frames))
            return len(frames)  # nobody to send to: consumed, counted
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
