"""The controller core: every input the controller gets, every action it takes.

`Controller.handle(event, now)` is the one entry point, like h11's connection: the
runtime feeds it plain events (link up/down, a received payload, a presentation,
a timer tick) and carries out the plain actions it returns (publish, save, log).
No sockets, pins, files or clocks in here, so tests run it in virtual time.

This module only dispatches: the hub's commands are `commands`, the `state`
message and rate-limited reports `reports`, the wired doors, lights and readers
`facility`, the kiosk screens `kiosk`, the data `sync`, the event log `outbox`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from firmware.core.actions import Action, CheckStorage, LogEvent, Publish
from firmware.core.commands import Commands
from firmware.core.decide import Decision, Target, decide
from firmware.core.errors import RemoteError
from firmware.core.facility import Facility
from firmware.core.inputs import (
    Connected,
    ContactChanged,
    Disconnected,
    DiskStatus,
    EventsRemoved,
    Input,
    InputsDropped,
    KioskRequest,
    LocalCommand,
    OutboxCounted,
    OutputFailed,
    PayloadReceived,
    Presented,
    ReaderFault,
    ReaderLinkChanged,
    RexPressed,
    ScreenJoined,
    ScreenLeft,
    StepFailed,
    StorageChecked,
    StorageTrouble,
)
from firmware.core.keyring import Keyring
from firmware.core.kiosk import Kiosk
from firmware.core.messages import Ack, Current, Delta, SnapPage
from firmware.core.outbox import AppendEvents, Outbox
from firmware.core.reception import Reception, Unsealed
from firmware.core.reports import FW_VERSION, Reports
from firmware.core.store import Store
from firmware.core.sync import (
    Ignored,
    RequestSync,
    StateChanged,
    SyncAction,
    SyncEvent,
    SyncSession,
    SystemEvent,
)

STORAGE_CHECK_EVERY_S = 86400.0


class Controller:
    """Ties the sync session, commands, state reports and decisions together."""

    def __init__(
        self,
        *,
        controller_id: str,
        key: bytes | Keyring,
        base_topic: str,
        session: SyncSession,
        boot_time: float,
        facility: Facility,
        masters: frozenset[tuple[str, str]] = frozenset(),
        executed: Mapping[str, int] | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        """`facility`: the wired doors, lights and readers (`facility_from`);
        `executed` holds command ids already run (from storage) with their exp;
        `key`: the keys accepted by kid, or one key (kid = `controller_id`)."""
        self.id = controller_id
        self.session = session
        self.boot_time = boot_time
        self.masters = masters
        self.facility = facility
        ring = key if isinstance(key, Keyring) else Keyring.single(controller_id, key)
        self.reception = Reception(base_topic, dict(ring.accepted))
        self.outbox = outbox if outbox is not None else Outbox()
        self.kiosk = Kiosk()
        self.reports = Reports(session, self.outbox, boot_time)
        self.commands = Commands(
            session=session,
            outbox=self.outbox,
            facility=self.facility,
            kiosk=self.kiosk,
            reports=self.reports,
            executed=dict(executed or {}),
        )
        self._check_storage_at = boot_time + STORAGE_CHECK_EVERY_S
        self._known_v = session.v

    # --- the one entry point ------------------------------------------------------

    def handle(self, event: Input | Unsealed, now: float) -> list[Action]:
        """Process one event at time `now`; never raises on bad input.

        Every event the step logs comes first, as one `AppendEvents`: the runtime
        makes it durable before it carries out anything the events describe."""
        actions: list[Action] = []
        if isinstance(event, Unsealed):
            actions += self._received(event, now)
        elif isinstance(event, PayloadReceived):
            actions += self._received(self.reception.unseal(event), now)
        elif isinstance(event, Presented):
            actions += self._presented(event, now)
        elif isinstance(event, ContactChanged | RexPressed | ReaderFault):
            actions += self._hardware(event, now)
        elif isinstance(event, ReaderLinkChanged):
            actions += self.reports.reader_link(event.reader, event.online, event.detail, now)
        elif isinstance(event, Connected):
            self.reports.connected()
            self.outbox.connected()
            actions += self._own(self.session.connected_to_hub(now), now)
        elif isinstance(event, Disconnected):
            self.session.disconnected_from_hub(now)
        elif isinstance(event, StorageChecked) and not event.intact:
            # PROTOCOL.md s7 `digest`: the local copy is corrupt; fetch a new one.
            actions.append(LogEvent("system", {"what": "error", "detail": "stored data damaged"}))
            actions += self._own(self.session.request_full("digest", now), now)
        elif isinstance(event, DiskStatus):
            actions += self.reports.disk(event.ok, event.detail)
        elif isinstance(event, InputsDropped):
            actions += self.reports.inputs_dropped(event.count, now)
        elif isinstance(event, StepFailed):
            actions += self.reports.report("error", event.detail, now, key="step_failed")
        elif isinstance(event, OutputFailed):
            actions += self.facility.doors.output_failed(event.name, event.on)
        elif isinstance(event, StorageTrouble):
            actions += self._storage_trouble(event, now)
        elif isinstance(event, OutboxCounted):
            self.reports.changed()
            actions += self.outbox.stats(event.count, event.oldest)
        elif isinstance(event, EventsRemoved):
            actions += self._events_removed(event, now)
        elif isinstance(event, ScreenJoined):
            actions += self.kiosk.joined(
                event.screen,
                self,
                now,
                local=event.local,
                open=event.open,
                generation=event.generation,
            )
        elif isinstance(event, ScreenLeft):
            actions += self.kiosk.left(event.screen)
        elif isinstance(event, KioskRequest):
            actions += self.kiosk.request(event, self, now)
        elif isinstance(event, LocalCommand):
            actions += self.commands.local(event, now)
        actions += self.kiosk.tick(self, now)
        actions += self._own(self.session.tick(now), now)
        actions += self.facility.tick(self.store, now)
        actions += self._timers(now)
        return self._finish(actions, now)

    def booted(
        self, now: float, *, intact: bool, skipped: Sequence[tuple[int, int]] = ()
    ) -> list[Action]:
        """The controller started; `intact` is False when the stored records do
        not hash to the stored digest (a full sync with reason `digest` follows).
        `skipped`: seq ranges the boot numbered past, named `dropped` in the boot
        event so the hub's acknowledgements move past them."""
        boot: dict[str, Any] = {"what": "boot", "detail": f"alc {FW_VERSION}"}
        if skipped:
            boot["dropped"] = [[first, last] for first, last in skipped]
        actions: list[Action] = [*self.facility.power_on(), LogEvent("system", boot)]
        if not intact:
            actions.append(LogEvent("system", {"what": "error", "detail": "stored data damaged"}))
            actions += self._own(self.session.request_full("digest", now), now)
        return self._finish(actions, now)

    def work(self, now: float, *, yield_now: Callable[[], bool] | None = None) -> list[Action]:
        """One slice of background work (building a full sync aside). `yield_now`
        ends the slice early when it returns True: the runtime asks whether a
        member waits for the loop."""
        actions = self._own(self.session.work(now, yield_now=yield_now), now)
        return self._finish(actions + self._timers(now), now)

    def _finish(self, actions: list[Action], now: float) -> list[Action]:
        """Number the step's events and put them first; then the ledger and upload."""
        # Door modes and booking periods follow any change of the data at once.
        actions = [*actions, *self.facility.data_changed(self.store, now)]
        logged = []
        rest: list[Action] = []
        for action in actions:
            if isinstance(action, LogEvent):
                logged.append(self.outbox.log(action.type, action.body, now))
            else:
                rest.append(action)
        out: list[Action] = []
        if logged:
            debits = [
                self.outbox.debit(e, str(e.body["member"]), int(e.body["amount"]))
                for e in logged
                if e.type == "debit"
            ]
            out.append(AppendEvents(logged, debits))
        out += rest
        if self.session.v != self._known_v:
            self._known_v = self.session.v
            out += self.outbox.data_version(self.session.v)
        hurry = self.commands.uploading
        out += self.outbox.due(now, connected=self.session.connected, hurry=hurry)
        # Last: the screens see credit with this step's debits already counted.
        out += self.kiosk.updates(self, now)
        return out

    def has_work(self) -> bool:
        """True while background work is waiting for `work`."""
        return self.session.has_work()

    def next_deadline(self) -> float | None:
        """The earliest time `handle(Tick())` has something to do."""
        times = [
            self.session.next_deadline(),
            self.reports.next_deadline(),
            self.commands.next_deadline(),
            self._check_storage_at,
            self.facility.next_deadline(),
            self.outbox.next_deadline(connected=self.session.connected),
            self.kiosk.next_deadline(),
        ]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def state(self, online: bool = True) -> dict[str, Any]:
        """The `state` message of PROTOCOL.md s4."""
        return self.reports.state(online)

    def decide(self, target: Target, credkind: str, value: str, now: float) -> Decision:
        """An access decision on the live data."""
        return decide(
            self.session.store,
            target,
            credkind,
            value,
            now,
            masters=self.masters,
            pending_debits=self.outbox.pending_debits,
        )

    @property
    def store(self) -> Store:
        """The live dataset."""
        return self.session.store

    @property
    def credit_changes(self) -> int:
        """Moves whenever any member's effective credit may have changed."""
        return self.outbox.credit_changes

    def credit(self, member: str) -> int:
        """A member's effective credit: the hub's balance minus unreflected debits."""
        record = self.store.members.get(member)
        return self.outbox.effective(member, record.credit if record is not None else 0)

    # --- inputs -------------------------------------------------------------------

    def _received(self, opened: Unsealed | None, now: float) -> list[Action]:
        """A received message, opened here or aside (see `reception`)."""
        if opened is None:
            return []
        if opened.problem is not None:
            what, detail = opened.problem
            return self.reports.report(what, detail, now)
        suffix, type, message = opened.suffix, opened.type, opened.message
        try:
            if isinstance(message, Delta):
                clock = self.reports.hub_time(message.now, now)
                return clock + self._own(self.session.delta(message, now), now)
            if isinstance(message, SnapPage):
                clock = self.reports.hub_time(message.now, now)
                return clock + self._own(self.session.snap_page(message, now), now)
            if isinstance(message, Current):
                clock = self.reports.hub_time(message.now, now)
                return clock + self._own(self.session.current(message, now), now)
            if isinstance(message, Ack):
                acked = self.outbox.acked(message.upto, message.v, now)
                # The hub sends the delta that books the debits before its ack: our
                # data may already hold them, and they must not count twice.
                reflected = self.outbox.data_version(self.session.v)
                return [*acked, *reflected, *self._own(self.commands.acked(now), now)]
            if suffix == "cmd" and type == "cmd" and isinstance(message, dict):
                return self._own(self.commands.received(message, now), now)
        except RemoteError as exc:
            return self.reports.report("error", f"{suffix} {type}: {exc}", now)
        return self.reports.report("error", f"unexpected {type!r} on {suffix}", now)

    def _hardware(
        self, event: ContactChanged | RexPressed | ReaderFault, now: float
    ) -> list[Action]:
        if isinstance(event, ReaderFault):
            detail = f"reader {event.reader}: {event.detail}"
            return self.reports.report("error", detail, now, key="reader")
        try:
            if isinstance(event, ContactChanged):
                return [*self.facility.contact(event.door, event.open, now)]
            return [*self.facility.rex(event.door, now)]
        except RemoteError as exc:
            # A door this controller does not have, or an input it has not wired.
            return self.reports.report("error", str(exc), now, key="door")

    def _presented(self, event: Presented, now: float) -> list[Action]:
        reader = self.facility.readers.get(event.reader)
        if reader is not None and reader.target is None:
            # The kiosk's own reader signs the member in on the kiosk screen.
            return self.kiosk.presented(event.reader, event.credkind, event.value, self, now)
        try:
            done = self.facility.presented(
                event.reader, event.credkind, event.value, now, self.decide, self.credit
            )
        except RemoteError as exc:
            return self.reports.report("error", str(exc), now, key="reader")
        return [*done]

    def _storage_trouble(self, event: StorageTrouble, now: float) -> list[Action]:
        """The boot found the card damaged or unwritable: one `system`/`storage`
        event naming each problem (and the seqs that may be lost, for the hub's
        acknowledgements to move past), and a full sync."""
        if not event.disk_ok:
            self.reports.disk_ok = False  # this event says why: no second one
            self.reports.changed()
        body: dict[str, Any] = {"what": "storage", "detail": "; ".join(event.problems)}
        if event.lost:
            body["dropped"] = [[first, last] for first, last in event.lost]
        actions: list[Action] = [LogEvent("system", body)]
        return actions + self._own(self.session.request_full("digest", now), now)

    def _events_removed(self, event: EventsRemoved, now: float) -> list[Action]:
        """Folded or dropped events: one counted event names their seqs, so the
        hub knows they will never come and its acknowledgements move on."""
        count = sum(last - first + 1 for first, last in event.ranges)
        ranges = [[first, last] for first, last in event.ranges]
        if event.why == "folded":
            body = {"what": "outbox_full", "detail": f"{count} access events folded"}
        else:
            body = {"what": "error", "detail": f"purge dropped {count} events"}
        actions: list[Action] = [LogEvent("system", {**body, "dropped": ranges})]
        if event.why == "dropped":
            actions += self._own(self.commands.dropped(count, now), now)
        return actions

    # --- what the parts return -> controller actions --------------------------------

    def _own(self, actions: Sequence[Action | SyncAction], now: float) -> list[Action]:
        """The sync session's and the commands' actions as the controller's own."""
        out: list[Action] = []
        for action in actions:
            if isinstance(action, RequestSync):
                request = {
                    "t": "sync",
                    "epoch": action.epoch,
                    "v": action.v,
                    "full": action.full,
                    "reason": action.reason,
                    "req": action.req,
                    "digest": action.digest,
                }
                out.append(Publish("sync", request))
            elif isinstance(action, StateChanged):
                self.reports.changed()
                out += self._own(self.commands.progress(now), now)
            elif isinstance(action, SyncEvent):
                body = {
                    "what": action.what,
                    "reason": action.reason,
                    "records": action.records,
                    "ms": action.ms,
                }
                out.append(LogEvent("sync", body))
                out += self._own(self.commands.sync_ended(action, now), now)
            elif isinstance(action, SystemEvent):
                out.append(LogEvent("system", {"what": action.what, "detail": action.detail}))
            elif isinstance(action, Ignored):
                # A replayed snapshot may come page after page: one event a minute.
                detail = f"{action.detail} ({self.session.ignored} ignored since boot)"
                out += self.reports.report("error", detail, now, key="ignored")
            else:
                out.append(action)
        return out

    def _timers(self, now: float) -> list[Action]:
        out = self._own(self.commands.tick(now), now)
        if now >= self._check_storage_at:
            self._check_storage_at = now + STORAGE_CHECK_EVERY_S
            out.append(CheckStorage())
        return out + self.reports.due(now)
