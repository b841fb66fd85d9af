"""Fixtures many test files use (a plugin of tests/conftest.py, loaded after
tests/broker.py so that the broker's module is rewritten for assertions first).
A file that needs another `rig` defines its own."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Rig
from tools.broker import Broker


@pytest.fixture
def rig(broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Rig]:
    """The rig of one test: a controller, the reference hub and tools on the
    test's broker (a file that needs another rig defines its own)."""
    caplog.set_level(logging.INFO)
    rig = Rig(broker, tmp_path)
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every child started; any still alive at the end is killed and reaped."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
