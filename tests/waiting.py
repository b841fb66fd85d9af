"""Waiting in tests: for a condition to hold, and for threads to end.

Every test that waits for something another thread does waits here, with a
generous timeout that is never a claim about speed (the machines are shared and
loaded): `wait_for` polls a condition that has no event to wait on, and
`threads_ended` joins threads. A test that must show that something did NOT
happen never sleeps and looks: it sends a later marker down the same path, waits
for the marker, and only then checks (see `tests/fuzz.py` and the integration
tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection

import pytest

WAIT_S = 20.0  # generous: a loaded CI machine, never a claim about speed
FIRST_POLL_S = 0.001
MAX_POLL_S = 0.02  # polls back off to this: quick when it is quick, cheap when slow


def wait_for(predicate: Callable[[], object], what: str, timeout: float = WAIT_S) -> float:
    """Poll until `predicate()` is true; fail the test naming `what` after
    `timeout` seconds. Returns the seconds it took (for printing, never for an
    assertion)."""
    start = time.monotonic()
    deadline = start + timeout
    pause = FIRST_POLL_S
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(min(pause, left))
        pause = min(pause * 2, MAX_POLL_S)
    return time.monotonic() - start


def threads_ended(before: Collection[threading.Thread], timeout: float) -> list[threading.Thread]:
    """Wait (joining, not polling) up to `timeout` seconds for every thread that
    is not in `before` to end; return those still alive then. Threads started
    while waiting (a thread that starts another as it stops) are waited for too."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        left = deadline - time.monotonic()
        if not alive or left <= 0:
            return alive
        alive[0].join(left)
