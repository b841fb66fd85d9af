"""What the end-to-end benchmarks (`alc bench sync`, `alc bench events`) share:
the bench club's names, the controller's config, and small helpers for threads,
waiting and CPU time. A benchmark reports how long things took; these helpers
only make sure every step ends and every thread is joined."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from firmware.config import Config, parse_config
from firmware.core.errors import LocalError
from tools.broker import Broker
from tools.hub.keys import key_path

SITE = "bench"
CONTROLLER = "c1"
BASE = f"alc/{SITE}/{CONTROLLER}"
READER = "door-reader"
DOOR = "main-gate"  # a door of the generated club
KNOWN_SHARE = 0.9  # presentations of a member's credential; the rest are unknown
WAIT_S = 600.0  # for any one step: generous, the bench reports how long it took
POLL_S = 0.002
JOIN_S = 60.0


class BenchError(LocalError):
    """A step of the benchmark did not finish."""


def cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process `pid` (Linux), 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); the split drops the first two.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def controller_config(tmp: Path, keys_dir: Path, broker: Broker) -> Config:
    """The benched controller: on the simulator, one door with a reader whose
    presentations come on the bench topic, as the simulator's do. Its loop runs
    at "realtime" priority where allowed, as deploy/ sets it up on a Pi."""
    return parse_config(
        tmp / "controller.toml",
        {
            "controller": {
                "site": SITE,
                "id": CONTROLLER,
                "data_dir": str(tmp / "controller"),
                "key_file": str(key_path(keys_dir, CONTROLLER)),
                "loop_priority": "realtime",
            },
            "mqtt": {"host": broker.host, "port": broker.port},
            "hal": {"backend": "sim"},
            "doors": [{"id": DOOR, "relay": 17, "fail": "secure"}],
            "readers": [{"id": READER, "kind": "rdm6300", "port": "loop://", "door": DOOR}],
        },
    )


def in_thread(
    stack: ExitStack, run: Callable[[], None], stop: Callable[[], None], name: str
) -> Callable[[], None]:
    """Run `run` in a thread; on unwinding `stack` (or calling the function this
    returns, once), call `stop` and join it."""
    thread = threading.Thread(target=run, name=name)
    thread.start()
    done = threading.Event()

    def finish() -> None:
        if done.is_set():
            return
        done.set()
        stop()
        thread.join(JOIN_S)
        if thread.is_alive():
            raise BenchError(f"thread {name} did not stop within {JOIN_S:g} s")

    stack.callback(finish)
    return finish


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> float:
    """Poll until `predicate()` holds; the monotonic time it was seen to."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic()
