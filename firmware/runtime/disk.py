"""The two writer threads of the runtime, each owning one connection to the file.

- `StorageWriter`: the dataset (deltas, snapshots, the daily check), in order, off
  the loop, so a presentation never waits behind a full sync written to SQLite.
- `DurableWriter`: the event outbox and executed command ids. The loop hands it a
  step's events together with the step's other actions; once the events are on
  disk it hands the actions back to the loop. So an event is durable before the
  action it records is carried out (a door unlocks after its access event is
  written), while the loop goes on deciding for the next member during the flush.
  Everything queued while a flush runs shares the next one (group commit).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.core.sync import SaveDelta
from firmware.outbox_store import OutboxStore
from firmware.runtime.priorities import background_thread
from firmware.storage import Storage

log = logging.getLogger("alc.controller")
events_log = logging.getLogger("alc.events")

MAX_QUEUED_WRITES = 256
MAX_DELTAS_PER_COMMIT = 1000
MAX_QUEUED_STEPS = 10_000
MAX_STEPS_PER_COMMIT = 500
MAX_UNWRITTEN = 100_000  # events kept in memory while the disk refuses them

Job = SaveDelta | Callable[[Storage], None]
# Outbox upkeep (delete acknowledged rows, read a batch to upload, fold, drop)
# runs on the event thread too: it touches the disk, and the loop never does.
Chore = Callable[[OutboxStore], None]


class StorageWriter:
    """One thread that carries out durable writes in the order they were queued.

    Deltas queued back to back are committed together (group commit): each is
    durable when its transaction is, and a burst costs one flush instead of one
    per delta, which is what lets a slow SD card keep up with a busy hub.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._jobs: queue.Queue[Job | None] = queue.Queue(MAX_QUEUED_WRITES)
        self._thread = threading.Thread(target=self._run, name="alc-storage", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a write; blocks (back-pressure) if the disk is that far behind."""
        self._jobs.put(job)

    def flush(self) -> None:
        """Wait until every queued write is on disk."""
        self._jobs.join()

    def stop(self) -> None:
        """Finish the queued writes, then end the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        # Saving a full sync is background work: the loop and the event thread,
        # which a member waits for, go first (see `members_first`).
        background_thread()
        carried: list[Job | None] = []  # a job taken while batching, run next
        while True:
            job = carried.pop() if carried else self._jobs.get()
            if job is None:
                self._jobs.task_done()
                return
            done = 1
            try:
                if isinstance(job, SaveDelta):
                    batch = [job]
                    while len(batch) < MAX_DELTAS_PER_COMMIT:
                        try:
                            more = self._jobs.get_nowait()
                        except queue.Empty:
                            break
                        if not isinstance(more, SaveDelta):
                            carried.append(more)
                            break
                        batch.append(more)
                        done += 1
                    self._storage.save_deltas([(d.epoch, d.v, d.ops, d.digest) for d in batch])
                else:
                    job(self._storage)
            except Exception:
                # The live data stays right; the disk copy is fixed by the next
                # full sync (the boot digest check notices it).
                log.exception("a storage write failed")
            finally:
                for _ in range(done):
                    self._jobs.task_done()


@dataclass(frozen=True, slots=True)
class DurableStep:
    """One loop step's durable part and the actions that must wait for it."""

    events: Sequence[LoggedEvent]
    debits: Sequence[DebitEntry]
    commands: Sequence[tuple[str, int]]
    then: list[Any]


class DurableWriter:
    """Makes events and command ids durable, then returns each step's actions to
    the loop through `done`, in the order the steps were submitted."""

    def __init__(self, store: OutboxStore, done: Callable[[list[Any]], None]) -> None:
        self._store = store
        self._done = done
        self._jobs: queue.Queue[DurableStep | Chore | None] = queue.Queue(MAX_QUEUED_STEPS)
        self._pending = 0
        self._lock = threading.Lock()
        self._unwritten_events: list[LoggedEvent] = []
        self._unwritten_debits: list[DebitEntry] = []
        self._thread = threading.Thread(target=self._run, name="alc-events", daemon=True)
        self._thread.start()

    def busy(self) -> bool:
        """True while submitted steps have not been handed back yet. The loop then
        sends every step through here, even one with nothing to write, so that
        actions keep their order."""
        with self._lock:
            return self._pending > 0

    def submit(self, step: DurableStep) -> None:
        """Queue a step (blocks, as back-pressure, if the disk is far behind)."""
        with self._lock:
            self._pending += 1
        self._jobs.put(step)

    def chore(self, chore: Chore) -> None:
        """Queue outbox upkeep, run on this thread after the steps queued before it
        (blocks, as back-pressure, like `submit`)."""
        self._jobs.put(chore)

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        carried: list[DurableStep | Chore | None] = []  # taken while batching, next
        stopping = False
        while not stopping:
            first = carried.pop() if carried else self._jobs.get()
            if first is None:
                return
            if not isinstance(first, DurableStep):
                self._do(first)
                continue
            batch = [first]
            while len(batch) < MAX_STEPS_PER_COMMIT:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                if not isinstance(more, DurableStep):
                    carried.append(more)  # after this batch, in order
                    break
                batch.append(more)
            # Whatever a refused write left over goes again, first: its seqs were
            # given out, and the hub can only acknowledge past them once they exist.
            events = [*self._unwritten_events, *(e for step in batch for e in step.events)]
            debits = [*self._unwritten_debits, *(d for step in batch for d in step.debits)]
            commands = [c for step in batch for c in step.commands]
            self._unwritten_events, self._unwritten_debits = [], []
            if events or commands:
                try:
                    self._store.append(events, debits, commands=commands)
                except Exception:
                    # The disk refused (full, failing card): the actions still go
                    # ahead (a member is at the door), the error is logged, and the
                    # events are kept to be written with the next step (bounded).
                    log.exception("could not make %d events durable", len(events))
                    self._unwritten_events = events[-MAX_UNWRITTEN:]
                    self._unwritten_debits = debits
                else:
                    # Logged once on disk, so the log never shows an event that
                    # a power cut took back (its seq would be given out again).
                    for e in events:
                        events_log.info("%d %s %s", e.seq, e.type, json.dumps(e.body, default=_hex))
            for step in batch:
                try:
                    self._done(step.then)
                finally:
                    with self._lock:
                        self._pending -= 1

    def _do(self, chore: Chore) -> None:
        try:
            chore(self._store)
        except Exception:
            # Upkeep only: the rows stay and the next ack or upload retries them.
            log.exception("outbox upkeep failed")


def _hex(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)
