"""Shared pytest setup: hypothesis profiles sized for `make test` and `make soak`,
the check that no test leaves a thread running, and the plugins whose fixtures
many files use (tests/fixtures.py: `rig` and `children`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.waiting import threads_ended

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

pytest_plugins = [
    "pytester",
    "tests.broker",
    "tests.locked_broker",
    "tests.proxy",
    "tests.fixtures",
]

THREAD_GRACE_S = 10.0
"""How long a test's threads get to finish after it: threads told to stop may
take a moment to see it on a loaded machine, never this long."""


@pytest.fixture(autouse=True)
def _no_thread_outlives_its_test() -> Iterator[None]:
    """Fail a test that leaves a thread running. Threads alive when the test
    started (pytest's, an earlier test's already reported) are not its own."""
    before = set(threading.enumerate())
    yield
    left = threads_ended(before, THREAD_GRACE_S)
    if left:
        names = ", ".join(sorted(f"{t.name}{' (daemon)' if t.daemon else ''}" for t in left))
        pytest.fail(f"threads left running after the test: {names}", pytrace=False)
