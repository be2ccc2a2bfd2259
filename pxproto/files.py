"""Reading a small file a user names (a key file, a config, a manifest, a package file): a regular file of
bounded size, read whole, never waited on.  One reader serves them all; each caller words the refusal in
its own error, naming the file."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable


class FileRefused(Exception):
    """Why a file was not read: ``reason`` (the caller names the path); ``kind`` is ``"nul"`` (a NUL in the
    path), ``"dir"`` (a directory), ``"large"`` (longer than the limit) or ``"other"`` (not a regular file, or the
    OS's reason)."""

    def __init__(self, reason: str, kind: str = "other") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def _regular(st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise FileRefused("not a regular file", "dir")
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused("not a regular file")


def read_bounded(
    path: str | os.PathLike[str], limit: int, check: Callable[[os.stat_result], None] | None = None
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ``check`` sees the opened file's stat first
    (and may raise).  A FIFO, device or directory is refused before it is opened (opening a FIFO for reading
    blocks until a writer comes); ``O_NONBLOCK`` covers one swapped in between.  A longer file is refused,
    never cut."""
    try:
        _regular(os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except ValueError:
        raise FileRefused("a path cannot hold a NUL byte", "nul") from None
    except OSError as exc:
        raise FileRefused(exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        _regular(st)
        if check is not None:
            check(st)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise FileRefused(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileRefused(f"larger than {limit} bytes", "large")
    return data
