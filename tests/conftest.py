"""Shared test settings: hypothesis profiles, and the reproducible seed of every random test.

Hypothesis runs derandomized by default (CI and local runs alike): the same
examples on every run, so what the suite catches does not vary between runs.
Choose another profile with ``HYPOTHESIS_PROFILE`` (``PXPROTO_HYPOTHESIS_PROFILE``
is still read):

- ``explore``: fresh random examples every run; a failure prints the
  ``@seed(...)`` / ``--hypothesis-seed`` that reproduces it;
- ``slow``: explore, with many more examples (long runs).

Tests that draw with plain :mod:`random` take the ``rng`` fixture (a
:class:`random.Random`) or the ``seed`` fixture (an int).  Both derive from the
base seed ``PXPROTO_SEED`` (default 0; ``PXPROTO_SEED=random`` picks one) and
the test's id, so each test has its own stream, stable across runs and
processes.  A failing test that used them names the base seed that reproduces it.
"""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("default", deadline=None, suppress_health_check=_QUIET, derandomize=True)
settings.register_profile("explore", deadline=None, suppress_health_check=_QUIET, derandomize=False)
settings.register_profile("slow", deadline=None, suppress_health_check=_QUIET, derandomize=False, max_examples=200_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or os.environ.get("PXPROTO_HYPOTHESIS_PROFILE", "default"))

SEED_ENV = "PXPROTO_SEED"


def base_seed() -> int:
    """``PXPROTO_SEED``, default 0."""
    return int(os.environ.get(SEED_ENV, "0"), 0)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(SEED_ENV) == "random":  # one fresh seed for the session; xdist workers inherit it
        os.environ[SEED_ENV] = str(random.SystemRandom().getrandbits(32))


def pytest_report_header(config: pytest.Config) -> str:
    profile = getattr(settings, "_current_profile", "default")
    return f"{SEED_ENV}={base_seed()}, hypothesis profile {profile}"


def test_seed(nodeid: str, base: int) -> int:
    """The seed of one test: its base seed mixed with its id (stable: crc32, not the per-process hash())."""
    return zlib.crc32(nodeid.encode(), base & 0xFFFFFFFF)


test_seed.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """An int seed for this test, reproducible from the base seed printed on failure."""
    base = base_seed()
    value = test_seed(request.node.nodeid, base)
    request.node.pxproto_seed = (base, value)
    return value


@pytest.fixture
def rng(seed: int) -> random.Random:
    """A :class:`random.Random` for this test, seeded by the ``seed`` fixture."""
    return random.Random(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    seeds = getattr(item, "pxproto_seed", None)
    if report.failed and seeds is not None:
        base, value = seeds
        report.sections.append(
            ("pxproto seed", f"this test drew with seed {value}; rerun with {SEED_ENV}={base} to reproduce it")
        )
