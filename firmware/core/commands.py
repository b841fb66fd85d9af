"""The hub's commands (PROTOCOL.md s6): checked, remembered, run and answered.

A command is refused when it expired, was issued in the future, already ran, or
too many are in flight; otherwise its id is remembered durably before it runs
(`RememberCommand`), so a replay is refused across restarts too.

`sync` and `purge` answer `done` when the next full sync finishes (any full sync
that finishes after them answers them all), with progress replies meanwhile.
A `purge` with `events: true` first uploads what the outbox holds: that part is
the purge state machine below, one table of named states in the manner of h11's
`_state.py`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firmware.core.actions import Action, Publish, RememberCommand
from firmware.core.errors import RemoteError
from firmware.core.facility import Facility
from firmware.core.inputs import LocalCommand
from firmware.core.messages import Command, parse_command
from firmware.core.outbox import DropEvents, Outbox
from firmware.core.reports import Reports
from firmware.core.sync import SyncAction, SyncEvent, SyncSession

if TYPE_CHECKING:  # the kiosk answers its refresh with `reply` from here
    from firmware.core.kiosk import Kiosk

COMMAND_SKEW_S = 300
COMMAND_TIMEOUT_S = 120.0
MAX_REMEMBERED_COMMANDS = 10_000
MAX_RUNNING_SYNCS = 8
PURGE_UPLOAD_S = 30.0

Step = list[Action | SyncAction]
"""What a command does: controller actions, and sync-session actions the
controller turns into its own (a full sync requested, progress, `sync` events)."""


# --- the purge state machine ------------------------------------------------------------


class PurgeState(enum.Enum):
    """Where a `purge` with `events: true` is before it wipes the data."""

    IDLE = "idle"  # no purge waiting
    UPLOADING = "uploading"  # sending the outbox to the hub first, for up to 30 s
    DROPPING = "dropping"  # the 30 s are over: what the hub has not got is dropped


class PurgeInput(enum.Enum):
    """What moves a waiting purge on."""

    WAIT = "wait"  # a purge with events arrived while the hub lacks some of them
    ALL_ACKED = "all_acked"  # the hub acknowledged every event up to the purge's mark
    UPLOAD_TIMED_OUT = "upload_timed_out"  # 30 s passed while uploading
    DROPPED = "dropped"  # the runtime dropped the events the hub did not get


class PurgeEffect(enum.Enum):
    """What a transition does besides changing state."""

    NOTHING = "nothing"
    DROP = "drop"  # ask the runtime to drop the events up to the mark
    WIPE = "wipe"  # purge the data now, and wait for the full sync that follows


_S, _I, _E = PurgeState, PurgeInput, PurgeEffect

PURGE_TRANSITIONS: dict[tuple[PurgeState, PurgeInput], tuple[PurgeState, PurgeEffect]] = {
    (_S.IDLE, _I.WAIT): (_S.UPLOADING, _E.NOTHING),
    (_S.IDLE, _I.ALL_ACKED): (_S.IDLE, _E.NOTHING),
    (_S.IDLE, _I.UPLOAD_TIMED_OUT): (_S.IDLE, _E.NOTHING),
    (_S.IDLE, _I.DROPPED): (_S.IDLE, _E.NOTHING),  # a drop that ended after an ack
    # A second purge joins the one waiting: both wipe together, and both answer.
    (_S.UPLOADING, _I.WAIT): (_S.UPLOADING, _E.NOTHING),
    (_S.UPLOADING, _I.ALL_ACKED): (_S.IDLE, _E.WIPE),
    (_S.UPLOADING, _I.UPLOAD_TIMED_OUT): (_S.DROPPING, _E.DROP),
    (_S.UPLOADING, _I.DROPPED): (_S.UPLOADING, _E.NOTHING),  # not asked for: not ours
    (_S.DROPPING, _I.WAIT): (_S.DROPPING, _E.NOTHING),
    (_S.DROPPING, _I.ALL_ACKED): (_S.IDLE, _E.WIPE),  # the hub got them all after all
    (_S.DROPPING, _I.UPLOAD_TIMED_OUT): (_S.DROPPING, _E.NOTHING),
    (_S.DROPPING, _I.DROPPED): (_S.IDLE, _E.WIPE),
}
"""Every (state, input) pair: the next state and what the transition does."""


@dataclass(slots=True)
class PurgeWait:
    """The purge waiting for its upload: the commands it answers, when it began
    and the last seq it uploads (events logged later upload as usual)."""

    state: PurgeState = PurgeState.IDLE
    ids: list[str] = field(default_factory=list)
    started: float = 0.0
    upto: int = 0

    def fire(self, what: PurgeInput) -> PurgeEffect:
        """Move along `PURGE_TRANSITIONS`; the effect is the caller's to carry out."""
        self.state, effect = PURGE_TRANSITIONS[(self.state, what)]
        return effect

    @property
    def deadline(self) -> float | None:
        """When the upload gives up, while it runs."""
        if self.state is PurgeState.UPLOADING:
            return self.started + PURGE_UPLOAD_S
        return None


