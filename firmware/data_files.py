"""The controller's data files, opened whatever state the SD card is in.

`open_data` is how the controller opens its data at boot, and it never fails
on the card's account (issue 12 s5: the card may fail; the door may not):

- a sound file is opened as always, after a check that every page of it reads
  back sound (`Storage.quick_check`), its dataset loaded;
- a damaged one (not a database, pages cut off or overwritten, a write-ahead log
  with a damaged header, rows of the wrong type, a schema from a newer alc, or a
  path that cannot be opened, such as a directory in its place) is moved aside
  as `alc.sqlite3.damaged-<UTC time>` (`firmware.salvage`: at most 2 kept), and
  the controller starts from a fresh file holding what could be salvaged of
  the executed command ids, the event outbox and the debits: no dataset, so a
  full sync is due, and the master credentials open meanwhile;
- when the data directory cannot be written (read-only, full, missing and not
  creatable) the controller runs on an in-memory database (SQLite's shared
  cache, so the dataset's and the outbox's connections see one database, as
  they see one file), starting as a copy of whatever the file still holds.
  `DataFiles.reattach` moves it back to a file once the directory can be
  written again.

While running, `DataFiles.detach` moves the data into memory the same way when
the card starts refusing writes, and `reattach` brings it back
(`firmware.data_move` does the copying both ways).

What happened is in `BootData.problems`, one line each, for the `system` event
(`what: storage`) the core raises, and `BootData.lost` names the event seqs that
went with a damaged file, for a `dropped` range the hub's acknowledgements can
move past.

Only SQLite errors, our own `LocalError`s and `OSError`s count as the card's
fault; anything else is a bug and is raised, not papered over by moving a file.

Longer than 400 lines on purpose: one boot procedure, each branch (sound,
damaged, unwritable, hung) beside the others so that the order of the checks
can be read in one place; the salvage and the copying are `firmware.salvage`
and `firmware.data_move`.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from firmware.core.errors import LocalError
from firmware.data_move import to_disk, to_memory
from firmware.image import load_dataset
from firmware.outbox_store import OutboxStore, Range
from firmware.salvage import (
    SIDE_FILES,
    Salvage,
    raise_last_seq,
    read_only,
    restore,
    salvage,
    seq_floor,
    set_aside,
    wal_damage,
    written,
)
from firmware.storage import DB_FILE, Loaded, NewerSchema, Storage, load_store
from firmware.write_gate import WriteGate

log = logging.getLogger("alc.storage")

_PROBE_BYTES = 4096  # one page: a disk with less room than this is full
PROBE_WAIT_S = 2.0
"""How long the boot waits for a test write to the card before it runs from memory."""
_memory_names = itertools.count(1)

# SQLite result codes (sqlite3 has them as constants, typeshed does not).
_BUSY, _LOCKED, _READONLY, _IOERR, _FULL = 5, 6, 8, 10, 13
# I/O errors that are the file's, not the disk's: reading it, or its shared
# memory file (a directory or a damaged file in its place).
_IOERR_OF_FILE = {266, 522, 4618, 4874, 5386}


@dataclass(frozen=True, slots=True)
class BootData:
    """What `open_data` found, for the boot. Let go of it once used: it holds
    the dataset loaded from disk."""

    loaded: Loaded
    """The stored dataset (empty after a repair), and the state stored with it."""
    commands: dict[str, int]
    """Executed command ids still remembered, with their `exp`."""
    problems: tuple[str, ...]
    """What went wrong, one line each; empty when the file opened sound."""
    lost: tuple[Range, ...]
    """Event seq ranges that may have been lost with a damaged file (inclusive)."""
    disk_ok: bool
    """False when running on an in-memory database (nothing reaches the card)."""

    @property
    def empty(self) -> bool:
        """No dataset: a full sync is due."""
        return self.loaded.state.epoch is None


class DataFiles:
    """The two connections to the controller's data: `storage` for the dataset
    (the storage thread) and `outbox` for events (the event thread, whose writes
    go first). Both objects stay the same for the life of the process, whether
    they work on the file or on memory."""

    def __init__(self, data_dir: Path, storage: Storage, outbox: OutboxStore) -> None:
        self.data_dir = data_dir
        self.storage = storage
        self.outbox = outbox
        # The file in the data directory is damaged but could not be moved aside
        # at boot (the directory could not be written): `reattach` moves it.
        self.damaged_left = False
        self._move_lock = threading.Lock()  # one move (to disk, to memory) at a time

    @property
    def on_disk(self) -> bool:
        """True when writes go to the file (they may still fail: a full disk)."""
        return not self.storage.in_memory

    def reattach(self) -> bool:
        """From the in-memory database back to a file in the data directory: the
        dataset is copied into a new file a few thousand records per transaction,
        holding only the dataset's connection (call it from the storage thread,
        between its jobs); then, holding the outbox's too, the command ids, the
        outbox and the debits are copied, the new file takes the place of the old
        one, and both connections switch to it. Events appended meanwhile wait
        only for the second, short step.

        Returns True when on disk (at once if already there), False if the disk
        still refuses; nothing changes then, and it can be called again. It
        probes the disk first: a write and a flush, waited for `PROBE_WAIT_S` at
        most (a hung card answers False at once while that probe is stuck).
        """
        with self._move_lock:
            if self.on_disk:
                return True
            why = unwritable(self.data_dir)
            if why is not None:
                log.info("data directory %s still cannot be written: %s", self.data_dir, why)
                return False
            try:
                to_disk(self.storage, self.outbox.storage, damaged_left=self.damaged_left)
            except (OSError, LocalError, sqlite3.Error) as exc:
                log.warning("could not move the data back to %s: %s", self.data_dir, exc)
                return False
            self.damaged_left = False
            log.warning("data back on disk in %s", self.data_dir)
            return True

    def detach(self) -> bool:
        """From the file to an in-memory database, for a card that refuses writes
        while the controller runs (full, read-only): the file is read into memory,
        the dataset a few thousand records per transaction holding only the
        dataset's connection (call it from the storage thread), then the command
        ids, outbox and debits holding both; both connections switch to it. Every
        later write succeeds, in memory, until `reattach` puts it all back on the
        card. Costs memory: the dataset's bytes (about 64 MB for a million
        credentials) beside the live store.

        Returns True when in memory (at once if already there), False if the file
        cannot be read either (both connections then stay on it, unchanged).
        """
        with self._move_lock:
            if not self.on_disk:
                return True
            name = f"alc-{os.getpid()}-{next(_memory_names)}"
            try:
                to_memory(self.storage, self.outbox.storage, name)
            except (OSError, LocalError, sqlite3.Error) as exc:
                log.error("could not read the data into memory from %s: %s", self.data_dir, exc)
                return False
            log.error("the card refuses writes: data in memory until it takes them again")
            return True

    def close(self) -> None:
        """Close both connections (an in-memory database is gone after this)."""
        try:
            self.outbox.storage.close()
        finally:
            self.storage.close()


# --- the boot ---------------------------------------------------------------------------


class _Fault(Exception):
    """Why the file could not be used: `kind` is "damaged", "newer" (a schema from
    a newer alc) or "unwritable" (the disk refused a write, or another process
    holds the file)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass
