"""The client side of a running pxswitch's control socket (the daemon answers in :meth:`Daemon._answer
<pxproto.switch.daemon.Daemon._answer>`)."""

from __future__ import annotations

import json
import socket
from typing import Any


def query(path: str, request: str, timeout: float = 3.0) -> Any:
    """Ask a running switch over its control socket; return the decoded JSON."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request.encode() + b"\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return json.loads(b"".join(chunks))
