"""What a server's kernel keeps across restarts: its MAC, each DIME's boot counter (epoch), and the newest
orchestrator leader epoch its DIMEs accepted (the server's fence)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path


class StateDirError(OSError):
    """A state or store directory is not private to this user; the message says why."""


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` 0700 if missing, then check it is a real directory, ours, closed to group and others.

    An existing directory someone else planted (or left open) is refused, never trusted.
    """
    p = Path(path)
    if not p.is_dir():
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:
            pass
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"{p}: not a directory (a symlink or a file): refused")
    if st.st_uid != os.getuid():
        raise StateDirError(f"{p}: owned by uid {st.st_uid}, not by this user: refused")
    if st.st_mode & 0o077:
        raise StateDirError(f"{p}: mode {st.st_mode & 0o777:04o} lets group or others in: refused (chmod 700 {p})")
    return p


def user_base(environ: dict[str, str] | None = None) -> Path:
    """A user's pxkernel base: ``$XDG_RUNTIME_DIR/pxkernel``, else under ``$XDG_STATE_HOME`` or ``~/.local/state``."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "pxkernel"
    home = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(home) / "pxkernel"


def default_state_dir(where: str, environ: dict[str, str] | None = None) -> Path:
    """The private state directory of a kernel on wire ``where`` (the base is verified too)."""
    base = private_dir(user_base(environ))
    return private_dir(base / hashlib.sha256(where.encode()).hexdigest()[:12])


def _update_counter(path: Path, change: Callable[[int], int]) -> tuple[int, int]:
    """Apply ``change`` to the number in ``path`` under an exclusive lock (written and synced only when it
    changes); returns (before, after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 64).strip()
        try:
            before = int(raw or b"0")
        except ValueError:
            before = 0
        after = change(before)
        if after != before:
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{after}\n".encode())
            os.fsync(fd)
        return before, after
    finally:
        os.close(fd)


def next_epoch(state_dir: str | os.PathLike[str], dime: int) -> int:
    """Increment and return DIME ``dime``'s persistent epoch (1 on its first boot)."""
    return _update_counter(Path(state_dir) / f"dime-{dime}.epoch", lambda v: (v + 1) & 0xFFFFFFFF or 1)[1]


def raise_leader_fence(state_dir: str | os.PathLike[str], epoch: int) -> int:
    """The server's leader fence (the newest LEADER_EPOCH any of its DIMEs accepted, kept across restarts):
    raise it to ``epoch`` if that is newer, and return what it was before."""
    return _update_counter(Path(state_dir) / "leader-epoch", lambda v: max(v, epoch))[0]


def server_mac(state_dir: str | os.PathLike[str]) -> bytes:
    """The server's MAC, made once (locally administered, unicast) and kept in the state dir."""
    path = Path(state_dir) / "mac"
    try:
        mac = bytes.fromhex(path.read_text().strip().replace(":", ""))
        if len(mac) == 6:
            return mac
    except (OSError, ValueError):
        pass
    mac = bytes([0x02]) + os.urandom(5)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(":".join(f"{b:02x}" for b in mac) + "\n")
    return mac


def parse_mac(text: str) -> bytes:
    """``xx:xx:xx:xx:xx:xx`` (or with ``-``, or none) as six bytes; ValueError naming ``text`` otherwise."""
    try:
        mac = bytes.fromhex(text.replace(":", "").replace("-", ""))
    except ValueError:
        mac = b""
    if len(mac) != 6:
        raise ValueError(f"{text!r} is not a MAC address (six bytes, xx:xx:xx:xx:xx:xx)")
    return mac


def parse_station_mac(text: str) -> bytes:
    """:func:`parse_mac` for a source address: a group (broadcast, multicast) or all-zero MAC is refused."""
    mac = parse_mac(text)
    if mac[0] & 1:
        kind = "broadcast" if mac == b"\xff" * 6 else "multicast"
        raise ValueError(f"{text!r} is a {kind} (group) address; a server's MAC must be unicast")
    if not any(mac):
        raise ValueError(f"{text!r} is the all-zero address; a server's MAC must name a station")
    return mac
