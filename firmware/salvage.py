"""What is left of a damaged data file, and where the damaged files go.

Used by `firmware.data_files` when the boot finds the SQLite file damaged:

- `wal_damage`: whether the write-ahead log's header is intact. SQLite ignores a
  log whose header is damaged, silently: the writes it held (the newest events,
  the newest `last_seq`) are gone, and the boot must know it.
- `salvage`: read, through a read-only connection, what can still be read of the
  tables that must outlive damage: executed command ids, the event outbox, the
  last seq given out, the debit ledger. Each table is read forward and, if that
  stops at a damaged page, backward, so rows on both sides of the damage survive.
  The dataset is not salvaged: a full sync brings it back whole.
- `restore`: write a salvage into a fresh file, and say which seqs are lost.
- `set_aside`: move the damaged files aside in the data directory, kept for
  support as `alc.sqlite3.damaged-<UTC time>` (and `-wal`, `-shm`), at most
  `ASIDE_KEPT` of them, the oldest removed.

Seqs are never reused (PROTOCOL.md s5: the hub de-duplicates by seq, so a reused
seq is an event lost). When the last seq given out cannot be read, the next one
is put past any the file can have held: the time in milliseconds (a controller
logs far fewer than a thousand events a second), and the seqs in between are
reported lost so that the core can name them in a `dropped` range and the hub's
acknowledgements can move past them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import cbor2

from firmware.core.outbox import DebitEntry
from firmware.outbox_store import Range, debit_row_ok
from firmware.storage import DB_FILE, REMEMBER_COMMAND, Storage

log = logging.getLogger("alc.storage")

ASIDE_KEPT = 2
"""Damaged copies kept in the data directory; older ones are removed."""

SIDE_FILES = ("-wal", "-shm")
"""SQLite's files beside the database, named by appending these to its name."""

_ALL_FILES = ("", *SIDE_FILES)
_ASIDE = re.compile(
    rf"^{re.escape(DB_FILE)}\.(?P<why>[a-z]+)-(?P<stamp>\d{{8}}T\d{{6}}Z(?:\.\d+)?)(?:-wal|-shm)?$"
)
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_VERSION = 3007000
_WAL_HEADER = 32


def wal_damage(wal: Path) -> str | None:
    """What is wrong with the write-ahead log's header, or None if it is intact
    (or the log is absent or empty, as after a clean stop)."""
    try:
        with wal.open("rb") as f:
            header = f.read(_WAL_HEADER)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not header:
        return None
    if len(header) < _WAL_HEADER:
        return "its header is cut short"
    magic = int.from_bytes(header[0:4], "big")
    if magic not in _WAL_MAGIC or int.from_bytes(header[4:8], "big") != _WAL_VERSION:
        return "its header is not a write-ahead log header"
    if _wal_checksum(header[:24], big_endian=bool(magic & 1)) != header[24:32]:
        return "its header checksum is wrong"
    return None


def _wal_checksum(data: bytes, *, big_endian: bool) -> bytes:
    # SQLite's WAL checksum (wal.c, walChecksumBytes): two running 32-bit sums
    # over pairs of words, in the byte order the log's magic number names.
    order: Literal["big", "little"] = "big" if big_endian else "little"
    s1 = s2 = 0
    for i in range(0, len(data), 8):
        s1 = (s1 + int.from_bytes(data[i : i + 4], order) + s2) & 0xFFFFFFFF
        s2 = (s2 + int.from_bytes(data[i + 4 : i + 8], order) + s1) & 0xFFFFFFFF
    return s1.to_bytes(4, "big") + s2.to_bytes(4, "big")


@dataclass
class Salvage:
    """What could be read of a damaged file's lasting tables."""

    commands: dict[str, int] = field(default_factory=dict)
    events: dict[int, tuple[int, str, bytes]] = field(default_factory=dict)  # seq -> row
    debits: dict[int, DebitEntry] = field(default_factory=dict)
    last_seq: int | None = None  # the last seq given out; None when unreadable
    complete: bool = False  # every outbox row and the last seq were read
    written: float = 0.0  # the latest modification time of the damaged files

    @property
    def rows(self) -> int:
        """Rows salvaged, for the report."""
        return len(self.commands) + len(self.events) + len(self.debits)


