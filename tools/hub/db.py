"""The hub's durable state in one SQLite file.

- `meta`: the dataset's `epoch`, `v` and `digest` (PROTOCOL.md s3);
- `records`: the dataset, `(kind, id) -> rec`, exactly the bytes sent;
- `log`: one row per committed change set, `v -> ops` (CBOR of the wire ops), so a
  controller behind by a few versions gets deltas instead of a snapshot. Only the
  last `keep_versions` are kept; a change set too large for one `delta` message is
  logged without ops, and a controller that needs it gets a snapshot;
- `events`: every event a controller uploaded, keyed by `(controller, seq)`, stored
  idempotently, and `acked`: per controller, the highest `seq` such that every seq
  from 1 up to it is stored.

The dataset is also kept in memory (`records`): the hub answers from it. One thread
owns a `HubDB`; it is not safe to share.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cbor2

from firmware.core.model import DIGEST_MOD, digest_bytes, digest_part
from tools.hub.changes import Key, WireOp, apply_ops

log = logging.getLogger(__name__)

KEEP_VERSIONS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, id TEXT NOT NULL, rec BLOB NOT NULL,
    PRIMARY KEY (kind, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (v INTEGER PRIMARY KEY, ops BLOB, time INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    controller TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER, type TEXT NOT NULL,
    body BLOB NOT NULL, received INTEGER NOT NULL,
    PRIMARY KEY (controller, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acked (controller TEXT PRIMARY KEY, upto INTEGER NOT NULL)
    WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """One committed change set: `from_v` -> `to_v` (= from_v + 1)."""

    from_v: int
    to_v: int
    ops: list[WireOp]


@dataclass(frozen=True, slots=True)
class Event:
    """One uploaded event (PROTOCOL.md s5)."""

    seq: int
    time: int | None
    type: str
    body: Any


def new_epoch_id() -> str:
    """A fresh random epoch."""
    return secrets.token_hex(8)


class HubDB:
    """The dataset, its change log and the events of one hub."""

    def __init__(self, path: Path | str, *, keep_versions: int = KEEP_VERSIONS) -> None:
        self._keep = keep_versions
        # The one owning thread may not be the one that opened it (tests run the
        # hub loop in a thread), hence check_same_thread=False.
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # An event is acknowledged only once it is on disk: FULL, not NORMAL.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        self._records: dict[Key, bytes] = {
            (kind, id): bytes(rec)
            for kind, id, rec in self._conn.execute("SELECT kind, id, rec FROM records")
        }
        self._sum = sum(digest_part(k, i, rec) for (k, i), rec in self._records.items())
        self._sum %= DIGEST_MOD
        if "epoch" not in meta:
            self._epoch = new_epoch_id()
            self._v = 0
            self._save_meta()
            return
        self._epoch = str(meta["epoch"])
        self._v = int(meta["v"])
        if meta.get("digest") != self.digest.hex():
            # Only a hand-edited or damaged file gets here; the records are the truth.
            log.warning("stored digest does not match the stored records; using the records")
            self._save_meta()

    @property
    def epoch(self) -> str:
        """The dataset's epoch."""
        return self._epoch

    @property
    def v(self) -> int:
        """The dataset's version."""
        return self._v

    @property
    def digest(self) -> bytes:
        """The dataset digest, 16 bytes."""
        return digest_bytes(self._sum)

    @property
    def records(self) -> Mapping[Key, bytes]:
        """The current dataset (read-only view)."""
        return MappingProxyType(self._records)

    def commit(self, ops: Sequence[WireOp], *, replayable: bool = True, now: int = 0) -> int:
        """Apply one change set, v -> v + 1, in one transaction; return the new v.

        `replayable=False` logs the version without its ops (too big for a delta)."""
        if not ops:
            raise ValueError("a change set needs at least one op")
        records = dict(self._records)
        change = apply_ops(records, ops)
        v = self._v + 1
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                if op[0] == "put":
                    conn.execute(
                        "INSERT OR REPLACE INTO records (kind, id, rec) VALUES (?, ?, ?)",
                        (op[1], op[2], op[3]),
                    )
                else:
                    conn.execute("DELETE FROM records WHERE kind = ? AND id = ?", (op[1], op[2]))
            blob = cbor2.dumps(list(ops)) if replayable else None
            conn.execute(
                "INSERT OR REPLACE INTO log (v, ops, time) VALUES (?, ?, ?)", (v, blob, now)
            )
            conn.execute("DELETE FROM log WHERE v <= ?", (v - self._keep,))
            self._write_meta(self._epoch, v, digest_bytes(self._sum + change))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._records = records
        self._sum = (self._sum + change) % DIGEST_MOD
        self._v = v
        return v

    def changes_since(self, v: int) -> list[ChangeSet] | None:
        """The change sets from `v` to the current version, or None if the log no
        longer covers them all (or one of them is too big to replay)."""
        if not 0 <= v <= self._v:
            return None
        rows = self._conn.execute("SELECT v, ops FROM log WHERE v > ? ORDER BY v", (v,)).fetchall()
        if len(rows) != self._v - v or any(ops is None for _, ops in rows):
            return None
        return [ChangeSet(to_v - 1, to_v, cbor2.loads(ops)) for to_v, ops in rows]

    def new_epoch(self) -> str:
        """Start a new history: fresh epoch, v = 0, empty log; records kept.

        Every controller then sees an epoch change and takes a full snapshot."""
        epoch = new_epoch_id()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM log")
            self._write_meta(epoch, 0, self.digest)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._epoch, self._v = epoch, 0
        return epoch

    def add_events(self, controller: str, events: Sequence[Event], now: int) -> list[Event]:
        """Store events idempotently; return those not stored before, and advance
        the controller's contiguous `acked` mark."""
        conn = self._conn
        new: list[Event] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for e in events:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO events (controller, seq, time, type, body, received)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (controller, e.seq, e.time, e.type, cbor2.dumps(e.body), now),
                )
                if cur.rowcount == 1:
                    new.append(e)
            upto = self._acked(controller)
            for (seq,) in conn.execute(
                "SELECT seq FROM events WHERE controller = ? AND seq > ? ORDER BY seq",
                (controller, upto),
            ).fetchall():
                if seq != upto + 1:
                    break
                upto = seq
            conn.execute(
                "INSERT OR REPLACE INTO acked (controller, upto) VALUES (?, ?)", (controller, upto)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return new

    def acked(self, controller: str) -> int:
        """Highest seq such that every event 1..seq of `controller` is stored."""
        return self._acked(controller)

    def events(self, controller: str) -> list[Event]:
        """Every stored event of `controller`, by seq (for tests and tools)."""
        rows = self._conn.execute(
            "SELECT seq, time, type, body FROM events WHERE controller = ? ORDER BY seq",
            (controller,),
        ).fetchall()
        return [Event(seq, time, type, cbor2.loads(body)) for seq, time, type, body in rows]

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def _acked(self, controller: str) -> int:
        row = self._conn.execute(
            "SELECT upto FROM acked WHERE controller = ?", (controller,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _save_meta(self) -> None:
        self._write_meta(self._epoch, self._v, self.digest)

    def _write_meta(self, epoch: str, v: int, digest: bytes) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [("epoch", epoch), ("v", v), ("digest", digest.hex())],
        )
