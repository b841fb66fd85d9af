"""`alc bench sync` end to end on a small club: the output's shape, and a clean exit;
and its relock probe against a door of the test's own making.

No test here looks at how long anything took: the figures depend on the machine
(and on whatever else it runs). It needs mosquitto, like the other integration tests.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path

import gpiozero
import pytest
from gpiozero.pins.mock import MockFactory

from tests.waiting import wait_for
from tools import cli
from tools.bench_rig import BenchError, RelockProbe
from tools.floor_ref import find_floor


def _children(name: str) -> list[int]:
    """Pids of this process's children called `name` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if comm == name and int(rest.split()[1]) == os.getpid():
            found.append(int(entry.name))
    return found


def test_bench_sync_json(capsys: pytest.CaptureFixture[str]) -> None:
    threads_before = set(threading.enumerate())
    argv = ["bench", "sync", "--members", "2000", "--deltas", "200"]
    argv += ["--big-deltas", "2", "--delta-relocks", "2", "--json"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    for key in ("sync_s", "deltas_per_s", "p99_during_sync_ms"):
        assert isinstance(figures[key], int | float), key
        assert figures[key] > 0, key
    # Real relocks were timed (a lateness may be any sign: it is only measured).
    for phase in ("", "deltas_"):
        for key in (f"timer_late_{phase}p99_ms", f"timer_late_{phase}max_ms"):
            assert isinstance(figures[key], int | float), key
            assert math.isfinite(figures[key]), key
        assert figures[f"timer_late_{phase}max_ms"] >= figures[f"timer_late_{phase}p99_ms"]
    assert figures["big_delta_ms"] > 0
    assert figures["nochange_sync_ms"] > 0  # twice-daily syncs answered `current`
    # Beside the floor of the same run (floor.py sits beside the checkout, in CI too).
    if find_floor() is not None:
        assert figures["floor_us"] > 0 and figures["store_us"] > 0
        assert figures["sync_ratio"] > 0 and figures["cold_ratio"] > 0
    # Everything it started is stopped: threads joined, mosquitto waited for.
    leftover = [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert leftover == []
    assert _children("mosquitto") == []


def test_bench_sync_text_names_the_relock_figures(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "sync", "--credentials", "2000", "--deltas", "50", "--syncs", "2"]
    argv += ["--big-deltas", "1", "--delta-relocks", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "alc bench sync: 1,000 members" in out
    assert "relock lateness p99 during sync" in out
    assert "relock lateness max during sync" in out
    line = next(x for x in out.splitlines() if x.startswith("relocks during the sync commands"))
    assert int(line.split(": ")[1].split()[0]) >= 1  # unlocks timed
    assert "peak memory" in out


class FakeDoor:
    """A door of the test's own: a real gpiozero output on a mock pin, unlocked by
    `present` and relocked by its own thread once its deadline has passed plus
    `late_s` (so the relock is late by at least that much). `unlocks` False: a
    door that never answers."""

    def __init__(self, late_s: float, *, unlocks: bool = True) -> None:
        self.factory = MockFactory()
        self.relay = gpiozero.DigitalOutputDevice(18, pin_factory=self.factory)
        self.late_s = late_s
        self.unlocks = unlocks
        self.due: float | None = None
        self.threads: list[threading.Thread] = []

    def present(self) -> None:
        if not self.unlocks:
            return
        due = time.monotonic() + 0.05  # the "decision", unlock_s 0.05
        self.due = due
        self.relay.on()
        thread = threading.Thread(target=self._relock, args=(due,))
        self.threads.append(thread)
        thread.start()

    def _relock(self, due: float) -> None:
        while time.monotonic() < due + self.late_s:
            time.sleep(0.001)
        self.due = None
        self.relay.off()

    def close(self) -> None:
        for thread in self.threads:
            thread.join()
        self.relay.close()
        self.factory.close()


def test_relock_probe_times_each_relock_against_its_deadline() -> None:
    door = FakeDoor(late_s=0.03)
    try:
        probe = RelockProbe(
            door.factory.pin(18),
            door.present,
            lambda: door.due,
            seed=1,
            clock=time.monotonic,
            unlock_s=0.05,
            gap_s=0.01,
        )
        with probe:
            wait_for(lambda: len(probe.relocks) >= 3, "three relocks")
    finally:
        door.close()
    assert len(probe.relocks) == len(door.threads)  # one figure per unlock
    # The door relocks only once `late_s` past the deadline: never earlier.
    assert all(late >= 30 - 1 for late in probe.late_ms())
    assert all(unlock >= -1 for unlock in probe.unlock_ms())


def test_relock_probe_fails_when_the_door_never_unlocks() -> None:
    door = FakeDoor(late_s=0.0, unlocks=False)
    try:
        probe = RelockProbe(
            door.factory.pin(18), door.present, lambda: door.due, seed=1, answer_s=0.1
        )
        with pytest.raises(BenchError, match="no unlock after a presentation"), probe:
            pass
    finally:
        door.close()
    assert probe.relocks == []
