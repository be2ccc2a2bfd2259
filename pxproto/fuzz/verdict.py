"""What the reference decoder says of a frame: ``ok``, or the field its first error names.

A target that counts rejected frames by reason must count what these
verdicts count: the campaign compares the two.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from pxproto.errors import ProtocolError
from pxproto.fastpath import select
from pxproto.wire import codec

OK = "ok"

Verdict = Callable[[bytes], str]


def reference_verdict(raw: bytes) -> str:
    """``ok`` when :func:`pxproto.wire.decode` accepts ``raw``, else the field of its ProtocolError."""
    try:
        codec.decode(raw)
    except ProtocolError as exc:
        return exc.field
    return OK


def fast_verdict() -> Verdict | None:
    """The compiled decoder's verdict function, when the fastpath is built (it names the same fields)."""
    wirec = select.compiled("pxproto.fastpath.wirec")
    decode = getattr(wirec, "decode", None)
    if decode is None:
        return None

    def verdict(raw: bytes) -> str:
        try:
            decode(raw)
        except ProtocolError as exc:
            return exc.field
        return OK

    return verdict


def tally(raws: Iterable[bytes], verdict: Verdict = reference_verdict) -> Counter[str]:
    """How many frames get each verdict."""
    return Counter(verdict(r) for r in raws)
