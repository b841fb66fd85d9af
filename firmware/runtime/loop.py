"""The one event loop: inputs in, the core decides, actions out, sleep till the next timer.

Shaped like ESPHome's `Application::loop()`. One thread owns the core; every
other thread only talks to it through the inbox (`firmware.runtime.inbox`).
Each step, in this order:

1. the runtime's own messages (a step's events written, the disk changed,
   a question asked through `Runtime.ask`), all of them;
2. a due timer (relock, held-open alarm, light off, warning, lead and lag): a
   `Tick` before anything else from outside, so a timer is late by at most one
   step, never by a queue;
3. members at readers (up to `MAX_EVENTS_PER_STEP`, their events written in one
   transaction: group commit), or else one other input from outside;
4. with nothing else to do, a slice of background work (building a full sync
   aside). The slice ends as soon as a member waits, the runtime has a message
   or a timer falls due: timers are never late behind a build.

**Containment.** An exception from the core's handling of one input, or from
carrying out one action, is caught here: logged once with its traceback (rate
limited), reported as a `system`/`error` event, and the loop goes on. The
failed input's actions are dropped whole, never half carried out.

**Actions follow their events to the card** (`firmware.runtime.held`), except
an output switched off, which never waits, and never for longer than 1 s.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from firmware.core.actions import (
    Action,
    CheckStorage,
    KioskAnswer,
    KioskSend,
    Output,
    Publish,
)
from firmware.core.controller import Controller
from firmware.core.hush import Hush, more
from firmware.core.inputs import (
    DiskStatus,
    Input,
    InputsDropped,
    OutputFailed,
    PayloadReceived,
    Presented,
    StepFailed,
    StorageChecked,
    Tick,
)
from firmware.core.outbox import (
    AppendEvents,
    DeleteAcked,
    DropEvents,
    FoldEvents,
    ForgetDebits,
    SendEvents,
)
from firmware.core.reception import Unsealed
from firmware.core.sync import SaveDelta, SaveSnapshot
from firmware.runtime.held import HeldSteps
from firmware.runtime.inbox import Taken
from firmware.runtime.messages import Asked, DiskChanged, ForCore, Internal, Written
from firmware.runtime.notes import Decided, Logged, Note, TimerRan

if TYPE_CHECKING:
    from firmware.runtime.app import Runtime

log = logging.getLogger("alc.controller")

# Presentations handled per loop step, their events made durable together: enough
# to keep up with a burst at one flush per step, few enough that the first of them
# waits only a few milliseconds for the others' decisions.
MAX_EVENTS_PER_STEP = 100
FAILED_WAIT_S = 1.0  # the wait after planning it failed
WORK_PAUSE_S = 5.0  # background work that raised waits this long before the next try
IDLE_WAKE_S = 60.0  # with nothing scheduled, still wake once a minute
LATENCY_SAMPLES = 100_000
REPORT_EVERY_S = 60.0  # one traceback per kind of failure a minute
REATTACH_EVERY_S = 60.0  # while the data is in memory, try the card this often
FULL_SAVE_EVERY_S = 600.0  # a failed dataset save asks for a full sync at most this often
STALL_S = 0.1  # a step longer than this kept every door and member waiting: counted
SUPERVISE_EVERY_S = 0.1  # how often the loop looks for dead threads, at most

OutboxUpkeep = SendEvents | DeleteAcked | ForgetDebits | FoldEvents | DropEvents
Entry = Input | Unsealed


class Loop:
    """The loop of one `Runtime` (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.controller: Controller = rt.controller
        self.decision_latency_s: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.failures = 0
        """Inputs and actions whose failure was contained, since start."""
        self.stalls = 0
        """Steps that took longer than `STALL_S`, since start (the fuzzing soak
        counts them; a timer due in such a step fired that late)."""
        self.longest_step_s = 0.0
        """The longest step since start, waiting excluded."""
        self.held = HeldSteps(self._perform, rt.durable.submit)
        self._hush = Hush(REPORT_EVERY_S)  # failures: a traceback per place a minute
        self._dropped_told = 0
        self._events_ok = True
        self._dataset_stale = False
        self._on_disk = rt.files.on_disk
        self._disk_told = rt.disk_ok_at_boot
        self._next_reattach = time.monotonic() + REATTACH_EVERY_S
        self._full_save_asked = -1e18
        self._work_paused_until = 0.0
        self._supervise_at = 0.0
        self._supervise_due = False  # a step skipped the look for dead threads
        self._planned: float | None = None  # the core's deadline the wait was planned on
        self._plan_read = False  # whether this step's wait read it
        # Some wired reader shows decisions (LED, buzzer): only then are access
        # events looked for in every step's actions.
        self._indicating = rt.hardware is not None and bool(rt.hardware.indicating)
        self._dispatch: dict[type[Any], Callable[[Any], None]] = {
            Publish: self._publish,
            SaveDelta: self._save_delta,
            SaveSnapshot: self._save_snapshot,
            CheckStorage: self._check_storage,
            Output: self._output,
            KioskSend: self._kiosk_send,
            KioskAnswer: self._kiosk_answer,
            SendEvents: self._upkeep,
            DeleteAcked: self._upkeep,
            ForgetDebits: self._upkeep,
            FoldEvents: self._upkeep,
            DropEvents: self._upkeep,
        }

    # --- one step ----------------------------------------------------------------

    def step(self) -> None:
        """Wait for something to do (at most until the next deadline), do it.
        Never raises: what the core's handling of one input raises is contained
        there; anything else a step raises (the core asked for its next deadline,
        say) is contained here, and the next wait is a plain one."""
        rt = self.rt
        rt.loop_pulse.idle()
        self._plan_read = False
        try:
            wait = self._wait_s()
        except Exception as exc:
            self._failed("planning the next wait", exc)
            wait = FAILED_WAIT_S  # never 0: a wait that keeps failing must not spin
        taken = rt.inbox.take(wait, MAX_EVENTS_PER_STEP)
        rt.loop_pulse.beat()
        started = time.monotonic()
        try:
            self._step(taken)
        except Exception as exc:
            self._failed("a loop step", exc)
        took = time.monotonic() - started
        if took > self.longest_step_s:
            self.longest_step_s = took
        self.stalls += took > STALL_S

    def _step(self, taken: Taken[Entry, Internal]) -> None:
        rt, controller = self.rt, self.controller
        started = time.monotonic()
        rt.collector.follow(controller.session.receiving())
        for message in taken.internal:
            self._internal(message)
        self.held.overdue()
        late = self._timer_late()
        if late is not None:
            self._handle(Tick())
            if rt.edges:
                self._tell(TimerRan(late))
        if taken.members:
            self._members(taken.members)
        elif taken.routine is not None:
            entry, queued_at = taken.routine
            self._decide(entry, queued_at)
        elif not taken and controller.has_work() and started >= self._work_paused_until:
            self._work()
        self._upkeep_checks()

    def _timer_late(self) -> float | None:
        """How late the core's due timer is (seconds), or None when none is due.
        The deadline the wait was planned on answers, when there was one: only
        the loop changes the core, and what this step did before asking
        (internal messages) only sets later ones. A failure to say is contained
        here, so the members taken in this step are still decided."""
        deadline = self._planned
        if not self._plan_read:
            try:
                deadline = self.controller.next_deadline()
            except Exception as exc:
                self._failed("finding the due timers", exc)
                return None
        if deadline is None:
            return None
        late = self.rt.clock() - deadline
        return late if late >= 0 else None

    def _wait_s(self) -> float:
        """How long the inbox may wait: until the next deadline of the core, of a
        held step's patience, of the watchdog, or a minute."""
        now_wall, now = self.rt.clock(), time.monotonic()
        waits = [IDLE_WAKE_S]
        if self.controller.has_work():
            if now >= self._work_paused_until:
                return 0.0
            waits.append(self._work_paused_until - now)
        deadline = self._planned = self.controller.next_deadline()
        self._plan_read = True
        if deadline is not None:
            waits.append(deadline - now_wall)
        held_until = self.held.deadline()
        if held_until is not None:
            waits.append(held_until - now)
        if self.rt.notifier.enabled:
            waits.append(self.rt.watchdog.due() - now)
        if not self._on_disk:
            waits.append(self._next_reattach - now)
        if self._supervise_due:
            waits.append(self._supervise_at - now)
        return max(min(waits), 0.0)

    def _members(self, members: list[tuple[Entry, float]]) -> None:
        """Group commit: every member's decision first, then every action, so their
        events become durable in one transaction before any door opens."""
        steps = []
        latencies = []
        for entry, queued_at in members:
            actions = self._handled(entry)
            if _has_access(actions):
                # From the moment the input was queued to the decision: what a member
                # at the door waits, including any wait behind a slice of sync work.
                latencies.append(time.monotonic() - queued_at)
            steps.append(actions)
        self.rt.inbox.served(len(members))
        for actions in steps:
            self.carry_out(actions)
        self._decided(latencies)

    def _decide(self, entry: Entry, queued_at: float) -> None:
        actions = self._handled(entry)
        latency = time.monotonic() - queued_at
        self.carry_out(actions)
        if isinstance(entry, PayloadReceived | Presented) and _has_access(actions):
            self._decided([latency])

    def _decided(self, latencies: list[float]) -> None:
        """Decision latencies, kept and told to the edges once the doors' steps
        are on their way."""
        self.decision_latency_s.extend(latencies)
        if self.rt.edges:
            for latency in latencies:
                self._tell(Decided(latency))

    def _work(self) -> None:
        """A slice of background work that gives way to members, the runtime's
        messages and the next timer."""
        rt, controller = self.rt, self.controller
        deadline = controller.next_deadline()
        clock, waiting, internal = rt.clock, rt.inbox.members_first.waiting, rt.inbox.has_internal

        def yield_now() -> bool:
            return waiting() or internal() or (deadline is not None and clock() >= deadline)

        try:
            actions = controller.work(clock(), yield_now=yield_now)
        except Exception as exc:
            # The same slice would fail again at once: pause the work rather than
            # spin on it (members and timers go on; the slice is tried again after
            # the pause, each failure reported as any other).
            self._work_paused_until = time.monotonic() + WORK_PAUSE_S
            self._failed("background work", exc)
            return
        self.carry_out(actions)

    def _upkeep_checks(self) -> None:
        """After every step: drops to report, a stale dataset file, the card,
        the watchdog, the threads."""
        rt = self.rt
        dropped = rt.inbox.dropped
        if dropped > self._dropped_told:
            count, self._dropped_told = dropped - self._dropped_told, dropped
            self._handle(InputsDropped(count))
        now = time.monotonic()
        if rt.writer.stale != self._dataset_stale:
            self._dataset_stale = rt.writer.stale
            self._tell_disk(
                "a dataset save failed: a full sync rewrites the file"
                if self._dataset_stale
                else "the dataset file is whole again"
            )
        if rt.writer.stale and now - self._full_save_asked > FULL_SAVE_EVERY_S:
            # The file is behind the live data (a save failed or was skipped):
            # only a full sync rewrites it whole (the live records keep no bytes).
            self._full_save_asked = now
            self._handle(StorageChecked(False))
        if not self._on_disk and now >= self._next_reattach:
            self._next_reattach = now + REATTACH_EVERY_S
            rt.writer.submit(self._reattach)
        if rt.notifier.enabled:
            rt.watchdog.check()
        # Threads die rarely and are restarted within a fraction of a second;
        # looking after every one of a burst's thousand steps costs the burst.
        # A step skipped here leaves a look due: the wait ends for it (`_wait_s`).
        self._supervise_due = now < self._supervise_at
        if not self._supervise_due:
            self._supervise_at = now + SUPERVISE_EVERY_S
            rt.supervisor.check()
            if rt.supervisor.failed is not None:
                rt.exit_code = 1
                rt.stop()

    # --- the core ----------------------------------------------------------------

    def _handle(self, entry: Entry) -> None:
        self.carry_out(self._handled(entry))

    def _handled(self, entry: Entry) -> list[Action]:
        """The core's actions for one input; none when handling it failed."""
        try:
            return self.controller.handle(entry, self.rt.clock())
        except Exception as exc:
            self._failed(f"handling {type(entry).__name__}", exc)
            return []

    def _failed(self, what: str, exc: Exception) -> None:
        """A contained failure: a traceback in the log and a `system`/`error`
        event, each at most once a minute per place it failed."""
        self.failures += 1
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        key = f"{what} {type(exc).__name__} {where}"
        held = self._hush.allow(key, time.monotonic())
        if held is None:
            return
        log.error("%s failed%s; the loop goes on", what, more(held, "since"), exc_info=exc)
        if what.startswith("reporting"):
            return  # the report itself failed: the log line must do
        detail = f"{what}: {type(exc).__name__}: {exc}"[:200]
        try:
            actions = self.controller.handle(StepFailed(detail), self.rt.clock())
        except Exception as again:
            self._failed("reporting a failure", again)
            return
        self.carry_out(actions)

    # --- the runtime's own messages -------------------------------------------------

    def _internal(self, message: Internal) -> None:
        if isinstance(message, Written):
            self.held.written(message.upto)
        elif isinstance(message, Asked):
            if message.reply.set_running_or_notify_cancel():
                try:
                    message.reply.set_result(message.fn(self.controller))
                except BaseException as exc:
                    message.reply.set_exception(exc)
        elif isinstance(message, DiskChanged):
            self._disk_changed(message)
        elif isinstance(message, ForCore):
            self._handle(message.input)

    def _disk_changed(self, message: DiskChanged) -> None:
        rt = self.rt
        if message.where == "events":
            self._events_ok = message.ok
            if not message.ok and self._on_disk:
                # The card refuses: move the data to memory (on the storage
                # thread), so that events and saves go on there meanwhile. Off
                # the card from now on: the event thread's first write into
                # memory may come back before the storage thread says it moved.
                self._on_disk = False
                rt.writer.submit(self._detach)
        else:
            self._on_disk = message.ok
        self._tell_disk(message.detail)

    def _tell_disk(self, detail: str) -> None:
        """`disk_ok` for the core (its `state`): events written, data on the
        card, and the dataset file not behind the live data."""
        ok = self._events_ok and self._on_disk and not self._dataset_stale
        if ok != self._disk_told:
            self._disk_told = ok
            self._handle(DiskStatus(ok, detail))

    def _detach(self, _storage: Any) -> None:
        """On the storage thread: move the data to memory."""
        files = self.rt.files
        files.detach()
        self.rt.inbox.tell(
            DiskChanged("files", files.on_disk, "the card refuses writes: data in memory")
        )

    def _reattach(self, _storage: Any) -> None:
        """On the storage thread: move the data back to the card if it takes it."""
        files = self.rt.files
        if files.reattach():
            self.rt.inbox.tell(DiskChanged("files", True, "data back on the card"))

    # --- actions -----------------------------------------------------------------

    def carry_out(self, actions: list[Action]) -> None:
        """A step's actions, after its events (`firmware.runtime.held`); then the
        readers and the edges hear of the events, never before the door's step
        is on its way."""
        if not actions:
            return
        self.held.carry_out(actions)
        rt = self.rt
        if not (rt.edges or self._indicating):
            return
        for action in actions:
            if isinstance(action, AppendEvents) and action.events:
                try:
                    if self._indicating:
                        rt.indicate(action.events)
                except Exception as exc:
                    self._failed("showing a decision on its reader", exc)
                if rt.edges:
                    self._tell(Logged(tuple(action.events)))

    def _tell(self, note: Note) -> None:
        """A note to the edges; an edge that raises costs one contained traceback."""
        try:
            self.rt.tell_edges(note)
        except Exception as exc:
            self._failed(f"telling the edges {type(note).__name__}", exc)

    def _perform(self, action: Action) -> None:
        handler = self._dispatch.get(type(action))
        try:
            if handler is None:
                raise TypeError(f"no handler for {type(action).__name__}")
            handler(action)
        except Exception as exc:
            self._failed(f"carrying out {type(action).__name__}", exc)
            if isinstance(action, Output):
                # The core must not take the door as switched: the next grant
                # or relock switches it again.
                self._handle(OutputFailed(action.name, action.on))

    def _publish(self, action: Publish) -> None:
        self.rt.link.publish(action.suffix, action.message, retain=action.retain)

    def _save_delta(self, action: SaveDelta) -> None:
        self.rt.writer.submit(action)

    def _save_snapshot(self, action: SaveSnapshot) -> None:
        rt = self.rt
        last_full = self.controller.session.last_full
        if rt.writer.submit(partial(rt.save_snapshot, action, last_full)):
            rt.writer.saved_full()

    def _check_storage(self, _action: CheckStorage) -> None:
        self.rt.writer.submit(self.rt.check_storage)

    def _output(self, action: Output) -> None:
        self.rt.switch(action)

    def _kiosk_send(self, action: KioskSend) -> None:
        if self.rt.kiosk is not None:
            self.rt.kiosk.push(action.screen, action.kind, action.data)

    def _kiosk_answer(self, action: KioskAnswer) -> None:
        if self.rt.kiosk is not None:
            self.rt.kiosk.answer(action.request, action.status, action.body)

    def _upkeep(self, action: OutboxUpkeep) -> None:
        self.rt.durable.chore(partial(self.rt.outbox_upkeep, action))

    # --- stopping ------------------------------------------------------------------

    def answer_asked(self) -> None:
        """Stopped: answer the questions still queued (the rest of the internal
        lane is of no use any more)."""
        for message in self.rt.inbox.take_internal():
            if isinstance(message, Asked):
                self._internal(message)

    def abandon(self) -> int:
        """Stopping: drop the actions still held for the card; returns how many
        steps were dropped (their events are still written by `durable.stop`)."""
        return self.held.abandon()


def _has_access(actions: list[Action]) -> bool:
    return any(
        isinstance(a, AppendEvents) and any(e.type == "access" for e in a.events) for a in actions
    )
