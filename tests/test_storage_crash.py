"""Crash test of the durable dataset: a child process writes a hub's deltas,
snapshots, new epochs, purges and command ids through `Storage` as fast as it can
(tests/crash_child.py), and is killed with SIGKILL at random moments. After every
kill the file must hold one exact version of the hub's data: the stored digest
equals the hub's digest for the stored `(epoch, v)`, the records are that version's
records, `verify()` holds, and the version is the last save the child finished or
the one it was in the middle of. Then the child restarts from what is stored.

SIGKILL loses what the process had not yet handed to the kernel, never what the
kernel holds, so this tests atomicity and recovery, not power-loss durability
(that is `synchronous=FULL`'s job).
"""

from __future__ import annotations

import hashlib
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from firmware.storage import DB_FILE, Storage, load_store
from tests.crash_child import dataset, journal_entries

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0


def hub_digest(records: dict[tuple[str, str], bytes]) -> bytes:
    """PROTOCOL.md s3's digest, written independently of the firmware."""
    total = 0
    for (kind, id), body in records.items():
        h = hashlib.sha256(kind.encode() + b"\x00" + id.encode() + b"\x00" + body).digest()
        total += int.from_bytes(h[:16], "big")
    return (total % (1 << 128)).to_bytes(16, "big")


@dataclass
class Expected:
    """What the file may hold: the data version and the remembered commands."""

    epoch: str | None = None
    v: int = 0
    commands: dict[str, int] = field(default_factory=dict)

    def after(self, entry: list[str]) -> Expected:
        """This state with one journalled save applied."""
        what, *args = entry
        commands = dict(self.commands)
        if what in ("snap", "delta"):
            epoch = None if args[0] == "-" else args[0]
            return Expected(epoch, int(args[1]), commands)
        if what == "remember":
            commands[args[0]] = max(int(args[1]), commands.get(args[0], int(args[1])))
        elif what == "forget":
            commands = {id: exp for id, exp in commands.items() if exp >= int(args[0])}
        return Expected(self.epoch, self.v, commands)


@dataclass
class Tally:
    kills: int = 0
    early_kills: int = 0
    saves: int = 0
    in_flight_kept: int = 0
    in_flight_lost: int = 0


def run_cycle(
    children: list[subprocess.Popen[bytes]],
    db: Path,
    seed: int,
    cycle: int,
    journal: Path,
    delay: float,
    *,
    early: bool,
) -> None:
    """Start the child, kill it `delay` s after it is ready (after it starts, if
    `early`), and reap it."""
    stderr = journal.with_suffix(".err")
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.crash_child",
                str(db),
                str(seed),
                str(cycle),
                str(journal),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    children.append(proc)
    try:
        assert proc.stdout is not None
        if not early:
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout, selectors.EVENT_READ)
                if not selector.select(READY_TIMEOUT_S):
                    pytest.fail(f"child {cycle} not ready in {READY_TIMEOUT_S} s")
            line = proc.stdout.readline()
            if line != b"ready\n":
                pytest.fail(f"child {cycle} did not start: {stderr.read_text()}")
        time.sleep(delay)
        if proc.poll() is not None:
            pytest.fail(f"child {cycle} stopped by itself: {stderr.read_text()}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check_after_kill(
    db: Path, seed: int, before: Expected, journal: Path, tally: Tally
) -> Expected:
    """The file holds one exact hub version, the last finished save's or the one in
    flight; returns what it holds, for the next cycle."""
    entries = list(journal_entries(journal.read_text()) if journal.exists() else [])
    done = before
    for entry, finished in entries:
        if finished:
            done = done.after(entry)
            tally.saves += 1
    in_flight = entries[-1][0] if entries and not entries[-1][1] else None
    candidates = [done] if in_flight is None else [done, done.after(in_flight)]

    with Storage.open(db) as storage:
        epoch, v, digest, _ = storage.state()
        records = {(kind, id): rec for kind, id, rec in storage.records()}
        verified = storage.verify()
        loaded = load_store(storage)
    with closing(sqlite3.connect(db)) as conn:
        commands = dict(conn.execute("SELECT id, exp FROM commands").fetchall())
    found = Expected(epoch, v, commands)

    hub = dataset(seed, epoch, v)
    assert digest == hub_digest(hub), f"stored digest is not the hub's at ({epoch}, {v})"
    assert records == hub
    assert verified
    assert loaded.intact and len(loaded.store) == len(hub)
    assert found in candidates, f"stored {found} is neither of {candidates}"
    if in_flight is not None:
        if found == candidates[1] and candidates[0] != candidates[1]:
            tally.in_flight_kept += 1
        elif candidates[0] != candidates[1]:
            tally.in_flight_lost += 1
    return found


def crash_run(
    tmp_path: Path, children: list[subprocess.Popen[bytes]], seed: int, kills: int
) -> Tally:
    rng = random.Random(seed)
    db = tmp_path / DB_FILE
    expected = Expected()
    tally = Tally()
    cycle = 0
    while tally.kills < kills:
        # Now and then a kill while the child may still be opening the file.
        early = rng.random() < 0.1
        delay = rng.uniform(0.0, 0.15) if early else rng.uniform(0.02, 0.3)
        journal = tmp_path / f"journal-{cycle}.txt"
        run_cycle(children, db, seed, cycle, journal, delay, early=early)
        expected = check_after_kill(db, seed, expected, journal, tally)
        if early:
            tally.early_kills += 1
        else:
            tally.kills += 1
        cycle += 1
    assert tally.saves > kills  # the child did get work done between kills
    print(f"\ncrash run seed {seed}: {tally}")
    return tally


def test_storage_survives_sigkill(tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    crash_run(tmp_path, children, seed=20240601, kills=10)


@pytest.mark.slow
def test_storage_survives_many_sigkills(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    seed = int(os.environ.get("ALC_CRASH_SEED", "7"))
    crash_run(tmp_path, children, seed=seed, kills=100)
