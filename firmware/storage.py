"""The durable copy of the dataset, and executed command ids, in one SQLite file.

The controller keeps its live dataset in memory (`firmware.core.store`); this module
keeps the same dataset on disk so that a controller that boots with no network
still opens doors (DESIGN.md "Data path"). What is stored:

- `records`: every record as the exact `rec` bytes the hub sent (PROTOCOL.md s3),
  so the digest is recomputed from the bytes that were hashed, never re-encoded;
- `meta`: one row, `(epoch, v, digest, last_full)`, always written in the same
  transaction as the records it describes, so after any crash or power cut the
  stored digest is the digest of the stored records at the stored `(epoch, v)`;
- `commands`: ids of executed hub commands, remembered until their `exp`
  (PROTOCOL.md s6), so a replayed command is refused even across a reboot.

The file is in WAL mode with `synchronous=FULL`: a commit is on the storage medium
before the call returns. The event outbox shares this file (`firmware.outbox_store`,
through a second connection) and needs that (an event is durable before the
action it reports is done); the dataset does not strictly need it, but one file
has one setting.

Every failure of the file itself (missing directory, not a database, damaged,
disk full, a schema from a newer alc) raises `LocalError` naming the file, and no
method returns with a transaction open. What the controller does about them at
boot (move the file aside, run from memory) is `firmware.data_files`'s job.

`Storage.open_memory` opens the same schema in an in-memory database instead,
standing in for the file when the data directory cannot be written; `take_over`
later moves a `Storage` (and everyone holding it) onto a file again.

`save_delta` also refuses a delta that would leave the stored digest different
from the digest of the stored records (memory and disk disagree about the base):
the file then stays at its last consistent version, and the next full sync
rewrites it. So the stored `(epoch, v, digest)` always names the stored records.

One `Storage` may be used from several threads (the runtime writes from its own
storage thread); a lock makes each call one step. Do not write while iterating
`records()`: use `reading()` for a scan that must see one version.

Longer than 400 lines on purpose: it is the one class that owns the file's
schema and every transaction on it (open and migrate, the dataset, command ids,
checks, the in-memory stand-in); split, the transactions' invariants would be
spread over modules that each see half the schema.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from firmware.collector import collector_paused
from firmware.core.errors import LocalError
from firmware.core.model import digest_bytes, digest_part
from firmware.core.store import Built, Delete, Op, Put, Store, StoreBuilder
from firmware.write_gate import WriteGate

DB_FILE = "alc.sqlite3"
"""The file name inside the configured `data_dir`."""

SCHEMA_VERSION = 2
"""The `user_version` this code writes and understands."""

EMPTY_DIGEST = digest_bytes(0)

REMEMBER_COMMAND = (
    "INSERT INTO commands (id, exp) VALUES (?, ?) "
    "ON CONFLICT (id) DO UPDATE SET exp = max(exp, excluded.exp)"
)
"""Remember an executed command id until `exp`; a repeat never shortens `exp`."""

# The WAL grows to the size of the largest transaction (a full sync) and is only
# reused, not shrunk, afterwards; this caps what it keeps on the SD card.
_JOURNAL_SIZE_LIMIT = 32 * 1024 * 1024
# Waiting for another process (`alc inspect`) beats failing a save outright.
_BUSY_TIMEOUT_S = 5.0
_SQLITE_LOCKED = 6
# Rows fetched per step when streaming: bounded memory at boot, few Python calls.
_FETCH_ROWS = 1000

# _MIGRATIONS[n] takes a file from user_version n to n + 1. Add a step, never edit
# one: controllers in the field hold files at every earlier version.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE records (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            rec BLOB NOT NULL,
            PRIMARY KEY (kind, id)
        ) WITHOUT ROWID""",
        """CREATE TABLE meta (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            epoch TEXT,
            v INTEGER NOT NULL,
            digest BLOB NOT NULL,
            last_full REAL
        )""",
        "INSERT INTO meta (one, epoch, v, digest, last_full)"
        " VALUES (1, NULL, 0, zeroblob(16), NULL)",
        # exp is the command's own expiry time as the hub sent it (PROTOCOL.md s6).
        "CREATE TABLE commands (id TEXT PRIMARY KEY, exp INTEGER NOT NULL)",
    ),
    (
        # The event outbox (PROTOCOL.md s5): rows leave only on the hub's ack.
        # body is the CBOR of the event's body map.
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY,
            time INTEGER NOT NULL,
            type TEXT NOT NULL,
            body BLOB NOT NULL
        )""",
        # The last seq ever given out: seqs are never reused, even once every
        # row is acknowledged and gone, and survive purges.
        """CREATE TABLE outbox_meta (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            last_seq INTEGER NOT NULL
        )""",
        "INSERT INTO outbox_meta (one, last_seq) VALUES (1, 0)",
        # Credit debits not yet reflected in the hub's member credit: acked_v is
        # the data version from which the hub's credit includes it (the ack's v).
        """CREATE TABLE debits (
            seq INTEGER PRIMARY KEY,
            member TEXT NOT NULL,
            amount INTEGER NOT NULL,
            acked_v INTEGER
        )""",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_KEY = itemgetter(0, 1)
_PUT = "INSERT OR REPLACE INTO records (kind, id, rec) VALUES (?, ?, ?)"
_PUT_NEXT = "INSERT OR REPLACE INTO records_next (kind, id, rec) VALUES (?, ?, ?)"
_CREATE_RECORDS_NEXT = """CREATE TABLE records_next (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    rec BLOB NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID"""
# Records per transaction while staging a snapshot: each holds the write lock
# for a few milliseconds, so an outbox append waits at most that long.
_SNAPSHOT_CHUNK = 2000


class _SharedCache(sqlite3.Connection):
    """A connection to an in-memory database shared by several connections.

    Such connections lock whole tables, and a statement that meets another
    connection's lock fails at once (SQLITE_LOCKED) instead of waiting as on a
    file: changing the schema (a snapshot's table swap) while the outbox reads,
    say. The other holds its lock for one short transaction, so wait a little
    and try again, as the busy timeout does on a file. A statement that failed
    this way did nothing, so running it again is safe.
    """

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self._patiently(super().execute, sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        # Materialised once: an iterator would be spent by a failed first try.
        rows = parameters if isinstance(parameters, list | tuple) else list(parameters)
        return self._patiently(super().executemany, sql, rows)

    @staticmethod
    def _patiently(
        run: Callable[[str, Any], sqlite3.Cursor], sql: str, args: Any
    ) -> sqlite3.Cursor:
        waited, pause = 0.0, 0.0005
        while True:
            try:
                return run(sql, args)
            except sqlite3.OperationalError as exc:
                locked = getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_LOCKED
                if not locked or waited >= _BUSY_TIMEOUT_S:
                    raise
            time.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.01)


class NewerSchema(LocalError):
    """The file was written by a newer alc (its schema version is above ours)."""


class StoredState(NamedTuple):
    """What the file says the stored dataset is: `(epoch, v, digest, last_full)`.

    `epoch` is None (and `v` 0, `digest` 16 zero bytes) before the first full sync
    and after a purge; `last_full` is when the last full sync finished, or None.
    """

    epoch: str | None
    v: int
    digest: bytes
    last_full: float | None


@dataclass(frozen=True, slots=True)
class Loaded:
    """The live store built from disk at boot, and the state it was stored with."""

    built: Built
    state: StoredState
    from_image: bool = False
    """Read back from the decision image (`firmware.image`), not rebuilt."""

    @property
    def store(self) -> Store:
        """The store to decide with."""
        return self.built.store

    @property
    def intact(self) -> bool:
        """True when the records hash to the stored digest. When False the local
        copy is damaged: decide with it anyway, and ask for a full sync (`digest`)."""
        return self.built.store.digest == self.state.digest


class Storage:
    """One open alc SQLite file. Make one with `Storage.open`."""

    room_kept = 16 * 1024 * 1024
    """Free bytes a snapshot leaves on the card, for events (`save_snapshot`)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        gate: WriteGate | None = None,
        urgent: bool = False,
        *,
        memory: str | None = None,
    ) -> None:
        """Use `Storage.open` or `Storage.open_memory`; this only wraps a connection."""
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self.path = path
        self._gate = gate
        self._urgent = urgent
        self._memory = memory

    @property
    def in_memory(self) -> bool:
        """True while this storage is an in-memory database standing in for `path`
        (the data directory could not be written at boot: `firmware.data_files`)."""
        return self._memory is not None

    @property
    def where(self) -> str:
        """The file, or the in-memory database and the file it stands in for."""
        return str(self.path) if self._memory is None else f"{self.path} (in memory)"

    # --- opening and closing ------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | Path, *, gate: WriteGate | None = None, urgent: bool = False
    ) -> Storage:
        """Open the file at `path`, creating it (and its schema) if it is missing.

        Connections of one process that share a `gate` take turns writing, the
        `urgent` ones first (see `firmware.write_gate`).

        The directory must exist. Raises `LocalError` if the file is not an alc
        database, is damaged, or was written by a newer alc (schema version).
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise LocalError(f"storage {path}: directory {path.parent} does not exist")
        try:
            # isolation_level=None: sqlite3 opens no transaction on its own; every
            # transaction here is an explicit BEGIN ... COMMIT.
            # check_same_thread=False: the lock below serialises every call, and
            # the runtime opens the file in one thread and writes from another.
            conn = sqlite3.connect(
                path, isolation_level=None, timeout=_BUSY_TIMEOUT_S, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise LocalError(f"storage {path}: cannot open: {exc}") from exc
        storage = cls(conn, path, gate, urgent)
        try:
            storage._prepare()
        except BaseException:
            conn.close()
            raise
        return storage

    @classmethod
    def open_memory(
        cls,
        name: str,
        path: str | Path,
        *,
        gate: WriteGate | None = None,
        urgent: bool = False,
        copy_from: sqlite3.Connection | None = None,
    ) -> Storage:
        """Open the in-memory database `name`, standing in for the file at `path`.

        Every connection of this process opened with the same `name` sees one
        database (SQLite's shared cache), so the dataset's and the outbox's
        connections work on one copy, as they do on one file. It lives until the
        last of them is closed. With `copy_from`, a new database starts as a copy
        of that connection's (SQLite's backup API). Same checks as `open`.
        """
        path = Path(path)
        try:
            conn = sqlite3.connect(
                f"file:{name}?mode=memory&cache=shared",
                uri=True,
                isolation_level=None,
                timeout=_BUSY_TIMEOUT_S,
                check_same_thread=False,
                factory=_SharedCache,
            )
        except sqlite3.Error as exc:
            raise LocalError(f"storage {path} (in memory): cannot open: {exc}") from exc
        storage = cls(conn, path, gate, urgent, memory=name)
        try:
            if copy_from is not None:
                try:
                    copy_from.backup(conn)
                except sqlite3.Error as exc:
                    raise storage._error("copy into memory", exc) from exc
            storage._prepare()
        except BaseException:
            conn.close()
            raise
        return storage

    def _prepare(self) -> None:
        conn = self._connection()
        try:
            if self._memory is not None:
                # Shared-cache connections lock whole tables: without this a read
                # of the outbox would fail, not wait, while the dataset is written.
                # Every write still goes through the gate, one at a time.
                conn.execute("PRAGMA read_uncommitted=1")
            else:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise LocalError(
                        f"storage {self.where}: the file system refused WAL mode (got {mode!r})"
                    )
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        with self._write("open") as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise NewerSchema(
                    f"storage {self.where}: schema version {version} was written by a newer "
                    f"alc (this one knows up to {SCHEMA_VERSION}); upgrade alc, or move "
                    "the file aside to start with no data"
                )
            if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise LocalError(
                    f"storage {self.where}: not an alc database (tables but no schema version)"
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                # PRAGMA takes no parameters; the value is our own constant.
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            # A snapshot staged when the power went (`records_next`) is left for
            # the next `save_snapshot` to drop: opening the file (`alc inspect`
            # beside a running controller) must never touch a save in progress.

    def close(self) -> None:
        """Close the file; later calls raise `LocalError`. Closing twice is harmless."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if conn.in_transaction:
                    conn.rollback()
                conn.close()
            except sqlite3.Error as exc:
                raise self._error("close", exc) from exc

    def take_over(self, other: Storage) -> None:
        """Go on with `other`'s connection and file, closing this one's connection:
        everyone holding this object now works on the other file (`reattach` in
        `firmware.data_files`). `other` is closed afterwards."""
        with self._lock, other._lock:
            old, self._conn, other._conn = self._conn, other._conn, None
            self.path, self._memory = other.path, other._memory
            if old is not None:
                # Let go of, whatever it says: nothing uses it any more.
                with suppress(sqlite3.Error):
                    if old.in_transaction:
                        old.rollback()
                    old.close()

    @contextmanager
    def exclusive(self) -> Iterator[sqlite3.Connection]:
        """Hold this storage: no other thread's call on it runs until the block
        ends. For work that must see it unchanged across several transactions."""
        with self._lock:
            yield self._connection()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the dataset --------------------------------------------------------------

    def state(self) -> StoredState:
        """The stored `(epoch, v, digest, last_full)`."""
        with self._read("read state") as conn:
            return self._state(conn)

    def records(self) -> Iterator[tuple[str, str, bytes]]:
        """Every stored record as `(kind, id, rec)`, streamed from a cursor (memory
        stays bounded whatever the dataset's size).

        Consume it whole, or close it: an open scan holds a read snapshot that stops
        the WAL being checkpointed. Do not write to this storage while scanning.
        """
        with self._lock:
            conn = self._connection()
            try:
                cursor = conn.execute("SELECT kind, id, rec FROM records")
            except sqlite3.Error as exc:
                raise self._error("read records", exc) from exc
        return self._rows(cursor)

    def counts(self) -> dict[str, int]:
        """Number of stored records by kind."""
        with self._read("count records") as conn:
            rows = conn.execute("SELECT kind, count(*) FROM records GROUP BY kind").fetchall()
        return {kind: n for kind, n in rows}

    @contextmanager
    def reading(self) -> Iterator[tuple[StoredState, Iterator[tuple[str, str, bytes]]]]:
        """One consistent read: the state and the records it describes, as one
        snapshot of the file (a save by another connection in between is not seen).
        The records iterator is only valid inside the `with` block."""
        with self._read("read dataset") as conn:
            state = self._state(conn)
            cursor = conn.execute("SELECT kind, id, rec FROM records")
            rows = self._rows(cursor)
            try:
                yield state, rows
            finally:
                rows.close()

    def save_delta(self, epoch: str, v: int, ops: Sequence[Op], digest: bytes) -> None:
        """Make one applied delta durable in one transaction: its ops and the new
        `(epoch, v, digest)`. Either all of it is on disk afterwards, or none.

        `epoch` must be the stored one and `v` newer than the stored one: anything
        else means memory and disk disagree (our bug), and raises `LocalError`
        rather than write a delta onto the wrong base.
        """
        self.save_deltas([(epoch, v, ops, digest)])

    def save_deltas(self, deltas: Sequence[tuple[str, int, Sequence[Op], bytes]]) -> None:
        """Make several applied deltas durable in one transaction (group commit:
        one flush for a burst of deltas). Each is checked as in `save_delta`."""
        with self._write("save delta") as conn:
            # The meta row is read once and written once a group: each delta is
            # checked against the one before it, as held here.
            stored = self._state(conn)
            for epoch, v, ops, digest in deltas:
                stored = self._apply_delta(conn, stored, epoch, v, ops, digest)
            if deltas:
                conn.execute(
                    "UPDATE meta SET epoch = ?, v = ?, digest = ?",
                    (stored.epoch, stored.v, stored.digest),
                )

    def _apply_delta(
        self,
        conn: sqlite3.Connection,
        stored: StoredState,
        epoch: str,
        v: int,
        ops: Sequence[Op],
        digest: bytes,
    ) -> StoredState:
        """Write one delta's records onto `stored` (the state after the deltas
        before it); the state after it, for the caller to write to meta."""
        _check_digest(digest)
        # Only the last op on a key counts (a put then a delete of one record is a
        # delete), so puts and deletes can each go in one executemany.
        final: dict[tuple[str, str], bytes | None] = {}
        for op in ops:
            if isinstance(op, Put):
                final[(op.kind, op.id)] = op.rec
            elif isinstance(op, Delete):
                final[(op.kind, op.id)] = None
            else:
                raise LocalError(f"save_delta: {op!r} is neither a Put nor a Delete")
        puts = [(kind, id, rec) for (kind, id), rec in final.items() if rec is not None]
        deletes = [key for key, rec in final.items() if rec is None]
        if stored.epoch != epoch or v <= stored.v:
            raise LocalError(
                f"storage {self.where}: delta to ({epoch!r}, {v}) does not follow the "
                f"stored ({stored.epoch!r}, {stored.v})"
            )
        # The new digest follows from the stored one and the records replaced,
        # as in the live store; if it is not the one given, this delta would be
        # written onto a base memory does not have (a lost earlier save).
        total = int.from_bytes(stored.digest, "big")
        for (kind, id), rec in final.items():
            row = conn.execute(
                "SELECT rec FROM records WHERE kind = ? AND id = ?", (kind, id)
            ).fetchone()
            if row is not None and _row_types_ok(kind, id, row[0]):
                total -= digest_part(kind, id, row[0])
            if rec is not None:
                total += digest_part(kind, id, rec)
        if digest_bytes(total) != digest:
            raise LocalError(
                f"storage {self.where}: delta to ({epoch!r}, {v}) does not lead from the "
                f"stored records to digest {digest.hex()}: the file and memory disagree; "
                "the next full sync rewrites the file"
            )
        if puts:
            conn.executemany(_PUT, puts)
        if deletes:
            conn.executemany("DELETE FROM records WHERE kind = ? AND id = ?", deletes)
        return stored._replace(epoch=epoch, v=v, digest=digest)

    def save_snapshot(
        self,
        epoch: str | None,
        v: int,
        records: Iterable[tuple[str, str, bytes]],
        digest: bytes,
        last_full: float | None,
    ) -> None:
        """Replace the whole stored dataset atomically (a finished full sync, or a
        purge: `epoch` None, no records). Records are streamed into the file in
        chunks, each chunk inserted in key order (B-tree inserts in key order touch
        fewer pages; a hub that sends its snapshot in key order gets it throughout).
        A record listed twice is stored once, the last one, as `Store.build` keeps
        it. Executed command ids, the event outbox and the debit ledger are kept: a
        purge wipes the dataset only.

        A snapshot that would leave less than `room_kept` bytes free on the card
        stops with `LocalError` and drops what it staged: events come first.

        The new records go into a side table in short transactions, and one small
        transaction swaps it in with the new `(epoch, v, digest)`. So the write
        lock is never held for long, and the event outbox (another connection on
        this file) appends in between: a door never waits behind a full sync's
        disk writes. A crash before the swap leaves the old dataset in place.
        """
        _check_digest(digest)
        with self._write("save snapshot") as conn:
            conn.execute("DROP TABLE IF EXISTS records_next")
            conn.execute(_CREATE_RECORDS_NEXT)
        try:
            rows = iter(records)
            while chunk := list(islice(rows, _SNAPSHOT_CHUNK)):
                # Sorted a chunk at a time, never the whole dataset in one call: one
                # sort of 100,000 keys holds the interpreter lock for tens of ms, and
                # the loop deciding for a member at the door would wait that long.
                # The sort is stable, so of two duplicates in a chunk the last wins.
                chunk.sort(key=_KEY)
                with self._write("save snapshot") as conn:
                    conn.executemany(_PUT_NEXT, chunk)
                self._keep_room()
            with self._write("save snapshot") as conn:
                conn.execute("DROP TABLE records")
                conn.execute("ALTER TABLE records_next RENAME TO records")
                conn.execute(
                    "UPDATE meta SET epoch = ?, v = ?, digest = ?, last_full = ?",
                    (epoch, v, digest, last_full),
                )
        except LocalError:
            # Its pages go back to the file's free list, for the events (same
            # file). On a card too full for even that, the next save drops it.
            with suppress(LocalError), self._write("drop a failed snapshot") as conn:
                conn.execute("DROP TABLE IF EXISTS records_next")
            raise

    def _keep_room(self) -> None:
        """Stop a snapshot that would take the card's last `room_kept` bytes: the
        events, written to the same card, need them more than a new dataset does
        (the live one in memory goes on deciding, and the save is tried again)."""
        if self._memory is not None:
            return
        try:
            fs = os.statvfs(self.path.parent)
            # The next checkpoint copies the log's pages into the file: until the
            # log is reused they take room twice, so count them as taken.
            log = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return  # nothing to go by: SQLite says when the card is full
        free = fs.f_bavail * fs.f_frsize - log
        if free < self.room_kept:
            raise LocalError(
                f"storage {self.where}: save snapshot stopped: the card is nearly full "
                f"({max(free, 0) // 1024} KiB free, {self.room_kept // 1024} KiB kept for events)"
            )

    def quick_check(self) -> list[str]:
        """SQLite's `PRAGMA quick_check`: every page of every table and index is read
        and its structure checked, so it costs a read of the whole file (about
        0.2 to 0.5 s for a million credentials on the 2-core development machine,
        against a minute to load them: docs/operations.md). It finds a damaged page
        anywhere, the outbox's included, but not a changed byte inside a record
        (the digest finds those). Returns what it found; empty means sound."""
        with self._read("check the file") as conn:
            rows = conn.execute("PRAGMA quick_check(20)").fetchall()
        found = [str(row[0]) for row in rows]
        return [] if found == ["ok"] else found

    def verify(self) -> bool:
        """True when the stored records hash to the stored digest (PROTOCOL.md s7,
        the `digest` trigger); False means the local copy is damaged."""
        with self._read("verify") as conn:
            state = self._state(conn)
            cursor = conn.execute("SELECT kind, id, rec FROM records")
            total = 0
            try:
                while rows := cursor.fetchmany(_FETCH_ROWS):
                    for kind, id, rec in rows:
                        if not _row_types_ok(kind, id, rec):
                            return False
                        total += digest_part(kind, id, rec)
            finally:
                cursor.close()
        return digest_bytes(total) == state.digest

    # --- executed command ids -----------------------------------------------------

    def command_seen(self, id: str) -> bool:
        """True if command `id` was executed and is still remembered."""
        with self._read("read commands") as conn:
            row = conn.execute("SELECT 1 FROM commands WHERE id = ?", (id,)).fetchone()
        return row is not None

    def commands(self, now: float) -> dict[str, int]:
        """Executed command ids still remembered at `now` (not yet expired), with
        their `exp`: what the controller refuses as "already executed" after a boot."""
        with self._read("read commands") as conn:
            rows = conn.execute("SELECT id, exp FROM commands WHERE exp >= ?", (now,)).fetchall()
        return {id: exp for id, exp in rows}

    def remember_command(self, id: str, exp: int) -> None:
        """Durably remember that command `id` was executed, until its `exp`."""
        with self._write("remember command") as conn:
            conn.execute(REMEMBER_COMMAND, (id, exp))

    def forget_expired(self, now: float) -> int:
        """Forget commands whose `exp` is before `now` (they are refused as expired
        anyway); returns how many were forgotten."""
        with self._write("forget commands") as conn:
            return conn.execute("DELETE FROM commands WHERE exp < ?", (now,)).rowcount

    # --- helpers ------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LocalError(f"storage {self.where}: used after close")
        return self._conn

    def _error(self, what: str, exc: Exception) -> LocalError:
        return LocalError(f"storage {self.where}: {what} failed: {exc}")

    def write(self, what: str) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction for a module sharing this file (the outbox):
        committed if the block finishes, else rolled back; errors as `LocalError`."""
        return self._write(what)

    def read(self, what: str) -> AbstractContextManager[sqlite3.Connection]:
        """One read transaction: every statement inside sees the same snapshot."""
        return self._read(what)

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block finishes, else rolled back."""
        gate = self._gate.enter(urgent=self._urgent) if self._gate else nullcontext()
        with self._lock, gate:
            conn = self._connection()
            try:
                # IMMEDIATE takes the write lock up front, so a busy file fails here
                # (after the busy timeout) rather than halfway through.
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                # OverflowError: an int SQLite cannot hold (over 63 bits), our bug.
                if isinstance(exc, sqlite3.Error | OverflowError):
                    raise self._error(what, exc) from exc
                raise

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        """One read transaction: every statement inside sees the same snapshot."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error | OverflowError):
                    raise self._error(what, exc) from exc
                raise

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            # If even that fails, SQLite rolls the transaction back itself when the
            # file is next opened.
            with suppress(sqlite3.Error):
                conn.rollback()

    def _state(self, conn: sqlite3.Connection) -> StoredState:
        row = conn.execute("SELECT epoch, v, digest, last_full FROM meta").fetchone()
        if row is None:
            raise LocalError(f"storage {self.where}: the meta row is missing")
        epoch, v, digest, last_full = row
        if not isinstance(digest, bytes) or len(digest) != 16:
            raise LocalError(f"storage {self.where}: the stored digest is damaged")
        return StoredState(epoch, v, digest, last_full)

    def _rows(self, cursor: sqlite3.Cursor) -> Generator[tuple[str, str, bytes], None, None]:
        try:
            while True:
                with self._lock:
                    rows = cursor.fetchmany(_FETCH_ROWS)
                if not rows:
                    return
                for kind, id, rec in rows:
                    if not _row_types_ok(kind, id, rec):
                        raise LocalError(f"storage {self.where}: record {kind} {id!r} is damaged")
                    yield kind, id, rec
        except sqlite3.Error as exc:
            raise self._error("read records", exc) from exc
        finally:
            # An abandoned scan may be collected after `close()`; stay quiet then.
            with suppress(sqlite3.Error):
                cursor.close()


def _row_types_ok(kind: object, id: object, rec: object) -> bool:
    # Only a writer other than this module could store another type, but a row
    # like that would crash hashing and parsing far from here.
    return type(kind) is str and type(id) is str and type(rec) is bytes


def _check_digest(digest: bytes) -> None:
    if not isinstance(digest, bytes) or len(digest) != 16:
        raise LocalError(f"a dataset digest is 16 bytes, not {digest!r}")


def load_store(storage: Storage) -> Loaded:
    """Build the live store from disk (boot): one consistent read, streamed into a
    `StoreBuilder`, so memory holds the store and one batch of rows, no more.

    Check `Loaded.intact`: a damaged copy is still used (doors open at power-on),
    and calls for a full sync with reason `digest`.
    """
    builder = StoreBuilder()
    with storage.reading() as (state, rows), collector_paused():
        builder.feed(rows)
    return Loaded(builder.finish(), state)
