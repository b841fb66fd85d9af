"""Court light circuits: bookings, check-in, self-activation, remote, warning.

`Lights` is a pure state machine over every wired light circuit (one circuit is
`circuit.Circuit`); docs/lights.md has the rules. Every method takes `now` and
returns plain actions (`Output`, and `light` and `debit` events as `LogEvent`s);
`next_deadline()` says when `tick(now)` must run next. The controller calls
`refresh` after every data change, `presented` after `decide` at a court reader
or kiosk, and `set_light` for the remote command.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from firmware.core.actions import FacilityAction, LogEvent, Output
from firmware.core.circuit import (
    DEFAULT_LIGHT,
    EXTENDED,
    WHY_ACTIVATION,
    WHY_BOOKING,
    WHY_CHECKIN,
    WHY_REMOTE,
    Circuit,
    CircuitWiring,
    Period,
    light_event,
    run_end,
)
from firmware.core.decide import BOOKING, GRANTED, MASTER, Decision
from firmware.core.errors import LocalError, RemoteError
from firmware.core.model import DEFAULT_SITE, Booking
from firmware.core.store import Store

MAX_REMOTE_S = 86400  # a typo in `s` must not light a court for years

# --- wiring and actions -----------------------------------------------------------------


def debit_event(member: str, light: str, amount: int, seconds: int, balance: int) -> LogEvent:
    """A `debit` event: `member` paid `amount` cents for `seconds` of `light`;
    `balance` is their effective balance after it."""
    body = {"member": member, "light": light, "amount": amount, "seconds": seconds}
    return LogEvent("debit", {**body, "balance": balance})


@dataclass(frozen=True, slots=True)
class LightStatus:
    """A read-only view of one circuit: lit or not, warning, when it goes off,
    the reason that holds (`why`, `booking`), and the running paid activation."""

    light: str
    lit: bool
    warning: bool
    until: float | None
    why: str | None
    booking: str | None
    activation_since: float | None
    activation_until: float | None


# --- the state machine ----------------------------------------------------------------


class Lights:
    """Every wired light circuit; see docs/lights.md for the rules."""

    def __init__(self, wirings: Iterable[CircuitWiring], now: float) -> None:
        self._circuits: dict[str, Circuit] = {}
        for w in wirings:
            if w.id in self._circuits:
                raise LocalError(f"light {w.id!r} is wired twice")
            self._circuits[w.id] = Circuit(w, f"light:{w.id}", f"warn:{w.id}")
        self._now = now
        self._checkin_before_s = DEFAULT_SITE.checkin_before_s
        # Booking id -> booking, for the bookings of wired lights still to come.
        self._bookings: dict[str, Booking] = {}
        # Booking id -> when it was checked in (the whole booking, every light).
        self._checkins: dict[str, float] = {}
        # (light id, booking id) -> when a remote off suppressed that booking there.
        self._suppressed: dict[tuple[str, str], float] = {}

    # --- inputs -------------------------------------------------------------------

    def power_on(self) -> list[FacilityAction]:
        """Every output off: the safe state at boot, before any data is known."""
        actions: list[FacilityAction] = []
        for c in self._circuits.values():
            c.lit = False
            c.top = None
            c.warned_for = None
            c.flash_until = None
            c.light_out = False
            actions.append(Output(c.light_name, False))
            if c.wiring.warn_output:
                c.warn_out = False
                actions.append(Output(c.warn_name, False))
            # Anything that should be lit already is due at once.
            c.deadline = c.next_deadline(c.periods(), self._now)
        return actions

    def refresh(self, store: Store, now: float) -> list[FacilityAction]:
        """Take the store's lights, bookings and site as they are now; call after
        every data change. Changes take effect at once (see docs/lights.md)."""
        self._now = now
        actions: list[FacilityAction] = []
        for c in self._circuits.values():
            actions += c.step(now)  # finish what was due on the old data first
        self._checkin_before_s = store.site.checkin_before_s
        for c in self._circuits.values():
            c.record = store.lights.get(c.id)
            lag = c.record.lag_s if c.record is not None else 0
            booked = store.bookings_by_light.get(c.id)
            if c.record is None or not booked:
                c.booked = []
            else:
                c.booked = [b for b in booked.values() if b.end + lag > now]
        self._forget_old()
        for c in self._circuits.values():
            c.bookings = self._booking_periods(c)
            actions += c.step(now, off_why=c.top)
        return actions

    def presented(
        self,
        light_id: str,
        decision: Decision,
        now: float,
        effective_credit: int,
        *,
        blocks: int = 1,
    ) -> list[FacilityAction]:
        """After `decide` granted a credential at light `light_id` (a court reader,
        or the kiosk naming one of the booking's lights): reason ``booking`` checks
        the booking in, ``granted`` self-activates (or extends) and pays from
        `effective_credit`, ``master`` activates for free. `blocks` (the kiosk)
        buys that many blocks at once: one debit of price x blocks, all or nothing.
        Returns [] when nothing changes (refused, denied, or a light not wired here)."""
        self._now = now
        if not decision.granted:
            return []
        if decision.reason == BOOKING:
            # For the booking, not the reader: any of its lights will do.
            return self._check_in(decision.booking, now)
        c = self._circuits.get(light_id)
        if c is not None and decision.reason in (GRANTED, MASTER) and blocks >= 1:
            return self._activate(c, decision, now, effective_credit, blocks)
        return []

    def set_light(
        self, light_id: str, on: bool, s: float | None, now: float
    ) -> list[FacilityAction]:
        """The `set_light` command: on for `s` seconds, or off now (ends remote and
        activation periods and suppresses the booking periods holding now).
        Raises `RemoteError` for an unknown light or a bad `s`."""
        self._now = now
        c = self._circuits.get(light_id)
        if c is None:
            raise RemoteError(f"no light {light_id!r} on this controller")
        if on and not (
            isinstance(s, int | float)
            and not isinstance(s, bool)
            and math.isfinite(s)
            and 0 < s <= MAX_REMOTE_S
        ):
            raise RemoteError(f"set_light on needs s between 0 and {MAX_REMOTE_S} seconds")
        actions = c.step(now)
        if on:
            assert s is not None
            c.remote = Period(now, now + s, WHY_REMOTE)
            return actions + c.step(now)
        c.remote = None
        c.activation = None
        for p in c.bookings:
            if p.booking is not None and p.start <= now < p.end:
                self._suppressed[(c.id, p.booking)] = now
        c.bookings = self._booking_periods(c)
        return actions + c.step(now, off_why=Period(now, now, WHY_REMOTE))

    def tick(self, now: float) -> list[FacilityAction]:
        """Time passed: switch, warn and flash whatever is due by `now`."""
        self._now = now
        actions: list[FacilityAction] = []
        for c in self._circuits.values():
            actions += c.step(now)
        self._forget_old()
        return actions

    def next_deadline(self) -> float | None:
        """The earliest time `tick` has something to do; None when nothing is due."""
        times = [c.deadline for c in self._circuits.values() if c.deadline is not None]
        return min(times) if times else None

    def is_on(self, light_id: str) -> bool:
        """True while the circuit is lit for a reason (also during a warning flash)."""
        return self._circuits[light_id].lit

    @property
    def ids(self) -> tuple[str, ...]:
        """The wired light ids, in config order."""
        return tuple(self._circuits)

    def status(self, light_id: str) -> LightStatus:
        """What circuit `light_id` shows now (for the kiosk board)."""
        c = self._circuits[light_id]
        top = c.top if c.lit else None
        act = c.activation if c.activation is not None and c.activation.end > self._now else None
        return LightStatus(
            c.id,
            c.lit,
            c.lit and c.warned_for is not None,
            c.off_at if c.lit else None,
            top.why if top is not None else None,
            top.booking if top is not None else None,
            act.start if act is not None else None,
            act.end if act is not None else None,
        )

    def checked_in(self, booking_id: str) -> bool:
        """True once booking `booking_id` is checked in (and the check-in still holds)."""
        booking = self._bookings.get(booking_id)
        at = self._checkins.get(booking_id)
        return booking is not None and at is not None and self._checkin_valid(booking, at)

    def checkin_window(self, booking: Booking) -> tuple[float, float]:
        """When `booking` can be checked in: [start - checkin_before_s, end)."""
        return (booking.start - self._checkin_before_s, float(booking.end))

    # --- check-in and activation ----------------------------------------------------

    def _checkin_valid(self, booking: Booking, at: float) -> bool:
        return booking.start - self._checkin_before_s <= at < booking.end

    def _check_in(self, booking_id: str | None, now: float) -> list[FacilityAction]:
        booking = self._bookings.get(booking_id) if booking_id is not None else None
        if booking is None:
            return []
        # The booking's member or PIN is here: a remote off no longer holds for it.
        for light in booking.lights:
            self._suppressed.pop((light, booking.id), None)
        if self._checkin_valid(booking, now):
            old = self._checkins.get(booking.id)
            if old is None or not self._checkin_valid(booking, old):
                self._checkins[booking.id] = now
        actions: list[FacilityAction] = []
        for light in booking.lights:
            c = self._circuits.get(light)
            if c is not None:
                actions += c.step(now)
                c.bookings = self._booking_periods(c)
                actions += c.step(now)
        return actions

    def _activate(
        self, c: Circuit, decision: Decision, now: float, credit: int, blocks: int = 1
    ) -> list[FacilityAction]:
        actions = c.step(now)  # an activation that just ran out is over
        free = decision.reason == MASTER
        light = c.record if c.record is not None else (DEFAULT_LIGHT if free else None)
        member = decision.member
        if light is None or (not free and member is None):
            return actions
        price = 0 if free else light.price * blocks
        if credit < price:
            return actions
        act = c.activation
        if act is not None and act.end <= now:
            act = None  # ran out (maybe unnoticed, inside a longer lit run): start afresh
        bought = light.block_s * blocks
        if act is None:
            new = Period(now, now + bought, WHY_ACTIVATION, member)
        else:
            new = Period(act.start, act.end + bought, WHY_ACTIVATION, act.member)
        if new.end - new.start > light.max_s:
            return actions
        before = run_end(c.periods(), now)
        c.activation, old = new, act
        after = run_end(c.periods(), now)
        if before is not None and after is not None and after <= before:
            c.activation = old  # lit at least as long anyway: no time to sell
            return actions
        if price > 0 and member is not None:
            actions.append(debit_event(member, c.id, price, bought, credit - price))
        was_lit = c.lit
        actions += c.step(now)
        if was_lit:
            actions.append(light_event(c.id, EXTENDED, WHY_ACTIVATION, member, None, c.off_at))
        return actions

    # --- the circuit ---------------------------------------------------------------

    def _booking_periods(self, c: Circuit) -> list[Period]:
        light = c.record
        if light is None:
            return []
        periods = []
        for b in c.booked:
            start: float = b.start - light.lead_s
            end: float = b.end + light.lag_s
            why = WHY_BOOKING
            if light.checkin:
                at = self._checkins.get(b.id)
                if at is None or not self._checkin_valid(b, at):
                    continue
                start = max(start, at)
                why = WHY_CHECKIN
            off = self._suppressed.get((c.id, b.id))
            if off is not None and start <= off < end:
                end = off
            if end > start:
                periods.append(Period(start, end, why, b.member, b.id))
        return periods

    def _forget_old(self) -> None:
        """Drop what can no longer light anything: bookings past their lag, ended
        activations and remote periods, and check-ins or suppressions of bookings
        that are gone. Keeps memory flat on a controller that runs for years."""
        now = self._now
        bookings: dict[str, Booking] = {}
        for c in self._circuits.values():
            # Only periods already over go: a lit run's last reasons end later
            # than now, so the `off` event can still name them.
            lag = c.record.lag_s if c.record is not None else 0
            if any(b.end + lag <= now for b in c.booked):
                c.booked = [b for b in c.booked if b.end + lag > now]
                c.bookings = [p for p in c.bookings if p.end > now]
            if c.activation is not None and c.activation.end <= now:
                c.activation = None
            if c.remote is not None and c.remote.end <= now:
                c.remote = None
        for c in self._circuits.values():
            for b in c.booked:
                bookings[b.id] = b
        self._bookings = bookings
        for bid in [bid for bid in self._checkins if bid not in bookings]:
            del self._checkins[bid]
        for key in [key for key in self._suppressed if key[1] not in bookings]:
            del self._suppressed[key]
