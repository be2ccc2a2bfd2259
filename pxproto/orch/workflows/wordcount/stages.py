"""The demo workflow's stages: count the words of every line of a bundled corpus, with a checksum.

source    -> "LINENO<TAB>LINE" for each line of the corpus, ``passes`` times (line numbers go on counting), at
             ``rate`` lines a second (0: as fast as the channel takes them)
parse     -> "LINENO<TAB>word word ..." (lower case, letters only)
transform -> "LINENO<TAB>WORDS<TAB>CHECKSUM" (CRC-32 of the words, summed mod 2^32)
sink      -> commits lineage | monotonic time | result to the server's local store, once per lineage
             (``ctx.commit``: a replay after the sink's repair writes nothing new)

The known answer (answer.json) is the number of lines, of words, and the sum
of the checksums; ``pxorch demo`` checks the sink's records line by line.
"""

from __future__ import annotations

import re
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WORD = re.compile(r"[a-z]+")
RECORD = struct.Struct("!Qd")
"""lineage, monotonic seconds: the head of every sink record."""


def source(ctx: Any) -> Iterator[bytes]:
    lines = (Path(__file__).parent / ctx.params["corpus"]).read_text("utf-8").splitlines()
    rate = float(ctx.params.get("rate", 400))
    period = 1.0 / rate if rate > 0 else 0.0
    # A replacement source resumes at ctx.first: the kernel drops the lines before it, so do not pace them.
    start = time.monotonic() - getattr(ctx, "first", 0) * period
    n = len(lines)
    for i in range(n * int(ctx.params.get("passes", 1))):
        if period:
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield f"{i}\t{lines[i % n]}".encode()


def parse(item: bytes, ctx: Any) -> Iterator[bytes]:
    no, _, line = item.decode().partition("\t")
    yield f"{no}\t{' '.join(WORD.findall(line.lower()))}".encode()


def count(words: str) -> tuple[int, int]:
    """(number of words, sum of their CRC-32s mod 2^32)."""
    ws = words.split()
    return len(ws), sum(zlib.crc32(w.encode()) for w in ws) & 0xFFFFFFFF


def transform(item: bytes, ctx: Any) -> Iterator[bytes]:
    no, _, words = item.decode().partition("\t")
    work = float(ctx.params.get("work_us", 0)) / 1e6
    end = time.monotonic() + work
    while time.monotonic() < end:  # the stage's cost: what scaling it out is for
        pass
    n, crc = count(words)
    yield f"{no}\t{n}\t{crc}".encode()


def sink(item: bytes, ctx: Any) -> Iterator[bytes]:
    ctx.commit(ctx.params["object"], struct.pack("!d", time.monotonic()) + item)
    return iter(())
