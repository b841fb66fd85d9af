"""The boot opens the data whatever the file's state (firmware/data_files.py):
real SQLite files damaged in several ways, moved aside, what survives salvaged.

The in-memory fallback for a data directory that cannot be written is in
tests/test_storage_memory.py; disks that fail while running in
tests/test_storage_disk_faults.py.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import cbor2
import pytest

from firmware.core.errors import LocalError
from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.core.store import Store
from firmware.data_files import BootData, DataFiles, open_data
from firmware.outbox_store import OutboxStore
from firmware.salvage import ASIDE_KEPT, aside_copies, missing, seq_floor, wal_damage
from firmware.storage import DB_FILE, SCHEMA_VERSION, Storage
from tests.builders import rec

NOW = 1_780_000_000.0
MEMBERS = 600  # enough records for the records table to span many pages
EVENTS = 1500  # and the outbox too
CLUB = [
    ("site", "site", rec(tz="Europe/Berlin")),
    ("door", "front", rec(name="Front door")),
    ("group", "adults", rec(doors=["front"])),
    *(
        (
            "member",
            f"m{i:04d}",
            rec(name=f"Member {i}", groups=["adults"], creds=[["tag", f"{i:010x}"]]),
        )
        for i in range(MEMBERS)
    ),
]


def event(seq: int) -> LoggedEvent:
    if seq % 10 == 0:
        return LoggedEvent(seq, 1_700_000_000 + seq, "debit", {"member": "m0001", "amount": 5})
    body = {
        "door": "front",
        "reader": "front-in",
        "member": f"m{seq % MEMBERS:04d}",
        "granted": True,
    }
    return LoggedEvent(seq, 1_700_000_000 + seq, "access", body)


def debits_of(events: list[LoggedEvent]) -> list[DebitEntry]:
    return [
        DebitEntry(e.seq, e.body["member"], e.body["amount"]) for e in events if e.type == "debit"
    ]


def fill(files: DataFiles) -> Store:
    """A club's dataset, EVENTS events (every tenth a debit) and two command ids."""
    store = Store.build(CLUB).store
    files.storage.save_snapshot("e1", 42, CLUB, store.digest, NOW - 60)
    events = [event(seq) for seq in range(1, EVENTS + 1)]
    files.outbox.append(events, debits_of(events), commands=[("cmd-1", int(NOW) + 600), ("old", 5)])
    return store


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def filled(data_dir: Path) -> Iterator[Path]:
    """A data directory holding a sound, closed file with a dataset and events."""
    files, _ = open_data(data_dir, NOW)
    fill(files)
    files.close()
    yield data_dir / DB_FILE


def reopen(data_dir: Path, now: float = NOW) -> tuple[DataFiles, BootData]:
    return open_data(data_dir, now)


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A connection behind the storage's back, to damage or inspect the file."""
    return closing(sqlite3.connect(path, isolation_level=None))


def pages(path: Path, table: str) -> list[int]:
    """The leaf page numbers of one table (SQLite's dbstat)."""
    with raw(path) as conn:
        rows = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
            (table,),
        ).fetchall()
    return [n for (n,) in rows]