class _Boot:
    """What the boot learned on its way, carried from the disk to memory."""

    problems: list[str] = field(default_factory=list)
    lost: list[Range] = field(default_factory=list)
    seq_unknown: bool = False  # writes were lost: the last seq given out is not known
    written: float = 0.0  # when the lost writes were made, at the latest
    salvaged: Salvage | None = None  # a damaged file's lasting rows, once read

    def report(self, dataset: Storage, outbox: OutboxStore, found: _Opened) -> BootData:
        if self.seq_unknown and not found.fresh:
            self.lost.extend(raise_last_seq(outbox.storage, seq_floor(found.now, self.written)))
        for problem in self.problems:
            log.error("storage: %s", problem)
        return BootData(
            found.loaded,
            found.commands,
            tuple(self.problems),
            (*self.lost, *found.lost),
            not dataset.in_memory,
        )


@dataclass(frozen=True, slots=True)
class _Opened:
    loaded: Loaded
    commands: dict[str, int]
    lost: tuple[Range, ...]
    fresh: bool
    now: float


class _Probe:
    """Writes a page to the data directory, flushes and removes it, on a thread of
    its own: on a hung card the write never returns, and the boot must not wait
    for it. At most one probe per directory is in flight; a probe still stuck
    answers for the card until it returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stuck: dict[Path, threading.Thread] = {}

    def __call__(self, data_dir: Path, wait_s: float) -> str | None:
        with self._lock:
            stuck = self._stuck.get(data_dir)
            if stuck is not None and stuck.is_alive():
                return "the card does not answer: an earlier write is still waiting"
        answer: list[str | None] = []
        thread = threading.Thread(
            target=lambda: answer.append(_write_page(data_dir)), name="alc-disk-probe", daemon=True
        )
        thread.start()
        thread.join(wait_s)
        if thread.is_alive():
            with self._lock:
                self._stuck[data_dir] = thread
            return f"the card does not answer (a write and a flush took over {wait_s:g} s)"
        return answer[0]

    def stuck(self) -> list[threading.Thread]:
        """Probes still waiting for a hung card (for tests, to join them)."""
        with self._lock:
            return [t for t in self._stuck.values() if t.is_alive()]


probe = _Probe()


def unwritable(data_dir: Path, wait_s: float = PROBE_WAIT_S) -> str | None:
    """Why files cannot be written in `data_dir`, or None if they can: it is made
    if missing, and a page is written, flushed and removed, within `wait_s`."""
    return probe(data_dir, wait_s)


def _write_page(data_dir: Path) -> str | None:
    page = data_dir / f".alc-write-probe-{os.getpid()}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if os.write(fd, bytes(_PROBE_BYTES)) != _PROBE_BYTES:
                return "the disk is full"
            os.fsync(fd)
        finally:
            os.close(fd)
        page.unlink()
    except OSError as exc:
        with suppress(OSError):
            page.unlink()
        return exc.strerror or str(exc)
    return None


def _fault(exc: BaseException) -> _Fault:
    """Classify a failure to open or read the file."""
    if isinstance(exc, NewerSchema):
        return _Fault("newer", str(exc))
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, sqlite3.Error):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return _Fault("damaged", str(exc))  # our own check of its contents
    code = getattr(cause, "sqlite_errorcode", 0) or 0
    primary = code & 0xFF
    if primary in (_FULL, _READONLY, _BUSY, _LOCKED) or (
        primary == _IOERR and code not in _IOERR_OF_FILE
    ):
        return _Fault("unwritable", str(exc))
    return _Fault("damaged", str(exc))


Opener = Callable[[bool], Storage]  # urgent -> a new connection


def _checked(opener: Opener, now: float) -> tuple[Storage, OutboxStore, _Opened]:
    """Open both connections and read everything the boot needs; raises `_Fault`."""
    opened: list[Storage] = []
    try:
        dataset = opener(False)
        opened.append(dataset)
        events = opener(True)
        opened.append(events)
        found = dataset.quick_check()
        if found:
            raise LocalError(f"storage {dataset.where}: damaged: {'; '.join(found[:3])}")
        loaded = load_dataset(dataset)
        commands = dataset.commands(now)
        outbox = OutboxStore(events)
        outbox.stats()
        outbox.debits()
    except (LocalError, sqlite3.Error, OSError) as exc:
        _close(opened)
        raise _fault(exc) from exc
    return dataset, outbox, _Opened(loaded, commands, (), False, now)


def _fresh(opener: Opener, found: Salvage, now: float) -> tuple[Storage, OutboxStore, _Opened]:
    """A new empty file or database, holding what was salvaged. Raises `_Fault`
    ("unwritable"): a new file that cannot be made is the disk's fault."""
    opened: list[Storage] = []
    try:
        dataset = opener(False)
        opened.append(dataset)
        events = opener(True)
        opened.append(events)
        lost = restore(events, found, now)
        loaded = load_store(dataset)
        commands = dataset.commands(now)
    except (LocalError, sqlite3.Error, OSError) as exc:
        _close(opened)
        raise _Fault("unwritable", str(exc)) from exc
    return dataset, OutboxStore(events), _Opened(loaded, commands, tuple(lost), True, now)


