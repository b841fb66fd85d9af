"""A data directory that cannot be written: the controller runs on an in-memory
database, then moves back to disk (firmware/data_files.py).

The tests that need a read-only or full file system mount a small tmpfs
(tests/disks.py; they skip, saying why, where mounting is not allowed). The rest
make the directory unusable without privilege: a file where it should be.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.core.store import Store
from firmware.data_files import open_data
from firmware.outbox_store import OutboxStore
from firmware.salvage import aside_copies
from firmware.storage import DB_FILE, Storage, load_store
from tests import disks
from tests.test_storage_repair import CLUB, EVENTS, NOW, fill, zero_the_header


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A data directory path that cannot be made: a file is in its place."""
    path = tmp_path / "data"
    path.write_text("not a directory")
    return path


def on_disk(data_dir: Path) -> dict[str, object]:
    """What the file in `data_dir` holds, read afresh."""
    with Storage.open(data_dir / DB_FILE) as storage:
        outbox = OutboxStore(storage)
        stats = outbox.stats()
        return {
            "state": storage.state(),
            "records": len(list(storage.records())),
            "events": [row[0] for row in outbox.batch(0, stats.last_seq)],
            "last_seq": stats.last_seq,
            "debits": sorted(d.seq for d in outbox.debits()),
            "commands": storage.commands(NOW),
            "verify": storage.verify(),
        }


def test_a_directory_that_cannot_be_made_runs_in_memory(blocked: Path) -> None:
    files, boot = open_data(blocked, NOW)
    try:
        assert not boot.disk_ok and not files.on_disk
        assert files.storage.in_memory and files.outbox.storage.in_memory
        assert any("cannot be written" in p for p in boot.problems), boot.problems
        assert boot.empty
        # Nothing says which seqs were given out before: start past all of them.
        last = files.outbox.stats().last_seq
        assert last >= NOW * 1000
        assert boot.lost == ((1, last),)
    finally:
        files.close()


def test_a_missing_parent_that_is_a_file_runs_in_memory(blocked: Path) -> None:
    files, boot = open_data(blocked / "below", NOW)
    try:
        assert not boot.disk_ok
        assert any("Not a directory" in p for p in boot.problems), boot.problems
    finally:
        files.close()


def test_both_connections_see_one_database_in_memory(blocked: Path) -> None:
    files, _ = open_data(blocked, NOW)
    try:
        store = fill(files)
        assert files.storage.state().digest == store.digest
        # Command ids written through the outbox's connection, read through the
        # dataset's: one database.
        assert files.storage.commands(NOW) == {"cmd-1": int(NOW) + 600}
        with files.outbox.storage.read("test") as conn:
            assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == len(CLUB)
        assert load_store(files.storage).intact
        assert files.storage.verify()
    finally:
        files.close()


def test_a_second_boot_in_one_process_gets_its_own_memory(blocked: Path) -> None:
    first, _ = open_data(blocked, NOW)
    second, _ = open_data(blocked, NOW)
    try:
        fill(first)
        assert second.storage.counts() == {}
    finally:
        first.close()
        second.close()


def test_the_dataset_and_the_events_write_at_once_in_memory(blocked: Path) -> None:
    """The storage thread saves snapshots and checks them while the event thread
    appends and reads: in memory, as on disk, neither fails for the other."""
    files, _ = open_data(blocked, NOW)
    base = files.outbox.stats().last_seq
    errors: list[BaseException] = []
    many = [("member", f"x{i:05d}", b"\xa0") for i in range(20_000)]
    digest = Store.build(many).store.digest

    def dataset() -> None:
        try:
            for v in range(1, 4):
                files.storage.save_snapshot("e1", v, many, digest, NOW)
                assert files.storage.verify()
        except BaseException as exc:
            errors.append(exc)

    def events() -> None:
        try:
            for seq in range(base + 1, base + 2001):
                files.outbox.append([LoggedEvent(seq, 1, "access", {"n": seq})], [])
                if seq % 100 == 0:
                    assert files.outbox.stats().count == seq - base
                    assert len(files.outbox.batch(seq - 10, seq)) == 10
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=dataset), threading.Thread(target=events)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert files.outbox.stats().count == 2000
        assert files.storage.counts() == {"member": 20_000}
    finally:
        files.close()


# --- back to disk -----------------------------------------------------------------------


