"""The test suite's own waiting helpers: `wait_for`, and the autouse check that
fails a test which leaves a thread running (`tests/conftest.py`)."""

from __future__ import annotations

import threading

import pytest

from tests import conftest
from tests.waiting import threads_ended, wait_for

# The inner tests below park their threads on this; the outer test lets them go,
# so nothing outlives it either.
RELEASE = threading.Event()

INNER_CONFTEST = "from tests.conftest import _no_thread_outlives_its_test  # noqa: F401\n"

INNER_TESTS = """
import threading
from tests.test_waiting import RELEASE

def test_leaves_a_thread_behind():
    threading.Thread(target=RELEASE.wait, name="left-behind", daemon=True).start()

def test_stops_its_thread_a_moment_after_it_ends():
    done = threading.Event()
    def work():
        done.wait()
    thread = threading.Thread(target=work, name="stopping")
    thread.start()
    # Told to stop on the way out, as a fixture's teardown does: not a leak.
    threading.Timer(0.2, done.set).start()

def test_stops_its_thread():
    thread = threading.Thread(target=lambda: None, name="quick")
    thread.start()
    thread.join()
"""


def test_a_test_that_leaves_a_thread_running_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conftest, "THREAD_GRACE_S", 2.0)
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=INNER_TESTS)
    before = set(threading.enumerate())
    try:
        result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    finally:
        RELEASE.set()
    assert not threads_ended(before, 10.0)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_a_thread_behind*",
            "*threads left running after the test: left-behind (daemon)*",
        ]
    )


def test_wait_for_returns_once_true_and_fails_naming_what_it_waited_for() -> None:
    flag = threading.Event()
    timer = threading.Timer(0.05, flag.set)
    timer.start()
    assert wait_for(flag.is_set, "the flag") >= 0.0
    timer.join()
    with pytest.raises(pytest.fail.Exception, match="waiting for the impossible"):
        wait_for(lambda: False, "the impossible", timeout=0.05)
