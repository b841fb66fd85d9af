"""Moving the controller's data between the card and an in-memory database.

`firmware.data_files` runs on an in-memory database when the data directory
cannot be written: from the boot, or from the moment a running controller finds
its card refusing writes (`to_memory`: the file is read into memory, both
connections switch to it). Once the card takes writes again, `to_disk` makes a
new file from the database and switches both connections to it:

1. holding only the dataset's connection (the storage thread waits, the event
   thread does not), the records are copied into `alc.sqlite3.new`, a few
   thousand per transaction;
2. holding the outbox's connection too, the dataset's state, the executed command
   ids, the outbox and the debits are copied in one transaction, the new file's
   log is folded in, the new file takes the old one's place, and both
   connections switch to it. Events wait only for this short step.

`to_memory` goes the same two steps the other way. SQLite's backup API would copy
the database in one call, but an in-memory source restarts a backup at every
commit of any of its connections, and a backup in one step would hold every
connection for the whole copy: a door would wait for its access event behind a
million records written to an SD card.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

from firmware.core.errors import LocalError
from firmware.salvage import SIDE_FILES, set_aside, sync_dir
from firmware.storage import DB_FILE, Storage

COPY_ROWS = 5000
"""Records per transaction while copying the dataset."""


def to_memory(dataset: Storage, outbox: Storage, name: str) -> None:
    """Read the file of `dataset` and `outbox` (two connections to it) into the
    in-memory database `name`, and switch both to it: for a card that refuses
    writes while the controller runs. The file is only read (a snapshot half
    staged in it is left: the save is done again). Raises `LocalError` or
    `sqlite3.Error` if the file cannot be read; both then stay on the file.
    """
    path = dataset.path
    memory = Storage.open_memory(name, path)  # the schema
    events: Storage | None = None
    try:
        with dataset.exclusive(), memory.exclusive() as conn:
            conn.execute("ATTACH DATABASE ? AS disk", (f"file:{quote(str(path))}?mode=ro",))
            try:
                _copy_records(conn, "records", "disk", "main")
                with outbox.exclusive():
                    _copy_lasting(conn, "disk", "main")
                    conn.execute("DETACH DATABASE disk")
                    events = Storage.open_memory(name, path)
                    dataset.take_over(memory)
                    outbox.take_over(events)
            finally:
                if not dataset.in_memory:  # failed before the switch
                    with suppress(sqlite3.Error):
                        conn.execute("DETACH DATABASE disk")
    finally:
        if not dataset.in_memory:
            memory.close()
            if events is not None:
                events.close()


def to_disk(dataset: Storage, outbox: Storage, *, damaged_left: bool) -> None:
    """Copy the in-memory database of `dataset` and `outbox` (two connections to
    it) into a new file at `dataset.path`, and switch both to it. With
    `damaged_left`, the file at that path is damaged: it is set aside first;
    otherwise it was copied into memory at boot, and is replaced.

    Raises `OSError`, `LocalError` or `sqlite3.Error` when the disk refuses; both
    connections then stay on memory, unchanged, and the half-made file is removed.
    """
    path = dataset.path
    new = path.with_name(f"{DB_FILE}.new")
    _remove(new)
    try:
        Storage.open(new).close()  # the schema, in WAL mode
        with dataset.exclusive() as conn:
            conn.execute("ATTACH DATABASE ? AS disk", (str(new),))
            try:
                conn.execute("PRAGMA disk.synchronous=FULL")
                tables = {name for (name,) in conn.execute("SELECT name FROM main.sqlite_master")}
                if "records_next" in tables:  # a snapshot half staged: it goes on there
                    conn.execute(_CREATE_NEXT_ON_DISK)
                    _copy_records(conn, "records_next", "main", "disk")
                _copy_records(conn, "records", "main", "disk")
                with outbox.exclusive():
                    _copy_lasting(conn, "main", "disk")
                    conn.execute("DETACH DATABASE disk")
                    _checkpoint(new)
                    if damaged_left:
                        set_aside(path.parent, "damaged", time.time())
                    for suffix in SIDE_FILES:
                        # The old file's log was read into memory at boot; left
                        # there, SQLite would apply it to the new file.
                        _remove_one(Path(f"{path}{suffix}"))
                    os.replace(new, path)
                    sync_dir(path.parent)
                    _switch(path, dataset, outbox)
            finally:
                if dataset.in_memory:  # failed before the switch
                    with suppress(sqlite3.Error):
                        conn.execute("DETACH DATABASE disk")
    finally:
        if dataset.in_memory:
            _remove(new)


def _switch(path: Path, dataset: Storage, outbox: Storage) -> None:
    on_disk = Storage.open(path)
    try:
        events = Storage.open(path)
    except BaseException:
        on_disk.close()
        raise
    dataset.take_over(on_disk)
    outbox.take_over(events)


_CREATE_NEXT_ON_DISK = """CREATE TABLE disk.records_next (
    kind TEXT NOT NULL, id TEXT NOT NULL, rec BLOB NOT NULL, PRIMARY KEY (kind, id)
) WITHOUT ROWID"""


def _copy_records(conn: sqlite3.Connection, table: str, source: str, target: str) -> None:
    """Copy a record table from the `source` schema to the `target` one in key
    order, a chunk per transaction: only the dataset's connection is held."""
    select = f"SELECT kind, id, rec FROM {source}.{table}"
    after: tuple[str, str] | None = None
    while True:
        if after is None:
            rows = conn.execute(f"{select} ORDER BY kind, id LIMIT ?", (COPY_ROWS,)).fetchall()
        else:
            rows = conn.execute(
                f"{select} WHERE (kind, id) > (?, ?) ORDER BY kind, id LIMIT ?",
                (*after, COPY_ROWS),
            ).fetchall()
        if not rows:
            return
        conn.execute("BEGIN")
        try:
            conn.executemany(f"INSERT INTO {target}.{table} (kind, id, rec) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise
        after = (rows[-1][0], rows[-1][1])


def _copy_lasting(conn: sqlite3.Connection, source: str, target: str) -> None:
    """Copy the dataset's state, command ids, outbox and debits in one transaction."""
    conn.execute("BEGIN")
    try:
        for table, columns in (
            ("commands", "id, exp"),
            ("outbox", "seq, time, type, body"),
            ("debits", "seq, member, amount, acked_v"),
        ):
            conn.execute(f"DELETE FROM {target}.{table}")
            conn.execute(
                f"INSERT INTO {target}.{table} ({columns}) SELECT {columns} FROM {source}.{table}"
            )
        conn.execute(
            f"UPDATE {target}.outbox_meta"
            f" SET last_seq = (SELECT last_seq FROM {source}.outbox_meta)"
        )
        conn.execute(
            f"UPDATE {target}.meta SET (epoch, v, digest, last_full) ="
            f" (SELECT epoch, v, digest, last_full FROM {source}.meta)"
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def _checkpoint(path: Path) -> None:
    """Fold the new file's write-ahead log into it, so that it can be renamed
    alone; raises `LocalError` if the log is still there afterwards."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size:
        raise LocalError(f"storage {path}: its write-ahead log could not be folded in")
    for suffix in SIDE_FILES:
        _remove_one(Path(f"{path}{suffix}"))


def _remove(path: Path) -> None:
    for suffix in ("", *SIDE_FILES):
        _remove_one(Path(f"{path}{suffix}"))


def _remove_one(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()
