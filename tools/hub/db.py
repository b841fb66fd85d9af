"""The hub's durable state in one SQLite file.

- `meta`: the dataset's `epoch`, `v` and `digest` (PROTOCOL.md s3);
- `records`: the dataset, `(kind, id) -> rec`, exactly the bytes sent;
- `log`: one row per committed change set, `v -> ops` (CBOR of the wire ops), so a
  controller behind by a few versions gets deltas instead of a snapshot. Only the
  last `keep_versions` are kept; a change set too large for one `delta` message is
  logged without ops, and a controller that needs it gets a snapshot;
- `events`: every event a controller uploaded, keyed by `(controller, seq)`, stored
  idempotently, and `acked`: per controller, the highest `seq` such that every seq
  from 1 up to it is stored or `dropped`;
- `dropped`: per controller, `(first, last)` seq ranges a `system` event declared
  removed unuploaded (`tools.hub.ledger`), kept until the `acked` mark passes them;
- `credit`: per member, `debited` (the sum of every stored `debit` amount) and
  `base` (the data file's `credit`, NULL while the member is unknown). A debited
  member is published with `credit` = base - debited; a member without debits
  exactly as the data file has it.

The dataset is also kept in memory (`records`): the hub answers from it. One thread
owns a `HubDB`; it is not safe to share.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cbor2

from firmware.core.model import DIGEST_MOD, digest_bytes, digest_part
from tools.hub import ledger
from tools.hub.changes import Key, WireOp, apply_ops
from tools.hub.ledger import MAX_DEBITED, Range, credit_of, with_credit

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
CREATE TABLE IF NOT EXISTS dropped (
    controller TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (controller, first, last)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS credit (
    member TEXT PRIMARY KEY, debited INTEGER NOT NULL, base INTEGER) WITHOUT ROWID;
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
        tables = {n for (n,) in self._conn.execute("SELECT name FROM sqlite_master")}
        self._conn.executescript(_SCHEMA)
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        self._records: dict[Key, bytes] = {
            (kind, id): bytes(rec)
            for kind, id, rec in self._conn.execute("SELECT kind, id, rec FROM records")
        }
        self._sum = sum(digest_part(k, i, rec) for (k, i), rec in self._records.items())
        self._sum %= DIGEST_MOD
        if "credit" not in tables:
            self._backfill()
        self._debited: dict[str, int] = {}
        self._base: dict[str, int | None] = {}
        for member, debited, base in self._conn.execute("SELECT member, debited, base FROM credit"):
            self._debited[member] = int(debited)
            self._base[member] = None if base is None else int(base)
        # Members whose published credit may not be base - debited yet: all of them
        # at open (a crash between storing debits and committing their change set),
        # then those with new debits or a new base until their change set commits.
        self._dirty: set[str] = set(self._debited)
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
        return self.commit_many([(ops, replayable)], now=now)

    def commit_many(
        self, change_sets: Sequence[tuple[Sequence[WireOp], bool]], *, now: int = 0
    ) -> int:
        """Apply several change sets `(ops, replayable)` in one transaction (one
        flush to disk for the lot): each becomes its own version, v + 1, v + 2, ...,
        logged as if committed one by one. Return the last new v.

        All or nothing: if anything fails, neither the file nor memory changes."""
        if not change_sets:
            raise ValueError("commit_many needs at least one change set")
        if any(not ops for ops, _ in change_sets):
            raise ValueError("a change set needs at least one op")
        records = self._records
        # Changed in place, not on a copy of the whole dataset (a copy per commit
        # cost ~2 ms at 100,000 members): what each key held first, to undo.
        undo: dict[Key, bytes | None] = {}
        total = self._sum
        v = self._v
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for ops, replayable in change_sets:
                    for op in ops:
                        key = (op[1], op[2])
                        if key not in undo:
                            undo[key] = records.get(key)
                    total += apply_ops(records, ops)
                    v += 1
                    self._write_ops(ops)
                    blob = cbor2.dumps(list(ops)) if replayable else None
                    conn.execute(
                        "INSERT OR REPLACE INTO log (v, ops, time) VALUES (?, ?, ?)", (v, blob, now)
                    )
                conn.execute("DELETE FROM log WHERE v <= ?", (v - self._keep,))
                self._write_meta(self._epoch, v, digest_bytes(total))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            for key, rec in undo.items():
                if rec is None:
                    records.pop(key, None)
                else:
                    records[key] = rec
            raise
        self._sum = total % DIGEST_MOD
        self._v = v
        return v

    def _write_ops(self, ops: Sequence[WireOp]) -> None:
        puts = [(op[1], op[2], op[3]) for op in ops if op[0] == "put"]
        if len(puts) == len(ops):
            self._conn.executemany(
                "INSERT OR REPLACE INTO records (kind, id, rec) VALUES (?, ?, ?)", puts
            )
            return
        # Deletes and puts interleaved: their order matters (a put then a delete
        # of one key is a delete).
        for op in ops:
            if op[0] == "put":
                self._conn.execute(
                    "INSERT OR REPLACE INTO records (kind, id, rec) VALUES (?, ?, ?)",
                    (op[1], op[2], op[3]),
                )
            else:
                self._conn.execute("DELETE FROM records WHERE kind = ? AND id = ?", (op[1], op[2]))

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
        the controller's contiguous `acked` mark.

        Each new `debit` adds its amount to its member's `debited`, once per
        `(controller, seq)`; each new `system` event's `dropped` ranges count as
        stored for `acked`. Every event must have passed `ledger.problem`."""
        conn = self._conn
        new: list[Event] = []
        sums: dict[str, int] = {}
        bases: dict[str, int | None] = {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            upto = self._acked(controller)
            for e in events:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO events (controller, seq, time, type, body, received)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (controller, e.seq, e.time, e.type, cbor2.dumps(e.body), now),
                )
                if cur.rowcount != 1:
                    continue
                new.append(e)
                if e.type == "debit":
                    member, amount = ledger.debit(e.body)
                    total = sums.get(member, self._debited.get(member, 0)) + amount
                    sums[member] = min(total, MAX_DEBITED)
                    bases.setdefault(member, self._base_of(member))
                gone = [(controller, f, last) for f, last in ledger.dropped(e.type, e.body)]
                if gone:
                    conn.executemany(
                        "INSERT OR IGNORE INTO dropped (controller, first, last) VALUES (?, ?, ?)",
                        [r for r in gone if r[2] > upto],
                    )
            conn.executemany(
                "INSERT INTO credit (member, debited, base) VALUES (?, ?, ?) ON CONFLICT (member)"
                " DO UPDATE SET debited = excluded.debited, base = excluded.base",
                [(member, total, bases[member]) for member, total in sums.items()],
            )
            self._advance(controller, upto)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._debited.update(sums)
        self._base.update(bases)
        self._dirty.update(sums)
        return new

    def _advance(self, controller: str, upto: int) -> int:
        """Move `acked` from `upto` over stored events and dropped ranges; forget
        the ranges it passed. Inside a transaction."""
        conn = self._conn
        while True:
            cur = conn.execute(
                "SELECT seq FROM events WHERE controller = ? AND seq > ? ORDER BY seq",
                (controller, upto),
            )
            for (seq,) in cur:
                if seq != upto + 1:
                    break
                upto = seq
            cur.close()
            (last,) = conn.execute(
                "SELECT MAX(last) FROM dropped WHERE controller = ? AND first <= ? AND last > ?",
                (controller, upto + 1, upto),
            ).fetchone()
            if last is None:
                break
            upto = int(last)
        conn.execute("DELETE FROM dropped WHERE controller = ? AND last <= ?", (controller, upto))
        conn.execute(
            "INSERT OR REPLACE INTO acked (controller, upto) VALUES (?, ?)", (controller, upto)
        )
        return upto

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

    def dropped_ranges(self, controller: str) -> list[Range]:
        """The dropped ranges of `controller` the `acked` mark has not passed yet."""
        rows = self._conn.execute(
            "SELECT first, last FROM dropped WHERE controller = ? ORDER BY first, last",
            (controller,),
        ).fetchall()
        return [(int(first), int(last)) for first, last in rows]

    # --- member credit ----------------------------------------------------------------

    def debited(self, member: str) -> int:
        """The sum of every stored `debit` amount of `member`, in cents."""
        return self._debited.get(member, 0)

    def apply_debits(self, records: Mapping[Key, bytes]) -> Mapping[Key, bytes]:
        """The dataset to publish for `records` (the data file's): each debited
        member's `credit` lowered by its debits; every other record as it is.

        The file's credits become those members' `base`, durably, before anything
        is published from them (a crash in between leaves them marked for
        `credit_ops`)."""
        if not self._debited:
            return records
        out: dict[Key, bytes] | None = None
        bases: dict[str, int | None] = {}
        for member, debited in self._debited.items():
            key = ("member", member)
            rec = records.get(key)
            base = None if rec is None else credit_of(rec)
            if rec is None or base is None:
                continue  # not in the file (or a body the file would have refused)
            bases[member] = base
            if out is None:
                out = dict(records)
            out[key] = with_credit(rec, base - debited) or rec
        self._set_bases(bases)
        return records if out is None else out

    def apply_debits_ops(self, ops: Sequence[WireOp]) -> list[WireOp]:
        """`apply_debits` for the member puts of a change set."""
        if not self._debited:
            return list(ops)
        out: list[WireOp] = []
        bases: dict[str, int | None] = {}
        for op in ops:
            debited = self._debited.get(op[2]) if op[0] == "put" and op[1] == "member" else None
            base = None if debited is None else credit_of(op[3])
            if debited is None or base is None:
                out.append(op)
                continue
            bases[op[2]] = base
            out.append(["put", "member", op[2], with_credit(op[3], base - debited) or op[3]])
        self._set_bases(bases)
        return out

    def credit_ops(self) -> list[WireOp]:
        """Puts that make every published member's credit base - debited again
        (after new debits, a new base, or a crash before their change set). Members
        found right are settled here; those in the ops by `settled` once committed."""
        ops: list[WireOp] = []
        bases: dict[str, int | None] = {}
        for member in sorted(self._dirty):
            rec = self._records.get(("member", member))
            base = self._base.get(member)
            if rec is not None and base is None:
                # Debited while not in the dataset, published since without its
                # debits (only `HubDB.commit` does that): its body is the file's.
                base = bases[member] = credit_of(rec)
            new = None
            if rec is not None and base is not None:
                new = with_credit(rec, base - self._debited[member])
            if rec is None or new is None or new == rec:
                self._dirty.discard(member)
                continue
            ops.append(["put", "member", member, new])
        self._set_bases(bases)
        return ops

    def settled(self, members: Iterable[str] | None = None) -> None:
        """These members (None: every member) are published with credit = base -
        debited: committed from `apply_debits` or `credit_ops`."""
        if members is None:
            self._dirty.clear()
        else:
            self._dirty.difference_update(members)

    def _base_of(self, member: str) -> int | None:
        base = self._base.get(member)
        # None: never published with debits, so a published body is the file's.
        return base if base is not None else self._base_from_records(member)

    def _set_bases(self, bases: Mapping[str, int | None]) -> None:
        changed = [(b, m) for m, b in bases.items() if self._base.get(m) != b]
        if not changed:
            return
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("UPDATE credit SET base = ? WHERE member = ?", changed)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        for base, member in changed:
            self._base[member] = base
            self._dirty.add(member)

    def _backfill(self) -> None:
        """Fill `credit` and `dropped` from the events a hub older than them stored
        (once, when the tables are new). That hub published the file's bodies."""
        conn = self._conn
        debited: dict[str, int] = {}
        ranges: list[tuple[str, int, int]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(
                "SELECT controller, seq, type, body FROM events WHERE type IN ('debit', 'system')"
            )
            for controller, seq, type_, blob in rows:
                body = cbor2.loads(blob)
                if ledger.problem(type_, body, seq) is not None:
                    continue
                if type_ == "debit":
                    member, amount = ledger.debit(body)
                    debited[member] = min(debited.get(member, 0) + amount, MAX_DEBITED)
                ranges += [(controller, f, last) for f, last in ledger.dropped(type_, body)]
            conn.executemany(
                "INSERT OR IGNORE INTO credit (member, debited, base) VALUES (?, ?, ?)",
                [(m, total, self._base_from_records(m)) for m, total in debited.items()],
            )
            conn.executemany("INSERT OR IGNORE INTO dropped VALUES (?, ?, ?)", ranges)
            for controller in {c for c, _, _ in ranges}:
                self._advance(controller, self._acked(controller))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if debited or ranges:
            log.info(
                "counted %d debited member(s) and %d dropped range(s) from stored events",
                len(debited),
                len(ranges),
            )

    def _base_from_records(self, member: str) -> int | None:
        rec = self._records.get(("member", member))
        return None if rec is None else credit_of(rec)

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
