"""Court light circuits: bookings, check-in, self-activation, remote, warning.

`Lights` is a pure state machine over every wired light circuit, shaped like the
rest of the core: no I/O, no clock reads. Every method takes `now` and returns
plain actions (`Output`, and `light` and `debit` events as `LogEvent`s); `next_deadline()` says when
`tick(now)` must run next. The controller calls `refresh` after every data
change, `presented` after `decide` at a court reader or kiosk, and `set_light`
for the remote command.

How a circuit works: it has *reasons*, each a half-open lit period [start, end):

- ``booking``: a booking of the light lights it from ``start - lead_s`` to
  ``end + lag_s``.
- ``checkin``: the same period on a light with ``checkin: true``, but only from
  the moment the booking is checked in.
- ``activation``: a member's paid self-activation, in blocks of ``block_s``.
- ``remote``: the ``set_light`` command, on for ``s`` seconds.

The circuit is on while any reason holds. Periods that overlap or touch (one
ends at the very second the next begins) form one lit run, so back-to-back
bookings light the court without a gap, and there is one warning, ``warn_s``
before the run really ends.

Choices made (the issue leaves them open):

- **Priority of `why`.** Events name the reason that holds, by priority
  booking > checkin > activation > remote (a booked court is lit because of the
  booking even if someone also paid). Among equal reasons the one lasting longest
  wins. An ``off`` event names the reason that held to the end; a remote off says
  ``remote``; an off caused by a data change names the reason that held before it.
  ``until`` is when the circuit will go off (the whole lit run); ``None`` on ``off``.
- **Warning.** ``warn_s`` before the real off moment: with a warn output, that
  output is on from then until the circuit goes off; without one, the circuit is
  switched off for ``flash_s`` then on again. A run shorter than ``warn_s`` is
  warned as it comes on (the warn output comes on with the light; a flashing
  circuit does not flash at the instant it switches on, which would tell nobody
  anything). When the off moment moves later (extension, new booking, remote on)
  the warning is withdrawn (warn output off, flash cut short) and given again
  before the new moment. ``warn_s: 0`` means no warning.
- **Data changes take effect at once.** A booking cancelled or moved so that its
  period no longer holds switches the circuit off at once, with no warning, if no
  other reason holds: never on past its reason. A booking added whose period
  already started switches on at once.
- **Check-in** is for the whole booking: the booking's member or PIN (decision
  reason ``booking``) at any court reader of the booking, or at the kiosk with
  any of its lights, from ``checkin_before_s`` before ``start`` until ``end``.
  Earlier or later it is refused (no actions). It unlocks the booking's usual
  period, so a check-in before ``start - lead_s`` lights the court at
  ``start - lead_s``, a later one at once. A check-in stays valid when the booking
  is moved only if its moment still lies in the moved booking's check-in window.
- **Self-activation** (decision reason ``granted``): needs the light's record and
  effective credit >= ``price``. The first grant lights ``[now, now + block_s)``;
  a grant while the activation runs adds ``block_s`` to its end. The whole
  activation (first block to last) never exceeds ``max_s``; a grant beyond is
  refused, and a light with ``block_s > max_s`` cannot be self-activated. A grant
  that would not make the circuit go off any later (a booking or remote period
  already lights it longer) is refused too: no time, no debit. Each grant with
  ``price > 0`` emits one ``debit`` event; free lights emit none. A grant on a circuit
  that is already lit emits ``extended``. A master credential (reason
  ``master``) grants a free block the same way, also with no light record (then
  the protocol's default timings apply).
- **Remote.** ``set_light(on=True, s)`` lights the circuit for ``s`` seconds
  (0 < s <= 1 day), replacing an earlier remote period (so it can also shorten
  it). ``set_light(on=False)`` switches off now, with no warning: it ends the
  remote period and any activation (no refund: the hub sees the ``off`` event
  with ``why: remote`` and can credit the member), and suppresses the booking
  periods that hold at that moment. A suppressed booking lights again only if its
  member or PIN is presented at a reader again (someone is there after all);
  other bookings light as usual. An unknown light raises `RemoteError`.
- **Missing records.** A booking of a light whose record is missing does not
  light it (fail closed); remote and master use the protocol's default timings.
  Lights that are not wired here are ignored by `presented` and `refresh`.
- **Action order** in one result: the ``debit`` event first (the payment
  precedes the time it buys), then the ``Output``s, then the ``light`` events.
- `power_on()` is meant for boot: every output off, before the first `refresh`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from firmware.core.actions import FacilityAction, LogEvent, Output
from firmware.core.decide import BOOKING, GRANTED, MASTER, Decision
from firmware.core.errors import LocalError, RemoteError
from firmware.core.model import DEFAULT_SITE, Booking, Light
from firmware.core.store import Store

# The `light` event's `what` and `why` values (PROTOCOL.md s5).
ON = "on"
WARN = "warn"
OFF = "off"
EXTENDED = "extended"
WHY_BOOKING = "booking"
WHY_CHECKIN = "checkin"
WHY_ACTIVATION = "activation"
WHY_REMOTE = "remote"
_RANK = {WHY_BOOKING: 0, WHY_CHECKIN: 1, WHY_ACTIVATION: 2, WHY_REMOTE: 3}

MAX_REMOTE_S = 86400  # a typo in `s` must not light a court for years

# The protocol's defaults (PROTOCOL.md s3), for remote and master use of a light
# the dataset does not describe (yet).
DEFAULT_LIGHT = Light("", "", 300, 300, 300, False, 0, 1800, 7200, None, None, 0)


# --- wiring and actions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CircuitWiring:
    """One light circuit from the local config: its id (the hub's light record id),
    whether it has a separate warn output, and how long the warning flash keeps the
    circuit off when it has none."""

    id: str
    warn_output: bool
    flash_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.id:
            raise LocalError("a light circuit needs an id")
        if not (math.isfinite(self.flash_s) and self.flash_s > 0):
            raise LocalError(f"light {self.id!r}: flash_s must be a positive number of seconds")


def light_event(
    light: str, what: str, why: str, member: str | None, booking: str | None, until: float | None
) -> LogEvent:
    """A `light` event for the log (PROTOCOL.md s5). `until` is when the circuit
    is due to go off (rounded up to the second), None on `off`."""
    body = {
        "light": light,
        "what": what,
        "why": why,
        "member": member,
        "booking": booking,
        "until": math.ceil(until) if until is not None else None,
    }
    return LogEvent("light", body)


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


# --- internal state -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Period:
    """One reason to be lit, over [start, end)."""

    start: float
    end: float
    why: str
    member: str | None = None
    booking: str | None = None


def _priority(p: _Period) -> tuple[int, float, float, str]:
    """Sort key: the reason an event names comes first."""
    return (_RANK[p.why], -p.end, p.start, p.booking or "")


def _run_end(periods: list[_Period], now: float) -> float | None:
    """When the lit run holding at `now` ends, following every period that
    overlaps or touches it; None when nothing holds. `periods` sorted by start."""
    end: float | None = None
    for p in periods:
        if end is None:
            if p.start <= now < p.end:
                end = p.end
        elif p.start <= end:
            end = max(end, p.end)
        if p.start > now and (end is None or p.start > end):
            break
    return end


@dataclass(slots=True, eq=False)
class _Circuit:
    """One circuit: the data and reasons it lights for, and what it shows now."""

    wiring: CircuitWiring
    light_name: str
    warn_name: str
    record: Light | None = None
    booked: list[Booking] = field(default_factory=list)
    bookings: list[_Period] = field(default_factory=list)
    activation: _Period | None = None
    remote: _Period | None = None
    # What the circuit is doing, as the outside sees it.
    lit: bool = False
    on_since: float = 0.0
    off_at: float = 0.0
    top: _Period | None = None
    warned_for: float | None = None  # the off moment the current warning announces
    flash_until: float | None = None
    # Last value driven on each output; None = unknown (before power_on).
    light_out: bool | None = None
    warn_out: bool | None = None
    deadline: float | None = None

    @property
    def id(self) -> str:
        return self.wiring.id

    @property
    def warn_s(self) -> int:
        return (self.record or DEFAULT_LIGHT).warn_s

    def periods(self) -> list[_Period]:
        periods = list(self.bookings)
        if self.activation is not None:
            periods.append(self.activation)
        if self.remote is not None:
            periods.append(self.remote)
        periods.sort(key=lambda p: p.start)
        return periods


# --- the state machine ----------------------------------------------------------------


class Lights:
    """Every wired light circuit; see the module docstring for the rules."""

    def __init__(self, wirings: Iterable[CircuitWiring], now: float) -> None:
        self._circuits: dict[str, _Circuit] = {}
        for w in wirings:
            if w.id in self._circuits:
                raise LocalError(f"light {w.id!r} is wired twice")
            self._circuits[w.id] = _Circuit(w, f"light:{w.id}", f"warn:{w.id}")
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
            c.deadline = self._deadline(c, c.periods(), self._now)
        return actions

    def refresh(self, store: Store, now: float) -> list[FacilityAction]:
        """Take the store's lights, bookings and site as they are now; call after
        every data change. Changes take effect at once (see the module docstring)."""
        self._now = now
        actions: list[FacilityAction] = []
        for c in self._circuits.values():
            actions += self._step(c, now)  # finish what was due on the old data first
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
            actions += self._step(c, now, off_why=c.top)
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
        actions = self._step(c, now)
        if on:
            assert s is not None
            c.remote = _Period(now, now + s, WHY_REMOTE)
            return actions + self._step(c, now)
        c.remote = None
        c.activation = None
        for p in c.bookings:
            if p.booking is not None and p.start <= now < p.end:
                self._suppressed[(c.id, p.booking)] = now
        c.bookings = self._booking_periods(c)
        return actions + self._step(c, now, off_why=_Period(now, now, WHY_REMOTE))

    def tick(self, now: float) -> list[FacilityAction]:
        """Time passed: switch, warn and flash whatever is due by `now`."""
        self._now = now
        actions: list[FacilityAction] = []
        for c in self._circuits.values():
            actions += self._step(c, now)
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
                actions += self._step(c, now)
                c.bookings = self._booking_periods(c)
                actions += self._step(c, now)
        return actions

    def _activate(
        self, c: _Circuit, decision: Decision, now: float, credit: int, blocks: int = 1
    ) -> list[FacilityAction]:
        actions = self._step(c, now)  # an activation that just ran out is over
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
            new = _Period(now, now + bought, WHY_ACTIVATION, member)
        else:
            new = _Period(act.start, act.end + bought, WHY_ACTIVATION, act.member)
        if new.end - new.start > light.max_s:
            return actions
        before = _run_end(c.periods(), now)
        c.activation, old = new, act
        after = _run_end(c.periods(), now)
        if before is not None and after is not None and after <= before:
            c.activation = old  # lit at least as long anyway: no time to sell
            return actions
        if price > 0 and member is not None:
            actions.append(debit_event(member, c.id, price, bought, credit - price))
        was_lit = c.lit
        actions += self._step(c, now)
        if was_lit:
            actions.append(light_event(c.id, EXTENDED, WHY_ACTIVATION, member, None, c.off_at))
        return actions

    # --- the circuit ---------------------------------------------------------------

    def _booking_periods(self, c: _Circuit) -> list[_Period]:
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
                periods.append(_Period(start, end, why, b.member, b.id))
        return periods

    def _step(
        self, c: _Circuit, now: float, *, off_why: _Period | None = None
    ) -> list[FacilityAction]:
        """Bring circuit `c` to what its reasons say at `now`; `off_why` names the
        cause if it goes off early (a data change or a remote off)."""
        events: list[FacilityAction] = []
        periods = c.periods()
        holding = [p for p in periods if p.start <= now < p.end]
        if holding:
            off_at = _run_end(periods, now)
            assert off_at is not None
            top = min(holding, key=_priority)
            if not c.lit:
                c.lit = True
                c.on_since = now
                c.warned_for = None
                c.flash_until = None
                events.append(light_event(c.id, ON, top.why, top.member, top.booking, off_at))
            c.top = top
            c.off_at = off_at
            if c.warned_for is not None and off_at > c.warned_for:
                # The circuit now stays on longer: that warning was wrong.
                c.warned_for = None
                c.flash_until = None
            elif c.warned_for is not None:
                c.warned_for = off_at
            warn_s = c.warn_s
            if c.warned_for is None and warn_s > 0 and now >= off_at - warn_s:
                c.warned_for = off_at
                events.append(light_event(c.id, WARN, top.why, top.member, top.booking, off_at))
                if not c.wiring.warn_output and now > c.on_since:
                    c.flash_until = min(now + c.wiring.flash_s, off_at)
            if c.flash_until is not None and now >= c.flash_until:
                c.flash_until = None
        elif c.lit:
            why = off_why
            if why is None:
                # A natural end: the reasons that held to the last second.
                ended = [p for p in periods if p.end == c.off_at]
                why = min(ended, key=_priority) if ended else c.top
            assert why is not None  # `top` is set whenever the circuit is lit
            c.lit = False
            c.top = None
            c.warned_for = None
            c.flash_until = None
            events.append(light_event(c.id, OFF, why.why, why.member, why.booking, None))
        outputs = self._drive(c)
        c.deadline = self._deadline(c, periods, now)
        return outputs + events

    def _drive(self, c: _Circuit) -> list[FacilityAction]:
        """The output changes the circuit's state calls for, and nothing else."""
        out: list[FacilityAction] = []
        want_light = c.lit and c.flash_until is None
        if c.light_out != want_light:
            c.light_out = want_light
            out.append(Output(c.light_name, want_light))
        if c.wiring.warn_output:
            want_warn = c.lit and c.warned_for is not None
            if c.warn_out != want_warn:
                c.warn_out = want_warn
                out.append(Output(c.warn_name, want_warn))
        return out

    def _deadline(self, c: _Circuit, periods: list[_Period], now: float) -> float | None:
        if c.lit:
            times = [c.off_at]
            if c.warned_for is None and c.warn_s > 0:
                times.append(c.off_at - c.warn_s)
            if c.flash_until is not None:
                times.append(c.flash_until)
            return min(times)
        starts = [p.start for p in periods if p.end > now]
        return max(min(starts), now) if starts else None

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
