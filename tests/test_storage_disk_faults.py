"""A card that fails while the controller runs: full, remounted read-only. Real
file systems (a small tmpfs, tests/disks.py); the tests skip, saying why, where
this process may not mount.

What must hold: a failed write changes nothing on disk (the file stays at its
last consistent version), the connections work again once the card does, and a
full save made then keeps the executed command ids, the events and the debits.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.core.errors import LocalError
from firmware.core.outbox import LoggedEvent
from firmware.core.store import Delete, Op, Put, Store
from firmware.data_files import BootData, DataFiles, open_data, probe
from firmware.storage import DB_FILE, load_store
from tests import disks
from tests.test_storage_repair import CLUB, EVENTS, NOW, fill

# ~10 MB: more than the card has room for. An unknown kind: stored and hashed, never parsed.
BOOT_GUARD_S = 60.0  # a bound on a wait that must end, never a timing assertion
BIG = [("note", f"x{i:06d}", bytes(200)) for i in range(40_000)]


@pytest.fixture
def card(tmp_path: Path) -> Iterator[Path]:
    with disks.tmpfs(tmp_path / "card", "16m") as mounted:
        yield mounted


@pytest.fixture
def files(card: Path) -> Iterator[DataFiles]:
    files, boot = open_data(card / "data", NOW)
    assert boot.disk_ok
    files.storage.room_kept = 1024 * 1024  # the card is small
    try:
        yield files
    finally:
        files.close()


def free_bytes(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def staged(files: DataFiles) -> bool:
    with files.storage.read("test") as conn:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'records_next'").fetchone()
    return row is not None


def test_a_snapshot_stops_before_taking_the_room_kept_for_events(
    card: Path, files: DataFiles
) -> None:
    store = fill(files)
    files.storage.room_kept = 8 * 1024 * 1024
    with pytest.raises(LocalError, match="nearly full"):
        files.storage.save_snapshot("e2", 1, BIG, Store.build(BIG).store.digest, NOW)
    assert not staged(files), "what it staged is dropped"
    # Events still have room.
    for seq in range(EVENTS + 1, EVENTS + 2001):
        files.outbox.append([LoggedEvent(seq, 1, "access", {"pad": "x" * 200})], [])
    loaded = load_store(files.storage)
    assert loaded.state.v == 42 and loaded.intact
    assert loaded.store.digest == store.digest


def test_a_snapshot_that_fills_the_card_leaves_the_last_version(
    card: Path, files: DataFiles
) -> None:
    store = fill(files)
    # Something else on the card (removed later), leaving 3 MB: less than BIG.
    ballast = card / "ballast"
    ballast.write_bytes(bytes(free_bytes(card) - 3 * 1024 * 1024))
    files.storage.room_kept = 0
    with pytest.raises(LocalError, match="full"):
        files.storage.save_snapshot("e2", 1, BIG, Store.build(BIG).store.digest, NOW)
    loaded = load_store(files.storage)
    assert loaded.state.v == 42 and loaded.intact
    assert loaded.store.digest == store.digest
    # Whatever it could not drop on a full card, the next save drops, once
    # there is room again.
    ballast.unlink()
    small = CLUB[:10]
    files.storage.save_snapshot("e2", 2, small, Store.build(small).store.digest, NOW)
    assert not staged(files)
    assert files.storage.verify()


def test_a_full_card_refuses_events_until_it_has_room_again(card: Path, files: DataFiles) -> None:
    fill(files)
    with disks.full(card) as filler:
        seq = EVENTS
        with pytest.raises(LocalError):
            # The WAL has some room left over from earlier transactions: write
            # until the card is really full.
            for seq in range(EVENTS + 1, EVENTS + 100_000):
                files.outbox.append([LoggedEvent(seq, 1, "access", {"pad": "x" * 500})], [])
        refused = seq
        assert files.outbox.stats().last_seq == refused - 1
        filler.unlink()
        files.outbox.append([LoggedEvent(refused, 1, "access", {})], [])  # same connection
    assert files.outbox.stats().last_seq == refused


def test_a_full_save_after_failed_ones_keeps_commands_events_and_debits(
    card: Path, files: DataFiles
) -> None:
    """The runtime's answer to a failed dataset save: a full save once the disk
    takes writes again. The dataset is replaced; nothing else is touched."""
    store = fill(files)
    ops: list[Op] = [Put("member", "late", b"\xa0"), Delete("member", "m0001")]
    files.storage.room_kept = 0
    with disks.full(card) as filler:
        with pytest.raises(LocalError):
            files.storage.save_snapshot("e1", 43, BIG, Store.build(BIG).store.digest, NOW)
        with pytest.raises(LocalError):
            files.storage.remember_command("cmd-2", int(NOW) + 600)
        filler.unlink()
    # A delta saved on the stored base still works: the failed saves left nothing.
    store.apply(ops)
    files.storage.save_delta("e1", 43, ops, store.digest)
    newer = [*CLUB[:50], ("member", "late", b"\xa0")]
    digest = Store.build(newer).store.digest
    files.storage.save_snapshot("e1", 44, newer, digest, NOW)
    files.close()
    again, boot = open_data(card / "data", NOW)
    try:
        assert boot.problems == ()
        assert boot.loaded.state.v == 44 and boot.loaded.intact
        assert boot.commands == {"cmd-1": int(NOW) + 600}
        assert again.outbox.stats().count == EVENTS
        assert len(again.outbox.debits()) == EVENTS // 10
    finally:
        again.close()


def test_a_card_that_turns_read_only_keeps_what_was_written_before(tmp_path: Path) -> None:
    """An ext4 card mounted `errors=remount-ro` that reports an error: the kernel
    makes it read-only under the open file. Writes fail, reads go on, and after
    a restart (check, mount) the file holds every write made before the error."""
    image, mountpoint = tmp_path / "card.img", tmp_path / "card"
    with disks.ext4(image, mountpoint) as card:
        files, boot = open_data(card / "data", NOW)
        assert boot.disk_ok
        try:
            store = fill(files)
            disks.fail(card)
            with pytest.raises(LocalError):
                files.outbox.append([LoggedEvent(EVENTS + 1, 1, "access", {})], [])
            ops: list[Op] = [Delete("member", "m0002")]
            store.apply(ops)
            with pytest.raises(LocalError):
                files.storage.save_delta("e1", 43, ops, store.digest)
            assert files.storage.state().v == 42  # reading goes on
            assert files.outbox.stats().count == EVENTS
        finally:
            files.close()
        disks.reboot(image, card)
        files, boot = open_data(card / "data", NOW)
        try:
            assert boot.problems == () and boot.disk_ok
            assert boot.loaded.state.v == 42 and boot.loaded.intact
            assert files.outbox.stats().last_seq == EVENTS
            assert boot.commands == {"cmd-1": int(NOW) + 600}
        finally:
            files.close()


def test_the_raw_error_for_a_full_card_is_sqlite_full(card: Path, files: DataFiles) -> None:
    """What the boot's classification relies on (`firmware.data_files._fault`)."""
    files.storage.room_kept = 0
    with disks.full(card), pytest.raises(LocalError) as caught:
        files.storage.save_snapshot("e2", 1, BIG, Store.build(BIG).store.digest, NOW)
    cause = caught.value.__cause__
    assert isinstance(cause, sqlite3.Error)
    assert cause.sqlite_errorcode & 0xFF == 13  # SQLITE_FULL
    assert (card / "data" / DB_FILE).exists()