def test_reattach_waits_for_the_disk_then_moves_everything_there(blocked: Path) -> None:
    files, _ = open_data(blocked, NOW)
    try:
        store = fill(files)
        last = files.outbox.stats().last_seq
        assert files.reattach() is False
        assert not files.on_disk
        blocked.unlink()  # the technician frees the path
        dataset, outbox = files.storage, files.outbox.storage
        assert files.reattach() is True
        assert files.on_disk and files.storage is dataset and files.outbox.storage is outbox
        assert not dataset.in_memory and not outbox.in_memory
        assert files.reattach() is True  # already there
        # Writes after the switch go to the file.
        files.outbox.append([LoggedEvent(last + 1, 2, "system", {"what": "storage"})], [])
    finally:
        files.close()
    stored = on_disk(blocked)
    assert stored["state"] == ("e1", 42, store.digest, NOW - 60)
    assert stored["records"] == len(CLUB) and stored["verify"]
    assert stored["events"] == [*range(1, EVENTS + 1), last + 1]
    assert stored["last_seq"] == last + 1
    assert stored["debits"] == list(range(10, EVENTS + 1, 10))
    assert stored["commands"] == {"cmd-1": int(NOW) + 600}
    assert sorted(p.name for p in blocked.iterdir()) == [DB_FILE]


def test_no_event_appended_during_reattach_is_lost(blocked: Path) -> None:
    files, _ = open_data(blocked, NOW)
    many = [("member", f"x{i:05d}", b"\xa0") for i in range(30_000)]
    files.storage.save_snapshot("e1", 1, many, Store.build(many).store.digest, NOW)
    base = files.outbox.stats().last_seq
    blocked.unlink()
    stop = threading.Event()
    appended: list[int] = []

    def events() -> None:
        seq = base
        while not stop.is_set() or len(appended) < 50:
            seq += 1
            files.outbox.append([LoggedEvent(seq, 1, "access", {})], [DebitEntry(seq, "m", 1)])
            appended.append(seq)

    writer = threading.Thread(target=events)
    writer.start()
    try:
        assert files.reattach() is True
    finally:
        stop.set()
        writer.join()
        files.close()
    stored = on_disk(blocked)
    assert stored["events"] == appended
    assert stored["debits"] == appended
    assert stored["records"] == 30_000


def test_a_snapshot_half_staged_in_memory_goes_on_on_disk(blocked: Path) -> None:
    files, _ = open_data(blocked, NOW)
    blocked.unlink()
    many = [("member", f"x{i:05d}", b"\xa0") for i in range(5000)]
    digest = Store.build(many).store.digest
    done = False

    def records() -> Iterator[tuple[str, str, bytes]]:
        nonlocal done
        for i, record in enumerate(many):
            if i == 2500 and not done:
                done = files.reattach()  # between two chunks of the save
            yield record

    try:
        files.storage.save_snapshot("e1", 1, records(), digest, NOW)
        assert done and files.on_disk
    finally:
        files.close()
    stored = on_disk(blocked)
    assert stored["records"] == 5000 and stored["verify"]


# --- read-only and full file systems (mounted) ------------------------------------------


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    with disks.tmpfs(tmp_path / "card", "64m") as card:
        yield card


def test_a_read_only_card_runs_on_a_copy_of_its_file_then_goes_back(mounted: Path) -> None:
    data_dir = mounted / "data"
    files, _ = open_data(data_dir, NOW)
    store = fill(files)
    files.close()
    disks.remount(mounted, read_only=True)
    files, boot = open_data(data_dir, NOW)
    try:
        assert not boot.disk_ok
        assert any("Read-only file system" in p for p in boot.problems), boot.problems
        # Everything the file held, in memory: the dataset decides, events wait.
        assert not boot.empty and boot.loaded.intact
        assert boot.loaded.store.digest == store.digest
        assert boot.lost == ()
        assert files.outbox.stats().count == EVENTS
        assert boot.commands == {"cmd-1": int(NOW) + 600}
        files.outbox.append([LoggedEvent(EVENTS + 1, 1, "system", {})], [])
        assert files.reattach() is False
        disks.remount(mounted, read_only=False)
        assert files.reattach() is True
    finally:
        files.close()
    stored = on_disk(data_dir)
    assert stored["events"] == list(range(1, EVENTS + 2))
    assert stored["state"] == ("e1", 42, store.digest, NOW - 60)


def test_a_damaged_file_on_a_read_only_card_is_set_aside_once_it_can_be(mounted: Path) -> None:
    data_dir = mounted / "data"
    files, _ = open_data(data_dir, NOW)
    fill(files)
    files.close()
    zero_the_header(data_dir / DB_FILE)
    disks.remount(mounted, read_only=True)
    files, boot = open_data(data_dir, NOW)
    try:
        assert not boot.disk_ok and boot.empty
        assert any("left in place" in p for p in boot.problems), boot.problems
        assert files.damaged_left
        disks.remount(mounted, read_only=False)
        assert files.reattach() is True
        assert not files.damaged_left
    finally:
        files.close()
    assert len(aside_copies(data_dir)) == 1
    assert on_disk(data_dir)["verify"]


