"""PIN lockouts in virtual time (core/pins.py; docs/operations.md "PIN lockouts").

Unit tests walk the rules one by one with explicit times; a hypothesis state
machine throws refused and granted PINs at four places and time at them and
checks every place against a small reference model of the rules, and the site
budget against a plain count of refused PINs in the last hour. The last tests
play a guesser for a day and pin down the figures the operations guide quotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from firmware.config import ConfigError, load_config
from firmware.core.errors import LocalError
from firmware.core.pins import (
    MAX_SCREENS,
    OVERFLOW,
    PIN_BUDGET_WHAT,
    PIN_LOCKOUT_WHAT,
    QUIET_S,
    TRIES,
    PinAlert,
    PinLocks,
    PinRules,
    Place,
    lock_s,
)

T0 = 1_800_000_000.0
KEYS = Place.reader("front-keys")
SIDE = Place.reader("side-keys")
A = Place.screen("screen-aaaa")
B = Place.screen("screen-bbbb")
BIG = PinRules(budget_per_hour=10_000)
EXAMPLE = Path(__file__).parent.parent / "deploy" / "controller.example.toml"


def refuse(locks: PinLocks, place: Place, now: float, n: int = 1) -> list[PinAlert]:
    """`n` refused PINs at `place` at `now`, each only while the place is open."""
    alerts: list[PinAlert] = []
    for _ in range(n):
        assert locks.closed_for(place, now) == 0
        alerts += locks.refused(place, now)
    return alerts


def test_the_third_refused_pin_closes_the_place_for_a_minute() -> None:
    locks = PinLocks(["front-keys"], BIG)
    assert refuse(locks, KEYS, T0, TRIES - 1) == []
    assert locks.closed_for(KEYS, T0) == 0  # two typos are free
    alerts = locks.refused(KEYS, T0 + 1)
    assert alerts == [
        PinAlert(
            PIN_LOCKOUT_WHAT,
            "reader front-keys: PIN entry closed for 1 min after 3 refused PINs in a row",
        )
    ]
    assert locks.closed_for(KEYS, T0 + 1) == 60
    assert locks.closed_for(KEYS, T0 + 60.5) == 0.5
    assert locks.closed_for(KEYS, T0 + 61) == 0


def test_the_lockout_doubles_and_caps_at_an_hour() -> None:
    locks = PinLocks(["front-keys"], BIG)
    now = T0
    refuse(locks, KEYS, now, TRIES - 1)
    lengths = []
    for _ in range(10):
        locks.refused(KEYS, now)
        closed = locks.closed_for(KEYS, now)
        lengths.append(closed / 60)
        now += closed  # the guesser tries again the moment entry opens
    assert lengths == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert [lock_s(n) / 60 for n in range(1, 12)] == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert lock_s(10**9) == 3600  # no huge integers however long the run


def test_pins_while_closed_count_for_nothing() -> None:
    locks = PinLocks(["front-keys"], PinRules(budget_per_hour=4))
    refuse(locks, KEYS, T0, TRIES)
    for i in range(50):
        # Hammering a closed keypad neither stretches the lockout nor spends the budget.
        assert locks.refused(KEYS, T0 + i) == []
    assert locks.closed_for(KEYS, T0 + 50) == 10
    assert locks.next_deadline() is None  # budget (4) not reached by 3 counted PINs


def test_a_correct_pin_resets_the_place() -> None:
    locks = PinLocks(["front-keys"], BIG)
    now = T0
    refuse(locks, KEYS, now, TRIES)
    now += 60
    refuse(locks, KEYS, now)  # 2 min now
    now += 120
    locks.granted(KEYS, now)
    assert locks.held == 0
    refuse(locks, KEYS, now, TRIES - 1)
    assert locks.closed_for(KEYS, now) == 0
    locks.refused(KEYS, now)
    assert locks.closed_for(KEYS, now) == 60  # back to the first step


def test_a_quiet_hour_resets_the_place_counted_from_the_end_of_the_lockout() -> None:
    locks = PinLocks(["front-keys"], BIG)
    now = T0
    refuse(locks, KEYS, now, TRIES - 1)
    for _ in range(7):  # up to the 1 h cap
        locks.refused(KEYS, now)
        now += locks.closed_for(KEYS, now)
    assert lock_s(TRIES + 6) == 3600
    # The 1 h lockout just ended: that hour was not a quiet one.
    locks.refused(KEYS, now)
    assert locks.closed_for(KEYS, now) == 3600
    end = now + 3600
    assert locks.closed_for(KEYS, end + QUIET_S - 1) == 0
    assert locks.held == 1
    # An hour after the lockout ended without a refused PIN: a fresh start.
    locks.refused(KEYS, end + QUIET_S)
    assert locks.closed_for(KEYS, end + QUIET_S) == 0
    assert locks.held == 1


def test_quiet_places_are_forgotten_at_tick() -> None:
    locks = PinLocks(["front-keys"], BIG)
    refuse(locks, KEYS, T0, 2)
    refuse(locks, A, T0, 1)
    assert locks.held == 2
    assert locks.tick(T0 + QUIET_S - 1) == []
    assert locks.held == 2
    assert locks.tick(T0 + QUIET_S) == []
    assert locks.held == 0


def test_one_screen_never_closes_another_or_a_reader() -> None:
    locks = PinLocks(["front-keys", "side-keys"], BIG)
    refuse(locks, A, T0, TRIES)
    assert locks.closed_for(A, T0) == 60
    assert locks.closed_for(B, T0) == 0
    assert locks.closed_for(KEYS, T0) == 0
    refuse(locks, KEYS, T0, TRIES)
    assert locks.closed_for(SIDE, T0) == 0
    locks.granted(B, T0)  # a member signs in on B: A stays closed
    assert locks.closed_for(A, T0) == 60


def test_a_screen_keeps_its_state_when_it_leaves_and_comes_back() -> None:
    # The kiosk core tells the lockouts nothing about screens leaving: a reload
    # with the same id finds its lockout again.
    locks = PinLocks([], BIG)
    refuse(locks, A, T0, TRIES)
    assert locks.closed_for(Place.screen("screen-aaaa"), T0 + 30) == 30


def test_invented_screen_ids_end_up_on_the_shared_overflow() -> None:
    locks = PinLocks([], BIG)
    screens = [Place.screen(f"screen-{i:04d}") for i in range(MAX_SCREENS + 5)]
    for s in screens[:MAX_SCREENS]:
        refuse(locks, s, T0, 1)
    assert locks.held == MAX_SCREENS
    # Every further new screen counts on one place: two typos there are shared.
    refuse(locks, screens[MAX_SCREENS], T0, 1)
    refuse(locks, screens[MAX_SCREENS + 1], T0, 1)
    alerts = locks.refused(screens[MAX_SCREENS + 2], T0)
    assert alerts[0].detail.startswith("new kiosk screens (overflow): PIN entry closed")
    for s in screens[MAX_SCREENS:]:
        assert locks.closed_for(s, T0) == 60
    assert locks.closed_for(screens[0], T0) == 0  # screens with their own state are not
    # A member's correct PIN on a new screen does not clear the overflow for the guesser.
    locks.granted(screens[MAX_SCREENS + 3], T0 + 1)
    assert locks.closed_for(screens[MAX_SCREENS + 4], T0 + 1) == 59
    assert locks.held == MAX_SCREENS + 1
    # Once a screen's quiet hour passed, a new screen gets a state of its own again.
    later = T0 + QUIET_S
    assert locks.closed_for(screens[MAX_SCREENS + 4], later) == 0
    refuse(locks, screens[MAX_SCREENS + 4], later, 2)
    assert locks.closed_for(screens[MAX_SCREENS + 4], later) == 0


def test_the_site_budget_raises_an_alert_once_and_says_when_it_is_left() -> None:
    locks = PinLocks(["front-keys", "side-keys"], PinRules(budget_per_hour=5))
    assert locks.next_deadline() is None
    alerts = refuse(locks, KEYS, T0, 2) + refuse(locks, SIDE, T0 + 10, 2)
    assert alerts == []
    alerts = refuse(locks, A, T0 + 20)
    assert alerts == [
        PinAlert(
            PIN_BUDGET_WHAT,
            "5 refused PINs within an hour at this site reached its budget. "
            "Someone may be guessing PINs.",
        )
    ]
    # `alert` closes nothing beyond the places' own lockouts.
    assert locks.closed_for(B, T0 + 20) == 0
    assert refuse(locks, B, T0 + 30, 2) == []  # no second alert while it lasts
    # The hour ends when the oldest of the last 5 refused PINs is an hour old.
    assert locks.next_deadline() == T0 + 10 + 3600
    assert locks.tick(T0 + 10 + 3599) == []
    assert locks.tick(T0 + 10 + 3600) == [
        PinAlert(
            PIN_BUDGET_WHAT,
            "refused PINs fell below the site budget of 5 an hour (2 more after it was reached).",
        )
    ]
    assert locks.next_deadline() is None


def test_refused_pins_spread_over_more_than_an_hour_stay_within_the_budget() -> None:
    locks = PinLocks(["front-keys"], PinRules(budget_per_hour=3))
    now = T0
    for _ in range(10):
        assert locks.refused(KEYS, now) == [] or locks.closed_for(KEYS, now) > 0
        locks.granted(KEYS, now)
        now += 1800.5  # two an hour against a budget of three
    assert locks.next_deadline() is None


def test_lock_mode_closes_pin_entry_everywhere_for_the_rest_of_the_hour() -> None:
    locks = PinLocks(["front-keys", "side-keys"], PinRules(budget_per_hour=4, budget_action="lock"))
    refuse(locks, A, T0, 2)
    refuse(locks, B, T0 + 600, 1)
    alerts = refuse(locks, B, T0 + 900, 1)
    assert alerts == [
        PinAlert(
            PIN_BUDGET_WHAT,
            "4 refused PINs within an hour at this site reached its budget. PIN entry is "
            "closed at every reader and screen (tags and cards still work).",
        )
    ]
    for place in (KEYS, SIDE, A, B, Place.screen("screen-new1")):
        assert locks.closed_for(place, T0 + 900) == 2700
    assert locks.site_closed_for(T0 + 900) == 2700
    # Nothing is evaluated meanwhile: nothing counts, not even a correct PIN.
    assert locks.refused(KEYS, T0 + 1000) == []
    assert locks.next_deadline() == T0 + 3600
    assert locks.closed_for(KEYS, T0 + 3600) == 0
    assert locks.tick(T0 + 3600) == [
        PinAlert(
            PIN_BUDGET_WHAT,
            "refused PINs fell below the site budget of 4 an hour (0 more after it was "
            "reached). PIN entry is open again.",
        )
    ]
    assert locks.closed_for(A, T0 + 3600) == 0  # A's own 1 min lockout is long over


def test_a_new_episode_after_a_missed_tick_alerts_again() -> None:
    locks = PinLocks(["front-keys"], PinRules(budget_per_hour=2))
    assert len(refuse(locks, KEYS, T0, 2)) == 1
    locks.granted(KEYS, T0)
    later = T0 + 2 * 3600  # no tick ran in between
    alerts = refuse(locks, KEYS, later, 2)
    assert [a.detail.split(" ")[0] for a in alerts] == ["refused", "2"]


def test_a_clock_stepped_back_stretches_no_lockout() -> None:
    locks = PinLocks(["front-keys"], PinRules(budget_per_hour=3))
    refuse(locks, KEYS, T0, TRIES)
    back = T0 - 86400
    assert locks.closed_for(KEYS, back) == 60  # not a day and a minute
    assert locks.closed_for(KEYS, back + 60) == 0
    # The budget's times count as the new now: its hour ends an hour after it.
    assert locks.next_deadline() == back + 3600
    site = PinLocks(["front-keys"], PinRules(budget_per_hour=3, budget_action="lock"))
    refuse(site, KEYS, T0, TRIES)
    assert site.site_closed_for(back) == 3600


def test_unknown_reader_is_our_bug() -> None:
    locks = PinLocks(["front-keys"])
    with pytest.raises(LocalError, match="not configured"):
        locks.closed_for(Place.reader("nope"), T0)


@pytest.mark.parametrize(
    ("budget", "action", "error"),
    [
        (0, "alert", "budget_per_hour must be 1 to 10000"),
        (10_001, "alert", "budget_per_hour must be 1 to 10000"),
        (True, "alert", "budget_per_hour"),
        (5, "close", "budget_action must be one of alert, lock"),
    ],
)
def test_rules_are_checked(budget: int, action: str, error: str) -> None:
    with pytest.raises(LocalError, match=error):
        PinRules(budget_per_hour=budget, budget_action=action)  # type: ignore[arg-type]


def test_place_names() -> None:
    assert str(KEYS) == "reader front-keys"
    assert str(A) == "kiosk screen screen-aaaa"
    assert str(OVERFLOW) == "new kiosk screens (overflow)"


# --- the rules against a reference model ---------------------------------------------


@dataclass
class _Model:
    """One place as the rules say it, in the plainest terms."""

    refused: int = 0
    until: float = -math.inf
    quiet_from: float = -math.inf

    def settle(self, now: float) -> None:
        if self.until <= now and now >= self.quiet_from + 3600:
            self.refused, self.until, self.quiet_from = 0, -math.inf, -math.inf

    def closed_for(self, now: float) -> float:
        self.settle(now)
        return max(self.until - now, 0.0)

    def refuse(self, now: float) -> None:
        if self.closed_for(now) > 0:
            return
        self.refused += 1
        self.quiet_from = now
        if self.refused >= 3:
            self.until = now + min(60 * 2 ** (self.refused - 3), 3600)
            self.quiet_from = self.until


PLACES = [KEYS, SIDE, A, B]


class PinMachine(RuleBasedStateMachine):
    """Four places, random refused and granted PINs and time."""

    @initialize(budget=st.integers(1, 12), lock=st.booleans())
    def start(self, budget: int, lock: bool) -> None:
        self.pin_rules = PinRules(budget_per_hour=budget, budget_action="lock" if lock else "alert")
        self.locks = PinLocks(["front-keys", "side-keys"], self.pin_rules)
        self.alone = {p: PinLocks(["front-keys", "side-keys"], BIG) for p in PLACES}
        self.models = {p: _Model() for p in PLACES}
        self.counted: list[float] = []  # times of every refused PIN that counted
        self.now = T0
        self.over = False

    def _over(self) -> bool:
        return sum(1 for t in self.counted if t > self.now - 3600) >= self.pin_rules.budget_per_hour

    def _site_closed(self) -> bool:
        return self.over and self.pin_rules.budget_action == "lock" and self._over()

    @rule(place=st.sampled_from(PLACES))
    def refused(self, place: Place) -> None:
        model = self.models[place]
        closed = model.closed_for(self.now) > 0 or self._site_closed()
        if not self._site_closed():
            self.alone[place].refused(place, self.now)
        if self.over and not self._over():
            self.over = False  # the hour ended without a tick
        alerts = self.locks.refused(place, self.now)
        if closed:
            assert alerts == [] or all(a.what == PIN_BUDGET_WHAT for a in alerts)
            return
        model.refuse(self.now)
        self.counted.append(self.now)
        kinds = [a.what for a in alerts]
        assert (PIN_LOCKOUT_WHAT in kinds) == (model.until == self.now + model.closed_for(self.now))
        if not self.over and self._over():
            self.over = True
            assert kinds[-1] == PIN_BUDGET_WHAT
            assert "reached its budget" in alerts[-1].detail
        else:
            assert all("reached its budget" not in a.detail for a in alerts)

    @rule(place=st.sampled_from(PLACES))
    def granted(self, place: Place) -> None:
        if self.models[place].closed_for(self.now) > 0 or self._site_closed():
            return  # never evaluated, so it cannot grant
        self.models[place] = _Model()
        self.locks.granted(place, self.now)
        self.alone[place].granted(place, self.now)

    @rule(dt=st.sampled_from([0.5, 1, 30, 59, 60, 61, 600, 1800, 3599, 3600, 3601, 7200]))
    def wait(self, dt: float) -> None:
        self.now += dt

    @rule()
    def tick(self) -> None:
        alerts = self.locks.tick(self.now)
        if self.over and not self._over():
            self.over = False
            assert [a.what for a in alerts] == [PIN_BUDGET_WHAT]
            assert "fell below" in alerts[0].detail
        else:
            assert alerts == []

    @invariant()
    def every_place_follows_the_rules(self) -> None:
        if not hasattr(self, "locks"):
            return
        site = self._site_closed()
        for place, model in self.models.items():
            own = model.closed_for(self.now)
            closed = self.locks.closed_for(place, self.now)
            if site:
                assert closed >= own
                assert closed > 0
            else:
                assert closed == own
            assert closed <= 3600
            # A place alone, fed only its own PINs, is closed exactly when its
            # own rules say: nothing another place does leaks into it.
            assert self.alone[place].closed_for(place, self.now) == own
        assert self.locks.held <= len(PLACES)


PinMachine.TestCase.settings = settings(stateful_step_count=60)
TestPinMachine = PinMachine.TestCase


@given(st.lists(st.integers(0, MAX_SCREENS * 3), min_size=1, max_size=300))
def test_memory_is_bounded_whatever_screen_ids_come(ids: list[int]) -> None:
    locks = PinLocks([], BIG)
    now = T0
    for i in ids:
        place = Place.screen(f"screen-{i:04d}")
        if locks.closed_for(place, now) == 0:
            locks.refused(place, now)
        now += 7
        assert locks.held <= MAX_SCREENS + 1


# --- the arithmetic in docs/operations.md ----------------------------------------------


def guesses_in_a_day(stop_after: int | None) -> int:
    """A guesser alone at one keypad for 24 h who types the moment PIN entry
    opens; with `stop_after`, they stop after that many refused PINs in a row
    and sit out the quiet hour that resets the place."""
    locks = PinLocks(["front-keys"], BIG)
    now, end, guesses, streak = T0, T0 + 86400, 0, 0
    while now < end:
        closed = locks.closed_for(KEYS, now)
        if closed > 0:
            now += closed
            continue
        if stop_after is not None and streak >= stop_after:
            now += QUIET_S
            streak = 0
            continue
        locks.refused(KEYS, now)
        guesses += 1
        streak += 1
    return guesses


def test_guesses_a_day_at_one_place_as_the_operations_guide_says() -> None:
    assert guesses_in_a_day(None) == 31  # never stopping: 1 an hour at the cap
    best = max(range(TRIES, 12), key=guesses_in_a_day)
    assert (best, guesses_in_a_day(best)) == (6, 120)  # the best a patient guesser gets


def test_lock_mode_bounds_the_site_whatever_the_places() -> None:
    """With `lock`, a guesser with every reader and a stream of invented screens
    still gets no more refused PINs than the budget each hour."""
    budget = 30
    locks = PinLocks([f"r{i}" for i in range(8)], PinRules(budget, "lock"))
    now, end, guesses, n = T0, T0 + 86400, 0, 0
    while now < end:
        place = Place.screen(f"screen-{n:06d}") if n % 2 else Place.reader(f"r{n % 8}")
        n += 1
        if locks.closed_for(place, now) == 0:
            locks.refused(place, now)
            guesses += 1
        locks.tick(now)
        now += 5
    assert guesses <= budget * 24
    assert guesses >= budget * 23  # and the lock reopens every hour


# --- controller.toml [pins] ------------------------------------------------------------

MINIMAL = """
[controller]
site = "demo"
id = "ctl1"
data_dir = "data"
key_file = "ctl1.key"
"""


def test_config_pins_default_to_an_alert_at_30_an_hour(tmp_path: Path) -> None:
    path = tmp_path / "controller.toml"
    path.write_text(MINIMAL)
    assert load_config(path).pins == PinRules(30, "alert")
    path.write_text(MINIMAL + '[pins]\nbudget_per_hour = 12\nbudget_action = "lock"\n')
    assert load_config(path).pins == PinRules(12, "lock")
    assert load_config(EXAMPLE).pins == PinRules(30, "alert")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("budget_per_hour = 0\n", "pins.budget_per_hour: must be an integer >= 1, got 0"),
        ("budget_per_hour = 10001\n", "pins.budget_per_hour: must be at most 10000, got 10001"),
        ('budget_per_hour = "30"\n', "pins.budget_per_hour: must be an integer >= 1"),
        ('budget_action = "close"\n', "pins.budget_action: must be one of 'alert', 'lock'"),
        ("budget_action = true\n", "pins.budget_action: must be str"),
        ("lockout_s = 60\n", "pins.lockout_s: is not a known setting"),
    ],
)
def test_config_pins_mistakes_are_one_clear_line(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "controller.toml"
    path.write_text(MINIMAL + "[pins]\n" + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {error}")


@given(st.lists(st.sampled_from([0, 1, 5, 30, 59, 61, 600, 1800, 3600]), min_size=1, max_size=80))
def test_one_place_gives_at_most_8_refused_pins_in_any_hour(waits: list[int]) -> None:
    """Whatever a guesser waits between tries (at one place, no correct PIN)."""
    locks = PinLocks(["front-keys"], BIG)
    now, counted = T0, []
    for wait in waits:
        now += wait
        if locks.closed_for(KEYS, now) == 0:
            locks.refused(KEYS, now)
            counted.append(now)
    for i, start in enumerate(counted):
        assert sum(1 for t in counted[i:] if t < start + 3600) <= 8
