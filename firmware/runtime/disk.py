"""The disk side: two writer threads, each owning one connection to the file.

- `DurableWriter` (thread `alc-events`): the event outbox and executed command
  ids. The loop numbers each step that has something to make durable and keeps
  the step's actions itself; this thread writes the step's events and says
  `Written(upto)` through the inbox. Everything queued while one write runs
  shares the next transaction (group commit). The loop carries out an unlock
  only after its access event is written, but never waits for the card longer
  than `PATIENCE_S` (see `firmware.runtime.loop`): a hung card must not keep a
  door shut to its master tag.
- `StorageWriter` (thread `alc-storage`): the dataset (deltas, snapshots, the
  daily check, moving the data to memory and back), in order, at a lower
  priority, so a presentation never waits behind a full sync written to SQLite.

Neither ever blocks the loop: `submit` only appends to a bounded queue. When the
card refuses writes, events wait in memory (`MAX_UNWRITTEN`), tried again with
every write and on a backoff; past the bound the oldest access events are folded
into a counted `outbox_full` event (their seqs go to the hub as dropped), and
debits are never folded. When the dataset's queue overflows, the save is
skipped and the writer is marked `stale`: the loop then has the whole dataset
rewritten by a full sync.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from firmware.core.inputs import EventsRemoved
from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.core.sync import SaveDelta, SaveSnapshot
from firmware.outbox_store import OutboxStore
from firmware.runtime.imaging import ImageKeeper
from firmware.runtime.messages import DiskChanged, ForCore, Internal, Written
from firmware.runtime.priorities import MembersFirst
from firmware.runtime.watchdog import Pulse
from firmware.storage import Storage

log = logging.getLogger("alc.controller")
events_log = logging.getLogger("alc.events")

MAX_QUEUED_WRITES = 10_000  # dataset jobs queued at most (a burst of single-op deltas)
MAX_QUEUED_OPS = 500_000  # and delta ops at most (tens of MB): past either, the file goes stale
STEP_RECORDS = 1000  # records the storage thread saves between two `step_aside`
MAX_DELTAS_PER_COMMIT = 1000
MAX_QUEUED_STEPS = 10_000  # the loop keeps at most this many steps in flight
MAX_STEPS_PER_COMMIT = 500
MAX_EVENTS_PER_COMMIT = 5_000  # a few tens of ms of a card's time per transaction
MAX_UNWRITTEN = 100_000  # events kept in memory while the disk refuses them
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # backoff between tries on a refusing card

Job = SaveDelta | Callable[[Storage], None]
# Outbox upkeep (delete acknowledged rows, read a batch to upload, fold, drop)
# runs on the event thread: it touches the disk, and the loop never does.
Chore = Callable[[OutboxStore], None]


@dataclass(frozen=True, slots=True)
class DurableStep:
    """One loop step's durable part, numbered by the loop."""

    number: int
    events: Sequence[LoggedEvent]
    debits: Sequence[DebitEntry]
    commands: Sequence[tuple[str, int]]