def test_a_full_card_at_boot_runs_on_a_copy_of_its_file(mounted: Path) -> None:
    data_dir = mounted / "data"
    files, _ = open_data(data_dir, NOW)
    store = fill(files)
    files.close()
    with disks.full(mounted) as filler:
        files, boot = open_data(data_dir, NOW)
        try:
            assert not boot.disk_ok
            assert boot.loaded.store.digest == store.digest
            assert files.outbox.stats().count == EVENTS
            assert files.reattach() is False
            filler.unlink()
            assert files.reattach() is True
        finally:
            files.close()
    assert on_disk(data_dir)["events"] == list(range(1, EVENTS + 1))


# --- from disk to memory while running --------------------------------------------------


def test_detach_moves_everything_to_memory_and_reattach_brings_it_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files, _ = open_data(data_dir, NOW)
    try:
        store = fill(files)
        dataset, outbox = files.storage, files.outbox.storage
        assert files.detach() is True
        assert not files.on_disk and files.storage is dataset and files.outbox.storage is outbox
        assert files.detach() is True  # already there
        # Everything is in memory, and writes go there.
        assert load_store(files.storage).store.digest == store.digest
        assert files.storage.commands(NOW) == {"cmd-1": int(NOW) + 600}
        assert files.outbox.stats().count == EVENTS
        files.outbox.append([LoggedEvent(EVENTS + 1, 1, "system", {})], [])
        files.storage.remember_command("cmd-2", int(NOW) + 600)
        assert on_disk(data_dir)["last_seq"] == EVENTS  # the file is left as it was
        assert files.reattach() is True
    finally:
        files.close()
    stored = on_disk(data_dir)
    assert stored["events"] == list(range(1, EVENTS + 2))
    assert stored["commands"] == {"cmd-1": int(NOW) + 600, "cmd-2": int(NOW) + 600}
    assert stored["state"] == ("e1", 42, store.digest, NOW - 60)


def test_no_event_appended_during_detach_is_lost(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files, _ = open_data(data_dir, NOW)
    many = [("member", f"x{i:05d}", b"\xa0") for i in range(30_000)]
    files.storage.save_snapshot("e1", 1, many, Store.build(many).store.digest, NOW)
    stop = threading.Event()
    appended: list[int] = []

    def events() -> None:
        seq = 0
        while not stop.is_set() or len(appended) < 50:
            seq += 1
            files.outbox.append([LoggedEvent(seq, 1, "access", {})], [DebitEntry(seq, "m", 1)])
            appended.append(seq)

    writer = threading.Thread(target=events)
    writer.start()
    try:
        assert files.detach() is True
    finally:
        stop.set()
        writer.join()
    try:
        assert [row[0] for row in files.outbox.batch(0, appended[-1])] == appended
        assert [d.seq for d in files.outbox.debits()] == appended
        assert files.storage.counts() == {"member": 30_000}
    finally:
        files.close()


def test_detach_of_a_file_that_cannot_be_read_stays_on_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files, _ = open_data(data_dir, NOW)
    try:
        fill(files)
        # The file vanishes under the open connections (a card pulled out).
        (data_dir / DB_FILE).unlink()
        assert files.detach() is False
        assert files.on_disk
    finally:
        files.close()


def test_a_damaged_file_on_a_card_too_full_for_a_fresh_one(mounted: Path) -> None:
    """The card takes the boot's test write but not a fresh database: the damaged
    file is moved aside all the same (kept for support), the salvage goes to
    memory, and no half-made file is left to take a damaged copy's place."""
    data_dir = mounted / "data"
    files, _ = open_data(data_dir, NOW)
    fill(files)
    files.close()
    zero_the_header(data_dir / DB_FILE)
    gap = mounted / "gap"
    gap.write_bytes(bytes(8192))  # two pages: room for the test write, not a database
    with disks.full(mounted) as filler:
        gap.unlink()
        files, boot = open_data(data_dir, NOW)
        try:
            assert not boot.disk_ok and boot.empty
            assert any("moved aside" in p for p in boot.problems), boot.problems
            assert not (data_dir / DB_FILE).exists()
            assert not files.damaged_left
            filler.unlink()
            assert files.reattach() is True
        finally:
            files.close()
    assert len(aside_copies(data_dir)) == 1
    assert on_disk(data_dir)["verify"]
