"""The one event loop: events in, the core decides, actions out, sleep till the next timer.

Shaped like ESPHome's `Application::loop()`. One thread owns the controller core.
paho's network thread, the pin and serial threads and the kiosk server's threads
only put events on one bounded queue. Slow disk writes go to one storage thread, in order,
so a presentation never waits behind a full sync being written to SQLite.

The queue hands out what a person is waiting for first: a credential presented at
a reader (or on the simulator's bench topic) goes ahead of every queued hub message,
so a burst of snapshot pages delays a decision by at most the one page being
handled, not by all of them. Everything else keeps its arrival order.

Presentations that queue up during a burst are handled together, up to
`MAX_EVENTS_PER_STEP` per loop step, and the events they log are written in one
transaction (group commit): a burst costs one flush per step, not one per
presentation, and every action still follows the append of the events it reports.

Threads, all stopped by `Runtime.stop()`: the loop (the caller's), paho's network
thread, and the storage writer; with `[kiosk] listen`, the kiosk server and one
thread per open request or screen (`firmware/kiosk/server.py`).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import queue
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.collector import BulkCollector
from firmware.config import Config
from firmware.core import wire
from firmware.core.actions import (
    Action,
    CheckStorage,
    KioskAnswer,
    KioskSend,
    Output,
    Publish,
    RememberCommand,
)
from firmware.core.controller import Controller
from firmware.core.errors import LocalError
from firmware.core.facility import facility_from
from firmware.core.inputs import (
    Connected,
    ContactChanged,
    Disconnected,
    EventsRemoved,
    Input,
    OutboxCounted,
    PayloadReceived,
    Presented,
    ReaderFault,
    RexPressed,
    StorageChecked,
    Tick,
)
from firmware.core.outbox import (
    AppendEvents,
    DeleteAcked,
    DropEvents,
    FoldEvents,
    ForgetDebits,
    Outbox,
    SendEvents,
)
from firmware.core.reception import Unsealed
from firmware.core.sync import SaveDelta, SaveSnapshot, SyncSession
from firmware.kiosk.server import KioskServer
from firmware.mqtt import BrokerSettings, Link, LinkDown, LinkEvent, LinkUp, Received, Will
from firmware.outbox_store import OutboxStore
from firmware.runtime.decoder import Decoder
from firmware.runtime.disk import DurableStep, DurableWriter, StorageWriter
from firmware.runtime.edge import Edge, EdgeContext, EdgeFactory
from firmware.runtime.priorities import MembersFirst, member_thread
from firmware.storage import Storage, load_store
from firmware.write_gate import WriteGate
from hal.backend import Backend, UnknownOutput
from hal.errors import BackendUnavailable
from hal.events import (
    ContactSensed,
    CredentialRead,
    ExitPressed,
    HalEvent,
    OutputCut,
    ReaderTrouble,
)
from hal.registry import create_backend

if TYPE_CHECKING:
    from sim.bench import BenchHands

log = logging.getLogger("alc.controller")
events_log = logging.getLogger("alc.events")

MAX_QUEUED_EVENTS = 10_000
# Presentations handled per loop step, their events made durable together: enough
# to keep up with a burst at one flush per step, few enough that the first of them
# waits only a few milliseconds for the others' decisions.
MAX_EVENTS_PER_STEP = 100
URGENT, NORMAL = 0, 1  # queue priorities: a member at a reader, then everything else
LATENCY_SAMPLES = 100_000
SWITCH_INTERVAL_S = 0.0005
STEP_RECORDS = 1000  # records the storage thread saves between two `step_aside`
MAX_QUEUED_WRITES = 256
IDLE_WAKE_S = 60.0  # with nothing scheduled, still wake once a minute
DB_FILE = "alc.sqlite3"


# (priority, arrival number, event or None to wake the loop, monotonic time queued)
Queued = tuple[int, int, Input | Unsealed | None, float]
OutboxUpkeep = SendEvents | DeleteAcked | ForgetDebits | FoldEvents | DropEvents


class Runtime:
    """A whole controller: storage, MQTT link, the core and its loop."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        edges: Sequence[EdgeFactory] = (),
    ) -> None:
        """`edges`: adapters the caller plugs in (`firmware.runtime.edge`), such as
        the simulator's bench; none on a real installation."""
        self.config = config
        self.clock = clock
        self._key = config.key()
        self._kid = config.controller.id.encode()
        self._base = config.base_topic
        # Each event with the monotonic time it was queued, for decision latency;
        # the arrival number keeps arrival order within a priority (and means two
        # entries never compare their events).
        self._events: queue.PriorityQueue[Queued] = queue.PriorityQueue(MAX_QUEUED_EVENTS)
        self._arrivals = itertools.count()
        self.decision_latency_s: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._bench = config.backend == "sim"
        self._bench_in = f"{self._base}/bench/in"
        self._stopping = threading.Event()
        self._collector = BulkCollector()  # off while a full sync arrives
        self.members_first = MembersFirst()
        # What `run` could get (`member_thread`); None until the loop is running.
        self.loop_priority: str | None = None
        self._dropped = 0
        data_dir = config.controller.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalError(f"{config.path}: controller.data_dir: {exc}") from None
        # The kiosk's port is taken now, so a port in use stops the start with a
        # clear error before anything else is opened; it serves from `run`.
        self.kiosk: KioskServer | None = None
        if config.kiosk_listen is not None:
            self.kiosk = KioskServer(config.kiosk_listen, config.kiosk_token, self.submit)
        # The HAL first: every output is in its safe state before anything else.
        self.hardware = self._hardware()
        # The old bench path (core bench keypad, `sim.bench.BenchHands`) only
        # while no edge takes the bench: it leaves with the core's bench.
        self._hands = self._bench_hands() if not edges else None
        self._bench = self._bench and not edges
        context = EdgeContext(config, self.hardware, self.submit, self._publish_sealed, clock)
        self._edges: list[tuple[Edge, frozenset[str]]] = []
        for make in edges:
            edge = make(context)
            self._edges.append((edge, frozenset(f"{self._base}/{t}" for t in edge.topics)))
        # Two connections to one file: the dataset's (storage thread) and the
        # outbox's (event thread), whose writes go first at every transaction
        # boundary, so a member never waits behind a full sync being saved.
        gate = WriteGate()
        self.storage = Storage.open(Path(data_dir) / DB_FILE, gate=gate)
        self.events = OutboxStore(Storage.open(Path(data_dir) / DB_FILE, gate=gate, urgent=True))
        self._boot_actions: list[Action] = []
        self.controller = self._boot()
        self.writer = StorageWriter(self.storage)
        self._resumed: deque[list[Action]] = deque()
        self.durable = DurableWriter(self.events, self._resume)
        # Hub data is verified and decoded aside (see `decoder`); small messages
        # (commands, acks, bench inputs) are opened on the loop as they come.
        self._data_topic = f"{self._base}/data"
        self.decoder = Decoder(
            self.controller.reception.unseal, self.submit, self.members_first.step_aside
        )
        offline = self._seal("state", {"t": "state", "online": False})
        suffixes = ("data", "cmd", "ack", "bench/in") if self._bench else ("data", "cmd", "ack")
        topics = [f"{self._base}/{s}" for s in suffixes]
        topics += sorted(t for _, claimed in self._edges for t in claimed)
        self.link = Link(
            f"alc-{config.controller.site}-{config.controller.id}",
            BrokerSettings.of(config.mqtt),
            self._from_link,
            subscriptions=topics,
            will=Will(f"{self._base}/state", offline),
        )

    def _boot(self) -> Controller:
        """Load the live data from disk, so doors open before any network."""
        now = self.clock()
        loaded = load_store(self.storage)
        epoch, v, _digest, last_full = loaded.state
        built = loaded.built
        # The dataset lives for hours: keep the collector from rescanning it.
        gc.freeze()
        counter = itertools.count(1)
        boot_id = secrets.token_hex(4)
        session = SyncSession(
            built.store,
            epoch,
            v,
            now=now,
            last_full=last_full,
            outage_s=self.config.controller.outage_s,
            full_every_s=self.config.controller.full_sync_every_s,
            jitter=lambda: secrets.randbelow(1_000_000) / 1_000_000,
            new_id=lambda: f"{boot_id}-{next(counter)}",
        )
        controller = Controller(
            controller_id=self.config.controller.id,
            key=self._key,
            base_topic=self._base,
            session=session,
            boot_time=now,
            masters=self.config.masters,
            facility=facility_from(self.config.wiring, now, self.config.pins),
            executed=self.storage.commands(now),
            bench=self._bench,
            outbox=self._restore_outbox(),
        )
        log.info(
            "boot: epoch=%s v=%d records=%d digest=%s",
            epoch,
            v,
            len(built.store),
            built.store.digest.hex(),
        )
        if epoch is not None and not loaded.intact:
            log.error("stored records do not hash to the stored digest: full sync")
        self._boot_actions = controller.booted(now, intact=epoch is None or loaded.intact)
        return controller

    # --- other threads -> the loop ------------------------------------------------------

    def _from_link(self, event: LinkEvent) -> None:
        if isinstance(event, LinkUp):
            self.submit(Connected())
        elif isinstance(event, LinkDown):
            self.submit(Disconnected())
        elif isinstance(event, Received):
            for edge, claimed in self._edges:
                if event.topic in claimed:
                    if not event.retained:  # a retained input would act again at each start
                        edge.received(event.topic[len(self._base) + 1 :], event.payload)
                    return
            hands = self._hands
            if (
                hands is not None
                and event.topic == self._bench_in
                and not event.retained
                and hands.take(event.payload)
            ):
                return  # done on the simulated pins and ports: it comes back through the HAL
            received = PayloadReceived(event.topic, event.payload, event.retained)
            if event.topic == self._data_topic:
                self.decoder.put(received)
            else:
                self.submit(received)

    def submit(self, event: Input | Unsealed) -> None:
        """Queue an event for the loop (any thread). Drops, counted, when full.
        Presentations (and simulated reader inputs) go ahead of everything else."""
        urgent = isinstance(event, Presented) or (
            isinstance(event, PayloadReceived) and event.topic == self._bench_in
        )
        item = (URGENT if urgent else NORMAL, next(self._arrivals), event, time.monotonic())
        if urgent:
            self.members_first.queued()
        try:
            self._events.put(item, timeout=1.0)
        except queue.Full:
            self._dropped += 1
            if urgent:
                self.members_first.served()

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Run until `stop()`; the calling thread becomes the loop."""
        # Python hands the interpreter lock between threads every 5 ms by default:
        # a presentation would wait that long behind the storage or network thread.
        # The loop is the thread a member waits for; make the hand-over quicker.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._carry_out(self.controller, self._boot_actions)
        if self.hardware is not None:
            self.hardware.start()
        self.link.start()
        if self.kiosk is not None:
            self.kiosk.start()
        # Raised only now: a thread inherits its creator's priority, and the
        # reader, network and kiosk threads started above are not the loop.
        wanted = self.config.controller.loop_priority
        got = member_thread(wanted)
        if got != wanted:
            log.warning(
                "loop priority %s, not %s: no CAP_SYS_NICE (docs/operations.md)", got, wanted
            )
        self.loop_priority = got
        try:
            while not self._stopping.is_set():
                self._step()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the loop to finish (any thread, signal handlers included)."""
        self._stopping.set()
        # When the queue is full the loop is busy anyway and will see the flag.
        with contextlib.suppress(queue.Full):
            self._events.put_nowait((URGENT, next(self._arrivals), None, 0.0))

    def _step(self) -> None:
        controller = self.controller
        self._drain_resumed(controller)
        item: Queued
        self._collector.follow(controller.session.receiving())
        if controller.has_work():
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                work = controller.work(self.clock(), yield_now=self.members_first.waiting)
                self._carry_out(controller, work)
                return
        else:
            deadline = controller.next_deadline()
            wait = IDLE_WAKE_S if deadline is None else deadline - self.clock()
            try:
                item = self._events.get(timeout=min(max(wait, 0.0), IDLE_WAKE_S))
            except queue.Empty:
                item = (NORMAL, -1, Tick(), time.monotonic())
        # Group commit: presentations queued behind this one are handled in the
        # same step, and the events they all log become durable in one transaction
        # (one flush) before any of their actions is carried out. Only urgent items
        # are gathered: the first other item taken ends the step, so a burst of
        # snapshot pages still delays a decision by one page at most.
        items = [item]
        while item[0] == URGENT and len(items) < MAX_EVENTS_PER_STEP:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                break
            items.append(item)
        steps: list[list[Action]] = []
        for _, _, event, queued_at in items:
            if event is None:
                continue
            actions = controller.handle(event, self.clock())
            if isinstance(event, PayloadReceived | Presented) and _has_access(actions):
                # From the moment the event was queued to the decision: what a member
                # at the door waits, including any wait behind a slice of sync work.
                self.decision_latency_s.append(time.monotonic() - queued_at)
            steps.append(actions)
        for actions in steps:
            self._carry_out(controller, actions)
        served = sum(1 for priority, _, event, _ in items if priority == URGENT and event)
        if served:
            self.members_first.served(served)

    def _carry_out(self, controller: Controller, actions: list[Action]) -> None:
        """Events and command ids first (durable, on the event thread), then the
        rest of the step, in order; a step with nothing to write still queues
        behind earlier ones while any are in flight."""
        self._drain_resumed(controller)  # what earlier steps left goes first
        events = [e for a in actions if isinstance(a, AppendEvents) for e in a.events]
        commands = [(a.id, a.exp) for a in actions if isinstance(a, RememberCommand)]
        rest: list[Action] = [
            a for a in actions if not isinstance(a, AppendEvents | RememberCommand)
        ]
        if not events and not commands and not self.durable.busy():
            self._perform(controller, rest)
            return
        debits = [d for a in actions if isinstance(a, AppendEvents) for d in a.debits]
        self.durable.submit(DurableStep(events, debits, commands, rest))

    def _resume(self, actions: list[Action]) -> None:
        """From the event thread: a step's events are on disk, carry on with it.
        The deque holds at most one entry per step in flight (bounded by the event
        thread's queue); the queue item only wakes the loop."""
        self._resumed.append(actions)
        with contextlib.suppress(queue.Full):  # full: the loop is awake anyway
            self._events.put_nowait((URGENT, next(self._arrivals), None, 0.0))

    def _drain_resumed(self, controller: Controller) -> None:
        while self._resumed:
            self._perform(controller, self._resumed.popleft())

    def _perform(self, controller: Controller, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Publish):
                topic = f"{self._base}/{action.suffix}"
                payload = self._seal(action.suffix, action.message)
                self.link.publish(topic, payload, retain=action.retain)
            elif isinstance(action, SaveDelta):
                self.writer.submit(action)
            elif isinstance(action, SaveSnapshot):
                last_full = controller.session.last_full
                save = partial(_save_snapshot, action, last_full, self.members_first)
                self.writer.submit(save)
            elif isinstance(action, CheckStorage):
                self.writer.submit(self._check_storage)
            elif isinstance(action, Output):
                self._output(action)
            elif isinstance(action, KioskSend):
                if self.kiosk is not None:
                    self.kiosk.push(action.screen, action.kind, action.data)
            elif isinstance(action, KioskAnswer):
                if self.kiosk is not None:
                    self.kiosk.answer(action.request, action.status, action.body)
            elif isinstance(action, OutboxUpkeep):
                self.durable.chore(partial(self._outbox_upkeep, action))

    def _hardware(self) -> Backend | None:
        """The configured HAL backend, outputs safe. The simulator may run with no
        pins at all: its bench inputs then go straight to the core."""
        config = self.config
        if config.unwired is not None:
            log.warning("simulator without hardware wiring (%s): bench inputs only", config.unwired)
            return None
        try:
            where = f"{config.path}: hal.backend"
            return create_backend(config.backend, config.wiring, self._from_hal, where=where)
        except BackendUnavailable as exc:
            if config.backend != "sim":
                raise
            log.warning("simulator without hardware wiring (%s): bench inputs only", exc)
            return None

    def _bench_hands(self) -> BenchHands | None:
        """On the simulator with wiring, bench inputs are carried out on its mock
        pins and loopback ports (`sim.bench`); what they name without wiring, and
        anything malformed, still goes to the core."""
        if not self._bench or self.hardware is None:
            return None
        from hal.sim import SimBackend  # gpiozero only on the simulator
        from sim.bench import BenchHands

        if not isinstance(self.hardware, SimBackend):
            return None
        return BenchHands(self.hardware, self._key, self._kid, self._bench_in)

    def _from_hal(self, event: HalEvent) -> None:
        """HAL threads -> the loop's queue."""
        if isinstance(event, CredentialRead):
            self.submit(Presented(event.reader_id, event.credkind, event.value))
        elif isinstance(event, ContactSensed):
            self.submit(ContactChanged(event.door_id, event.open))
        elif isinstance(event, ExitPressed):
            self.submit(RexPressed(event.door_id))
        elif isinstance(event, ReaderTrouble):
            self.submit(ReaderFault(event.reader_id, event.detail))
        elif isinstance(event, OutputCut):
            log.error("%s: released longer than its max_open_s; the HAL relocked it", event.name)

    def _output(self, action: Output) -> None:
        if self.hardware is not None:
            # In the data or config but not wired to a pin: nothing to switch.
            # `held`: a door open by schedule or mode, which max_open_s spares.
            with contextlib.suppress(UnknownOutput):
                self.hardware.set_output(action.name, action.on, held=action.held)
        for edge, _ in self._edges:
            edge.output_switched(action.name, action.on)
        if self._bench:
            now = int(self.clock())
            message = {"t": "output", "name": action.name, "on": action.on, "time": now}
            self.link.publish(f"{self._base}/bench/out", self._seal("bench/out", message))

    def _restore_outbox(self) -> Outbox:
        stats = self.events.stats()
        return Outbox.restore(
            last_seq=stats.last_seq,
            count=stats.count,
            oldest=stats.oldest,
            first_seq=stats.first_seq,
            debits=self.events.debits(),
            bound=self.config.controller.outbox_max,
        )

    def _outbox_upkeep(self, action: OutboxUpkeep, store: OutboxStore) -> None:
        """On the event thread (`DurableWriter.chore`): the outbox's disk work, in
        order with the events being written, never on the loop."""
        if isinstance(action, SendEvents):
            self._send_events(action, store)
            return
        if isinstance(action, DeleteAcked):
            store.acknowledge(action.upto, action.v)
        elif isinstance(action, ForgetDebits):
            store.forget_debits(action.v)
            return
        elif isinstance(action, FoldEvents):
            self.submit(EventsRemoved("folded", store.fold(action.count)))
        else:
            self.submit(EventsRemoved("dropped", store.drop(action.upto)))
        stats = store.stats()
        self.submit(OutboxCounted(stats.count, stats.oldest))

    def _send_events(self, action: SendEvents, store: OutboxStore) -> None:
        """Publish events `after < seq <= upto`, split so no message passes the cap."""
        rows = store.batch(action.after, action.upto)
        topic = f"{self._base}/events"
        start = 0
        while start < len(rows):
            end = len(rows)
            while True:
                try:
                    payload = self._seal("events", {"t": "events", "batch": rows[start:end]})
                    break
                except LocalError:
                    if end - start == 1:
                        # One event too big to ever send: its body is ours, so log
                        # and skip it rather than block the outbox forever.
                        log.error("event %s is too large to upload; skipped", rows[start][0])
                        payload = b""
                        break
                    end = start + (end - start) // 2
            if payload:
                self.link.publish(topic, payload)
            start = end

    def _check_storage(self, storage: Storage) -> None:
        """On the storage thread: rehash the records, forget expired command ids."""
        storage.forget_expired(self.clock())
        self.submit(StorageChecked(storage.verify()))

    def _publish_sealed(self, suffix: str, message: Mapping[str, Any]) -> None:
        self.link.publish(f"{self._base}/{suffix}", self._seal(suffix, message))

    def _seal(self, suffix: str, message: Mapping[str, Any]) -> bytes:
        return wire.seal(self._key, self._kid, f"{self._base}/{suffix}", message)

    def _shutdown(self) -> None:
        if self.kiosk is not None:
            self.kiosk.stop()  # screens show "reconnecting" until we are back
        # A clean disconnect suppresses the will, so say "offline" ourselves first.
        if self.link.connected:
            state = self.controller.state(online=False)
            self.link.publish(f"{self._base}/state", self._seal("state", state), retain=True)
        # Every event logged so far reaches the disk; the actions still waiting
        # for it (outputs, publishes) are not carried out any more: we are stopping.
        self.durable.stop()
        self._resumed.clear()
        for edge, _ in self._edges:
            edge.stop()
        self.link.stop()
        self.decoder.stop()  # after the link: nothing puts to it any more
        if self.hardware is not None:
            self.hardware.close()  # outputs back to their safe state
        self.writer.stop()
        self.storage.close()
        self.events.storage.close()
        self._collector.release()  # stopped in the middle of a full sync


def _save_snapshot(
    action: SaveSnapshot, last_full: float | None, members: MembersFirst, storage: Storage
) -> None:
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


def _has_access(actions: list[Action]) -> bool:
    return any(
        isinstance(a, AppendEvents) and any(e.type == "access" for e in a.events) for a in actions
    )
