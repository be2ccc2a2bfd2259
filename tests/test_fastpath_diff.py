"""Differential tests: the fast path and the reference codec agree on every valid frame
(bytes, fields, to_dict) and on every rejection (same ProtocolError field and offset).

Per frame class the default run checks DEFAULT_SEEDS hypothesis-drawn frames, each with
VARIANTS seeded variants and as many hostile mutations: 20,000+ valid frames and
20,000+ hostile byte strings per class.  ``pytest -m slow`` runs ten times more.
"""

from __future__ import annotations

import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pxproto.fastpath as fp
from pxproto.errors import ProtocolError
from pxproto.fastpath import pure
from pxproto.testing import frames, hostile_bytes, mutate, variant
from pxproto.wire import codec
from pxproto.wire.codes import FrameClass

DEFAULT_SEEDS = 100
VARIANTS = 200


@pytest.fixture(autouse=True)
def _generic_reasons():  # type: ignore[no-untyped-def]
    """Verdicts are compared by field and offset; skip the reference call that finds reason texts."""
    if fp.COMPILED:
        from pxproto.fastpath import wirec

        wirec.exact_reasons(False)
        yield
        wirec.exact_reasons(True)
    else:
        yield


def _outcome(decode, raw: bytes):  # type: ignore[no-untyped-def]
    try:
        return decode(raw)
    except ProtocolError as exc:
        return (exc.field, exc.offset)


def _differential(cls: FrameClass, seeds: int, variants: int) -> dict[str, int]:
    counts = {"valid": 0, "hostile": 0, "rejected": 0}

    @settings(max_examples=seeds, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames(cls))
    def run(seed: object) -> None:
        raw0 = codec.encode(seed)  # type: ignore[arg-type]
        assert fp.encode(seed) == raw0
        rng = random.Random(zlib.crc32(raw0))
        for k in range(variants):
            f = seed if k == 0 else variant(rng, seed)  # type: ignore[arg-type]
            raw = fp.encode(f)
            if k % 20 == 0:
                assert codec.encode(f) == raw
            ref = codec.decode(raw)
            assert ref == f
            got = fp.decode(raw)
            assert got == ref and got.to_dict() == ref.to_dict()
            assert fp.view(raw) == ref
            counts["valid"] += 1
            bad = mutate(rng, raw)
            a, b = _outcome(codec.decode, bad), _outcome(fp.decode, bad)
            assert a == b, (bad.hex(), a, b)
            assert fp.check(bad) == (a if isinstance(a, tuple) else ("", 0))
            counts["hostile"] += 1
            counts["rejected"] += isinstance(a, tuple)

    run()
    return counts


@pytest.mark.parametrize("cls", list(FrameClass), ids=[c.name for c in FrameClass])
def test_fastpath_agrees_with_reference(cls: FrameClass) -> None:
    counts = _differential(cls, DEFAULT_SEEDS, VARIANTS)
    assert counts["valid"] >= 20_000 and counts["hostile"] >= 20_000, counts
    assert counts["rejected"] >= counts["hostile"] // 2, counts  # the mutations really are hostile


@pytest.mark.slow
@pytest.mark.parametrize("cls", list(FrameClass), ids=[c.name for c in FrameClass])
def test_fastpath_agrees_with_reference_long(cls: FrameClass) -> None:
    counts = _differential(cls, DEFAULT_SEEDS * 10, VARIANTS)
    assert counts["valid"] >= 200_000, counts


@settings(max_examples=300, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile_bytes())
def test_hostile_bytes_same_verdict(raw: bytes) -> None:
    assert _outcome(codec.decode, raw) == _outcome(fp.decode, raw)


@settings(max_examples=300, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200))
def test_random_bytes_same_verdict(raw: bytes) -> None:
    assert _outcome(codec.decode, raw) == _outcome(fp.decode, raw)


@settings(max_examples=100, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(frames(), min_size=1, max_size=20), st.randoms(use_true_random=False))
def test_batch_columns_agree_with_pure_and_single_frames(fs: list, rng: random.Random) -> None:  # type: ignore[type-arg]
    raws = []
    for f in fs:
        raw = codec.encode(f)
        raws.append(raw)
        raws.append(mutate(rng, raw))
    buf = b"".join(raws)
    offsets, pos = [], 0
    for r in raws:
        offsets.append(pos)
        pos += len(r)
    lengths = [len(r) for r in raws]
    cols = fp.decode_columns(buf, offsets, lengths)
    arrays = fp.columns.empty(len(raws))
    pure.decode_columns_into(buf, offsets, lengths, arrays)
    for name, arr in arrays.items():
        assert (cols[name] == arr).all(), name
    for i, r in enumerate(raws):
        verdict = _outcome(codec.decode, r)
        if isinstance(verdict, tuple):
            assert not cols.valid[i] and (cols.error_field(i), int(cols.error_offset[i])) == verdict
        else:
            assert cols.valid[i] and cols.cls[i] == int(verdict.cls) and cols.seq[i] == verdict.seq
