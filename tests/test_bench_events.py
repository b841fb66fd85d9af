"""`alc bench events` on a small backlog: the output's shape, and a clean exit.

No test here looks at a time: the figures depend on the machine (and on whatever
else it runs). It needs mosquitto, like the other integration tests.
"""

from __future__ import annotations

import json
import math
import threading

import pytest

from tools import cli


def test_bench_events_json(capsys: pytest.CaptureFixture[str]) -> None:
    threads_before = set(threading.enumerate())
    assert cli.main(["bench", "events", "--events", "2000", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    for key in ("log_per_s", "upload_per_s"):
        assert isinstance(figures[key], int | float), key
        assert figures[key] > 0, key
    # Real relocks were timed during the upload (any sign: it is only measured).
    late_p99, late_max = figures["timer_late_upload_p99_ms"], figures["timer_late_upload_max_ms"]
    assert math.isfinite(late_p99) and late_max >= late_p99
    leftover = [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert leftover == []
