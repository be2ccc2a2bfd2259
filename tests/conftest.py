"""Shared test settings: hypothesis profiles (default, and 'slow' for long runs)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)
settings.register_profile(
    "slow",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    max_examples=200_000,
)
settings.load_profile(os.environ.get("PXPROTO_HYPOTHESIS_PROFILE", "default"))
