"""The client side of a daemon's control socket (a running pxswitch, a running ``pxorch run``): one request
out, one reply back, bounded in size and in time.  Each caller decodes the reply and words its errors."""

from __future__ import annotations

import socket
import time

REPLY_MAX = 64 << 20
"""The longest reply taken (a pxswitch's ``fdb`` without a table limit is the largest a daemon gives)."""


class ReplyTooLong(ValueError):
    """The reply went past the caller's limit (it is not read further)."""


def ask(path: str, request: bytes, timeout: float, limit: int | None = None, line: bool = False) -> bytes:
    """Send ``request`` to the Unix stream socket at ``path`` and return the reply: what comes until the daemon
    closes the connection, or, ``line``, until a read ends with a newline.  ``timeout`` bounds the whole exchange,
    not each read (a peer trickling bytes cannot hold the caller); OSError (``TimeoutError`` included) when the
    socket fails, :class:`ReplyTooLong` past ``limit`` bytes (default :data:`REPLY_MAX`)."""
    if limit is None:
        limit = REPLY_MAX
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request)
        chunks: list[bytes] = []
        got = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no whole reply within {timeout:g} s")
            s.settimeout(left)
            b = s.recv(min(1 << 20, limit + 1 - got))
            if not b:
                break
            chunks.append(b)
            got += len(b)
            if got > limit:
                raise ReplyTooLong(f"a reply longer than {limit} bytes")
            if line and b.endswith(b"\n"):
                break
    return b"".join(chunks)
