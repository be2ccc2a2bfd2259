"""pxproto.files.read_bounded: the one reader of the small files users name (keys, configs, manifests)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pxproto.files import FileRefused, read_bounded


def _refused(path: str | Path, check: Callable[[os.stat_result], None] | None = None) -> FileRefused:
    with pytest.raises(FileRefused) as exc:
        read_bounded(path, 16, check)
    return exc.value


def test_a_regular_file_up_to_the_limit_is_read_whole(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 16)
    assert read_bounded(f, 16) == b"x" * 16
    f.write_bytes(b"x" * 17)
    got = _refused(f)
    assert (got.kind, got.reason) == ("large", "larger than 16 bytes")


def test_what_is_not_a_regular_file_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened for reading, it would block until a writer came
    assert (_refused(fifo).kind, _refused(fifo).reason) == ("other", "not a regular file")
    assert (_refused(tmp_path).kind, _refused(tmp_path).reason) == ("dir", "not a regular file")
    assert _refused("/dev/zero").reason == "not a regular file"
    assert _refused(tmp_path / "missing").reason == "No such file or directory"
    assert _refused("a\0b").kind == "nul"


def test_check_sees_the_opened_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"key")
    seen: list[int] = []
    assert read_bounded(f, 16, lambda st: seen.append(st.st_size)) == b"key"
    assert seen == [3]

    def refuse(st: os.stat_result) -> None:
        raise FileRefused("refused by the check")

    assert _refused(f, refuse).reason == "refused by the check"