def page_size(path: Path) -> int:
    with raw(path) as conn:
        size: int = conn.execute("PRAGMA page_size").fetchone()[0]
    return size


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def scribble(path: Path, page: int, seed: int = 7) -> None:
    """Random bytes over the middle of one page (its cells), as a bad sector."""
    size = page_size(path)
    noise = random.Random(seed).randbytes(size // 2)
    overwrite(path, (page - 1) * size + size // 4, noise)


def assert_sound_after(data_dir: Path) -> None:
    """The repaired file opens again with nothing to report."""
    files, boot = reopen(data_dir)
    try:
        assert boot.problems == ()
        assert boot.disk_ok
    finally:
        files.close()


# --- sound files ------------------------------------------------------------------------


def test_a_new_data_directory_opens_empty_on_disk(data_dir: Path) -> None:
    files, boot = open_data(data_dir, NOW)
    try:
        assert (data_dir / DB_FILE).is_file()
        assert boot.problems == () and boot.lost == ()
        assert boot.disk_ok and files.on_disk
        assert boot.empty
        assert len(boot.loaded.store) == 0
        assert files.outbox.stats().last_seq == 0  # a new controller counts from 1
    finally:
        files.close()


def test_a_sound_file_opens_as_it_was_stored(filled: Path, data_dir: Path) -> None:
    files, boot = reopen(data_dir)
    try:
        assert boot.problems == () and boot.lost == () and boot.disk_ok
        assert not boot.empty
        assert boot.loaded.intact
        assert boot.loaded.state.v == 42
        assert len(boot.loaded.store) == len(CLUB)
        assert boot.commands == {"cmd-1": int(NOW) + 600}  # "old" has expired
        stats = files.outbox.stats()
        assert (stats.count, stats.last_seq) == (EVENTS, EVENTS)
        assert len(files.outbox.debits()) == EVENTS // 10
        assert aside_copies(data_dir) == {}
    finally:
        files.close()


# --- damaged files ----------------------------------------------------------------------


def zero_the_header(path: Path) -> None:
    overwrite(path, 0, bytes(100))


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(3).randbytes(path.stat().st_size))


def truncate_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def scribble_on_the_records(path: Path) -> None:
    leaves = pages(path, "records")
    assert len(leaves) > 4
    scribble(path, leaves[len(leaves) // 2])


def a_directory_in_its_place(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "something").write_text("not ours")


DAMAGE = {
    "the header zeroed": zero_the_header,
    "random bytes throughout": random_bytes,
    "cut to half its size": truncate_to_half,
    "a records page overwritten": scribble_on_the_records,
    "a directory in its place": a_directory_in_its_place,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_file_is_moved_aside_and_the_controller_starts_empty(
    filled: Path, data_dir: Path, damage: str
) -> None:
    DAMAGE[damage](filled)
    kept = _snapshot(filled)
    files, boot = reopen(data_dir)
    try:
        assert boot.disk_ok and files.on_disk
        assert boot.empty, "no dataset: a full sync is due"
        assert len(boot.loaded.store) == 0
        assert any("damaged" in p for p in boot.problems), boot.problems
        assert any("moved aside" in p for p in boot.problems), boot.problems
        # The damaged file is kept as it was, for support.
        ((stamp, copies),) = aside_copies(data_dir).items()
        main = next(p for p in copies if p.name.endswith(stamp))
        assert _snapshot(main) == kept
        # The fresh file works.
        files.outbox.append([LoggedEvent(files.outbox.stats().last_seq + 1, 1, "system", {})], [])
    finally:
        files.close()
    assert_sound_after(data_dir)


def _snapshot(path: Path) -> bytes | list[str]:
    return sorted(os.listdir(path)) if path.is_dir() else path.read_bytes()


def test_damage_in_the_records_keeps_every_event_debit_and_command(
    filled: Path, data_dir: Path
) -> None:
    scribble_on_the_records(filled)
    files, boot = reopen(data_dir)
    try:
        assert boot.empty
        assert boot.lost == ()  # the outbox was read whole
        assert boot.commands == {"cmd-1": int(NOW) + 600}
        stats = files.outbox.stats()
        assert (stats.count, stats.first_seq, stats.last_seq) == (EVENTS, 1, EVENTS)
        assert files.outbox.batch(0, EVENTS) == [
            [e.seq, e.time, e.type, e.body] for e in map(event, range(1, EVENTS + 1))
        ]
        assert sorted(files.outbox.debits(), key=lambda d: d.seq) == debits_of(
            [event(s) for s in range(1, EVENTS + 1)]
        )
    finally:
        files.close()


def test_damage_in_the_outbox_salvages_both_sides_and_names_the_lost_seqs(
    filled: Path, data_dir: Path
) -> None:
    leaves = pages(filled, "outbox")
    assert len(leaves) > 4
    scribble(filled, leaves[len(leaves) // 2])
    files, boot = reopen(data_dir)
    try:
        assert boot.empty
        stats = files.outbox.stats()
        assert stats.last_seq == EVENTS  # outbox_meta was readable: no seq jump
        kept = {seq for seq, *_ in files.outbox.batch(0, EVENTS)}
        assert 1 in kept and EVENTS in kept, "rows on both sides of the damage survive"
        gone = set(range(1, EVENTS + 1)) - kept
        assert gone, "the scribbled page held events"
        assert [s for first, last in boot.lost for s in range(first, last + 1)] == sorted(gone)
        assert boot.commands == {"cmd-1": int(NOW) + 600}
        # Debits: every one whose ledger row or event survived.
        assert {d.seq for d in files.outbox.debits()} == {s for s in range(10, EVENTS + 1, 10)}
    finally:
        files.close()


def test_a_file_with_nothing_readable_starts_its_seqs_past_any_it_gave_out(
    filled: Path, data_dir: Path
) -> None:
    random_bytes(filled)
    written = filled.stat().st_mtime
    files, boot = reopen(data_dir)
    try:
        floor = seq_floor(NOW, written)
        assert floor > EVENTS
        assert files.outbox.stats().last_seq == floor
        assert boot.lost == ((1, floor),)
        assert boot.commands == {}  # the command ids were lost with it: documented
    finally:
        files.close()


def test_a_damaged_debit_row_is_rebuilt_from_its_event(filled: Path, data_dir: Path) -> None:
    with raw(filled) as conn:
        conn.execute("UPDATE debits SET amount = 'lots' WHERE seq = 20")
    files, boot = reopen(data_dir)
    try:
        assert any("debit row" in p for p in boot.problems), boot.problems
        debits = {d.seq: d for d in files.outbox.debits()}
        assert debits[20] == DebitEntry(20, "m0001", 5)
        assert len(debits) == EVENTS // 10
        assert boot.lost == ()
    finally:
        files.close()


def test_a_schema_from_a_newer_alc_is_moved_aside_as_newer(filled: Path, data_dir: Path) -> None:
    with raw(filled) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    files, boot = reopen(data_dir)
    try:
        assert any("newer alc" in p for p in boot.problems), boot.problems
        (copies,) = aside_copies(data_dir).values()
        assert all(".newer-" in p.name for p in copies)
        # Its outbox is readable with this schema: nothing lost.
        assert files.outbox.stats().count == EVENTS
        assert boot.lost == ()
    finally:
        files.close()


def test_at_most_two_damaged_copies_are_kept_the_newest(data_dir: Path) -> None:
    for n in range(4):
        files, _ = open_data(data_dir, NOW + n)
        files.close()
        zero_the_header(data_dir / DB_FILE)
    files, _ = open_data(data_dir, NOW + 10)
    files.close()
    copies = aside_copies(data_dir)
    assert len(copies) == ASIDE_KEPT
    assert sorted(copies) == [stamp(NOW + 3), stamp(NOW + 10)]


def stamp(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def test_two_repairs_in_one_second_keep_both_copies(data_dir: Path) -> None:
    for _ in range(2):
        files, _ = open_data(data_dir, NOW)
        files.close()
        zero_the_header(data_dir / DB_FILE)
    files, _ = open_data(data_dir, NOW)
    files.close()
    assert len(aside_copies(data_dir)) == 2


# --- the write-ahead log ----------------------------------------------------------------


@pytest.fixture
def crashed(tmp_path: Path, data_dir: Path) -> Path:
    """A data directory as a power cut leaves it: the dataset checkpointed into the
    file, then EVENTS events in the write-ahead log only."""
    files, _ = open_data(data_dir, NOW)
    fill_dataset = Store.build(CLUB).store
    files.storage.save_snapshot("e1", 42, CLUB, fill_dataset.digest, NOW)
    files.close()  # checkpoints: the dataset is in the main file
    live = tmp_path / "live"
    files, _ = open_data(live, NOW)
    files.close()
    shutil.rmtree(live)
    files, _ = open_data(data_dir, NOW)
    events = [event(seq) for seq in range(1, 51)]
    files.outbox.append(events, debits_of(events))
    for suffix in ("", "-wal", "-shm"):  # copied while open: what a power cut leaves
        shutil.copy(data_dir / f"{DB_FILE}{suffix}", tmp_path / f"crash{suffix}")
    files.close()
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(tmp_path / f"crash{suffix}", data_dir / f"{DB_FILE}{suffix}")
    assert wal_damage(data_dir / f"{DB_FILE}-wal") is None
    return data_dir


def test_a_log_left_by_a_power_cut_is_replayed(crashed: Path) -> None:
    files, boot = reopen(crashed)
    try:
        assert boot.problems == () and boot.lost == ()
        assert files.outbox.stats().last_seq == 50
        assert boot.loaded.state.v == 42
    finally:
        files.close()


def test_garbage_after_the_last_frame_of_the_log_is_a_torn_write_and_harmless(
    crashed: Path,
) -> None:
    wal = crashed / f"{DB_FILE}-wal"
    with wal.open("ab") as f:
        f.write(random.Random(5).randbytes(10_000))
    files, boot = reopen(crashed)
    try:
        assert boot.problems == () and boot.lost == ()
        assert files.outbox.stats().last_seq == 50
    finally:
        files.close()


def test_a_log_with_a_damaged_header_is_moved_aside_and_its_seqs_skipped(crashed: Path) -> None:
    wal = crashed / f"{DB_FILE}-wal"
    overwrite(wal, 0, random.Random(9).randbytes(32))
    files, boot = reopen(crashed)
    try:
        assert any("-wal" in p and "lost" in p for p in boot.problems), boot.problems
        # The file itself is sound: its dataset stays (as of the last checkpoint).
        assert boot.loaded.state.v == 42 and not boot.empty
        last = files.outbox.stats().last_seq
        assert last >= NOW * 1000, "past any seq the lost log can have given out"
        assert boot.lost == ((1, last),)
        (copies,) = aside_copies(crashed).values()
        assert any(p.name.endswith("-wal") for p in copies)
    finally:
        files.close()
    assert_sound_after(crashed)


def test_side_files_without_their_database_are_moved_aside(crashed: Path) -> None:
    (crashed / DB_FILE).unlink()
    files, boot = reopen(crashed)
    try:
        assert any("without its database" in p for p in boot.problems), boot.problems
        assert boot.empty
        assert files.outbox.stats().last_seq >= NOW * 1000
        assert not (crashed / f"{DB_FILE}-wal").exists() or files.on_disk
    finally:
        files.close()


# --- permissions ------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000 all the same")
def test_a_file_that_cannot_be_read_is_moved_aside(filled: Path, data_dir: Path) -> None:
    filled.chmod(0)
    files, boot = reopen(data_dir)
    try:
        assert boot.empty and boot.disk_ok
        assert any("moved aside" in p for p in boot.problems)
    finally:
        files.close()


# --- the outbox reads a damaged row as a system event -----------------------------------


def test_a_damaged_event_body_is_sent_as_a_system_event_under_its_seq(
    filled: Path, data_dir: Path
) -> None:
    with raw(filled) as conn:
        conn.execute("UPDATE outbox SET body = x'ff00' WHERE seq = 7")
        conn.execute("UPDATE outbox SET body = ? WHERE seq = 8", (cbor2.dumps([1, 2]),))
        conn.execute("UPDATE outbox SET type = x'00' WHERE seq = 9")  # TEXT affinity keeps a blob
    with Storage.open(filled) as storage:
        rows = OutboxStore(storage).batch(5, 10)
    assert [r[0] for r in rows] == [6, 7, 8, 9, 10]
    for seq, _time, type_, body in rows[1:4]:
        assert type_ == "system"
        assert body == {
            "what": "error",
            "detail": f"event {seq} was damaged on the controller's disk",
        }
    assert rows[0][2] == "access" and rows[4][2] == "debit"


def test_reading_a_damaged_debit_row_is_a_local_error(filled: Path) -> None:
    with raw(filled) as conn:
        conn.execute("UPDATE debits SET member = x'05' WHERE seq = 10")
    with Storage.open(filled) as storage, pytest.raises(LocalError, match="debit row"):
        OutboxStore(storage).debits()


# --- pieces -----------------------------------------------------------------------------


def test_missing_seqs_as_ranges() -> None:
    assert missing([], 0) == []
    assert missing([], 5) == [(1, 5)]
    assert missing([1, 2, 3], 3) == []
    assert missing([2, 3, 7], 9) == [(1, 1), (4, 6), (8, 9)]
    assert missing([1, 5], 3) == [(2, 3)]


def test_quick_check_reports_a_damaged_page(filled: Path) -> None:
    with Storage.open(filled) as storage:
        assert storage.quick_check() == []
    scribble_on_the_records(filled)
    with Storage.open(filled) as storage:
        try:
            found = storage.quick_check()
        except LocalError as exc:  # some damage stops the check itself
            found = [str(exc)]
    assert found
