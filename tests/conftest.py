"""Shared pytest setup: hypothesis profiles sized for `make test` and `make soak`."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# `make test` must stay under 10 minutes on 2 cores: modest example counts, no
# deadlines (machines are noisy; tests never assert a time).
settings.register_profile(
    "default",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "soak",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("ALC_HYPOTHESIS_PROFILE", "default"))

pytest_plugins = ["tests.broker", "tests.proxy"]
