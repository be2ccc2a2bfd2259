"""The port interface every switch driver implements, and what the drivers share.

:class:`Port` is the small non-blocking interface the daemon polls;
:class:`DatagramPort` adds the one-frame-per-datagram receive and send that
the UDP and VXLAN ports share.  :class:`PortGone` is what any port raises
when its wire vanishes; :func:`port_error` and :func:`claim_unix_path` help
the daemon open ports and report why one would not open.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

MAX_FRAME = 65535
"""Longest frame any port takes (QEMU's stream and dgram backends stay under it)."""
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

    def _recv(self, max_n: int, sock: socket.socket | None = None) -> list[tuple[bytes, Any]]:
        out = []
        s = self.sock if sock is None else sock
        for _ in range(max_n):
            try:
                out.append(s.recvfrom(MAX_FRAME + 64))
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