def _close(opened: list[Storage]) -> None:
    for storage in opened:
        with suppress(LocalError):
            storage.close()


def open_data(data_dir: str | Path, now: float) -> tuple[DataFiles, BootData]:
    """Open the controller's data in `data_dir` (made if missing), whatever its
    state: never raises for the disk's or the file's sake (module docstring).

    `now` is the wall-clock time: command ids that expired are not kept, and it
    names moved-aside files. Call it before the loop starts; it reads the whole
    file (a minute for a million credentials on the development machine).
    """
    data_dir = Path(data_dir)
    gate = WriteGate()
    boot = _Boot()
    why = unwritable(data_dir)
    if why is None:
        try:
            return _on_disk(data_dir, gate, now, boot)
        except _Fault as exc:
            boot.problems.append(f"{data_dir / DB_FILE}: cannot be written: {exc}")
        except OSError as exc:
            boot.problems.append(f"{data_dir}: cannot be written: {exc.strerror or exc}")
    else:
        boot.problems.append(f"data directory {data_dir} cannot be written: {why}")
    return _in_memory(data_dir, gate, now, boot)


def _on_disk(
    data_dir: Path, gate: WriteGate, now: float, boot: _Boot
) -> tuple[DataFiles, BootData]:
    """The data on the card, repaired if need be. Raises `_Fault` ("unwritable")
    or `OSError` when the disk refuses, for the caller to fall back to memory."""
    path = data_dir / DB_FILE
    _lost_log(data_dir, path, now, boot)

    def opener(urgent: bool) -> Storage:
        return Storage.open(path, gate=gate, urgent=urgent)

    try:
        dataset, outbox, found = _checked(opener, now)
    except _Fault as exc:
        if exc.kind == "unwritable":
            raise
        boot.problems.append(_why(exc))
        boot.salvaged = salvage(path)
        moved = set_aside(data_dir, exc.kind, now)
        boot.problems.append(_moved(", ".join(p.name for p in moved), boot.salvaged))
        try:
            dataset, outbox, found = _fresh(opener, boot.salvaged, now)
        except _Fault:
            # A fresh file the card would not take: ours, and of no use to anyone.
            for suffix in ("", *SIDE_FILES):
                with suppress(OSError):
                    os.unlink(f"{path}{suffix}")
            raise
    return DataFiles(data_dir, dataset, outbox), boot.report(dataset, outbox, found)


