"""A follower's proof that the leading orchestrator's process is gone: a TCP connection to it that closed.

A lease alone makes a takeover wait for the whole TTL and then for etcd's expiry sweep (every 500 ms in
etcd 3.4/3.5): 1 to 1.5 s with the smallest TTL.  Silence is no proof of death (a split between
orchestrators is silent too), but a closed connection is: when the leader's process dies, its kernel
closes every socket it held, and each follower holding one reads end-of-file or a reset at once.  On that
proof alone (end-of-file or a reset on a connection that was established; a refused connection proves
nothing, since a firewall refuses too) a follower revokes the dead leader's lease
(:meth:`pxproto.orch.leader.Elector.depose`) and campaigns without waiting for the TTL.  Any other failure
(a host that loses power, a partition) leaves the connection open or hanging, and the lease decides as before.

Each orchestrator listens on a loopback (or given) TCP port that it publishes in the leader key's value
while it leads.  The leader accepts connections in its loop and never writes to them; a follower connects
to the current leader and polls its connection without blocking.
"""

from __future__ import annotations

import errno
import socket
import time


class PeerLink:
    """One orchestrator's listening socket, and (while following) its connection to the leader."""

    CONNECT_TIMEOUT = 0.2
    RETRY = 1.0
    """Seconds between attempts to connect to a leader that could not be reached (no proof either way)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind((host, 0))
        self.server.listen(64)
        self.server.setblocking(False)
        self.address = f"{host}:{self.server.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self.target: str | None = None
        self.conn: socket.socket | None = None
        self.dead: str | None = None
        """The address whose process was seen to end: a connection to it, once established, closed."""
        self._retry_at = 0.0

    def serve(self) -> None:
        """Accept whoever connected (the leader's side); their sockets stay open until this process ends."""
        while True:
            try:
                s, _ = self.server.accept()
            except OSError:
                return
            s.setblocking(False)
            self.accepted.append(s)
            if len(self.accepted) > 256:  # followers that came and went
                self.accepted.pop(0).close()

    def follow(self, address: str | None) -> None:
        """Hold a connection to ``address`` (the leader's, from its key); None or our own: hold none."""
        if address == self.target and (self.conn is not None or self.dead == address
                                       or time.monotonic() < self._retry_at):  # fmt: skip
            return
        self._drop()
        self.target = address
        if address is None or address == self.address:
            return
        host, _, port = address.rpartition(":")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(self.CONNECT_TIMEOUT)
        try:
            s.connect((host, int(port)))
        except (OSError, ValueError):
            s.close()  # refused (a firewall refuses too), unreachable or slow: no proof; try again later
            self._retry_at = time.monotonic() + self.RETRY
            return
        s.setblocking(False)
        self.conn = s

    def leader_gone(self) -> bool:
        """Whether the followed leader's process is proven gone (its connection closed or reset)."""
        if self.dead is not None and self.dead == self.target:
            return True
        if self.conn is None:
            return False
        try:
            data = self.conn.recv(64)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
                return False
            data = b""
        if data:
            return False  # the leader writes nothing; ignore it
        self._drop()
        self.dead = self.target
        return True

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def close(self) -> None:
        self._drop()
        for s in self.accepted:
            s.close()
        self.accepted.clear()
        self.server.close()


__all__ = ["PeerLink"]
