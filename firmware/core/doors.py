"""Door state machine: unlock, relock, forced and held-open alarms, REX, modes,
open schedules, remote opening (PROTOCOL.md s3, s5, s6). docs/doors.md has the
rules: the reasons a door is unlocked, `held`, the alarms, schedules, data and
time. PIN lockouts are `firmware.core.pins`.

Pure like the rest of the core: no I/O, no threads, no clock reads. Every method
takes `now` (Unix seconds, the same clock the decisions use) and returns actions
(`Output`, and `door` events as `LogEvent`s); the runtime carries them out and
calls `Doors.tick(now, ...)` at `next_deadline()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from firmware.core.actions import FacilityAction, LogEvent, Output
from firmware.core.decide import DEFAULT_UNLOCK_S, Decision, schedule_allows
from firmware.core.errors import LocalError, RemoteError
from firmware.core.model import DOOR_MODES, Door
from firmware.core.store import Store

DEFAULT_HELD_S = 30  # the `door` record's default, for a door with no record yet
MAX_OPEN_S = 86400  # longest remote `open_door`, the same bound as a record's unlock_s

ScheduleCheck: TypeAlias = Callable[[str, float], bool]
"""`schedule_open(door_id, now)`: is this door inside its open schedule at `now`?"""


# --- wiring and actions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoorWiring:
    """A door as the local config wires it (controller.toml `[[doors]]`).

    `fail` is for the HAL only (relay level when de-energised); `has_contact` and
    `has_rex` say whether a door contact and an exit button are connected.
    """

    id: str
    fail: Literal["secure", "safe"]
    has_contact: bool
    has_rex: bool

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise LocalError(f"door wiring: id must be non-empty text, got {self.id!r}")
        if self.fail not in ("secure", "safe"):
            raise LocalError(f"door {self.id!r}: fail must be 'secure' or 'safe'")


@dataclass(frozen=True, slots=True)
class DoorStatus:
    """A read-only view of one door, for status reports and tests.

    `open` is None until the first contact report (and always without a contact).
    """

    door: str
    unlocked: bool
    open: bool | None
    mode: str
    held: bool
    forced: bool
    unlock_until: float | None
    schedule_open: bool


def door_event(door: str, what: str, by: str | None) -> LogEvent:
    """A `door` event for the log (PROTOCOL.md s5)."""
    return LogEvent("door", {"door": door, "what": what, "by": by})


def output_name(door: str) -> str:
    """The output that drives a door's lock."""
    return f"door:{door}"


def open_schedule_check(store: Store) -> ScheduleCheck:
    """A `schedule_open` function over `store` for `Doors.tick`.

    A door without an `open_schedule` is never inside one (note that
    `schedule_allows` reads a null schedule as "always"), and a reference to a
    missing schedule keeps the door locked: fail closed. Build it from the live
    store at each call: a full sync swaps the store for a new one.
    """

    def check(door: str, now: float) -> bool:
        record = store.doors.get(door)
        if record is None or record.open_schedule is None:
            return False
        return schedule_allows(store, record.open_schedule, now)

    return check


def _next_minute(now: float) -> float:
    return (math.floor(now / 60.0) + 1) * 60.0


# --- one door ---------------------------------------------------------------------------