def _lost_log(data_dir: Path, path: Path, now: float, boot: _Boot) -> None:
    """Move a damaged write-ahead log aside (SQLite would ignore it, silently), or
    side files left without their database: writes were lost with them."""
    wal = Path(f"{path}-wal")
    damage = wal_damage(wal)
    if (
        damage is None
        and not os.path.lexists(path)
        and any(os.path.lexists(f"{path}{s}") for s in SIDE_FILES)
    ):
        damage = "left without its database"
    if damage is None:
        return
    boot.problems.append(f"{wal}: {damage}: the writes it held are lost")
    boot.seq_unknown = True
    boot.written = max(boot.written, written(path))
    moved = set_aside(data_dir, "damaged", now, SIDE_FILES)
    boot.problems.append("moved aside: " + ", ".join(p.name for p in moved))


def _why(exc: _Fault) -> str:
    if exc.kind == "newer":
        return f"written by a newer alc: {exc}"
    return f"damaged or unreadable: {exc}"


def _moved(where: str, found: Salvage) -> str:
    head = f"moved aside: {where}" if where else "left in place (the directory is read-only)"
    return (
        f"{head}; salvaged {len(found.events)} events, {len(found.debits)} debits, "
        f"{len(found.commands)} command ids; starting with no dataset (full sync)"
    )


def _in_memory(
    data_dir: Path, gate: WriteGate, now: float, boot: _Boot
) -> tuple[DataFiles, BootData]:
    """The data in memory, starting as a copy of what the file still holds."""
    path = data_dir / DB_FILE

    def opener_of(source: sqlite3.Connection | None) -> Opener:
        name = f"alc-{os.getpid()}-{next(_memory_names)}"

        def opener(urgent: bool) -> Storage:
            copy = None if urgent else source
            return Storage.open_memory(name, path, gate=gate, urgent=urgent, copy_from=copy)

        return opener

    damaged = False
    if boot.salvaged is None:  # the file on disk was not judged yet
        if not boot.seq_unknown and wal_damage(Path(f"{path}-wal")) is not None:
            boot.problems.append(f"{path}-wal: damaged: the writes it held are lost")
            boot.seq_unknown = True
            boot.written = max(boot.written, written(path))
        source = read_only(path)
        if source is not None:
            try:
                dataset, outbox, found = _checked(opener_of(source), now)
            except _Fault as exc:
                boot.problems.append(_why(exc))
                damaged = True
            else:
                files = DataFiles(data_dir, dataset, outbox)
                return files, boot.report(dataset, outbox, found)
            finally:
                source.close()
        elif os.path.lexists(path):
            boot.problems.append(f"{path}: cannot be read")
            damaged = True
        else:
            # Nothing to say which seqs were given out (a first boot, or a card
            # whose data partition is missing): start past any of them.
            boot.seq_unknown = True
        boot.salvaged = salvage(path) if damaged else Salvage()
        if damaged:
            boot.problems.append(_moved("", boot.salvaged))
    else:
        # Judged damaged on the card, which then refused to move it aside or to
        # make a fresh file: the salvage is used here, the file left for later.
        damaged = os.path.lexists(path)
    try:
        dataset, outbox, found = _fresh(opener_of(None), boot.salvaged, now)
    except _Fault as exc:  # memory refused: nothing else to fall back on
        raise LocalError(f"storage: no in-memory database either: {exc}") from exc
    files = DataFiles(data_dir, dataset, outbox)
    files.damaged_left = damaged
    return files, boot.report(dataset, outbox, found)
