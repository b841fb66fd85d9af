"""The controller core: every input the controller gets, every action it takes.

`Controller.handle(event, now)` is the one entry point, like h11's connection: the
runtime feeds it plain events (link up/down, a received payload, a presentation,
a timer tick) and carries out the plain actions it returns (publish, save, log).
No sockets, pins, files or clocks in here, so tests run it in virtual time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from firmware.core.decide import Decision, Target, decide
from firmware.core.errors import RemoteError
from firmware.core.facility import Facility, FacilityAction, Output, Reader
from firmware.core.kiosk import Kiosk
from firmware.core.limits import CREDKINDS, MAX_VALUE_LEN
from firmware.core.messages import Ack, Command, Delta, SnapPage, parse_command
from firmware.core.outbox import (
    AppendEvents,
    DropEvents,
    Outbox,
)
from firmware.core.reception import Opened, Reception
from firmware.core.steps import (
    Action,
    CheckStorage,
    Connected,
    ContactChanged,
    Disconnected,
    Event,
    EventsRemoved,
    KioskRequest,
    LogEvent,
    OutboxCounted,
    PayloadReceived,
    Presented,
    Publish,
    ReaderFault,
    RememberCommand,
    RexPressed,
    ScreenJoined,
    ScreenLeft,
    StorageChecked,
    Tick,
)
from firmware.core.store import Store
from firmware.core.sync import (
    RequestSync,
    StateChanged,
    SyncAction,
    SyncEvent,
    SyncSession,
    SystemEvent,
)

# Events and actions live in `steps`; importing them from here keeps working.
__all__ = [
    "Action",
    "CheckStorage",
    "Connected",
    "ContactChanged",
    "Controller",
    "Disconnected",
    "Event",
    "EventsRemoved",
    "LogEvent",
    "OutboxCounted",
    "PayloadReceived",
    "Presented",
    "Publish",
    "ReaderFault",
    "RememberCommand",
    "RexPressed",
    "StorageChecked",
    "Tick",
]

FW_VERSION = "0.1.0"
STATE_EVERY_S = 1.0
COMMAND_SKEW_S = 300
COMMAND_TIMEOUT_S = 120.0
CLOCK_SKEW_S = 300
REPORT_EVERY_S = 60.0  # rate limit of auth_failed / error events per kind
MAX_REMEMBERED_COMMANDS = 10_000
MAX_RUNNING_SYNCS = 8
STORAGE_CHECK_EVERY_S = 86400.0
PURGE_UPLOAD_S = 30.0


@dataclass(slots=True)
class _Running:
    """A `sync` or `purge` command waiting for its full sync to finish."""

    id: str
    started: float
    last_got: int = -1
    dropped: int | None = None  # purge with events: true, once it dropped some


@dataclass(slots=True)
class _PurgeWait:
    """A purge with `events: true` uploading what it can before it wipes."""

    id: str
    started: float
    upto: int
    dropping: bool = False


class Controller:
    """Ties the sync session, commands, state reports and decisions together."""

    def __init__(
        self,
        *,
        controller_id: str,
        key: bytes,
        base_topic: str,
        session: SyncSession,
        boot_time: float,
        masters: frozenset[tuple[str, str]] = frozenset(),
        readers: Mapping[str, Target] | None = None,
        facility: Facility | None = None,
        executed: Mapping[str, int] | None = None,
        bench: bool = False,
        outbox: Outbox | None = None,
    ) -> None:
        """`executed` holds command ids already run (from storage) with their exp.
        `bench` accepts the simulator's bench inputs (PROTOCOL.md s8); never on a
        real installation, where a reader is the only way to present a credential."""
        self.id = controller_id
        self.session = session
        self.boot_time = boot_time
        self.masters = masters
        # Readers without wired doors or lights when no facility is given (tests).
        self.facility = facility or Facility(
            readers=[Reader(id, target) for id, target in (readers or {}).items()], now=boot_time
        )
        self._executed: dict[str, int] = dict(executed or {})
        suffixes = ("data", "cmd", "ack", "bench/in") if bench else ("data", "cmd", "ack")
        self.reception = Reception(base_topic, {controller_id.encode(): key}, suffixes)
        # sync/purge commands waiting for the full sync they asked for; any full
        # sync that finishes after them answers them all.
        self._running: list[_Running] = []
        self._state_due = False
        self._state_sent_at = -1e18
        self._clock_skew: float | None = None
        self._reported: dict[str, tuple[float, int]] = {}
        self._check_storage_at = boot_time + STORAGE_CHECK_EVERY_S
        self.outbox = outbox if outbox is not None else Outbox()
        self._purge_wait: _PurgeWait | None = None
        self._known_v = session.v
        self.kiosk = Kiosk()

    # --- the one entry point ------------------------------------------------------

    def handle(self, event: Event | Opened, now: float) -> list[Action]:
        """Process one event at time `now`; never raises on bad input.

        Every event the step logs comes first, as one `AppendEvents`: the runtime
        makes it durable before it carries out anything the events describe."""
        actions: list[Action] = []
        if isinstance(event, Opened):
            actions += self._received(event, now)
        elif isinstance(event, PayloadReceived):
            actions += self._received(self.reception.open(event), now)
        elif isinstance(event, Presented):
            actions += self._presented(event, now)
        elif isinstance(event, ContactChanged | RexPressed | ReaderFault):
            actions += self._hardware(event, now)
        elif isinstance(event, Connected):
            self._state_due = True
            self._state_sent_at = -1e18  # the retained state goes out on every connect
            self.outbox.connected()
            actions += self._from_session(self.session.connected_to_hub(now), now)
        elif isinstance(event, Disconnected):
            self.session.disconnected_from_hub(now)
        elif isinstance(event, StorageChecked) and not event.intact:
            # PROTOCOL.md s7 `digest`: the local copy is corrupt; fetch a new one.
            actions.append(LogEvent("system", {"what": "error", "detail": "stored data damaged"}))
            actions += self._from_session(self.session.request_full("digest", now), now)
        elif isinstance(event, OutboxCounted):
            self._state_due = True
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
        actions += self.kiosk.tick(self, now)
        actions += self._from_session(self.session.tick(now), now)
        actions += self._facility(self.facility.tick(self.store, now))
        actions += self._timers(now)
        return self._finish(actions, now)

    def booted(self, now: float, *, intact: bool) -> list[Action]:
        """The controller started; `intact` is False when the stored records do
        not hash to the stored digest (a full sync with reason `digest` follows)."""
        actions: list[Action] = [
            *self._facility(self.facility.power_on()),
            LogEvent("system", {"what": "boot", "detail": f"alc {FW_VERSION}"}),
        ]
        if not intact:
            actions.append(LogEvent("system", {"what": "error", "detail": "stored data damaged"}))
            actions += self._from_session(self.session.request_full("digest", now), now)
        return self._finish(actions, now)

    def work(self, now: float, *, yield_now: Callable[[], bool] | None = None) -> list[Action]:
        """One slice of background work (building a full sync aside). `yield_now`
        ends the slice early when it returns True: the runtime asks whether a
        member waits for the loop."""
        actions = self._from_session(self.session.work(now, yield_now=yield_now), now)
        return self._finish(actions + self._timers(now), now)

    def log(self, type: str, body: dict[str, Any], now: float) -> list[Action]:
        """Log one event from outside the core's own logic (the runtime's faults)."""
        return self._finish([LogEvent(type, body)], now)

    def _finish(self, actions: list[Action], now: float) -> list[Action]:
        """Number the step's events and put them first; then the ledger and upload."""
        # Door modes and booking periods follow any change of the data at once.
        actions = actions + self._facility(self.facility.data_changed(self.store, now))
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
        hurry = self._purge_wait is not None
        out += self.outbox.due(now, connected=self.session.connected, hurry=hurry)
        # Last: the screens see credit with this step's debits already counted.
        out += self.kiosk.updates(self, now)
        return out

    def has_work(self) -> bool:
        """True while background work is waiting for `work`."""
        return self.session.has_work()

    def next_deadline(self) -> float | None:
        """The earliest time `handle(Tick())` has something to do."""
        times = []
        sync_at = self.session.next_deadline()
        if sync_at is not None:
            times.append(sync_at)
        if self._state_due and self.session.connected:
            times.append(self._state_sent_at + STATE_EVERY_S)
        times += [r.started + COMMAND_TIMEOUT_S for r in self._running]
        times.append(self._check_storage_at)
        facility_at = self.facility.next_deadline()
        if facility_at is not None:
            times.append(facility_at)
        upload_at = self.outbox.next_deadline(connected=self.session.connected)
        if upload_at is not None:
            times.append(upload_at)
        if self._purge_wait is not None and not self._purge_wait.dropping:
            times.append(self._purge_wait.started + PURGE_UPLOAD_S)
        kiosk_at = self.kiosk.next_deadline()
        if kiosk_at is not None:
            times.append(kiosk_at)
        return min(times) if times else None

    def state(self, online: bool = True) -> dict[str, Any]:
        """The `state` message of PROTOCOL.md s4."""
        phase, got, of = self.session.progress()
        return {
            "t": "state",
            "online": online,
            "epoch": self.session.epoch,
            "v": self.session.v,
            "digest": self.session.digest,
            "boot": int(self.boot_time),
            "last_full": int(self.session.last_full) if self.session.last_full else None,
            "sync": {"state": phase, "got": got, "of": of},
            "outbox": self.outbox.count,
            "outbox_oldest": self.outbox.oldest,
            "clock_ok": self._clock_skew is None or abs(self._clock_skew) < CLOCK_SKEW_S,
            "fw": FW_VERSION,
        }

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

    def credit(self, member: str) -> int:
        """A member's effective credit: the hub's balance minus unreflected debits."""
        record = self.store.members.get(member)
        return self.outbox.effective(member, record.credit if record is not None else 0)

    # --- inputs -------------------------------------------------------------------

    def _received(self, opened: Opened | None, now: float) -> list[Action]:
        """A received message, opened here or aside (see `reception`)."""
        if opened is None:
            return []
        if opened.problem is not None:
            what, detail = opened.problem
            return self._report(what, detail, now)
        suffix, type, message = opened.suffix, opened.type, opened.message
        try:
            if isinstance(message, Delta):
                clock = self._note_hub_time(message.now, now)
                return clock + self._from_session(self.session.delta(message, now), now)
            if isinstance(message, SnapPage):
                clock = self._note_hub_time(message.now, now)
                return clock + self._from_session(self.session.snap_page(message, now), now)
            if isinstance(message, Ack):
                acked = self.outbox.acked(message.upto, message.v, now)
                # The hub sends the delta that books the debits before its ack: our
                # data may already hold them, and they must not count twice.
                reflected = self.outbox.data_version(self.session.v)
                return [*acked, *reflected, *self._purge_uploaded(now)]
            if suffix == "cmd" and type == "cmd" and isinstance(message, dict):
                return self._command(message, now)
            if suffix == "bench/in" and isinstance(message, dict):
                return self._bench(type, message, now)
        except RemoteError as exc:
            return self._report("error", f"{suffix} {type}: {exc}", now)
        return self._report("error", f"unexpected {type!r} on {suffix}", now)

    def _bench(self, type: str, body: dict[str, Any], now: float) -> list[Action]:
        """A simulated input from the bench topic (PROTOCOL.md s8)."""
        if type == "present":
            reader, credkind, value = body.get("reader"), body.get("credkind"), body.get("value")
            if not (
                isinstance(reader, str)
                and credkind in CREDKINDS
                and isinstance(value, str)
                and 0 < len(value) <= MAX_VALUE_LEN
            ):
                raise RemoteError("present needs text reader, a credkind and a value")
            return self._presented(Presented(reader, str(credkind), value), now)
        if type == "contact":
            door, open = body.get("door"), body.get("open")
            if not isinstance(door, str) or not isinstance(open, bool):
                raise RemoteError("contact needs text door and a true/false open")
            return self._hardware(ContactChanged(door, open), now)
        if type == "rex":
            door = body.get("door")
            if not isinstance(door, str):
                raise RemoteError("rex needs a text door")
            return self._hardware(RexPressed(door), now)
        if type == "keys":
            reader, keys = body.get("reader"), body.get("keys")
            if not isinstance(reader, str) or not isinstance(keys, str) or len(keys) > 64:
                raise RemoteError("keys needs text reader and keys")
            # As a keypad does: digits, `*` clears, `#` enters.
            actions: list[Action] = []
            typed = ""
            for key in keys:
                if key.isdecimal():
                    typed += key
                elif key == "*":
                    typed = ""
                elif key == "#" and typed:
                    actions += self._presented(Presented(reader, "pin", typed), now)
                    typed = ""
            return actions
        raise RemoteError(f"unknown bench input {type!r}")

    def _hardware(
        self, event: ContactChanged | RexPressed | ReaderFault, now: float
    ) -> list[Action]:
        if isinstance(event, ContactChanged):
            return self._facility(self.facility.contact(event.door, event.open, now))
        if isinstance(event, RexPressed):
            return self._facility(self.facility.rex(event.door, now))
        return self._report("error", f"reader {event.reader}: {event.detail}", now, key="reader")

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
            return self._report("error", str(exc), now, key="reader")
        return self._facility(done)

    @staticmethod
    def _facility(actions: list[FacilityAction]) -> list[Action]:
        return [a if isinstance(a, Output) else LogEvent(a.type, a.body) for a in actions]

    def _note_hub_time(self, hub_now: int | None, now: float) -> list[Action]:
        """Compare our clock with the hub's; a `system`/`clock` event when it goes
        wrong (schedules and bookings depend on it) and when it is right again."""
        if hub_now is None:
            return []
        was_ok = self._clock_skew is None or abs(self._clock_skew) < CLOCK_SKEW_S
        self._clock_skew = now - hub_now
        ok = abs(self._clock_skew) < CLOCK_SKEW_S
        if ok == was_ok:
            return []
        self._state_due = True
        detail = f"clock is {self._clock_skew:+.0f} s off the hub's" if not ok else "clock agrees"
        return [LogEvent("system", {"what": "clock", "detail": detail})]

    # --- commands -----------------------------------------------------------------

    def _reply(self, id: str, status: str, detail: Any = "", **extra: Any) -> Publish:
        reply = {"t": "reply", "id": id, "status": status, "detail": detail, **extra}
        return Publish("reply", reply)

    def _command(self, body: dict[str, Any], now: float) -> list[Action]:
        command = parse_command(body)
        for id, exp in list(self._executed.items()):
            if exp < now:
                del self._executed[id]
        if command.exp < now:
            return self._refuse(command, "expired", now)
        if command.iat > now + COMMAND_SKEW_S:
            return self._refuse(command, "issued in the future", now)
        if command.id in self._executed:
            return self._refuse(command, "already executed", now)
        if len(self._executed) >= MAX_REMEMBERED_COMMANDS:
            return self._refuse(command, "too many commands in flight", now)
        self._executed[command.id] = command.exp
        actions: list[Action] = [RememberCommand(command.id, command.exp)]
        return actions + self._run(command, now)

    def _refuse(self, command: Command, why: str, now: float) -> list[Action]:
        """Reply `rejected`, and log it: a refused command may be a replay or a
        stale capture, which the club should see (rate-limited like other reports,
        with its own budget so it never hides, or is hidden by, a different error)."""
        detail = f"command {command.id!r} ({command.cmd}) rejected: {why}"
        return [
            self._reply(command.id, "rejected", why),
            *self._report("error", detail, now, key="command"),
        ]

    def _run(self, command: Command, now: float) -> list[Action]:
        name = command.cmd
        if name == "status":
            return [self._reply(command.id, "done", self.state())]
        if name in ("sync", "purge"):
            if len(self._running) >= MAX_RUNNING_SYNCS:
                return self._refuse(command, "too many sync commands running", now)
            accepted = self._reply(command.id, "accepted")
            if name == "sync":
                started = self.session.request_full("command", now)
            else:
                events = command.args.get("events", False)
                if not isinstance(events, bool):
                    return self._refuse(command, "purge: 'events' must be true or false", now)
                outbox = self.outbox
                if events and outbox.acked_upto < outbox.last_seq:
                    # Upload what we can first (up to 30 s), then drop the rest.
                    self._purge_wait = _PurgeWait(command.id, now, outbox.last_seq)
                    return [accepted]
                started = self.session.purge(now)
            # Both restart the full sync, so the one that finishes next is fresh.
            self._running.append(_Running(command.id, now, dropped=0 if name == "purge" else None))
            return [accepted, *self._from_session(started, now)]
        if name == "open_door":
            door, seconds = command.args.get("door"), command.args.get("s")
            try:
                if not isinstance(door, str):
                    raise RemoteError("open_door needs a text 'door'")
                opened = self.facility.open_door(door, _seconds(seconds), now)
            except RemoteError as exc:
                return [self._reply(command.id, "failed", str(exc))]
            return [*self._facility(opened), self._reply(command.id, "done", f"{door} unlocked")]
        if name == "set_light":
            light, on = command.args.get("light"), command.args.get("on")
            seconds = command.args.get("s")
            try:
                if not isinstance(light, str) or not isinstance(on, bool):
                    raise RemoteError("set_light needs a text 'light' and a true/false 'on'")
                switched = self.facility.set_light(light, on, _seconds(seconds), now)
            except RemoteError as exc:
                return [self._reply(command.id, "failed", str(exc))]
            state = "on" if on else "off"
            return [*self._facility(switched), self._reply(command.id, "done", f"{light} {state}")]
        if name == "refresh_kiosks":
            return self.kiosk.refresh(command.id, now)
        return self._refuse(command, f"unknown command {name!r}", now)

    def _purge_uploaded(self, now: float) -> list[Action]:
        """After an ack: a purge waiting for its upload goes ahead once all is in."""
        wait = self._purge_wait
        if wait is None or self.outbox.acked_upto < wait.upto:
            return []
        self._purge_wait = None
        return self._purge_now(wait.id, 0, now)

    def _purge_now(self, id: str, dropped: int, now: float) -> list[Action]:
        self._running.append(_Running(id, now, dropped=dropped))
        return self._from_session(self.session.purge(now), now)

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
        wait = self._purge_wait
        if event.why == "dropped" and wait is not None:
            self._purge_wait = None
            actions += self._purge_now(wait.id, count, now)
        return actions

    # --- sync actions -> controller actions ---------------------------------------

    def _from_session(self, actions: list[SyncAction], now: float) -> list[Action]:
        out: list[Action] = []
        for action in actions:
            if isinstance(action, RequestSync):
                out.append(
                    Publish(
                        "sync",
                        {
                            "t": "sync",
                            "epoch": action.epoch,
                            "v": action.v,
                            "full": action.full,
                            "reason": action.reason,
                            "req": action.req,
                        },
                    )
                )
            elif isinstance(action, StateChanged):
                self._state_due = True
                out += self._progress(now)
            elif isinstance(action, SyncEvent):
                out.append(
                    LogEvent(
                        "sync",
                        {
                            "what": action.what,
                            "reason": action.reason,
                            "records": action.records,
                            "ms": action.ms,
                        },
                    )
                )
                out += self._finished(action, now)
            elif isinstance(action, SystemEvent):
                out.append(LogEvent("system", {"what": action.what, "detail": action.detail}))
            else:
                out.append(action)
        return out

    def _progress(self, now: float) -> list[Action]:
        phase, got, of = self.session.progress()
        out: list[Action] = []
        for running in self._running:
            if phase == "full" and of > 0 and got != running.last_got:
                running.last_got = got
                ms = int((now - running.started) * 1000)
                out.append(self._reply(running.id, "progress", "", got=got, of=of, ms=ms))
        return out

    def _finished(self, event: SyncEvent, now: float) -> list[Action]:
        if event.what not in ("done", "failed"):
            return []
        finished, self._running = self._running, []
        out: list[Action] = []
        for running in finished:
            ms = int((now - running.started) * 1000)
            if event.what == "done":
                detail = f"{event.records} records"
                if running.dropped is not None:
                    detail += f", {running.dropped} events dropped"
                out.append(self._reply(running.id, "done", detail, got=event.records, ms=ms))
            else:
                out.append(self._reply(running.id, "failed", "snapshot digest mismatch", ms=ms))
        return out

    def _timers(self, now: float) -> list[Action]:
        out: list[Action] = []
        wait = self._purge_wait
        if wait is not None and not wait.dropping and now - wait.started >= PURGE_UPLOAD_S:
            # Gave the upload its 30 s; drop what is left, then purge (see
            # `_events_removed`).
            wait.dropping = True
            out.append(DropEvents(wait.upto))
        if now >= self._check_storage_at:
            self._check_storage_at = now + STORAGE_CHECK_EVERY_S
            out.append(CheckStorage())
        for running in [r for r in self._running if now - r.started >= COMMAND_TIMEOUT_S]:
            self._running.remove(running)
            out.append(self._reply(running.id, "failed", "full sync did not finish in 120 s"))
        if (
            self._state_due
            and self.session.connected
            and now - self._state_sent_at >= STATE_EVERY_S
        ):
            self._state_due = False
            self._state_sent_at = now
            out.append(Publish("state", self.state(), retain=True))
        return out

    # --- rate-limited reports ---------------------------------------------------------

    def _report(self, what: str, detail: str, now: float, *, key: str = "") -> list[Action]:
        """A `system` event, at most one per kind (`key`, default `what`) a minute;
        the rest are counted."""
        key = key or what
        last, suppressed = self._reported.get(key, (-1e18, 0))
        if now - last < REPORT_EVERY_S:
            self._reported[key] = (last, suppressed + 1)
            return []
        self._reported[key] = (now, 0)
        if suppressed:
            detail += f" (and {suppressed} more since the last report)"
        return [LogEvent("system", {"what": what, "detail": detail})]


def _seconds(value: object) -> float | None:
    """A command's optional `s`: a positive number of seconds, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RemoteError("'s' must be a number of seconds")
    return float(value)
