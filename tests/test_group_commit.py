"""The runtime's group commit: presentations that queue up during a burst are
handled in one loop step, and the events they log are written in one transaction.

The controller runs offline here (its broker port has no listener), so nothing but
the presentations reaches its queue and the grouping is exact.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from firmware.config import parse_config
from firmware.core.inputs import Presented
from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.runtime import Runtime
from firmware.runtime.loop import MAX_EVENTS_PER_STEP
from firmware.storage import DB_FILE, Storage
from sim.bench import BenchEdge
from tests.broker import free_port
from tests.harness import JOIN_S, wait_for


def test_a_burst_is_decided_one_by_one_and_made_durable_in_few_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "c1.key").write_text(secrets.token_hex(32) + "\n")
    (tmp_path / "c1.key").chmod(0o600)
    config = parse_config(
        tmp_path / "controller.toml",
        {
            "controller": {
                "site": "demo",
                "id": "c1",
                "data_dir": str(tmp_path / "data"),
                "key_file": str(tmp_path / "c1.key"),
            },
            "mqtt": {"host": "127.0.0.1", "port": free_port()},
            "hal": {"backend": "sim"},
            "readers": [{"id": "r1", "door": "front"}],
        },
    )
    runtime = Runtime(config, edges=[BenchEdge])
    appends: list[list[int]] = []
    append = runtime.events.append

    def recording(
        events: list[LoggedEvent],
        debits: list[DebitEntry],
        *,
        commands: Sequence[tuple[str, int]] = (),
    ) -> None:
        append(events, debits, commands=commands)
        appends.append([e.seq for e in events])
        time.sleep(0.02)  # a slow SD card: what queues meanwhile shares the next flush

    monkeypatch.setattr(runtime.events, "append", recording)
    burst = 2 * MAX_EVENTS_PER_STEP + 50
    for i in range(burst):  # all queued before the loop runs: one burst
        runtime.submit(Presented("r1", "tag", f"{i:010x}"))
    thread = threading.Thread(target=runtime.run, name="group-commit-controller")
    thread.start()
    try:
        wait_for(lambda: sum(map(len, appends)) >= 1 + burst, "the burst to be durable")
    finally:
        runtime.stop()
        thread.join(JOIN_S)
    assert not thread.is_alive()

    # The boot event, then the burst in a few transactions, not one per event:
    # the event thread writes whatever queued while it flushed in one go. (How
    # few depends on the machine's speed; a tenth of the burst is a loose bound.)
    assert len(appends[0]) == 1
    assert len(appends) <= 1 + burst // 10
    seqs = [seq for a in appends for seq in a]  # the boot numbers on from the clock
    assert seqs == list(range(seqs[0], seqs[0] + burst + 1))
    assert len(runtime.decision_latency_s) == burst  # each decision is still timed
    with Storage.open(tmp_path / "data" / DB_FILE) as storage, storage.read("test") as conn:
        rows = conn.execute("SELECT seq, type FROM outbox ORDER BY seq").fetchall()
    first = rows[0][0]
    assert rows == [(first, "system")] + [(first + i, "access") for i in range(1, burst + 1)]
