"""`alc bench sync` end to end on a small club: the output's shape, and a clean exit.

No test here looks at a time: the figures depend on the machine (and on whatever
else it runs). It needs mosquitto, like the other integration tests.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from tools import cli


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
    argv = ["bench", "sync", "--members", "2000", "--deltas", "200", "--json"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    for key in ("sync_s", "deltas_per_s", "p99_during_sync_ms"):
        assert isinstance(figures[key], int | float), key
        assert figures[key] > 0, key
    # Everything it started is stopped: threads joined, mosquitto waited for.
    leftover = [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert leftover == []
    assert _children("mosquitto") == []