class _Door:
    """Mutable state of one door; only `Doors` touches it."""

    __slots__ = (
        "forced",
        "held",
        "held_at",
        "held_out",
        "id",
        "mode",
        "name",
        "open",
        "output",
        "record",
        "schedule_at",
        "schedule_open",
        "unlock_until",
        "wiring",
    )

    def __init__(self, wiring: DoorWiring) -> None:
        self.wiring = wiring
        self.id = wiring.id
        self.name = output_name(wiring.id)
        self.record: Door | None = None
        self.mode = "normal"
        self.schedule_open = False
        self.schedule_at: float | None = None  # next open-schedule re-evaluation
        self.unlock_until: float | None = None  # the momentary unlock, if any
        self.output = False
        self.held_out = False  # the output is on for a standing reason (`Output.held`)
        self.open: bool | None = None  # None: no contact report yet
        self.held_at: float | None = None  # when the held alarm fires
        self.held = False
        self.forced = False

    @property
    def unlock_s(self) -> int:
        return self.record.unlock_s if self.record is not None else DEFAULT_UNLOCK_S

    @property
    def held_s(self) -> int:
        return self.record.held_s if self.record is not None else DEFAULT_HELD_S

    def standing(self) -> bool:
        """Is a standing reason (mode `unlocked`, the open schedule) holding?"""
        return self.mode == "unlocked" or (self.mode == "normal" and self.schedule_open)

    def wanted(self) -> bool:
        """Should the output be on right now?"""
        return self.unlock_until is not None or self.standing()

    def settle(self, now: float, by: str) -> list[FacilityAction]:
        """Bring the output in line with the reasons; `by` names what changed."""
        want = self.wanted()
        held = want and self.standing()
        if want == self.output:
            if held == self.held_out:
                return []
            # Still unlocked, now for a standing reason or only for a moment:
            # the HAL's limit on the on-time starts or stops. No event: the
            # door stays as it was.
            self.held_out = held
            return [Output(self.name, want, held=held)]
        self.output, self.held_out = want, held
        if self.open:
            if want:
                self.held_at = None
            elif not self.held:
                # Open, and now locked: the held-open count starts here, not at
                # the opening, so the unlock time never counts towards `held_s`.
                self.held_at = now + self.held_s
        what = "unlocked" if want else "locked"
        return [Output(self.name, want, held=held), door_event(self.id, what, by)]

    def momentary(self, seconds: float, now: float, by: str) -> list[FacilityAction]:
        until = now + seconds
        if self.unlock_until is None or until > self.unlock_until:
            self.unlock_until = until
        return self.settle(now, by)

    def status(self) -> DoorStatus:
        return DoorStatus(
            self.id,
            self.output,
            self.open,
            self.mode,
            self.held,
            self.forced,
            self.unlock_until,
            self.schedule_open,
        )


# --- all doors --------------------------------------------------------------------------


