"""The door state machine in virtual time (PROTOCOL.md s3, s5, s6; PIN lockouts are
tests/test_pins.py).

Every test drives `Doors` with explicit times and compares the exact action lists
(outputs and `door` events, in order). The state machine at the end throws random
grants, contacts, REX presses, remote opens, mode and schedule changes and time
at one door and checks it against a small reference model of the reasons.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from firmware.core.actions import FacilityAction, LogEvent, Output
from firmware.core.decide import Decision, Target, decide
from firmware.core.doors import (
    Doors,
    DoorStatus,
    DoorWiring,
    door_event,
    open_schedule_check,
)
from firmware.core.errors import LocalError, RemoteError
from firmware.core.model import Door, parse_record
from tests.builders import rec, store_of

T0 = 1_800_000_000.0  # a whole minute: 30000000 * 60
FRONT = DoorWiring("front", "secure", has_contact=True, has_rex=True)
GATE = DoorWiring("gate", "safe", has_contact=False, has_rex=False)
OUT = "door:front"


def door_record(id: str = "front", **fields: Any) -> Door:
    record = parse_record("door", id, rec(**fields))
    assert isinstance(record, Door)
    return record


def make(*wirings: DoorWiring, now: float = T0) -> Doors:
    return Doors(wirings or (FRONT, GATE), now)


def ev(what: str, by: str | None = None, door: str = "front") -> LogEvent:
    return door_event(door, what, by)


def unlocked(by: str, door: str = "front", *, held: bool = False) -> list[FacilityAction]:
    return [Output(f"door:{door}", True, held=held), door_event(door, "unlocked", by)]


def locked(by: str, door: str = "front") -> list[FacilityAction]:
    return [Output(f"door:{door}", False), door_event(door, "locked", by)]


def what(actions: list[FacilityAction]) -> list[str]:
    """The `what` of each `door` event among `actions`."""
    return [a.body["what"] for a in actions if isinstance(a, LogEvent)]


def never(door: str, now: float) -> bool:
    return False


def grant(member: str | None = "ann", unlock_s: int = 5, reason: str = "granted") -> Decision:
    return Decision(True, reason, member, None, unlock_s)


# --- power-on, wiring ---------------------------------------------------------------------


def test_power_on_locks_every_door_whatever_its_fail_mode() -> None:
    doors = make()
    assert doors.power_on() == [Output("door:front", False), Output("door:gate", False)]
    assert doors.next_deadline() is None
    assert doors.status("gate") == DoorStatus(
        "gate", False, None, "normal", False, False, None, False
    )


def test_wiring_is_validated() -> None:
    with pytest.raises(LocalError):
        DoorWiring("", "secure", True, True)
    with pytest.raises(LocalError):
        DoorWiring("x", "open", True, True)  # type: ignore[arg-type]
    with pytest.raises(LocalError, match="wired twice"):
        Doors([FRONT, FRONT], T0)


def test_unknown_doors_are_local_errors_and_inputs_not_wired_are_refused() -> None:
    doors = make()
    with pytest.raises(LocalError):
        doors.granted("back", grant(), T0)
    with pytest.raises(LocalError):
        doors.contact("back", True, T0)
    # Reports of what the door does not have: input refused, not our bug.
    with pytest.raises(RemoteError, match="no contact"):
        doors.contact("gate", True, T0)
    with pytest.raises(RemoteError, match="no exit button"):
        doors.rex("gate", T0)
    with pytest.raises(LocalError):
        doors.status("back")
    assert "front" in doors and "back" not in doors
    assert doors.ids == ("front", "gate")


# --- grants, relock ---------------------------------------------------------------------


def test_grant_unlocks_for_unlock_s_then_relocks_on_the_timer() -> None:
    doors = make()
    assert doors.granted("front", grant("ann", 5), T0) == unlocked("ann")
    assert doors.next_deadline() == T0 + 5
    assert doors.tick(T0 + 4.9, never) == []
    assert doors.tick(T0 + 5, never) == locked("timer")
    assert doors.next_deadline() is None
    assert doors.tick(T0 + 6, never) == []


def test_who_unlocked_a_door() -> None:
    doors = make()
    assert doors.granted("front", grant(None, 5, "master"), T0) == unlocked("master")
    assert doors.granted("gate", grant(None, 5, "booking"), T0) == unlocked("booking", "gate")


def test_a_refusal_does_nothing() -> None:
    doors = make()
    assert doors.granted("front", Decision(False, "no_access", "ann"), T0) == []
    assert doors.next_deadline() is None


def test_extended_members_get_the_doors_extended_time_from_decide() -> None:
    store = store_of(
        [
            ("door", "front", rec(unlock_s=4, extended_s=20)),
            ("group", "g", rec(doors=["front"])),
            ("member", "ann", rec(groups=["g"], creds=[["tag", "a1"]])),
            ("member", "bob", rec(groups=["g"], creds=[["tag", "b2"]], extended=True)),
        ]
    )
    doors = make()
    doors.data_changed("front", store.doors["front"], False, T0)
    bob = decide(store, Target.door("front"), "tag", "b2", T0)
    assert doors.granted("front", bob, T0) == unlocked("bob")
    assert doors.next_deadline() == T0 + 20
    assert doors.tick(T0 + 20, never) == locked("timer")
    ann = decide(store, Target.door("front"), "tag", "a1", T0 + 30)
    doors.granted("front", ann, T0 + 30)
    assert doors.next_deadline() == T0 + 34


def test_a_second_grant_extends_but_never_shortens() -> None:
    doors = make()
    doors.granted("front", grant("bob", 30), T0)
    assert doors.granted("front", grant("ann", 5), T0 + 1) == []  # already unlocked
    assert doors.next_deadline() == T0 + 30
    assert doors.granted("front", grant("ann", 5), T0 + 28) == []
    assert doors.next_deadline() == T0 + 33
    assert doors.tick(T0 + 33, never) == locked("timer")


def test_relock_as_soon_as_the_door_closes() -> None:
    doors = make()
    doors.contact("front", False, T0 - 100)
    assert doors.granted("front", grant(), T0) == unlocked("ann")
    assert doors.contact("front", True, T0 + 1) == [ev("opened")]  # not forced
    assert doors.contact("front", False, T0 + 2) == [ev("closed"), *locked("closed")]
    assert doors.next_deadline() is None
    assert doors.status("front").unlocked is False


def test_close_of_a_door_already_open_at_the_grant_also_relocks() -> None:
    doors = make()
    doors.contact("front", False, T0 - 100)
    doors.granted("front", grant(), T0)
    doors.contact("front", True, T0 + 1)
    doors.tick(T0 + 5, never)  # relocks while open
    assert doors.granted("front", grant("bob"), T0 + 6) == unlocked("bob")
    assert doors.contact("front", False, T0 + 7) == [ev("closed"), *locked("closed")]


def test_a_door_without_contact_relocks_only_on_the_timer_and_never_alarms() -> None:
    doors = make()
    assert doors.granted("gate", grant(), T0) == unlocked("ann", "gate")
    assert doors.tick(T0 + 5, never) == locked("timer", "gate")
    assert doors.next_deadline() is None


# --- contact: forced, held ----------------------------------------------------------------


def test_forced_open_then_held_then_closed() -> None:
    doors = make()
    doors.data_changed("front", door_record(held_s=30), False, T0)
    assert doors.contact("front", False, T0) == [ev("closed")]  # initial report
    assert doors.contact("front", True, T0 + 10) == [ev("opened"), ev("forced")]
    assert doors.status("front").forced
    assert doors.next_deadline() == T0 + 40
    assert doors.tick(T0 + 39, never) == []
    assert doors.tick(T0 + 40, never) == [ev("held")]
    assert doors.next_deadline() is None
    assert doors.contact("front", False, T0 + 50) == [ev("closed"), ev("held_end")]
    assert doors.status("front") == DoorStatus(
        "front", False, False, "normal", False, False, None, False
    )


def test_forced_door_closed_before_held_s_ends_with_closed_only() -> None:
    doors = make()
    doors.contact("front", False, T0)
    assert doors.contact("front", True, T0 + 1) == [ev("opened"), ev("forced")]
    assert doors.contact("front", False, T0 + 2) == [ev("closed")]
    assert doors.next_deadline() is None
    assert not doors.status("front").forced


def test_held_counts_from_the_end_of_the_unlock() -> None:
    doors = make()
    doors.data_changed("front", door_record(unlock_s=5, held_s=30), False, T0)
    doors.contact("front", False, T0)
    doors.granted("front", grant("ann", 5), T0)
    assert doors.contact("front", True, T0 + 1) == [ev("opened")]
    assert doors.next_deadline() == T0 + 5  # no held timer while unlocked
    assert doors.tick(T0 + 5, never) == locked("timer")
    assert doors.next_deadline() == T0 + 35
    assert doors.tick(T0 + 35, never) == [ev("held")]
    assert doors.contact("front", False, T0 + 36) == [ev("closed"), ev("held_end")]


def test_a_door_closed_in_time_raises_no_held_alarm() -> None:
    doors = make()
    doors.contact("front", False, T0)
    doors.granted("front", grant("ann", 5), T0)
    doors.contact("front", True, T0 + 1)
    doors.tick(T0 + 5, never)
    assert doors.contact("front", False, T0 + 34) == [ev("closed")]
    assert doors.tick(T0 + 35, never) == []


def test_unlocking_an_open_door_stops_the_held_count() -> None:
    doors = make()
    doors.contact("front", False, T0)
    doors.contact("front", True, T0 + 1)  # forced
    assert doors.granted("front", grant("ann", 5), T0 + 2) == unlocked("ann")
    assert doors.next_deadline() == T0 + 7
    assert doors.tick(T0 + 7, never) == locked("timer")
    assert doors.next_deadline() == T0 + 37  # restarted from the relock


def test_a_held_alarm_outlives_a_later_unlock_until_the_door_closes() -> None:
    doors = make()
    doors.data_changed("front", door_record(held_s=10), False, T0)
    doors.contact("front", True, T0)  # open at power-on
    assert doors.tick(T0 + 10, never) == [ev("held")]
    assert doors.granted("front", grant("ann"), T0 + 11) == unlocked("ann")
    assert doors.contact("front", False, T0 + 12) == [
        ev("closed"),
        ev("held_end"),
        *locked("closed"),
    ]


def test_first_contact_report_is_the_initial_state_not_a_transition() -> None:
    doors = make()
    assert doors.contact("front", True, T0) == [ev("opened")]  # open at boot: not forced
    assert doors.next_deadline() == T0 + 30  # default held_s before any data
    assert doors.contact("front", True, T0 + 1) == []  # a repeated report
    other = make()
    other.granted("front", grant(), T0)
    assert other.contact("front", False, T0 + 1) == [ev("closed")]  # no relock: nobody passed
    assert other.status("front").unlocked


# --- REX ------------------------------------------------------------------------------------


def test_rex_unlocks_without_alarm_and_relocks_on_close() -> None:
    doors = make()
    doors.data_changed("front", door_record(unlock_s=3), False, T0)
    doors.contact("front", False, T0)
    assert doors.rex("front", T0 + 1) == unlocked("rex")
    assert doors.contact("front", True, T0 + 2) == [ev("opened")]
    assert doors.contact("front", False, T0 + 3) == [ev("closed"), *locked("closed")]
    assert doors.rex("front", T0 + 10) == unlocked("rex")
    assert doors.next_deadline() == T0 + 13
    assert doors.tick(T0 + 13, never) == locked("timer")


def test_rex_still_lets_people_out_in_lockdown() -> None:
    doors = make()
    assert doors.data_changed("front", door_record(mode="locked"), False, T0) == [
        ev("mode", "locked")
    ]
    assert doors.rex("front", T0 + 1) == unlocked("rex")
    assert doors.tick(T0 + 6, never) == locked("timer")


# --- modes and data ---------------------------------------------------------------------------


def test_unlocked_mode_keeps_the_output_on_until_the_mode_changes() -> None:
    doors = make()
    doors.contact("front", False, T0)
    assert doors.data_changed("front", door_record(mode="unlocked"), False, T0) == [
        ev("mode", "unlocked"),
        *unlocked("mode", held=True),
    ]
    assert doors.next_deadline() is None
    # Comings and goings in unlocked mode: no alarms, no relock.
    assert doors.contact("front", True, T0 + 1) == [ev("opened")]
    assert doors.tick(T0 + 3600, never) == []
    assert doors.contact("front", False, T0 + 3601) == [ev("closed")]
    assert doors.granted("front", grant("ann", 5), T0 + 3602) == []
    # The grant's 5 s still run: unlocked still, but no longer held (the HAL's
    # limit on the on-time applies again), and no `unlocked` event.
    assert doors.data_changed("front", door_record(mode="normal"), False, T0 + 3603) == [
        ev("mode", "normal"),
        Output(OUT, True, held=False),
    ]
    assert doors.tick(T0 + 3607, never) == locked("timer")
    doors.data_changed("front", door_record(mode="unlocked"), False, T0 + 4000)
    assert doors.data_changed("front", door_record(mode="normal"), False, T0 + 4001) == [
        ev("mode", "normal"),
        *locked("mode"),
    ]


def test_no_held_alarm_while_the_door_may_stand_open() -> None:
    doors = make()
    doors.contact("front", True, T0)  # open at power-on: the held count runs
    assert doors.next_deadline() == T0 + 30
    doors.data_changed("front", door_record(mode="unlocked"), False, T0 + 10)
    assert doors.next_deadline() is None
    assert doors.tick(T0 + 3600, never) == []


def test_leaving_unlocked_mode_while_open_starts_the_held_count() -> None:
    doors = make()
    doors.data_changed("front", door_record(mode="unlocked", held_s=20), False, T0)
    doors.contact("front", True, T0 + 1)
    assert doors.data_changed("front", door_record(mode="locked", held_s=20), False, T0 + 5) == [
        ev("mode", "locked"),
        *locked("mode"),
    ]
    assert doors.tick(T0 + 25, never) == [ev("held")]


def test_lockdown_refuses_members_but_a_master_still_opens() -> None:
    store = store_of(
        [
            ("door", "front", rec(mode="locked", unlock_s=4)),
            ("group", "g", rec(doors=["front"])),
            ("member", "ann", rec(groups=["g"], creds=[["tag", "a1"]])),
        ]
    )
    doors = make()
    doors.data_changed("front", store.doors["front"], False, T0)
    masters = frozenset({("tag", "m0")})
    ann = decide(store, Target.door("front"), "tag", "a1", T0, masters=masters)
    assert ann.reason == "door_locked"
    assert doors.granted("front", ann, T0) == []
    master = decide(store, Target.door("front"), "tag", "m0", T0, masters=masters)
    assert doors.granted("front", master, T0) == unlocked("master")
    assert doors.tick(T0 + 4, never) == locked("timer")


def test_deleting_the_record_returns_to_normal_defaults() -> None:
    doors = make()
    doors.data_changed("front", door_record(mode="locked", unlock_s=2), False, T0)
    assert doors.data_changed("front", None, True, T0 + 1) == [ev("mode", "normal")]
    assert doors.rex("front", T0 + 2) == unlocked("rex")
    assert doors.next_deadline() == T0 + 7  # the default unlock_s, 5


def test_data_for_other_doors_is_ignored_and_mismatches_are_errors() -> None:
    doors = make()
    assert (
        doors.data_changed("elsewhere", door_record("elsewhere", mode="unlocked"), False, T0) == []
    )
    with pytest.raises(LocalError):
        doors.data_changed("front", door_record("gate"), False, T0)


def test_an_unchanged_record_does_nothing() -> None:
    doors = make()
    assert doors.data_changed("front", door_record(), False, T0) == []
    assert doors.data_changed("front", door_record(unlock_s=9), False, T0 + 1) == []


# --- open schedule ----------------------------------------------------------------------------

LONDON = ZoneInfo("Europe/London")


def at(hhmm: str, second: int = 0) -> float:
    hour, minute = map(int, hhmm.split(":"))
    return datetime(2024, 6, 12, hour, minute, second, tzinfo=LONDON).timestamp()


SCHEDULED = [
    ("site", "site", rec(tz="Europe/London")),
    ("schedule", "day", rec(windows=[[127, 7 * 60, 22 * 60]])),
    ("door", "front", rec(open_schedule="day")),
    ("door", "gate", rec(open_schedule="no-such-schedule")),
]


def test_open_schedule_keeps_the_door_unlocked_inside_it() -> None:
    store = store_of(SCHEDULED)
    check = open_schedule_check(store)
    doors = make()
    now = at("06:59", 30)
    assert doors.data_changed("front", store.doors["front"], check("front", now), now) == []
    assert doors.next_deadline() == at("07:00")
    assert doors.tick(at("07:00"), check) == unlocked("schedule", held=True)
    assert doors.next_deadline() == at("07:01")
    assert doors.tick(at("07:01"), check) == []
    # A grant inside the schedule changes nothing; closing the door does not relock.
    doors.contact("front", False, at("12:00"))
    assert doors.granted("front", grant(), at("12:00")) == []
    doors.contact("front", True, at("12:00", 1))
    assert doors.contact("front", False, at("12:00", 2)) == [ev("closed")]
    doors.tick(at("21:59"), check)
    assert doors.tick(at("22:00"), check) == locked("schedule")
    assert doors.next_deadline() == at("22:01")  # keeps watching for the next opening


def test_a_grant_outlasts_the_end_of_the_open_schedule() -> None:
    store = store_of(SCHEDULED)
    check = open_schedule_check(store)
    doors = make()
    now = at("21:59", 58)
    assert doors.data_changed("front", store.doors["front"], True, now) == unlocked(
        "schedule", held=True
    )
    assert doors.granted("front", grant("ann", 5), now) == []
    # The schedule ends, the grant holds the door a little longer: not held.
    assert doors.tick(at("22:00"), check) == [Output(OUT, True, held=False)]
    assert doors.tick(at("22:00", 3), check) == locked("timer")


def test_lockdown_overrides_the_open_schedule() -> None:
    store = store_of(SCHEDULED)
    check = open_schedule_check(store)
    doors = make()
    now = at("12:00")
    doors.data_changed("front", store.doors["front"], True, now)
    record = door_record(mode="locked", open_schedule="day")
    assert doors.data_changed("front", record, check("front", now), now + 1) == [
        ev("mode", "locked"),
        *locked("mode"),
    ]
    assert doors.tick(at("12:01"), check) == []


def test_open_schedule_check_fails_closed() -> None:
    store = store_of([*SCHEDULED, ("door", "plain", rec())])
    check = open_schedule_check(store)
    assert check("front", at("12:00"))
    assert not check("front", at("23:00"))
    assert not check("gate", at("12:00"))  # a missing schedule never opens
    assert not check("plain", at("12:00"))  # no open_schedule: not "always open"
    assert not check("unknown", at("12:00"))


def test_a_schedule_answer_for_a_door_without_open_schedule_is_ignored() -> None:
    doors = make()
    assert doors.data_changed("front", door_record(), True, T0) == []
    assert doors.next_deadline() is None


# --- open_door command ---------------------------------------------------------------------------


def test_open_door_uses_the_doors_unlock_s_by_default() -> None:
    doors = make()
    doors.data_changed("front", door_record(unlock_s=8), False, T0)
    assert doors.open_door("front", None, T0) == unlocked("remote")
    assert doors.next_deadline() == T0 + 8
    assert doors.open_door("gate", None, T0) == unlocked("remote", "gate")  # no data: 5 s
    assert doors.next_deadline() == T0 + 5
    assert doors.open_door("gate", 60, T0 + 1) == []
    assert doors.tick(T0 + 8, never) == locked("timer")
    assert doors.tick(T0 + 61, never) == locked("timer", "gate")


def test_open_door_opens_a_locked_down_door() -> None:
    doors = make()
    doors.data_changed("front", door_record(mode="locked"), False, T0)
    assert doors.open_door("front", 2.5, T0) == unlocked("remote")
    assert doors.tick(T0 + 2.5, never) == locked("timer")


@pytest.mark.parametrize("s", [0, -1, 86401, math.inf, math.nan, True, "5"])
def test_open_door_rejects_bad_seconds(s: Any) -> None:
    doors = make()
    with pytest.raises(RemoteError):
        doors.open_door("front", s, T0)
    assert doors.next_deadline() is None


def test_open_door_of_an_unknown_door_is_a_remote_error() -> None:
    with pytest.raises(RemoteError, match="no door"):
        make().open_door("back", None, T0)


# --- time -----------------------------------------------------------------------------------------


def test_a_clock_stepped_back_does_not_stretch_an_unlock() -> None:
    doors = make()
    doors.contact("front", False, T0)
    doors.granted("front", grant("ann", 5), T0)
    doors.tick(T0 + 1, never)
    back = T0 + 1 - 3600  # 4 s of the unlock were left when the clock jumped
    assert doors.tick(back, never) == []
    assert doors.next_deadline() == back + 4
    assert doors.tick(back + 4, never) == locked("timer")


def test_a_clock_stepped_back_rechecks_the_open_schedule_at_once() -> None:
    store = store_of(SCHEDULED)
    check = open_schedule_check(store)
    doors = make()
    now = at("07:00", 30)
    doors.data_changed("front", store.doors["front"], True, now)
    assert doors.tick(at("06:59", 50), check) == locked("schedule")
    assert doors.next_deadline() == at("07:00")


# --- property: random use of one door against a model of its reasons ---------------------


def minute_schedule(mask: int) -> Any:
    """An open schedule that is open in minute m when bit (m mod 8) of `mask` is set."""

    def check(door: str, now: float) -> bool:
        return bool(mask >> (math.floor(now / 60) % 8) & 1)

    return check


class DoorMachine(RuleBasedStateMachine):
    """One door, driven at random; the model says which reasons hold."""

    @initialize(
        has_contact=st.booleans(),
        has_rex=st.booleans(),
        mask=st.integers(0, 255),
        start=st.integers(0, 600),
    )
    def boot(self, has_contact: bool, has_rex: bool, mask: int, start: int) -> None:
        self.wiring = DoorWiring("d", "secure", has_contact, has_rex)
        self.now = T0 + start / 10
        self.doors = Doors([self.wiring], self.now)
        self.schedule = minute_schedule(mask)
        self.output = False
        self.out_held = False  # `held` of the last output action
        self.mode = "normal"
        self.has_schedule = False
        self.unlock_s = 5
        self.held_s = 30
        self.until: float | None = None  # the model's momentary unlock deadline
        self.latest_until = -math.inf  # never reset: the bound on any momentary unlock
        self.open: bool | None = None
        self.held_at: float | None = None  # when the model expects a held alarm
        self.forced = False
        self.held = False
        assert self.doors.power_on() == [Output("door:d", False)]

    # --- the model ---

    def reason(self) -> bool:
        if self.mode == "unlocked" or self.until is not None:
            return True
        return self.mode == "normal" and self.has_schedule and self.schedule("d", self.now)

    def check(self, actions: list[FacilityAction], first: list[str]) -> None:
        """Follow `actions` in the model, checking each; the call's `door` events
        must start with `first`."""
        got = what(actions)
        assert got[: len(first)] == first
        for i, action in enumerate(actions):
            if isinstance(action, Output):
                assert action.name == "door:d"
                self.out_held = action.held
                if action.on == self.output:
                    # Only `held` changed, with no event: unlocked all along.
                    assert action.on, "redundant output change"
                    following = what(actions[i + 1 : i + 2])
                    assert following not in (["unlocked"], ["locked"])
                    continue
                self.output = action.on
                if action.on:
                    self.held_at = None
                elif self.open and not self.held:
                    self.held_at = self.now + self.held_s
                assert what(actions[i + 1 : i + 2]) == ["unlocked" if action.on else "locked"]
                continue
            action_what = action.body["what"]
            if action_what == "held":
                assert self.open and not self.held and not self.output
                assert self.held_at is not None and self.now >= self.held_at
                self.held = True
                self.held_at = None
            elif action_what == "held_end":
                assert self.held
                self.held = False
            elif action_what == "forced":
                self.forced = True

    def momentary(self, s: float) -> None:
        until = self.now + s
        self.until = until if self.until is None else max(self.until, until)
        self.latest_until = max(self.latest_until, until)

    # --- rules ---

    @rule(member=st.sampled_from(["ann", None]), unlock_s=st.integers(0, 40))
    def granted(self, member: str | None, unlock_s: int) -> None:
        decision = Decision(True, "granted" if member else "master", member, None, unlock_s)
        actions = self.doors.granted("d", decision, self.now)
        self.momentary(unlock_s)
        self.check(actions, [])
        if actions:
            assert actions[1] == door_event("d", "unlocked", member or "master")

    @rule()
    def denied(self) -> None:
        assert self.doors.granted("d", Decision(False, "no_access"), self.now) == []

    @precondition(lambda self: self.wiring.has_rex)
    @rule()
    def rex(self) -> None:
        actions = self.doors.rex("d", self.now)
        self.momentary(self.unlock_s)
        self.check(actions, [])

    @rule(s=st.one_of(st.none(), st.integers(1, 40)))
    def open_door(self, s: int | None) -> None:
        actions = self.doors.open_door("d", s, self.now)
        self.momentary(self.unlock_s if s is None else s)
        self.check(actions, [])

    @precondition(lambda self: self.wiring.has_contact)
    @rule(open=st.booleans())
    def contact(self, open: bool) -> None:
        was_output = self.output
        actions = self.doors.contact("d", open, self.now)
        if self.open is open:
            assert actions == []
            return
        initial = self.open is None
        self.open = open
        if open:
            forced = not was_output and not initial
            expected = ["opened", "forced"] if forced else ["opened"]
            assert what(actions) == expected
            self.held_at = None if was_output else self.now + self.held_s
            self.check(actions, expected)
        else:
            # Every alarm ends when the door closes: `closed`, then `held_end`.
            expected = ["closed", "held_end"] if self.held else ["closed"]
            self.forced = False
            self.held_at = None
            if not initial:
                self.until = None  # relock on close
            self.check(actions, expected)
            assert not self.held

    @rule(
        mode=st.sampled_from(["normal", "locked", "unlocked", None]),
        scheduled=st.booleans(),
        unlock_s=st.integers(0, 20),
        held_s=st.integers(0, 60),
    )
    def data(self, mode: str | None, scheduled: bool, unlock_s: int, held_s: int) -> None:
        record = None
        if mode is not None:
            sched = "s" if scheduled else None
            record = door_record(
                "d", mode=mode, unlock_s=unlock_s, held_s=held_s, open_schedule=sched
            )
        actions = self.doors.data_changed("d", record, self.schedule("d", self.now), self.now)
        before = self.mode
        self.mode = mode or "normal"
        self.has_schedule = record is not None and scheduled
        self.unlock_s = unlock_s if record else 5
        self.held_s = held_s if record else 30  # a held count already running keeps its time
        expected = ["mode"] if self.mode != before else []
        self.check(actions, expected)
        if self.mode != before:
            assert actions[0] == door_event("d", "mode", self.mode)

    @rule(dt=st.one_of(st.integers(0, 60), st.integers(0, 1500)))
    def wait(self, dt: int) -> None:
        """Let dt/10 seconds pass, ticking at every deadline on the way."""
        self.wait_until(self.now + dt / 10)

    @rule(minutes=st.integers(1, 8))
    def wait_minutes(self, minutes: int) -> None:
        """Let the open schedule move on (it changes at minute boundaries)."""
        self.wait_until(self.now + minutes * 60)

    def wait_until(self, target: float) -> None:
        while True:
            due = self.doors.next_deadline()
            assert due is None or due >= self.now
            if due is None or due > target:
                break
            self.tick(due)
            after = self.doors.next_deadline()
            assert after is None or after > due  # a tick leaves nothing due behind
        self.tick(target)

    def tick(self, now: float) -> None:
        self.now = now
        if self.until is not None and self.until <= now:
            self.until = None
        actions = self.doors.tick(now, self.schedule)
        self.check(actions, [])  # held only once due...
        # ...and never later: nothing the model expects is left behind.
        assert self.held_at is None or self.held_at > now

    # --- invariants ---

    @invariant()
    def output_follows_the_reasons(self) -> None:
        status = self.doors.status("d")
        assert status.unlocked == self.output
        # Safety: never unlocked past the latest reason.
        if self.output:
            assert (
                self.mode == "unlocked"
                or (self.mode == "normal" and self.has_schedule and self.schedule("d", self.now))
                or self.now <= self.latest_until
            )
        # And exactly the reasons of the model (relock on close included).
        assert self.output == self.reason()
        # Held (spared by the HAL's on-time limit) exactly while a standing
        # reason holds: its mode, or its open schedule.
        standing = self.mode == "unlocked" or (
            self.mode == "normal" and self.has_schedule and self.schedule("d", self.now)
        )
        assert self.out_held == (self.output and standing)

    @invariant()
    def alarms_match_the_door(self) -> None:
        status = self.doors.status("d")
        assert status.held == self.held
        assert status.forced == self.forced
        assert status.open == self.open
        if self.held or self.forced:
            assert self.open
        if self.held_at is not None:
            due = self.doors.next_deadline()
            assert due is not None and due <= self.held_at


DoorMachine.TestCase.settings = settings(stateful_step_count=60)
TestDoorMachine = DoorMachine.TestCase