class DurableWriter:
    """Makes events and command ids durable, in the order they were submitted."""

    def __init__(
        self,
        store: OutboxStore,
        tell: Callable[[Internal], None],
        pulse: Pulse,
    ) -> None:
        """`tell` queues a message for the loop (the inbox's internal lane);
        `pulse` is beaten after every write, for the watchdog."""
        self._store = store
        self._tell = tell
        self.pulse = pulse
        self._jobs: queue.Queue[DurableStep | Chore | None] = queue.Queue()
        # Steps submitted while `MAX_QUEUED_STEPS` wait (the card hangs): merged
        # into one, bounded like `_unwritten`, taken once the queue is drained.
        self._lock = threading.Lock()
        self._overflow: DurableStep | None = None
        self._unwritten: list[LoggedEvent] = []
        self._unwritten_debits: list[DebitEntry] = []
        self._refusing = False
        self._written_upto = 0  # the last step written whole (steps count from 1)
        self.thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="alc-events", daemon=True)
        thread.start()
        return thread

    def restart(self) -> None:
        """Start the thread again after it died (the supervisor's call); what
        was queued is still queued."""
        self.thread = self._start()

    def submit(self, step: DurableStep) -> None:
        """Queue a step; never blocks. Past `MAX_QUEUED_STEPS` queued, steps are
        merged into one, their events bounded as in memory (see the module
        docstring), until the thread catches up."""
        with self._lock:
            if self._overflow is None and self._jobs.qsize() < MAX_QUEUED_STEPS:
                self._jobs.put(step)
                return
            merged = self._overflow
            if merged is None:
                self._overflow = step
                return
            self._overflow = DurableStep(
                step.number,
                self._bounded([*merged.events, *step.events]),
                [*merged.debits, *step.debits],
                [*merged.commands, *step.commands],
            )

    def chore(self, chore: Chore) -> None:
        """Queue outbox upkeep, run after the steps queued before it."""
        self._jobs.put(chore)

    def unwritten(self) -> int:
        """Events waiting in memory for the card to take them."""
        return len(self._unwritten)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the thread; gives up after `timeout`
        (a hung card), leaving the daemon thread behind."""
        self._jobs.put(None)
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.error("the event thread did not finish within %.0f s: the card hangs", timeout)

    def _run(self) -> None:
        carried: list[DurableStep | Chore | None] = []  # taken while batching, next
        tries = 0
        while True:
            self.pulse.idle()
            if carried:
                first = carried.pop()
            elif (merged := self._take_overflow()) is not None:
                first = merged
            elif self._unwritten:
                try:
                    first = self._jobs.get(timeout=RETRY_S[min(tries, len(RETRY_S) - 1)])
                except queue.Empty:
                    tries += 1
                    self.pulse.beat()
                    self._write([], [], [])  # try the card again
                    continue
            else:
                first = self._jobs.get()
            self.pulse.beat()
            if first is None:
                if self._unwritten:
                    self._write([], [], [])  # one last try before stopping
                return
            if not isinstance(first, DurableStep):
                self._do(first)
                continue
            batch = [first]
            while len(batch) < MAX_STEPS_PER_COMMIT:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    with self._lock:  # drained: what overflowed comes next, in order
                        if self._overflow is not None:
                            batch.append(self._overflow)
                            self._overflow = None
                    break
                if not isinstance(more, DurableStep):
                    carried.append(more)  # after this batch, in order (None: stop)
                    break
                batch.append(more)
            events = [e for step in batch for e in step.events]
            debits = [d for step in batch for d in step.debits]
            commands = [c for step in batch for c in step.commands]
            # Steps merged past the queue's bound may hold tens of thousands of
            # events: written in slices, each a transaction of its own, with word
            # to the loop after each that the card is moving (a busy card keeps
            # event-first; only a card that writes nothing runs out of patience).
            while len(events) > MAX_EVENTS_PER_COMMIT:
                head, events = events[:MAX_EVENTS_PER_COMMIT], events[MAX_EVENTS_PER_COMMIT:]
                upto = head[-1].seq
                self._write(head, [d for d in debits if d.seq <= upto], [])
                debits = [d for d in debits if d.seq > upto]
                self._tell(Written(self._written_upto))
            if events or commands or self._unwritten:
                self._write(events, debits, commands)
            self._written_upto = batch[-1].number
            self._tell(Written(self._written_upto))

    def _take_overflow(self) -> DurableStep | None:
        """The merged steps, once every step queued before them is taken. (An
        overflow only starts while the queue is full, so with an empty queue
        and none here, `get` cannot miss one.)"""
        with self._lock:
            merged = self._overflow
            if merged is None or not self._jobs.empty():
                return None
            self._overflow = None
            return merged

    def _write(
        self,
        events: list[LoggedEvent],
        debits: list[DebitEntry],
        commands: list[tuple[str, int]],
    ) -> None:
        # What a refused write left over goes first: its seqs were given out,
        # and the hub can only acknowledge past them once they exist.
        events = [*self._unwritten, *events]
        debits = [*self._unwritten_debits, *debits]
        try:
            self._store.append(events, debits, commands=commands)
        except Exception as exc:
            # The card refused (full, read-only, failing): the loop goes on (a
            # member is at the door) and the events wait in memory, bounded.
            if not self._refusing:
                log.exception("could not make %d events durable", len(events))
                self._refusing = True
                self._tell(DiskChanged("events", False, f"events cannot be written: {exc}"))
            self._unwritten, self._unwritten_debits = self._bounded(events), debits
            # Command ids are lost with a refused write: a command the hub sends
            # again within its `exp` would run twice (docs/operations.md).
            return
        self._unwritten, self._unwritten_debits = [], []
        if self._refusing:
            self._refusing = False
            self._tell(DiskChanged("events", True, "events are written again"))
        # Logged once on disk, so the log never shows an event that a power
        # cut took back (its seq would be given out again).
        if events_log.isEnabledFor(logging.INFO):  # json.dumps costs, logged or not
            for e in events:
                events_log.info("%d %s %s", e.seq, e.type, json.dumps(e.body, default=_hex))

    def _bounded(self, events: list[LoggedEvent]) -> list[LoggedEvent]:
        """Past `MAX_UNWRITTEN`, the oldest access events go, their seqs told to
        the core as folded (a counted `outbox_full` event); debits and every
        other event stay."""
        over = len(events) - MAX_UNWRITTEN
        if over <= 0:
            return events
        kept: list[LoggedEvent] = []
        ranges: list[tuple[int, int]] = []
        for e in events:
            if over > 0 and e.type == "access":
                over -= 1
                if ranges and ranges[-1][1] == e.seq - 1:
                    ranges[-1] = (ranges[-1][0], e.seq)
                else:
                    ranges.append((e.seq, e.seq))
            else:
                kept.append(e)
        if ranges:
            self._tell(ForCore(EventsRemoved("folded", ranges)))
        return kept

    def _do(self, chore: Chore) -> None:
        try:
            chore(self._store)
        except Exception:
            # Upkeep only: the rows stay and the next ack or upload retries them.
            log.exception("outbox upkeep failed")


class StorageWriter:
    """One thread that carries out dataset writes in the order they were queued.

    Deltas queued back to back are committed together (group commit): each is
    durable when its transaction is, and a burst costs one flush instead of one
    per delta, which is what lets a slow SD card keep up with a busy hub.
    """

    def __init__(self, storage: Storage, pulse: Pulse, images: ImageKeeper | None = None) -> None:
        """`images`: writes the decision image when the queue is idle
        (`firmware.runtime.imaging`); none in tools that only save."""
        self._storage = storage
        self.pulse = pulse
        self.images = images
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._queued_ops = 0
        self.stale = False
        """A save was skipped or failed: the file is behind the live data until
        a full sync rewrites it (`saved_full`)."""
        self.thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="alc-storage", daemon=True)
        thread.start()
        return thread

    def restart(self) -> None:
        """Start the thread again after it died (the supervisor's call)."""
        self.thread = self._start()

    def submit(self, job: Job) -> bool:
        """Queue a write; never blocks. False (and `stale`) when the card is too
        far behind (`MAX_QUEUED_WRITES` jobs or `MAX_QUEUED_OPS` delta ops): the
        file will be rewritten whole by the next full sync. While stale, deltas
        are not queued at all (the file cannot take them on its old base)."""
        ops = len(job.ops) if isinstance(job, SaveDelta) else 0
        with self._lock:
            if ops and self.stale:
                return False
            if self._jobs.qsize() >= MAX_QUEUED_WRITES or self._queued_ops + ops > MAX_QUEUED_OPS:
                if not self.stale:
                    log.error("dataset writes are too far behind: a full sync rewrites the file")
                self.stale = True
                return False
            self._queued_ops += ops
            self._jobs.put(job)
        return True

    def saved_full(self) -> None:
        """A full sync's snapshot is queued: the file will be whole again."""
        self.stale = False

    def flush(self) -> None:
        """Wait until every queued write is done (tests and tools)."""
        self._jobs.join()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued writes, then end the thread (gives up after
        `timeout` on a hung card, leaving the daemon thread behind)."""
        self._jobs.put(None)
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.error("the storage thread did not finish within %.0f s: the card hangs", timeout)

    def _run(self) -> None:
        carried: list[Job | None] = []  # a job taken while batching, run next
        while True:
            self.pulse.idle()
            try:
                job = carried.pop() if carried else self._jobs.get(timeout=self._image_due())
            except queue.Empty:
                self._write_image()
                continue
            self.pulse.beat()
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
                    if self.images is not None:
                        self.images.saved(full=False)
                else:
                    job(self._storage)
            except Exception:
                # The live data stays right; the file is rewritten by a full sync.
                log.exception("a storage write failed")
                self.stale = True
            finally:
                if isinstance(job, SaveDelta):
                    with self._lock:
                        self._queued_ops -= sum(len(d.ops) for d in batch)
                for _ in range(done):
                    self._jobs.task_done()

    def _image_due(self) -> float | None:
        """How long the queue may wait for a job before the image is due."""
        return None if self.images is None else self.images.due_in()

    def _write_image(self) -> None:
        """The queue stayed empty until the image was due: write it, giving way
        to the next job queued meanwhile."""
        assert self.images is not None
        self.pulse.beat()
        try:
            self.images.run(lambda: not self._jobs.empty())
        except Exception:
            # Only a shortcut for the next boot: the dataset file is untouched.
            log.exception("writing the decision image failed")


def save_snapshot(
    action: SaveSnapshot, last_full: float | None, members: MembersFirst, storage: Storage
) -> None:
    """On the storage thread: a full sync's records to the card, stepping aside
    for members every `STEP_RECORDS`."""
    records = _stepping_aside(action.records, members)
    storage.save_snapshot(action.epoch, action.v, records, action.digest, last_full)
    # Let go of the records a piece at a time: freeing 100,000 of them at once is
    # one long stretch of C holding the interpreter lock, which the loop, and a
    # member at the door, would wait out.
    while action.records:
        members.step_aside()
        del action.records[-STEP_RECORDS:]


def _stepping_aside(
    records: list[tuple[str, str, bytes]], members: MembersFirst
) -> Iterator[tuple[str, str, bytes]]:
    """The records, with a pause for any member waiting every `STEP_RECORDS`."""
    for start in range(0, len(records), STEP_RECORDS):
        members.step_aside()
        yield from records[start : start + STEP_RECORDS]


def _hex(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)