class Doors:
    """Every door this controller wires. Methods take a door id and `now`.

    Unknown door ids are `LocalError` (the facility asks only about wired doors),
    except in `open_door`, where the id comes from the hub: `RemoteError`. An exit
    button or contact report for a door without one wired is input refused:
    `RemoteError`.
    """

    def __init__(self, wirings: Iterable[DoorWiring], now: float) -> None:
        """All doors start locked, in mode `normal`, with no data; send the
        actions of `power_on()` before anything else."""
        self._doors: dict[str, _Door] = {}
        for wiring in wirings:
            if wiring.id in self._doors:
                raise LocalError(f"door {wiring.id!r} is wired twice")
            self._doors[wiring.id] = _Door(wiring)
        self._last = now

    # --- queries ----------------------------------------------------------------------

    def __contains__(self, door: object) -> bool:
        return door in self._doors

    @property
    def ids(self) -> tuple[str, ...]:
        """The wired door ids, in config order."""
        return tuple(self._doors)

    def output_failed(self, name: str, on: bool) -> list[LogEvent]:
        """Switching `name` to `on` failed (the relay driver raised): the door's
        output is taken to be as it was, and logged so (`locked` or `unlocked`
        by `fault`), so the next reason to switch it (a grant, a relock)
        switches again. No retry at once: a relay that keeps failing must not
        make the loop spin; a release that failed to end is ended by the HAL's
        `max_open_s` meanwhile."""
        for door in self._doors.values():
            if door.name == name and door.output == on:
                door.output, door.held_out = not on, False
                return [door_event(door.id, "unlocked" if door.output else "locked", "fault")]
        return []

    def status(self, door: str) -> DoorStatus:
        """The current state of one door."""
        return self._door(door).status()

    def next_deadline(self) -> float | None:
        """The earliest time `tick` has something to do, or None."""
        times = [
            t
            for d in self._doors.values()
            for t in (d.unlock_until, d.held_at, d.schedule_at)
            if t is not None
        ]
        return min(times) if times else None

    # --- inputs -----------------------------------------------------------------------

    def power_on(self) -> list[FacilityAction]:
        """The safe state, before MQTT or data: every door locked (on=False).

        No events: nothing changed, this *is* the initial state.
        """
        return [Output(d.name, False) for d in self._doors.values()]

    def granted(self, door: str, decision: Decision, now: float) -> list[FacilityAction]:
        """Unlock for `decision.unlock_s` after a granted decision; a refusal does
        nothing (its `access` event is the controller's)."""
        d = self._door(door)
        self._clock(now)
        if not decision.granted:
            return []
        return d.momentary(decision.unlock_s, now, decision.member or decision.reason)

    def rex(self, door: str, now: float) -> list[FacilityAction]:
        """The exit button: unlock for the door's `unlock_s`, in every mode, no alarm."""
        d = self._door(door)
        if not d.wiring.has_rex:
            raise RemoteError(f"door {door!r} has no exit button wired")
        self._clock(now)
        return d.momentary(d.unlock_s, now, "rex")

    def open_door(
        self, door: str, s: float | None, now: float, by: str = "remote"
    ) -> list[FacilityAction]:
        """The `open_door` command: unlock for `s` seconds (None: the door's
        `unlock_s`), logged `by: remote` (or `by`, for a local adapter's
        command). Bad arguments are `RemoteError`."""
        d = self._doors.get(door)
        if d is None:
            raise RemoteError(f"open_door: no door {door!r} on this controller")
        if s is None:
            s = d.unlock_s
        elif (
            isinstance(s, bool)
            or not isinstance(s, int | float)
            or not math.isfinite(s)
            or not 0 < s <= MAX_OPEN_S
        ):
            raise RemoteError(f"open_door: s must be a number of seconds in (0, {MAX_OPEN_S}]")
        self._clock(now)
        return d.momentary(s, now, by)

    def contact(self, door: str, open: bool, now: float) -> list[FacilityAction]:
        """The door contact reported open or closed (debounced by the HAL);
        a repeated report of the same state does nothing."""
        d = self._door(door)
        if not d.wiring.has_contact:
            raise RemoteError(f"door {door!r} has no contact wired")
        self._clock(now)
        if d.open is open:
            return []
        initial = d.open is None
        d.open = open
        if open:
            actions: list[FacilityAction] = [door_event(d.id, "opened", None)]
            if not d.output:
                if not initial:
                    d.forced = True
                    actions.append(door_event(d.id, "forced", None))
                d.held_at = now + d.held_s
            return actions
        actions = [door_event(d.id, "closed", None)]
        d.held_at = None
        d.forced = False
        if d.held:
            d.held = False
            actions.append(door_event(d.id, "held_end", None))
        if not initial and d.unlock_until is not None:
            d.unlock_until = None  # relock on close
            actions += d.settle(now, "closed")
        return actions

    def data_changed(
        self, door: str, record: Door | None, schedule_open: bool, now: float
    ) -> list[FacilityAction]:
        """The door's record was put (`record`) or deleted (None), or the data were
        (re)loaded. `schedule_open`: whether the door is inside its open schedule
        now (ignored without one; see `open_schedule_check`)."""
        d = self._doors.get(door)
        if d is None:
            return []  # a door of another controller
        if record is not None and record.id != door:
            raise LocalError(f"data_changed: record {record.id!r} given for door {door!r}")
        self._clock(now)
        actions: list[FacilityAction] = []
        mode = record.mode if record is not None else "normal"
        if mode not in DOOR_MODES:
            raise LocalError(f"door {door!r}: unknown mode {mode!r}")
        by = "schedule"
        if mode != d.mode:
            d.mode = mode
            by = "mode"
            actions.append(door_event(d.id, "mode", mode))
        d.record = record
        has_schedule = record is not None and record.open_schedule is not None
        d.schedule_open = has_schedule and schedule_open
        d.schedule_at = _next_minute(now) if has_schedule else None
        return actions + d.settle(now, by)

    def tick(self, now: float, schedule_open: ScheduleCheck) -> list[FacilityAction]:
        """Run what is due at `now`: unlock deadlines, open-schedule changes at
        minute boundaries (asking `schedule_open(door_id, now)`), held alarms."""
        self._clock(now)
        actions: list[FacilityAction] = []
        for d in self._doors.values():
            by = ""
            if d.unlock_until is not None and d.unlock_until <= now:
                d.unlock_until = None
                by = "timer"
            if d.schedule_at is not None and d.schedule_at <= now:
                d.schedule_at = _next_minute(now)
                d.schedule_open = schedule_open(d.id, now)
                by = by or "schedule"
            if by:
                actions += d.settle(now, by)
            if d.held_at is not None and d.held_at <= now:
                d.held_at = None
                d.held = True
                actions.append(door_event(d.id, "held", None))
        return actions

    # --- internals --------------------------------------------------------------------

    def _door(self, door: str) -> _Door:
        d = self._doors.get(door)
        if d is None:
            raise LocalError(f"no door {door!r} is wired")
        return d

    def _clock(self, now: float) -> None:
        """Move every deadline back with a clock stepped back, so nothing stays
        unlocked (or un-alarmed) longer than it should."""
        step = now - self._last
        if step < 0:
            for d in self._doors.values():
                if d.unlock_until is not None:
                    d.unlock_until += step
                if d.held_at is not None:
                    d.held_at += step
                if d.schedule_at is not None:
                    d.schedule_at = now  # the wall time jumped: ask the schedule again now
        self._last = now