def read_only(path: Path) -> sqlite3.Connection | None:
    """A read-only connection to the file at `path`, or None if it cannot be
    opened. It writes nothing, not even SQLite's shared-memory file: a file with
    no log (closed cleanly) is opened `immutable`, one with a log read-only (it
    reads the log; SQLite needs the `-shm` file beside it, or room to make it)."""
    if not path.is_file():
        return None
    mode = "mode=ro" if _has_log(path) else "immutable=1"
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?{mode}", uri=True, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        if conn is not None:
            conn.close()
        return None
    return conn


def _has_log(path: Path) -> bool:
    try:
        return Path(f"{path}-wal").stat().st_size > 0
    except OSError:
        return False


def salvage(path: Path) -> Salvage:
    """Read what can still be read of the lasting tables of the file at `path`
    (never writing to it). Missing or unreadable: an empty salvage."""
    found = Salvage(written=written(path))
    conn = read_only(path)
    if conn is None:
        return found
    with closing(conn):
        commands, _ = _rows(conn, "SELECT id, exp FROM commands", "id")
        found.commands = {id: exp for id, exp in commands if type(id) is str and type(exp) is int}
        events, events_whole = _rows(conn, "SELECT seq, time, type, body FROM outbox", "seq")
        for seq, t, type_, body in events:
            if type(seq) is int and type(t) is int and type(type_) is str and type(body) is bytes:
                found.events[seq] = (t, type_, body)
            else:
                events_whole = False
        debits, _ = _rows(conn, "SELECT seq, member, amount, acked_v FROM debits", "seq")
        found.debits = {row[0]: DebitEntry(*row) for row in debits if debit_row_ok(row)}
        try:
            row = conn.execute("SELECT last_seq FROM outbox_meta").fetchone()
        except sqlite3.Error:
            row = None
        if row is not None and type(row[0]) is int:
            found.last_seq = row[0]
        found.complete = events_whole and found.last_seq is not None
    return found


def _rows(conn: sqlite3.Connection, select: str, key: str) -> tuple[list[tuple[Any, ...]], bool]:
    """The rows of one table: forward by `key` until the end or a damaged page,
    then, if stopped, backward from the other end. True when read to the end."""
    rows: dict[object, tuple[Any, ...]] = {}
    for direction in ("ASC", "DESC"):
        try:
            for row in conn.execute(f"{select} ORDER BY {key} {direction}"):
                rows.setdefault(row[0], tuple(row))
        except sqlite3.Error:
            continue  # stopped by the damage: read the other side
        return list(rows.values()), direction == "ASC"
    return list(rows.values()), False


def written(path: Path) -> float:
    """The latest modification time of the database's files (0 if none)."""
    latest = 0.0
    for suffix in _ALL_FILES:
        with suppress(OSError):
            latest = max(latest, os.lstat(f"{path}{suffix}").st_mtime)
    return latest


def seq_floor(now: float, written: float = 0.0) -> int:
    """A seq past any a lost file can have given out: milliseconds since 1970 at
    the later of now and the file's last write (the clock may be wrong at boot)."""
    return int(max(now, written) * 1000)


def restore(storage: Storage, found: Salvage, now: float) -> list[Range]:
    """Write a salvage into a fresh file (or in-memory database): command ids not
    yet expired, events, debits (those whose ledger row was lost are rebuilt from
    their `debit` event), and the last seq. Returns the seq ranges whose events
    may be lost, for the core to declare in a `dropped` range."""
    debits = dict(found.debits)
    for seq, (_, type_, body) in found.events.items():
        if type_ == "debit" and seq not in debits:
            entry = _debit_of(seq, body)
            if entry is not None:
                debits[seq] = entry
    highest = max([*found.events, *debits, found.last_seq or 0, 0])
    if found.complete:
        last, lost = highest, []
    else:
        last = (
            highest if found.last_seq is not None else max(highest, seq_floor(now, found.written))
        )
        lost = missing(sorted(found.events), last)
    with storage.write("restore salvaged rows") as conn:
        conn.executemany(
            REMEMBER_COMMAND, [(id, exp) for id, exp in found.commands.items() if exp >= now]
        )
        conn.executemany(
            "INSERT INTO outbox (seq, time, type, body) VALUES (?, ?, ?, ?)",
            [(seq, *row) for seq, row in sorted(found.events.items())],
        )
        conn.executemany(
            "INSERT INTO debits (seq, member, amount, acked_v) VALUES (?, ?, ?, ?)",
            [(d.seq, d.member, d.amount, d.acked_v) for d in debits.values()],
        )
        conn.execute("UPDATE outbox_meta SET last_seq = max(last_seq, ?)", (last,))
    return lost


