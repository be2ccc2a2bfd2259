"""Ports on Linux interfaces: a TAP device, and a veth or NIC through AF_PACKET sockets."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from typing import Any

from pxproto.fastpath import select
from pxproto.switch.offload import PLAIN as PLAIN_VNET_HDR
from pxproto.switch.offload import VNET_HDR_LEN
from pxproto.switch.offload import complete as complete_offload
from pxproto.switch.portbase import GONE_ERRNOS, MAX_FRAME, Port, PortGone

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_CBPF = 6
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000
SKF_LL_OFF = -0x200000
"""Classic BPF loads at SKF_LL_OFF + k read the frame from its Ethernet header (a fanout program sees the data
after it)."""
SO_ATTACH_FILTER = 26
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


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


def split_program(ethertypes: tuple[int, ...]) -> bytes:
    """The PACKET_FANOUT_DATA program of a port's control/data pair: index 0 (the control socket) for a frame whose
    EtherType is in ``ethertypes``, 1 (the data socket) for any other, the same split as the two sockets'
    :func:`ethertype_filter` programs."""
    from pxproto.switch import udpsteer

    ins: list[udpsteer.Insn | str] = [(0x28, 0, 0, SKF_LL_OFF + 12)]  # ldh [ll + 12]
    ins += [(0x15, "control", 0, et) for et in ethertypes]  # jeq et -> control
    ins += [(0x06, 0, 0, 1), "control", (0x06, 0, 0, 0)]  # ret 1 (data); control: ret 0
    return udpsteer.assemble(ins)


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """SO_ATTACH_FILTER with a sock_fprog pointing at ``program``."""
    import ctypes

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def packet_drops(sock: socket.socket) -> int:
    """Frames the kernel dropped on a packet socket since the last call (PACKET_STATISTICS resets on reading)."""
    try:
        raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
    except OSError:
        return 0
    return int(struct.unpack_from("II", raw)[1])  # tp_packets, tp_drops


def control_ethertypes() -> tuple[int, ...]:
    from pxproto.wire import ethertypes

    m = ethertypes.current()
    return (m.signaling, m.discovery, m.heartbeat)


DEFAULT_RING = 2
"""An AF_PACKET port's data socket receives into a TPACKET_V2 ring unless told otherwise: the kernel hands each
frame over as it lands (a TPACKET_V3 block waits until it is full or its 1 ms timeout, which was the p50
latency at half load in bench/switch.py), the copy into the ring happens in the sender's softirq, and a frame
longer than a slot (a GSO segment) is read whole from the socket's queue (PACKET_COPY_THRESH)."""