# --- a hung card ------------------------------------------------------------------------


def test_a_hung_card_at_boot_runs_from_memory_and_goes_back_once_it_answers(
    tmp_path: Path,
) -> None:
    """A frozen file system: every write hangs, reads work (as on a card stuck in
    its own housekeeping). The boot does not wait for it: it runs on a copy in
    memory, and goes back to the card once writes return."""
    image, mountpoint = tmp_path / "card.img", tmp_path / "card"
    with disks.ext4(image, mountpoint) as card:
        files, _ = open_data(card / "data", NOW)
        store = fill(files)
        files.close()
        answer: list[tuple[DataFiles, BootData]] = []
        with disks.frozen(card):
            boot_thread = threading.Thread(
                target=lambda: answer.append(open_data(card / "data", NOW))
            )
            boot_thread.start()
            boot_thread.join(BOOT_GUARD_S)
            assert not boot_thread.is_alive(), "the boot waited for the hung card"
            files, boot = answer[0]
            try:
                assert not boot.disk_ok
                assert any("does not answer" in p for p in boot.problems), boot.problems
                assert boot.loaded.store.digest == store.digest
                assert files.outbox.stats().count == EVENTS
                files.outbox.append([LoggedEvent(EVENTS + 1, 1, "system", {})], [])
                assert files.reattach() is False  # still hung: answered at once
            except BaseException:
                files.close()
                raise
        try:
            for stuck in probe.stuck():
                stuck.join(BOOT_GUARD_S)
            assert probe.stuck() == []
            assert files.reattach() is True
        finally:
            files.close()
        again, boot = open_data(card / "data", NOW)
        try:
            assert boot.problems == ()
            assert again.outbox.stats().last_seq == EVENTS + 1
        finally:
            again.close()


# --- running on: into memory and back ---------------------------------------------------


def test_a_full_card_while_running_goes_to_memory_and_back(card: Path, files: DataFiles) -> None:
    """A save refused by a full card: the data goes to memory, the save is made
    there, and everything returns to the card once it has room."""
    store = fill(files)
    ops: list[Op] = [Put("member", "late", b"\xa0")]
    store.apply(ops)
    with disks.full(card) as filler:
        with pytest.raises(LocalError):
            files.storage.save_delta("e1", 43, ops, store.digest)
        assert files.detach() is True
        files.storage.save_delta("e1", 43, ops, store.digest)  # the refused save, again
        files.outbox.append([LoggedEvent(EVENTS + 1, 1, "system", {"what": "storage"})], [])
        assert files.reattach() is False
        filler.unlink()
        assert files.reattach() is True
    files.close()
    again, boot = open_data(card / "data", NOW)
    try:
        assert boot.problems == ()
        assert boot.loaded.state.v == 43 and boot.loaded.intact
        assert boot.loaded.store.digest == store.digest
        assert again.outbox.stats().last_seq == EVENTS + 1
        assert boot.commands == {"cmd-1": int(NOW) + 600}
    finally:
        again.close()


def test_a_card_turned_read_only_while_running_goes_to_memory(tmp_path: Path) -> None:
    image, mountpoint = tmp_path / "card.img", tmp_path / "card"
    with disks.ext4(image, mountpoint) as card:
        files, _ = open_data(card / "data", NOW)
        try:
            store = fill(files)
            disks.fail(card)
            assert files.detach() is True
            ops: list[Op] = [Delete("member", "m0002")]
            store.apply(ops)
            files.storage.save_delta("e1", 43, ops, store.digest)
            files.outbox.append([LoggedEvent(EVENTS + 1, 1, "access", {})], [])
            assert files.outbox.stats().count == EVENTS + 1
            assert files.reattach() is False  # read-only until a restart
        finally:
            files.close()