def _debit_of(seq: int, body: bytes) -> DebitEntry | None:
    try:
        decoded = cbor2.loads(body)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
        return None
    if not isinstance(decoded, dict):
        return None
    member, amount = decoded.get("member"), decoded.get("amount")
    if type(member) is not str or type(amount) is not int:
        return None
    return DebitEntry(seq, member, amount, None)


def missing(have: Sequence[int], last: int) -> list[Range]:
    """The seqs from 1 to `last` not in `have` (sorted), as inclusive ranges."""
    out: list[Range] = []
    expected = 1
    for seq in have:
        if seq > expected:
            out.append((expected, min(seq - 1, last)))
        expected = max(expected, seq + 1)
        if expected > last:
            break
    if expected <= last:
        out.append((expected, last))
    return out


def raise_last_seq(storage: Storage, floor: int) -> list[Range]:
    """After a lost write-ahead log: put the next seq past any the log held, and
    return the seqs skipped as lost (they may have been given out)."""
    with storage.write("raise the last seq") as conn:
        (last,) = conn.execute("SELECT last_seq FROM outbox_meta").fetchone()
        if last >= floor:
            return []
        conn.execute("UPDATE outbox_meta SET last_seq = ?", (floor,))
    return [(last + 1, floor)]


def set_aside(
    data_dir: Path, why: str, now: float, suffixes: Sequence[str] = _ALL_FILES
) -> list[Path]:
    """Move the database's files (those of `suffixes` that exist, whatever they
    are) to `alc.sqlite3.<why>-<UTC time>` in the same directory, then remove
    all but the newest `ASIDE_KEPT` such copies. Returns the new paths. Raises
    `OSError` if a file cannot be moved (the directory cannot be written)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    present = [s for s in suffixes if _exists(data_dir / f"{DB_FILE}{s}")]
    if not present:
        return []
    base, n = f"{DB_FILE}.{why}-{stamp}", 0
    while any(_exists(data_dir / f"{base}{s}") for s in _ALL_FILES):
        n += 1
        base = f"{DB_FILE}.{why}-{stamp}.{n}"
    moved = []
    for suffix in present:
        target = data_dir / f"{base}{suffix}"
        os.rename(data_dir / f"{DB_FILE}{suffix}", target)
        moved.append(target)
    sync_dir(data_dir)
    prune(data_dir)
    return moved


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def aside_copies(data_dir: Path) -> dict[str, list[Path]]:
    """The damaged copies in `data_dir`, by their time stamp (with their side files)."""
    copies: dict[str, list[Path]] = {}
    with suppress(OSError):
        for entry in data_dir.iterdir():
            match = _ASIDE.match(entry.name)
            if match:
                copies.setdefault(match["stamp"], []).append(entry)
    return copies


def prune(data_dir: Path) -> None:
    """Remove all but the newest `ASIDE_KEPT` damaged copies (best effort: a copy
    that cannot be removed stays, and is tried again next time)."""
    copies = aside_copies(data_dir)
    # The stamps sort as times; a repeat within one second sorts after its first.
    for stamp in sorted(copies, key=_stamp_order)[:-ASIDE_KEPT]:
        for path in copies[stamp]:
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                log.warning("could not remove the old damaged copy %s: %s", path, exc)


def _stamp_order(stamp: str) -> tuple[str, int]:
    head, _, n = stamp.partition(".")
    return head, int(n or 0)


def sync_dir(data_dir: Path) -> None:
    """Make renames in `data_dir` durable (best effort: not every file system
    lets a directory be flushed)."""
    with suppress(OSError):
        fd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