V2_RING = 4 << 20
"""Bytes of a TPACKET_V2 receive ring at least (2048 slots of 2 KiB at MTU 1500): about 4 ms at 500k frames/s,
what the switch may lose to the scheduler on a busy host."""


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
        if ring is None:  # TPACKET_V2 where it is built: the kernel fills slots in the sender's softirq
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
        self.ctrl, _ = self._open(self._ctrl_program, self.CTRL_BUF)  # control frames are never offloaded
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
        self._data_program = ethertype_filter(ctrl, False)
        self._ring_version = ring
        self._fanout: int | None = None  # the data sockets' PACKET_FANOUT group, once a worker lane joins
        self.split: int | None = None  # the control/data pair's PACKET_FANOUT group (:meth:`split_in_kernel`)
        self.lanes: list[Lane] = []
        try:
            self.sock, self.ring = self._open(self._data_program, rcvbuf, ring)
            if txring and self._batch is not None:
                self.tx_sock, self.tx = self._tx_ring()
        except OSError:
            self.tx = None
            for s in (self.ctrl, getattr(self, "sock", None), self.tx_sock):
                if s is not None:
                    s.close()
            raise
        self.fd = self.sock.fileno()

    def _tx_ring(self) -> tuple[socket.socket, Any]:
        tx_sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
        try:
            tx = self._batch.TxRing(tx_sock.fileno(), self.mtu, self.TX_RING)
            tx_sock.bind((self.ifname, 0))
        except OSError:
            tx_sock.close()
            raise
        return tx_sock, tx

    def split_in_kernel(self) -> bool:
        """Join the control and the data socket in one PACKET_FANOUT group of type CBPF whose program
        (:func:`split_program`) gives each received frame to one of them.  Apart, each socket's handler runs for
        every frame on the interface and its filter drops the other's frames: the control socket's handler cost
        the sender's CPU about a sixth of its time at saturation (perf, bench/switch.py).  In the group the
        kernel runs one handler per frame.  The group ignores the frames the switch sends on the port
        (PACKET_FANOUT_FLAG_IGNORE_OUTGOING), as each socket did.  Not with worker lanes, whose data sockets
        form a hashing group of their own; False (the sockets as they were) where the kernel refuses."""
        from pxproto.switch import udpsteer

        if self.split is not None:
            return True
        if self._fanout is not None or self.lanes:
            return False
        flags = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_IGNORE_OUTGOING
        try:
            self.ctrl.setsockopt(SOL_PACKET, PACKET_FANOUT, (flags | PACKET_FANOUT_FLAG_UNIQUEID) << 16)
            group = int(self.ctrl.getsockopt(SOL_PACKET, PACKET_FANOUT)) & 0xFFFF
            udpsteer.attach(self.ctrl, PACKET_FANOUT_DATA, split_program(control_ethertypes()), SOL_PACKET)
        except OSError:
            self._reopen_control()  # (a socket cannot leave a group: a new control socket, as it was)
            return False
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT, group | flags << 16)
        except OSError:
            self._reopen_control()
            return False
        self.split = group
        return True

    def _reopen_control(self) -> None:
        self.ctrl.close()
        self.ctrl, _ = self._open(self._ctrl_program, self.CTRL_BUF)

    def open_lane(self) -> Lane:
        """Another data socket (with its own receive and transmit rings) in one PACKET_FANOUT group with the
        port's, for a worker thread: the kernel gives each data frame to one socket of the group."""
        from pxproto.switch.workers import join_fanout

        if self.split is not None:
            raise OSError(errno.EBUSY, "the port's data socket is in its control/data group (split_in_kernel)")
        if self._fanout is None:
            self._fanout = join_fanout(self.sock)  # (a new group: its id may be 0)
        sock, ring = self._open(self._data_program, self.rcvbuf, self._ring_version)
        tx_sock = tx = None
        try:
            join_fanout(sock, self._fanout)
            if self.tx is not None:
                tx_sock, tx = self._tx_ring()
        except OSError:
            sock.close()
            raise
        lane = Lane(self, sock, ring, tx_sock, tx)
        self.lanes.append(lane)
        return lane

    def _open(self, program: bytes, bufsize: int, ring: int = 0) -> tuple[socket.socket, Any]:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: nothing arrives before bind
        rx_ring = None
        try:
            attach_filter(s, program)
            vnet = self.vnet and program is not self._ctrl_program
            if ring:
                # the ring's size plays the part of the receive buffer: it bounds the backlog
                frame = 1 << 17 if vnet and ring == 3 else self._ring_frame()  # V3: room for a 64 KiB segment
                size = max(bufsize, V2_RING if ring == 2 else 1 << 20)
                rx_ring = self._batch.PacketRing(s.fileno(), ring, size, 1, frame, vnet)
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
        return s, rx_ring

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
        self._drops += packet_drops(self.sock)
        return self._drops + sum(lane.kernel_drops() for lane in self.lanes)

    def describe(self) -> dict[str, Any]:
        ring = f"TPACKET_V{self.ring.version}, {self.ring.slots} slots" if self.ring is not None else None
        return {
            **super().describe(),
            "rcvbuf": self.rcvbuf,
            "ring": ring,
            "split": "kernel (one PACKET_FANOUT group)" if self.split is not None else "two filters",
            "ring_copied": self.ring.copied if self.ring is not None and self.ring.version == 2 else None,
            "txring": f"TPACKET_V2, {self.tx.slots} slots" if self.tx is not None else None,
            "offload": "virtio_net_hdr" if self.vnet else "off",
            "kernel_drops": self.kernel_drops(),
        }

    def close(self) -> None:
        for lane in list(self.lanes):
            lane.close()
        self.ring = self.tx = None  # unmapped before the sockets close
        self.ctrl.close()
        self.sock.close()
        if self.tx_sock is not None:
            self.tx_sock.close()


class Lane:
    """A worker thread's data socket on an AF_PACKET port (:meth:`AfPacketPort.open_lane`)."""

    def __init__(self, port: AfPacketPort, sock: socket.socket, ring: Any, tx_sock: socket.socket | None, tx: Any):
        self.port = port
        self.sock = sock
        self.ring = ring
        self.tx_sock = tx_sock
        self.tx = tx
        self._drops = 0

    def kernel_drops(self) -> int:
        self._drops += packet_drops(self.sock)
        return self._drops

    def close(self) -> None:
        if self in self.port.lanes:
            self.port.lanes.remove(self)
            self.port._drops += self.kernel_drops()  # its drops stay counted with the port
        self.ring = self.tx = None
        self.sock.close()
        if self.tx_sock is not None:
            self.tx_sock.close()
