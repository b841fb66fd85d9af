"""The dataset file behind the live data (issue 12 s5): a delta save the card
refuses sends the file stale; the hub hears `disk_ok: false` in `state`, a full
sync rewrites the file whole, `disk_ok` comes back, and the executed command ids
(kept by the other connection) survive it. Real mosquitto, real SQLite file,
the reference hub."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest

from firmware.storage import DB_FILE, Storage
from tests.harness import CLUB, Rig, logged_events, member_toml, wait_for, write_atomically


def storage_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The details of the `system`/`storage` events logged, in order."""
    return [
        body["detail"]
        for type, body in logged_events(caplog)
        if type == "system" and body.get("what") == "storage"
    ]


def test_a_refused_delta_save_is_healed_by_a_full_sync_and_keeps_command_ids(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write_atomically(rig.data_file, CLUB)
    rig.start_hub()
    runtime = rig.run_controller()
    rig.wait_converged()
    rig.settle()
    status = rig.observer.command("status")["id"]
    assert [r["status"] for r in rig.observer.wait_final(status)] == ["done"]

    save_deltas = runtime.storage.save_deltas
    refused: list[int] = []

    def refusing(deltas: Any) -> None:
        if not refused:  # the card refuses one save, then works again
            refused.append(len(deltas))
            raise sqlite3.OperationalError("disk I/O error")
        save_deltas(deltas)

    monkeypatch.setattr(runtime.storage, "save_deltas", refusing)
    write_atomically(rig.data_file, CLUB + member_toml("m3", "00000000c3"))
    # The state is coalesced (a failure healed within a moment may never show
    # in it); the events say both moments, in order.
    wait_for(lambda: len(storage_events(caplog)) == 2, "the save's failure and its healing")
    assert storage_events(caplog) == [
        "a dataset save failed: a full sync rewrites the file",
        "the dataset file is whole again",
    ]
    rig.wait_converged()
    rig.settle()
    wait_for(
        lambda: rig.observer.of("state")[-1].get("disk_ok") is True, "a state with disk_ok true"
    )
    assert refused, "the refused save happened"
    sync_reasons = [s.get("reason") for s in rig.observer.of("sync")]
    assert "digest" in sync_reasons  # the full sync that rewrote the file
    triple = rig.hub_triple()
    rig.stop_controller()

    with Storage.open(rig.tmp / "data" / DB_FILE) as storage:
        assert storage.state()[:3] == triple  # the file is whole again, at the hub's version
        assert status in storage.commands(time.time())  # and still knows the command
