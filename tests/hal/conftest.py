"""Fixtures of the HAL tests: a clock the test moves, an event recorder, mock pins
reset after every test, and pseudo-terminals. (tests/conftest.py checks that no
thread outlives its test; `wait_until` is tests/waiting.py's `wait_for`.)"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from hal.events import HalEvent
from tests.waiting import wait_for

E = TypeVar("E")

WAIT_S = 10.0  # generous: a loaded CI machine, never a claim about speed

wait_until = wait_for  # the HAL tests' name for the suite's one polling wait


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Events:
    """A sink that records events and lets a test wait for them."""

    def __init__(self) -> None:
        self.seen: list[HalEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: HalEvent) -> None:
        with self._changed:
            self.seen.append(event)
            self._changed.notify_all()

    def of(self, kind: type[E]) -> list[E]:
        with self._changed:
            return [e for e in self.seen if isinstance(e, kind)]

    def wait_for(self, done: Callable[[list[HalEvent]], bool], timeout: float = WAIT_S) -> None:
        """Wait until `done(events)`; fail with what was seen if it never is."""
        with self._changed:
            if not self._changed.wait_for(lambda: done(self.seen), timeout):
                pytest.fail(f"timed out; events seen: {self.seen}")

    def wait_count(self, kind: type[E], count: int, timeout: float = WAIT_S) -> list[E]:
        """Wait for at least `count` events of `kind`; return all of them."""
        self.wait_for(lambda seen: sum(isinstance(e, kind) for e in seen) >= count, timeout)
        return self.of(kind)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """A fresh MockFactory, also gpiozero's default for the test, reset after it."""
    previous = Device.pin_factory
    mock = MockFactory()
    Device.pin_factory = mock
    try:
        yield mock
    finally:
        mock.reset()
        Device.pin_factory = previous


@pytest.fixture
def pty() -> Iterator[tuple[str, int]]:
    """A pseudo-terminal: (path of the side a reader opens, fd the test writes to)."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave), master
    finally:
        os.close(master)
        os.close(slave)
