"""What a server's kernel keeps across restarts: its MAC and each DIME's boot counter (epoch)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def _rw_counter(path: Path, bump: bool) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 64).strip()
        try:
            value = int(raw or b"0")
        except ValueError:
            value = 0
        if bump:
            value = (value + 1) & 0xFFFFFFFF or 1
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{value}\n".encode())
            os.fsync(fd)
        return value
    finally:
        os.close(fd)


def next_epoch(state_dir: str | os.PathLike[str], dime: int) -> int:
    """Increment and return DIME ``dime``'s persistent epoch (1 on its first boot)."""
    return _rw_counter(Path(state_dir) / f"dime-{dime}.epoch", True)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(":".join(f"{b:02x}" for b in mac) + "\n")
    return mac


def parse_mac(text: str) -> bytes:
    mac = bytes.fromhex(text.replace(":", "").replace("-", ""))
    if len(mac) != 6:
        raise ValueError(f"MAC {text!r}: six bytes expected")
    return mac
