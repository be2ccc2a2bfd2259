"""Coverage-guided fuzz target for the compiled fast-path decoder (atheris + ASan).

Build once, then run (see fuzz/README.md)::

    CC=clang python fuzz/build_fastpath_asan.py
    LD_PRELOAD="$(python -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so" \\
      ASAN_OPTIONS=detect_leaks=0,allocator_may_return_null=1 \\
      python fuzz/fastpath_decode.py fuzz/corpus/fastpath -max_total_time=600

Properties checked on every input: the decoder either returns a Frame that encodes
back to the same bytes, or raises ProtocolError naming a field of the generated
table; check(), view() and the batch decoder give the same verdict; and on one
input in eight the reference codec gives the same verdict (same field and offset).
Any crash or assertion failure is a finding: save the input as a regression vector
in tests/test_fastpath.py (FUZZ_REGRESSIONS).
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import zlib
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _load_asan_build() -> None:
    """Register the ASan build as pxproto.fastpath.wirec before the package imports it."""
    builds = sorted((ROOT / "fuzz" / "build").glob("wirec*.so"))
    if not builds:
        sys.exit("no ASan build: run CC=clang python fuzz/build_fastpath_asan.py")
    spec = importlib.util.spec_from_file_location("pxproto.fastpath.wirec", builds[0])
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pxproto.fastpath.wirec"] = mod
    spec.loader.exec_module(mod)


# Coverage comes from the sanitizer-instrumented extension; the Python around it is not instrumented.
import numpy as np  # noqa: E402

_load_asan_build()
import pxproto.fastpath as fp  # noqa: E402
from pxproto.errors import ProtocolError  # noqa: E402
from pxproto.fastpath import columns, wirec  # noqa: E402
from pxproto.wire import codec  # noqa: E402

wirec.exact_reasons(False)  # keep the reference codec off the per-input path (it runs on 1 in 8 below)

assert fp.COMPILED and fp.decode is wirec.decode, "the fuzz target must exercise the compiled decoder"
FIELDS = set(fp.ERROR_FIELDS)


def _verdict(decode, data: bytes):  # type: ignore[no-untyped-def]
    try:
        return decode(data)
    except ProtocolError as exc:
        return (exc.field, exc.offset)


def TestOneInput(data: bytes) -> None:
    got = _verdict(wirec.decode, data)
    if isinstance(got, tuple):
        assert got[0] in FIELDS, got
        assert wirec.check(data) == got
    else:
        assert wirec.encode(got) == data
        assert wirec.view(data) == got
        assert wirec.check(data) == ("", 0)
    arrays = columns.empty(1)
    wirec.decode_columns_into(data, np.array([0]), np.array([len(data)]), arrays)
    if isinstance(got, tuple):
        assert not arrays["valid"][0] and fp.ERROR_FIELDS[arrays["error"][0]] == got[0]
    else:
        assert arrays["valid"][0]
    if zlib.crc32(data) & 7 == 0:
        assert _verdict(codec.decode, data) == got, (data.hex(), got)


def main() -> None:
    seeds = ROOT / "fuzz" / "corpus" / "fastpath"
    if not any(a for a in sys.argv[1:] if not a.startswith("-")):
        seeds.mkdir(parents=True, exist_ok=True)
        sys.argv.append(str(seeds))
    if seeds.exists() and not any(seeds.iterdir()):
        from pxproto.testing import HOSTILE_KINDS, mutate, valid_pool
        from pxproto.wire.samples import malformed_samples, valid_samples

        rng = random.Random(0)
        pool = valid_pool(rng, 64)  # the generator pxfuzz and the tests use: valid frames, then each mutator's
        hostile = [mutate(rng, raw, kind, pool) for raw in pool[:16] for kind in HOSTILE_KINDS]
        canned = [*(raw for _n, raw in valid_samples()), *(m[3] for m in malformed_samples())]
        for i, raw in enumerate([*canned, *pool, *hostile]):
            (seeds / f"seed{i:03d}").write_bytes(raw)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    os.environ.setdefault("PXPROTO_PURE", "0")
    main()
