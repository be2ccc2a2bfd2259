"""The daemon's side of the in-kernel fast path (:mod:`pxproto.switch.kpath`): which ports are in it, when the
kernel's copy of the table is refreshed, and the counters.

A port's ``kernel`` key (``afpacket`` and ``udp`` ports): absent, the port joins when it can (once per switch, a
line says why not); ``true``, a port that cannot join does not open; ``false``, it stays out.  The whole path is
off with ``full`` validation (the kernel checks headers only) and with a mirror (the mirror sees every frame).
A ``udp`` port joins when both its address and its peer's are IPv4 loopback addresses (the datagrams cross
``lo``), from when its peer is known, and follows the peer as the switch does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pxproto.switch.kpath import KernelPath, loopback4
from pxproto.switch.kprog import MODE_PEER

REFRESH_PERIOD = 1.0
"""Seconds between two passes that carry the fast path's hits into the switch's table (and drop the kernel's copy
of entries that aged out there), at most: a quarter of the aging where that is shorter."""
SYNC_GAP = 0.01
"""Seconds between two copies of a changing table at least (under a flood of new source MACs, a copy per batch
would be the attack)."""

Remote = tuple[str, int] | None


class KernelPorts:
    """Ports in the kernel's fast path, for one switch."""

    def __init__(self, validation: str, mirror: bool, capacity: int, aging: float, log: Callable[[str], None]) -> None:
        self.capacity = capacity
        self.refresh_period = min(REFRESH_PERIOD, aging / 4)
        """How often the kernel's hits refresh the table: well within the aging."""
        """The switch's table capacity: the kernel's copy holds as many entries (up to FDB_MAX)."""
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
        self.udp: dict[int, tuple[Any, int, Remote]] = {}
        """UDP ports in the path: id -> (port, MTU, the peer the kernel sends to)."""

    @property
    def active(self) -> bool:
        """Some port is in the fast path."""
        return self.kp is not None and bool(self.kp.ports or self.kp.udp)

    def _path(self) -> KernelPath:
        if self.why_off is not None:
            raise OSError(0, f"off with {self.why_off}")
        if self.kp is None:
            from pxproto.switch.linkports import control_ethertypes
            from pxproto.wire import ethertypes

            self.kp = KernelPath(self.capacity, ethertypes.current().data, control_ethertypes())
        return self.kp

    def _join(self, port: Any, want: bool | None, join: Callable[[KernelPath], object]) -> bool:
        """``join`` the port to the path; False when it cannot, said once for the whole path where the path
        cannot start (no privileges, an older kernel, a mirror), else once for the port; OSError instead where
        ``want`` is True."""
        try:
            join(self._path())
        except OSError as exc:
            why = exc.strerror or str(exc)
            if want:
                raise OSError(exc.errno, f"kernel fast path: {why}") from None
            if self.kp is not None:
                self.log(f"port {port.name}: not in the kernel fast path ({why})")
            elif not self._told:
                self._told = True
                self.log(f"kernel fast path: {why}; every frame goes through the switch")
            return False
        return True

    def add(self, pid: int, port: Any, want: bool | None, mtu: int) -> None:
        """Take AF_PACKET ``port`` in unless ``want`` is False; OSError when ``want`` is True and it cannot."""
        socks = [port.sock, *(lane.sock for lane in port.lanes)]
        how: list[str] = []
        if want is not False and self._join(
            port, want, lambda kp: how.append(kp.add_port(pid, port.ifname, port.ifindex, mtu, socks))
        ):
            self.log(f"port {port.name}: kernel fast path ({how[0]})")

    def add_udp(self, pid: int, port: Any, want: bool | None, mtu: int, remote: Remote) -> None:
        """Take UDP ``port`` in, its peer at ``remote`` (None: not known yet), unless ``want`` is False; OSError
        when ``want`` is True and it cannot.  (No line when it joins: that happens whenever the peer shows up;
        ``stats`` says it.)"""
        if want is not False and pid not in self.udp:
            if self._join(port, want, lambda kp: kp.add_udp(pid, port.address, remote, mtu)):
                self.udp[pid] = (port, mtu, remote)

    def check_udp(self, port: Any, want: bool | None) -> None:
        """With ``kernel=true``, a UDP port that could never join the path: OSError naming why (at open)."""
        if not want:
            return
        try:
            self._path()
            for what, addr in (("local", port.address), ("remote", port.remote)):
                if addr is not None and not loopback4(addr[0]):
                    raise OSError(0, f"{what} address {addr[0]} is not IPv4 loopback")
        except OSError as exc:
            raise OSError(exc.errno, f"kernel fast path: {exc.strerror or exc}") from None

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
            self.kp.remove_udp(pid)
        self.udp.pop(pid, None)

    def due(self, fdb: Any, now: float) -> float | None:
        """Seconds until :meth:`tick` has work (a changed table to copy, or the refresh), or None."""
        if not self.active:
            return None
        assert self.kp is not None
        at = self._refresh_at
        if fdb.generation != self.kp.generation:
            at = min(at, self._sync_at)
        return max(0.0, at - now)

    def tick(self, fdb: Any, now: float, remote: Callable[[int], Remote]) -> None:
        """After the table's timers: carry hits into it every REFRESH_PERIOD, copy it when it changed, and follow
        each UDP port's peer (``remote``: where the switch sends that port's frames now)."""
        if self.kp is None or not self.active:
            return
        for pid, (port, mtu, was) in list(self.udp.items()):
            now_remote = remote(pid)
            if now_remote != was:
                try:
                    self.kp.add_udp(pid, port.address, now_remote, mtu)
                    self.udp[pid] = (port, mtu, now_remote)
                except OSError as exc:  # (a peer off loopback: the port leaves the path)
                    self.log(f"port {port.name}: out of the kernel fast path: {exc.strerror}")
                    self.kp.remove_udp(pid)
                    del self.udp[pid]
        force = now >= self._refresh_at
        if force:
            self._refresh_at = now + self.refresh_period
            self.kp.refresh(fdb, now)
        elif now < self._sync_at:
            return
        if self.kp.sync(fdb, now, force):
            self._sync_at = now + SYNC_GAP

    def add_stats(self, st: dict[str, Any], names: dict[int, str]) -> None:
        """The fast path's frames into each port's counters (and by themselves, under ``kernel``)."""
        if self.kp is None:
            return
        how = {pid: "peer" if p["mode"] == MODE_PEER else "redirect" for pid, p in self.kp.ports.items()}
        how.update(dict.fromkeys(self.kp.udp, "udp"))
        for pid, kind in how.items():
            name = names.get(pid)
            if name is None or name not in st["ports"]:
                continue
            rx, rx_bytes, tx, tx_bytes = self.kp.counters(pid)
            p = st["ports"][name]
            for key, v in (("rx", rx), ("rx_bytes", rx_bytes), ("tx", tx), ("tx_bytes", tx_bytes)):
                p[key] = p.get(key, 0) + v
            p["rx_class"]["data"] = p["rx_class"].get("data", 0) + rx
            p["tx_class"]["data"] = p["tx_class"].get("data", 0) + tx
            p["kernel"] = {"rx": rx, "tx": tx, "how": kind}
        st["switch"]["kernel_fdb"] = len(self.kp.copy)
        st["switch"]["kernel_fdb_refused"] = self.kp.refused

    def close(self) -> None:
        if self.kp is not None:
            self.kp.close()
            self.kp = None
        self.udp.clear()
