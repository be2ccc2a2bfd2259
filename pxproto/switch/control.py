"""The client side of a running pxswitch's control socket (the daemon answers in :meth:`Daemon._answer
<pxproto.switch.daemon.Daemon._answer>`)."""

from __future__ import annotations

import json
from typing import Any

from pxproto.ctlsock import ask


def query(path: str, request: str, timeout: float = 3.0) -> Any:
    """Ask a running switch over its control socket; return the decoded JSON.  OSError when the socket fails or
    the reply does not come whole within ``timeout``; ValueError for a reply that is not JSON (or
    :class:`pxproto.ctlsock.ReplyTooLong`, a ValueError, past :data:`pxproto.ctlsock.REPLY_MAX`)."""
    return json.loads(ask(path, request.encode() + b"\n", timeout))
