"""PIN lockouts: where refused PINs close PIN entry, for how long, and the site's budget.

Pure like the rest of the core: no I/O, no threads, no clock reads; every method
takes `now` (Unix seconds). docs/operations.md "PIN lockouts" has the rules and the
guessing arithmetic for a club.

Places
    A *place* is where a PIN is typed: a reader (`Place.reader(id)`: a keypad at a
    door, a court or the kiosk) or one kiosk screen's on-screen keypad
    (`Place.screen(id)`). Each place counts on its own: refused PINs at one place
    never close PIN entry at another (only the site budget in `lock` mode does).

At a place
    - Every PIN that is evaluated and neither grants nor signs a member in is
      *refused* (`refused`): unknown, expired, inactive, not yet valid, outside
      the schedule, no access, a booking PIN outside its time or at the kiosk.
    - The `TRIES`-th refused PIN in a row closes PIN entry there for 1 min; every
      refused PIN after that closes it twice as long as the one before, capped at
      1 h: 1, 2, 4, 8, 16, 32, 60, 60, ... minutes.
    - While a place is closed its PINs are not evaluated and count for nothing:
      hammering a closed keypad neither stretches the lockout nor spends the
      budget. The caller refuses them with reason `pin_lockout`.
    - A PIN that grants (`granted`) resets the place, and so does a quiet hour:
      an hour without a refused PIN, counted from the later of the last refused
      PIN and the end of the last lockout (so sitting out a 1 h lockout is not
      itself the quiet hour).

The site budget
    Every refused PIN also counts towards the site's `budget_per_hour`, over a
    sliding hour. The refused PIN that reaches it raises a `pin_budget` alert;
    when the hour's count falls below the budget again, a second one says so.
    With `budget_action = "lock"`, PIN entry is closed at every place while the
    budget is reached. Tags and cards never come here, so they keep working. No
    PIN is evaluated during the lock, so it ends at the latest an hour after the
    refused PIN that reached the budget.

Kiosk screens
    A screen's id comes from the screen itself (the page makes one up), so a
    client can invent new ids to get fresh places. Against that, a screen's state
    outlives the screen (a reload or a reconnect finds it again) until its quiet
    hour, and at most `MAX_SCREENS` screens hold a state of their own: a screen
    that needs one while all are taken counts on one shared overflow place
    (`OVERFLOW`), which a correct PIN does not reset. A clean state is never kept.

Clock
    If the clock steps back, a lockout never lasts longer than its length from
    the new `now`, and times from "the future" count as now.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from firmware.core.errors import LocalError

TRIES = 3  # the third refused PIN in a row closes a place: two typos are free
FIRST_LOCK_S = 60.0
MAX_LOCK_S = 3600.0
QUIET_S = 3600.0
BUDGET_WINDOW_S = 3600.0
DEFAULT_BUDGET = 30
MAX_BUDGET = 10_000  # bounds the budget's memory: one float per refused PIN counted
MAX_SCREENS = 32  # screens holding a state of their own (twice the kiosk's screen limit)
BUDGET_ACTIONS = ("alert", "lock")

PIN_LOCKOUT_WHAT = "pin_lockout"
PIN_BUDGET_WHAT = "pin_budget"


@dataclass(frozen=True, slots=True)
class PinRules:
    """The site's choices, from controller.toml `[pins]`: how many refused PINs
    an hour the whole site tolerates before it raises an alert, and whether
    reaching that budget also closes PIN entry everywhere (`lock`)."""

    budget_per_hour: int = DEFAULT_BUDGET
    budget_action: Literal["alert", "lock"] = "alert"

    def __post_init__(self) -> None:
        if type(self.budget_per_hour) is not int or not 1 <= self.budget_per_hour <= MAX_BUDGET:
            raise LocalError(f"pin budget_per_hour must be 1 to {MAX_BUDGET}")
        if self.budget_action not in BUDGET_ACTIONS:
            raise LocalError(f"pin budget_action must be one of {', '.join(BUDGET_ACTIONS)}")


@dataclass(frozen=True, slots=True)
class Place:
    """Where a PIN was typed: a reader, or one kiosk screen's keypad."""

    kind: Literal["reader", "screen"]
    id: str

    @classmethod
    def reader(cls, id: str) -> Place:
        return cls("reader", id)

    @classmethod
    def screen(cls, id: str) -> Place:
        return cls("screen", id)

    def __str__(self) -> str:
        if self == OVERFLOW:
            return "new kiosk screens (overflow)"
        return f"{'reader' if self.kind == 'reader' else 'kiosk screen'} {self.id}"


