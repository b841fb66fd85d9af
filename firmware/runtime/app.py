"""App assembly: config -> typed wiring -> HAL -> data files -> core -> threads.

`Runtime` builds one controller and owns every thread it starts
(docs/architecture.md draws them):

- the loop: the caller's thread (`run`), the only one that touches the core;
- `alc-events`, `alc-storage` (`firmware.runtime.disk`): the card;
- `alc-decoder` (`firmware.runtime.decoder`): hub data opened off the loop;
- paho's network thread (`firmware.runtime.link`);
- the HAL's pin and serial threads, and with `[kiosk] listen` or `lan_listen` the kiosk server.

They talk to the loop only through its inbox (`firmware.runtime.inbox`). All of
them stop in `stop()`; the supervisor restarts the runtime's own threads once,
and a second death ends `run` with exit code 1 so that systemd restarts the
whole controller.

The boot never fails on the card's account (`firmware.data_files.open_data`):
a damaged file is moved aside and the controller starts from the master
credentials, an unwritable card runs from memory, and the core reports both.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from firmware.collector import BulkCollector
from firmware.config import Config
from firmware.core.actions import Action, Output
from firmware.core.controller import Controller
from firmware.core.facility import facility_from
from firmware.core.inputs import (
    ContactChanged,
    EventsRemoved,
    Input,
    OutboxCounted,
    PayloadReceived,
    Presented,
    ReaderFault,
    ReaderLinkChanged,
    RexPressed,
    StorageChecked,
    StorageTrouble,
)
from firmware.core.outbox import (
    DeleteAcked,
    FoldEvents,
    ForgetDebits,
    LoggedEvent,
    Outbox,
    SendEvents,
)
from firmware.core.reception import Unsealed
from firmware.core.sync import SaveSnapshot, SyncSession
from firmware.data_files import BootData, open_data
from firmware.kiosk.server import KioskServer, MetricsPage
from firmware.mqtt import BrokerSettings
from firmware.outbox_store import OutboxStore
from firmware.runtime.decoder import Decoder
from firmware.runtime.disk import DurableWriter, StorageWriter, save_snapshot
from firmware.runtime.edge import Edge, EdgeContext, EdgeFactory, ThreadedEdge
from firmware.runtime.imaging import ImageKeeper, Live
from firmware.runtime.inbox import Inbox
from firmware.runtime.link import ControllerLink
from firmware.runtime.loop import Loop, OutboxUpkeep
from firmware.runtime.messages import Asked, ForCore, Internal
from firmware.runtime.notes import Note
from firmware.runtime.plugged import configured_edges
from firmware.runtime.priorities import member_thread
from firmware.runtime.supervisor import Supervisor
from firmware.runtime.watchdog import Pulse, Watchdog
from firmware.salvage import seq_floor
from firmware.sdnotify import Notifier
from firmware.storage import Storage
from hal.backend import Backend, UnknownOutput
from hal.errors import BackendUnavailable
from hal.events import (
    ContactSensed,
    CredentialRead,
    ExitPressed,
    HalEvent,
    OutputCut,
    ReaderLink,
    ReaderTrouble,
)
from hal.registry import create_backend

log = logging.getLogger("alc.controller")

SWITCH_INTERVAL_S = 0.0005
ASK_TIMEOUT_S = 5.0

R = TypeVar("R")


class Runtime:
    """A whole controller: data files, MQTT link, the core, its loop and threads."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        edges: Sequence[EdgeFactory] = (),
        notifier: Notifier | None = None,
    ) -> None:
        """`edges`: adapters the caller plugs in (`firmware.runtime.edge`), such as
        the simulator's bench; none on a real installation. `notifier`: systemd's
        (default: from this process's `NOTIFY_SOCKET`, if any)."""
        self.config = config
        self.clock = clock
        # A missing or unsafe key file stops the start before any file is made.
        self._keys = config.keyring()
        self._base = config.base_topic
        self.exit_code = 0
        # The loop's thread while `run` owns the core; set and cleared under the
        # lock, so `ask` never runs a function beside the loop nor goes unanswered.
        self._core_lock = threading.Lock()
        self._loop_thread: threading.Thread | None = None
        self._boot_actions: list[Action] = []
        self._stopping = threading.Event()
        self.collector = BulkCollector()  # off while a full sync arrives
        self.inbox: Inbox[Input | Unsealed, Internal] = Inbox()
        # What `run` could get (`member_thread`); None until the loop is running.
        self.loop_priority: str | None = None
        self.notifier = notifier if notifier is not None else Notifier()
        # The kiosk's port is taken now, so a port in use stops the start with a
        # clear error before anything else is opened; it serves from `run`.
        self.kiosk: KioskServer | None = None
        if config.kiosk_listen is not None or config.kiosk_lan is not None:
            self.kiosk = KioskServer(
                config.kiosk_listen, config.kiosk_token, self.submit, lan=config.kiosk_lan
            )
        # The HAL first: every output is in its safe state before anything else.
        self.hardware = self._hardware()
        self.files, boot = open_data(config.controller.data_dir, clock())
        self.storage: Storage = self.files.storage
        self.events: OutboxStore = self.files.outbox
        self.disk_ok_at_boot = boot.disk_ok
        self.controller = self._boot(boot)
        from_image, empty = boot.loaded.from_image, boot.empty
        self.booted_from_image = from_image
        """The store was read back from the decision image (`firmware.image`)."""
        del boot  # it holds the dataset read from disk: the store has it now
        self.loop_pulse = Pulse("loop")
        self.images = ImageKeeper(self.storage, self._live, self.inbox.members_first)
        self.images.booted(from_image=from_image, empty=empty)
        self.writer = StorageWriter(self.storage, Pulse("storage"), self.images)
        if from_image:
            # A rebuild would have hashed every stored record against the stored
            # digest; the image spared that, so the storage thread does it now.
            self.writer.submit(self.check_storage)
        self.durable = DurableWriter(self.events, self.inbox.tell, Pulse("events"))
        # Hub data is verified and decoded aside (see `decoder`); small messages
        # (commands, acks) are opened on the loop as they come.
        self.decoder = Decoder(
            self.controller.reception.unseal,
            self.inbox.deliver_all,
            Pulse("decoder"),
            self.inbox.members_first.step_aside,
        )
        self.link = ControllerLink(
            client_id=f"alc-{config.controller.site}-{config.controller.id}",
            settings=BrokerSettings.of(config.mqtt),
            base=self._base,
            key=self._keys.send_key,
            kid=self._keys.send_kid,
            to_loop=self.submit,
            to_decoder=self._to_decoder,
        )
        link = self.link
        context = EdgeContext(
            config,
            self.hardware,
            self.submit,
            link.publish,
            clock,
            key=self._keys,
            ask=self.ask,
            link_up=lambda: link.connected,
        )
        # The edges the config turns on (`firmware.runtime.plugged`), then the caller's.
        self.edges: list[Edge] = [make(context) for make in (*configured_edges(config), *edges)]
        for edge in self.edges:
            self.link.claim(edge)
            if self.kiosk is not None and isinstance(edge, MetricsPage):  # `[metrics]`
                self.kiosk.serve_metrics(edge, lan=bool(config.metrics and config.metrics.lan))
        self.watchdog = Watchdog(
            [self.loop_pulse, self.durable.pulse, self.decoder.pulse], self.notifier.watchdog
        )
        self.supervisor = Supervisor()
        # Looked up at each check: a restart gives each writer a new thread.
        durable, writer, decoder = self.durable, self.writer, self.decoder
        self.supervisor.watch("alc-events", lambda: durable.thread.is_alive(), durable.restart)
        self.supervisor.watch("alc-storage", lambda: writer.thread.is_alive(), writer.restart)
        self.supervisor.watch("alc-decoder", lambda: decoder.thread.is_alive(), decoder.restart)
        self.supervisor.watch("paho", self.link.alive, self.link.restart)
        if self.kiosk is not None:
            self.supervisor.watch("alc-kiosk", self.kiosk.alive, self.kiosk.start)
        for edge in self.edges:
            if isinstance(edge, ThreadedEdge):
                for thread in edge.threads():
                    self.supervisor.watch(thread.name, thread.alive, thread.restart)
        self.loop = Loop(self)

    # --- the boot -----------------------------------------------------------------------

    def _boot(self, boot: BootData) -> Controller:
        """The live data from the card (or what is left of it), so doors open
        before any network."""
        now = self.clock()
        loaded = boot.loaded
        epoch, v, _digest, last_full = loaded.state
        # The dataset lives for hours: keep the collector from rescanning it.
        gc.freeze()
        session = SyncSession(
            loaded.store,
            epoch,
            v,
            now=now,
            last_full=last_full,
            outage_s=self.config.controller.outage_s,
            full_every_s=self.config.controller.full_sync_every_s,
            jitter=lambda: secrets.randbelow(1_000_000) / 1_000_000,
            # PROTOCOL.md s3: random, never reused, at least 64 bits (here 128).
            new_id=lambda: secrets.token_hex(16),
        )
        controller = Controller(
            controller_id=self.config.controller.id,
            key=self._keys,
            base_topic=self._base,
            session=session,
            boot_time=now,
            masters=self.config.masters,
            facility=facility_from(self.config.wiring, now, self.config.pins),
            executed=boot.commands,
            outbox=self._restore_outbox(boot.lost),
        )
        log.info(
            "boot: epoch=%s v=%d records=%d digest=%s disk_ok=%s",
            epoch,
            v,
            len(loaded.store),
            loaded.store.digest.hex(),
            boot.disk_ok,
        )
        if epoch is not None and not loaded.intact:
            log.error("stored records do not hash to the stored digest: full sync")
        self._boot_actions = controller.booted(
            now, intact=epoch is None or loaded.intact, skipped=self._skipped
        )
        if boot.problems:
            trouble = StorageTrouble(boot.problems, boot.lost, disk_ok=boot.disk_ok)
            self._boot_actions += controller.handle(trouble, now)
        return controller

    def _restore_outbox(self, lost: Sequence[tuple[int, int]]) -> Outbox:
        """The outbox as the card left it, numbering on past any seq a previous
        run can have published. A run from memory (a card that refused writes)
        gave out seqs its file never saw; the next boot, from that older file,
        would give them out again, and the hub would keep the first event of
        each and drop ours. So each boot numbers from the clock (milliseconds,
        as after a damaged file) when that is ahead, and the boot event names
        the seqs skipped as `dropped`, for the hub's acknowledgements to pass."""
        stats = self.events.stats()
        floor = seq_floor(self.clock())
        self._skipped: tuple[tuple[int, int], ...] = ()
        last_seq = stats.last_seq
        if last_seq + 1 < floor:
            self._skipped = ((last_seq + 1, floor - 1),)
            last_seq = floor - 1
        return Outbox.restore(
            last_seq=last_seq,
            count=stats.count,
            oldest=stats.oldest,
            first_seq=stats.first_seq,
            debits=self.events.debits(),
            bound=self.config.controller.outbox_max,
            skipped=[*self._skipped, *lost],
        )

    def _hardware(self) -> Backend | None:
        """The configured HAL backend, outputs safe. The simulator may run with no
        pins at all: its bench edge then hands the loop typed inputs."""
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

    # --- other threads -> the loop ------------------------------------------------------

    def submit(self, event: Input | Unsealed) -> bool:
        """Queue an input for the loop (any thread). A presentation goes ahead of
        everything else. Never blocks: dropped and counted when the loop is that
        far behind (the core reports the count)."""
        return self.inbox.post(event, member=isinstance(event, Presented))

    def ask(self, fn: Callable[[Controller], R], timeout: float = ASK_TIMEOUT_S) -> R:
        """Run `fn(controller)` on the loop's thread between two steps and return
        its result (or raise what it raised): the one way for another thread,
        a test or a tool, to read the core while the loop runs. Runs at once
        when the loop is not running (before `run`, after it returned)."""
        if threading.current_thread() is self._loop_thread:
            return fn(self.controller)
        reply: Future[Any] = Future()
        with self._core_lock:  # the loop cannot start or stop meanwhile
            if self._loop_thread is None:
                return fn(self.controller)
            self.inbox.tell(Asked(fn, reply))
        try:
            result: R = reply.result(timeout)
        except FutureTimeout:
            reply.cancel()
            raise TimeoutError(f"the loop did not answer within {timeout} s") from None
        return result

    def _to_decoder(self, payload: PayloadReceived) -> None:
        """paho's thread: hub data to the decoder (looked up at each call, so a
        test may wrap `decoder.put`)."""
        self.decoder.put(payload)

    def _from_hal(self, event: HalEvent) -> None:
        """HAL threads -> the loop's inbox."""
        if isinstance(event, CredentialRead):
            self.submit(Presented(event.reader_id, event.credkind, event.value))
        elif isinstance(event, ContactSensed):
            self.submit(ContactChanged(event.door_id, event.open))
        elif isinstance(event, ExitPressed):
            self.submit(RexPressed(event.door_id))
        elif isinstance(event, ReaderTrouble):
            self.submit(ReaderFault(event.reader_id, event.detail))
        elif isinstance(event, ReaderLink):
            self.submit(ReaderLinkChanged(event.reader_id, event.online, event.detail))
        elif isinstance(event, OutputCut):
            log.error("%s: released longer than its max_open_s; the HAL relocked it", event.name)

    # --- the loop -----------------------------------------------------------------------

    @property
    def decision_latency_s(self) -> deque[float]:
        """Recent decision latencies (queued to decided), for the benchmarks."""
        return self.loop.decision_latency_s

    def run(self) -> int:
        """Run until `stop()`; the calling thread becomes the loop. Returns the
        process's exit code: 0 when stopped, 1 when a thread died twice."""
        with self._core_lock:
            self._loop_thread = threading.current_thread()
        try:
            # Starting is inside the `try`: whatever fails here, what did start stops.
            # Python hands the interpreter lock between threads every 5 ms by default:
            # a presentation would wait that long behind the storage or network thread.
            # The loop is the thread a member waits for; make the hand-over quicker.
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            self.loop.carry_out(self._boot_actions)
            self._boot_actions = []
            if self.hardware is not None:
                self.hardware.start()
            self.link.start()
            for edge in self.edges:
                edge.start()
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
            # The loop decides on stored data from here on: systemd may count us started.
            self.notifier.ready()
            while not self._stopping.is_set():
                self.loop.step()
        finally:
            try:
                self._shutdown()
            finally:
                with self._core_lock:
                    self._loop_thread = None  # `ask` runs directly again
                    self.loop.answer_asked()  # questions asked while it stopped
        return self.exit_code

    def stop(self) -> None:
        """Ask the loop to finish (any thread, signal handlers included)."""
        self._stopping.set()
        self.inbox.wake()

    # --- what the loop hands to other threads --------------------------------------------

    def switch(self, action: Output) -> None:
        """Switch an output (the loop's thread), then tell the edges."""
        if self.hardware is not None:
            # In the data or config but not wired to a pin: nothing to switch.
            # `held`: a door open by schedule or mode, which max_open_s spares.
            with contextlib.suppress(UnknownOutput):
                self.hardware.set_output(action.name, action.on, held=action.held)
        for edge in self.edges:
            edge.output_switched(action.name, action.on)

    def tell_edges(self, note: Note) -> None:
        """The loop's thread: a note to every edge (`firmware.runtime.notes`)."""
        for edge in self.edges:
            edge.observed(note)

    def indicate(self, events: Sequence[LoggedEvent]) -> None:
        """The loop's thread: each access decision shown on the reader it was made
        at, by readers that can (an OSDP reader's LED and buzzer). At once, like
        a reader's own beep: it shows the decision, never the door's state."""
        if self.hardware is None:
            return
        for event in events:
            if event.type == "access":
                reader = event.body.get("reader")
                if isinstance(reader, str):
                    self.hardware.indicate(reader, bool(event.body.get("granted")))

    def outbox_upkeep(self, action: OutboxUpkeep, store: OutboxStore) -> None:
        """On the event thread (`DurableWriter.chore`): the outbox's disk work, in
        order with the events being written, never on the loop."""
        if isinstance(action, SendEvents):
            self.link.send_events(action, store)
            return
        if isinstance(action, DeleteAcked):
            store.acknowledge(action.upto, action.v)
        elif isinstance(action, ForgetDebits):
            store.forget_debits(action.v)
            return
        elif isinstance(action, FoldEvents):
            self.inbox.tell(ForCore(EventsRemoved("folded", store.fold(action.count))))
        else:
            self.inbox.tell(ForCore(EventsRemoved("dropped", store.drop(action.upto))))
        stats = store.stats()
        self.inbox.tell(ForCore(OutboxCounted(stats.count, stats.oldest)))

    def check_storage(self, storage: Storage) -> None:
        """On the storage thread: rehash the records, forget expired command ids."""
        storage.forget_expired(self.clock())
        self.inbox.tell(ForCore(StorageChecked(storage.verify())))

    def save_snapshot(
        self, action: SaveSnapshot, last_full: float | None, storage: Storage
    ) -> None:
        """On the storage thread: a full sync's records to the card, then the
        decision image of the store they built."""
        save_snapshot(action, last_full, self.inbox.members_first, storage)
        self.images.saved(full=True)

    def _live(self) -> Live | None:
        """On the storage thread: the live dataset, read on the loop (None when
        stopping, or when the loop does not answer within a second)."""
        if self._stopping.is_set():
            return None

        def read(controller: Controller) -> Live:
            s = controller.session
            return Live(s.store, s.epoch, s.v, s.digest)

        try:
            return self.ask(read, timeout=1.0)
        except TimeoutError:
            return None

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self.kiosk is not None:
            self.kiosk.stop()  # screens show "reconnecting" until we are back
        # A clean disconnect suppresses the will, so say "offline" ourselves first.
        if self.link.connected:
            self.link.publish("state", self.controller.state(online=False), retain=True)
        # Every event logged so far reaches the disk; the actions still waiting
        # for it (outputs, publishes) are not carried out any more: we are stopping.
        self.loop.abandon()
        self.durable.stop()
        for edge in self.edges:
            edge.stop()
        self.link.stop()
        self.inbox.close()  # a decoder waiting for room gives up
        self.decoder.stop()  # after the link: nothing puts to it any more
        if self.hardware is not None:
            self.hardware.close()  # outputs back to their safe state
        self.writer.stop()
        self.files.close()
        self.notifier.close()
        self.collector.release()  # stopped in the middle of a full sync