@dataclass(slots=True)
class _Running:
    """A `sync` or `purge` command waiting for its full sync to finish."""

    id: str
    started: float
    last_got: int = -1
    dropped: int | None = None  # a purge: the events it dropped


# --- commands ---------------------------------------------------------------------------


class Commands:
    """Every command this controller runs, and the ones still waiting to finish."""

    def __init__(
        self,
        *,
        session: SyncSession,
        outbox: Outbox,
        facility: Facility,
        kiosk: Kiosk,
        reports: Reports,
        executed: dict[str, int],
    ) -> None:
        """`executed` holds command ids already run (from storage) with their exp."""
        self._session = session
        self._outbox = outbox
        self._facility = facility
        self._kiosk = kiosk
        self._reports = reports
        self._executed = executed
        self._running: list[_Running] = []
        self.purge = PurgeWait()

    def received(self, body: dict[str, Any], now: float) -> Step:
        """A `cmd` message: refused, or remembered and run. A malformed one
        raises `RemoteError`."""
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
        return [RememberCommand(command.id, command.exp), *self._run(command, now)]

    def _refuse(self, command: Command, why: str, now: float) -> Step:
        """Reply `rejected`, and log it: a refused command may be a replay or a
        stale capture, which the club should see (rate-limited like other reports,
        with its own budget so it never hides, or is hidden by, a different error)."""
        detail = f"command {command.id!r} ({command.cmd}) rejected: {why}"
        return [
            reply(command.id, "rejected", why),
            *self._reports.report("error", detail, now, key="command"),
        ]

    def _run(self, command: Command, now: float) -> Step:
        name, args = command.cmd, command.args
        if name == "status":
            return [reply(command.id, "done", self._reports.state())]
        if name in ("sync", "purge"):
            return self._full_sync(command, now)
        if name == "open_door":
            door, seconds = args.get("door"), args.get("s")
            try:
                if not isinstance(door, str):
                    raise RemoteError("open_door needs a text 'door'")
                opened = self._facility.open_door(door, _seconds(seconds), now)
            except RemoteError as exc:
                return [reply(command.id, "failed", str(exc))]
            return [*opened, reply(command.id, "done", f"{door} unlocked")]
        if name == "set_light":
            light, on, seconds = args.get("light"), args.get("on"), args.get("s")
            try:
                if not isinstance(light, str) or not isinstance(on, bool):
                    raise RemoteError("set_light needs a text 'light' and a true/false 'on'")
                switched = self._facility.set_light(light, on, _seconds(seconds), now)
            except RemoteError as exc:
                return [reply(command.id, "failed", str(exc))]
            state = "on" if on else "off"
            return [*switched, reply(command.id, "done", f"{light} {state}")]
        if name == "refresh_kiosks":
            return [*self._kiosk.refresh(command.id, now)]
        return self._refuse(command, f"unknown command {name!r}", now)

    def local(self, command: LocalCommand, now: float) -> list[Action]:
        """A command from an adapter on the controller (`LocalCommand`): run, or
        reported once a minute when it names no door or light of ours."""
        try:
            if command.what == "open_door":
                return [*self._facility.open_door(command.target, None, now, by=command.by)]
            if command.what == "set_light":
                s = command.s if command.on else None
                return [*self._facility.set_light(command.target, command.on, s, now)]
            raise RemoteError(f"unknown command {command.what!r}")
        except RemoteError as exc:
            detail = f"{command.by} {command.what} refused: {exc}"
            return [*self._reports.report("error", detail, now, key=f"local:{command.by}")]

    def _full_sync(self, command: Command, now: float) -> Step:
        """`sync` and `purge`: both restart the full sync, so the one that
        finishes next is fresh."""
        if len(self._running) >= MAX_RUNNING_SYNCS:
            return self._refuse(command, "too many sync commands running", now)
        accepted = reply(command.id, "accepted")
        if command.cmd == "sync":
            self._running.append(_Running(command.id, now))
            return [accepted, *self._session.request_full("command", now)]
        events = command.args.get("events", False)
        if not isinstance(events, bool):
            return self._refuse(command, "purge: 'events' must be true or false", now)
        outbox, wait = self._outbox, self.purge
        if events and outbox.acked_upto < outbox.last_seq:
            # Upload what we can first (up to 30 s), then drop the rest.
            if wait.state is PurgeState.IDLE:
                wait.ids, wait.started, wait.upto = [], now, outbox.last_seq
            wait.ids.append(command.id)
            wait.fire(PurgeInput.WAIT)
            return [accepted]
        return [accepted, *self._wipe([command.id], 0, now)]

    # --- what moves a waiting purge -------------------------------------------------

    def acked(self, now: float) -> Step:
        """After an ack: a purge waiting for its upload goes ahead once all is in."""
        wait = self.purge
        if wait.state is PurgeState.IDLE or self._outbox.acked_upto < wait.upto:
            return []
        return self._purge_moves(PurgeInput.ALL_ACKED, 0, now)

    def dropped(self, count: int, now: float) -> Step:
        """The runtime dropped `count` events a purge gave up uploading."""
        return self._purge_moves(PurgeInput.DROPPED, count, now)

    def _purge_moves(self, what: PurgeInput, dropped: int, now: float) -> Step:
        wait = self.purge
        effect = wait.fire(what)
        if effect is PurgeEffect.DROP:
            return [DropEvents(wait.upto)]
        if effect is PurgeEffect.WIPE:
            return self._wipe(wait.ids, dropped, now)
        return []

    def _wipe(self, ids: list[str], dropped: int, now: float) -> Step:
        self._running += [_Running(id, now, dropped=dropped) for id in ids]
        return [*self._session.purge(now)]

    # --- the full sync they wait for ------------------------------------------------

    def progress(self, now: float) -> Step:
        """A `progress` reply to each waiting command, when the full sync moved."""
        phase, got, of = self._session.progress()
        out: Step = []
        for running in self._running:
            if phase == "full" and of > 0 and got != running.last_got:
                running.last_got = got
                ms = int((now - running.started) * 1000)
                out.append(reply(running.id, "progress", "", got=got, of=of, ms=ms))
        return out

    def sync_ended(self, event: SyncEvent, now: float) -> Step:
        """A full sync finished or failed: every waiting command has its answer."""
        if event.what not in ("done", "failed"):
            return []
        finished, self._running = self._running, []
        out: Step = []
        for running in finished:
            ms = int((now - running.started) * 1000)
            if event.what == "done":
                detail = f"{event.records} records"
                if running.dropped is not None:
                    detail += f", {running.dropped} events dropped"
                out.append(reply(running.id, "done", detail, got=event.records, ms=ms))
            else:
                out.append(reply(running.id, "failed", "snapshot digest mismatch", ms=ms))
        return out

    # --- time -------------------------------------------------------------------------

    def tick(self, now: float) -> Step:
        """A purge upload that ran out of time; sync commands that waited too long."""
        out: Step = []
        deadline = self.purge.deadline
        if deadline is not None and now >= deadline:
            # Gave the upload its 30 s; drop what is left, then purge (`dropped`).
            out += self._purge_moves(PurgeInput.UPLOAD_TIMED_OUT, 0, now)
        for running in [r for r in self._running if now - r.started >= COMMAND_TIMEOUT_S]:
            self._running.remove(running)
            out.append(reply(running.id, "failed", "full sync did not finish in 120 s"))
        return out

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do."""
        times = [r.started + COMMAND_TIMEOUT_S for r in self._running]
        if self.purge.deadline is not None:
            times.append(self.purge.deadline)
        return min(times) if times else None

    @property
    def uploading(self) -> bool:
        """True while a purge waits for the hub to have the outbox: send at once."""
        return self.purge.state is not PurgeState.IDLE


def reply(id: str, status: str, detail: Any = "", **extra: Any) -> Publish:
    """A `reply` to command `id` (PROTOCOL.md s6)."""
    return Publish("reply", {"t": "reply", "id": id, "status": status, "detail": detail, **extra})


def _seconds(value: object) -> float | None:
    """A command's optional `s`: a positive number of seconds, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RemoteError("'s' must be a number of seconds")
    return float(value)