OVERFLOW = Place("screen", "*")
"""The place of screens that need a state while `MAX_SCREENS` others hold one
(no real screen id is `*`: the kiosk server takes 8 to 64 of A-Z a-z 0-9 _ -)."""


@dataclass(frozen=True, slots=True)
class PinAlert:
    """A `system` event for the log: `what` is `pin_lockout` (a place closed) or
    `pin_budget` (the site budget reached, or left)."""

    what: str
    detail: str


@dataclass(slots=True)
class _State:
    refused: int = 0  # refused PINs in a row
    until: float = -math.inf  # PIN entry closed until
    lock_s: float = 0.0  # length of the lockout `until` ends
    quiet_from: float = -math.inf  # the later of the last refused PIN and `until`


def lock_s(refused: int) -> float:
    """How long the `refused`-th refused PIN in a row closes its place (0: not)."""
    if refused < TRIES:
        return 0.0
    # The exponent is capped so a long run never builds a huge integer.
    doublings: int = min(refused - TRIES, 16)
    return min(FIRST_LOCK_S * (1 << doublings), MAX_LOCK_S)


class PinLocks:
    """The lockout state of every place of one controller, and the site budget.

    Ask `closed_for` before evaluating a PIN; report an evaluated PIN with
    `granted` or `refused`. Call `tick` at `next_deadline()`.
    """

    def __init__(self, readers: Iterable[str], rules: PinRules | None = None) -> None:
        """`readers`: the configured reader ids (the only reader places)."""
        self.rules = rules if rules is not None else PinRules()
        self._readers = frozenset(readers)
        self._states: dict[Place, _State] = {}  # places with refused PINs only
        self._screens = 0  # screen states held (the overflow not counted)
        # The last `budget` refused PINs: the budget is reached while the oldest
        # of them is less than an hour old.
        self._budget: deque[float] = deque(maxlen=self.rules.budget_per_hour)
        self._over = False
        self._over_count = 0  # refused PINs since the budget was reached

    # --- asking ---------------------------------------------------------------------

    def closed_for(self, place: Place, now: float) -> float:
        """Seconds from `now` that PIN entry at `place` stays closed; 0 when open."""
        self._clock(now)
        state = self._states.get(self._key(place, now))
        own = state.until - now if state is not None and state.until > now else 0.0
        return max(own, self.site_closed_for(now))

    def site_closed_for(self, now: float) -> float:
        """Seconds from `now` that the budget keeps PIN entry closed everywhere
        (`lock` mode only); 0 when it does not."""
        self._clock(now)
        if not self._over or self.rules.budget_action != "lock":
            return 0.0
        return max(self._budget[0] + BUDGET_WINDOW_S - now, 0.0)

    @property
    def held(self) -> int:
        """Places holding a state (memory: at most readers + `MAX_SCREENS` + 1)."""
        return len(self._states)

    # --- telling --------------------------------------------------------------------

    def refused(self, place: Place, now: float) -> list[PinAlert]:
        """A PIN evaluated at `place` neither granted nor signed in.

        Ignored while `place` is closed: such PINs are never evaluated."""
        if self.closed_for(place, now) > 0:
            return []
        alerts = self._settle(now)
        key = self._key(place, now)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
            if key.kind == "screen" and key != OVERFLOW:
                self._screens += 1
        state.refused += 1
        state.quiet_from = now
        lock = lock_s(state.refused)
        if lock > 0:
            state.until = now + lock
            state.lock_s = lock
            state.quiet_from = state.until
            minutes = f"{lock / 60:g} min"
            alerts.append(
                PinAlert(
                    PIN_LOCKOUT_WHAT,
                    f"{key}: PIN entry closed for {minutes} after {state.refused} refused "
                    "PINs in a row",
                )
            )
        return alerts + self._count(now)

    def granted(self, place: Place, now: float) -> None:
        """A PIN at `place` granted or signed a member in: the place starts afresh.

        The shared overflow place is not reset: one member's PIN must not clear
        it for everyone else behind it."""
        self._clock(now)
        key = self._key(place, now)
        if key != OVERFLOW:
            self._forget(key)

    # --- time -----------------------------------------------------------------------

    def tick(self, now: float) -> list[PinAlert]:
        """The budget's hour moves on (it may be left); quiet places are forgotten."""
        self._clock(now)
        for key in [k for k, s in self._states.items() if self._quiet(s, now)]:
            self._forget(key)
        return self._settle(now)

    def next_deadline(self) -> float | None:
        """When `tick` next has something to say (the budget's hour ending)."""
        if self._over and self._budget:
            return self._budget[0] + BUDGET_WINDOW_S
        return None

    # --- inside ---------------------------------------------------------------------

    def _key(self, place: Place, now: float) -> Place:
        """The state `place` counts on (a screen may count on the overflow)."""
        if place.kind == "reader":
            if place.id not in self._readers:
                raise LocalError(f"PIN lockouts: reader {place.id!r} is not configured")
            key = place
        elif place in self._states or place == OVERFLOW:
            key = place
        elif self._screens < MAX_SCREENS:
            return place  # clean: a state is made at its first refused PIN
        else:
            # Full: a screen state whose quiet hour passed makes room first.
            for k in [k for k, s in self._states.items() if k.kind == "screen"]:
                if k != OVERFLOW and self._quiet(self._states[k], now):
                    self._forget(k)
            return place if self._screens < MAX_SCREENS else OVERFLOW
        state = self._states.get(key)
        if state is not None and self._quiet(state, now):
            self._forget(key)
        return key

    @staticmethod
    def _quiet(state: _State, now: float) -> bool:
        return state.until <= now and now >= state.quiet_from + QUIET_S

    def _forget(self, key: Place) -> None:
        if self._states.pop(key, None) is not None and key.kind == "screen" and key != OVERFLOW:
            self._screens -= 1

    def _settle(self, now: float) -> list[PinAlert]:
        """End a budget episode whose hour has passed."""
        if not self._over:
            return []
        budget = self.rules.budget_per_hour
        if len(self._budget) == budget and self._budget[0] > now - BUDGET_WINDOW_S:
            return []
        self._over = False
        count, self._over_count = self._over_count, 0
        opened = " PIN entry is open again." if self.rules.budget_action == "lock" else ""
        return [
            PinAlert(
                PIN_BUDGET_WHAT,
                f"refused PINs fell below the site budget of {budget} an hour "
                f"({count} more after it was reached).{opened}",
            )
        ]

    def _count(self, now: float) -> list[PinAlert]:
        """Count one refused PIN towards the site budget."""
        self._budget.append(now)
        if self._over:
            self._over_count += 1
            return []
        budget = self.rules.budget_per_hour
        if len(self._budget) < budget or self._budget[0] <= now - BUDGET_WINDOW_S:
            return []
        self._over = True
        self._over_count = 0
        if self.rules.budget_action == "lock":
            then = "PIN entry is closed at every reader and screen (tags and cards still work)."
        else:
            then = "Someone may be guessing PINs."
        return [
            PinAlert(
                PIN_BUDGET_WHAT,
                f"{budget} refused PINs within an hour at this site reached its budget. {then}",
            )
        ]

    def _clock(self, now: float) -> None:
        """A clock stepped back shortens nothing unfairly and stretches nothing."""
        if self._budget and self._budget[-1] > now:
            stepped = [min(t, now) for t in self._budget]
            self._budget.clear()
            self._budget.extend(stepped)
        for state in self._states.values():
            if state.until > now + state.lock_s:
                state.until = now + state.lock_s
            if state.quiet_from > max(now, state.until):
                state.quiet_from = max(now, state.until)
