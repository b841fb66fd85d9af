"""The event outbox and the debit ledger on disk, in the controller's SQLite file.

Written by the runtime's event thread (`firmware.runtime.disk.DurableWriter`),
never the loop, through its own connection to the file (the storage thread has
the other): its writes go ahead of the dataset's at every transaction boundary
(`firmware.write_gate`). The file is in WAL mode with `synchronous=FULL`, so an
append is on the medium when `append` returns. One append is one transaction,
however many events: a burst of presentations costs one flush (group commit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from firmware.core.errors import LocalError
from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.storage import REMEMBER_COMMAND, Storage

Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """How many events wait for an ack, the oldest one's time, the first seq."""

    count: int
    oldest: int | None
    first_seq: int | None
    last_seq: int


def debit_row_ok(row: Sequence[object]) -> bool:
    """A `(seq, member, amount, acked_v)` row has the types this module writes."""
    seq, member, amount, acked_v = row
    return (
        type(seq) is int
        and type(member) is str
        and type(amount) is int
        and (acked_v is None or type(acked_v) is int)
    )


def _event(row: tuple[Any, ...]) -> list[Any]:
    """An outbox row as `[seq, time, type, body]`. A row damaged on disk (a body
    that is not CBOR, fields of the wrong type) goes as a `system` event naming
    the damage, under its own seq: dropping it would leave a gap the hub's ack
    can never pass, and the outbox would never empty."""
    seq, time, type_, body = row
    if type(time) is int and type(type_) is str and type(body) is bytes:
        try:
            decoded = cbor2.loads(body)
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
            decoded = None
        if isinstance(decoded, dict):
            return [seq, time, type_, decoded]
    detail = f"event {seq} was damaged on the controller's disk"
    return [seq, time if type(time) is int else 0, "system", {"what": "error", "detail": detail}]


def _ranges(seqs: Sequence[int]) -> list[Range]:
    """Sorted seqs as inclusive ranges: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[Range] = []
    for seq in seqs:
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


class OutboxStore:
    """The `outbox`, `outbox_meta` and `debits` tables of one controller file."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def stats(self) -> OutboxStats:
        """Count, oldest time, first and last seq. The oldest event is the first
        one logged (lowest seq), found through the key: `min(time)` would read
        every row, after every ack of a long backlog."""
        with self.storage.read("outbox stats") as conn:
            (count,) = conn.execute("SELECT count(*) FROM outbox").fetchone()
            first, oldest = conn.execute(
                "SELECT seq, time FROM outbox ORDER BY seq LIMIT 1"
            ).fetchone() or (None, None)
            (last,) = conn.execute("SELECT last_seq FROM outbox_meta").fetchone()
        return OutboxStats(count, oldest, first, last)

    def debits(self) -> list[DebitEntry]:
        """Every debit not yet reflected in the hub's credit. Raises `LocalError`
        for a row of the wrong types: the file is damaged (the boot repairs it,
        `firmware.data_files`), and a balance must never be computed from it."""
        with self.storage.read("read debits") as conn:
            rows = conn.execute("SELECT seq, member, amount, acked_v FROM debits").fetchall()
        for row in rows:
            if not debit_row_ok(row):
                raise LocalError(f"storage {self.storage.where}: debit row {row!r} is damaged")
        return [DebitEntry(*row) for row in rows]

    def append(
        self,
        events: Sequence[LoggedEvent],
        debits: Sequence[DebitEntry],
        *,
        commands: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Make events (and their debits), and executed command ids with their exp,
        durable in one transaction."""
        if not events and not commands:
            return
        rows = [(e.seq, e.time, e.type, cbor2.dumps(e.body)) for e in events]
        with self.storage.write("append events") as conn:
            conn.executemany(REMEMBER_COMMAND, commands)
            if not events:
                return
            conn.executemany("INSERT INTO outbox (seq, time, type, body) VALUES (?, ?, ?, ?)", rows)
            conn.executemany(
                "INSERT INTO debits (seq, member, amount, acked_v) VALUES (?, ?, ?, NULL)",
                [(d.seq, d.member, d.amount) for d in debits],
            )
            conn.execute("UPDATE outbox_meta SET last_seq = max(last_seq, ?)", (events[-1].seq,))

    def batch(self, after: int, upto: int) -> list[list[Any]]:
        """Events with `after < seq <= upto` as `[seq, time, type, body]`."""
        with self.storage.read("read events") as conn:
            rows = conn.execute(
                "SELECT seq, time, type, body FROM outbox WHERE seq > ? AND seq <= ? ORDER BY seq",
                (after, upto),
            ).fetchall()
        return [_event(row) for row in rows]

    def acknowledge(self, upto: int, v: int) -> None:
        """The hub stored every event up to `upto`; their debits count until `v`."""
        with self.storage.write("acknowledge events") as conn:
            conn.execute("DELETE FROM outbox WHERE seq <= ?", (upto,))
            conn.execute(
                "UPDATE debits SET acked_v = ? WHERE seq <= ? AND acked_v IS NULL", (v, upto)
            )

    def forget_debits(self, v: int) -> None:
        """Acked debits reflected in the credit from data version `v` on."""
        with self.storage.write("forget debits") as conn:
            conn.execute("DELETE FROM debits WHERE acked_v IS NOT NULL AND acked_v <= ?", (v,))

    def fold(self, count: int) -> list[Range]:
        """Delete the `count` oldest `access` events; return their seqs as ranges for
        the counted `outbox_full` event that replaces them."""
        with self.storage.write("fold events") as conn:
            seqs = [
                seq
                for (seq,) in conn.execute(
                    "SELECT seq FROM outbox WHERE type = 'access' ORDER BY seq LIMIT ?", (count,)
                ).fetchall()
            ]
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
        return _ranges(seqs)

    def drop(self, upto: int) -> list[Range]:
        """Delete the events up to `upto` (purge with `events: true`), except debits:
        those are money, and the hub must see every one or a balance goes wrong."""
        with self.storage.write("drop events") as conn:
            seqs = [
                seq
                for (seq,) in conn.execute(
                    "SELECT seq FROM outbox WHERE seq <= ? AND type != 'debit' ORDER BY seq",
                    (upto,),
                ).fetchall()
            ]
            conn.execute("DELETE FROM outbox WHERE seq <= ? AND type != 'debit'", (upto,))
        return _ranges(seqs)
