"""The `broker` fixture: a throwaway mosquitto (`tools.broker.Broker`) per test.

The broker is stopped (and waited for) when the fixture ends, so no test leaks a
process. `Broker` and `free_port` are re-exported for the tests that import them
from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.broker import Broker, BrokerError, free_port

__all__ = ["Broker", "broker", "free_port"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto, stopped after the test."""
    b = Broker(tmp_path / "broker")
    try:
        b.start()
    except BrokerError as exc:
        pytest.fail(str(exc))
    try:
        yield b
    finally:
        b.stop()
