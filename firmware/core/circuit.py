"""One court light circuit: the periods it is lit for, and how it follows them
(switch, warn, flash, off), with the `light` events that say so. docs/lights.md
has the rules; `lights.Lights` keeps every circuit, the check-ins and the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from firmware.core.actions import FacilityAction, LogEvent, Output
from firmware.core.errors import LocalError
from firmware.core.model import Booking, Light

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

# The protocol's defaults (PROTOCOL.md s3), for remote and master use of a light
# the dataset does not describe (yet).
DEFAULT_LIGHT = Light("", "", 300, 300, 300, False, 0, 1800, 7200, None, None, 0)


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


@dataclass(frozen=True, slots=True)
class Period:
    """One reason to be lit, over [start, end): `why` with the member or booking."""

    start: float
    end: float
    why: str
    member: str | None = None
    booking: str | None = None


def priority(p: Period) -> tuple[int, float, float, str]:
    """Sort key: the reason an event names comes first."""
    return (_RANK[p.why], -p.end, p.start, p.booking or "")


def run_end(periods: list[Period], now: float) -> float | None:
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
class Circuit:
    """One circuit: the data and reasons it lights for, and what it shows now."""

    wiring: CircuitWiring
    light_name: str
    warn_name: str
    record: Light | None = None
    booked: list[Booking] = field(default_factory=list)
    bookings: list[Period] = field(default_factory=list)
    activation: Period | None = None
    remote: Period | None = None
    # What the circuit is doing, as the outside sees it.
    lit: bool = False
    on_since: float = 0.0
    off_at: float = 0.0
    top: Period | None = None
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

    def periods(self) -> list[Period]:
        periods = list(self.bookings)
        if self.activation is not None:
            periods.append(self.activation)
        if self.remote is not None:
            periods.append(self.remote)
        periods.sort(key=lambda p: p.start)
        return periods

    def step(self, now: float, *, off_why: Period | None = None) -> list[FacilityAction]:
        """Bring the circuit to what its reasons say at `now`; `off_why` names the
        cause if it goes off early (a data change or a remote off)."""
        events: list[FacilityAction] = []
        periods = self.periods()
        holding = [p for p in periods if p.start <= now < p.end]
        if holding:
            off_at = run_end(periods, now)
            assert off_at is not None
            top = min(holding, key=priority)
            if not self.lit:
                self.lit = True
                self.on_since = now
                self.warned_for = None
                self.flash_until = None
                events.append(light_event(self.id, ON, top.why, top.member, top.booking, off_at))
            self.top = top
            self.off_at = off_at
            if self.warned_for is not None and off_at > self.warned_for:
                # The circuit now stays on longer: that warning was wrong.
                self.warned_for = None
                self.flash_until = None
            elif self.warned_for is not None:
                self.warned_for = off_at
            warn_s = self.warn_s
            if self.warned_for is None and warn_s > 0 and now >= off_at - warn_s:
                self.warned_for = off_at
                events.append(light_event(self.id, WARN, top.why, top.member, top.booking, off_at))
                if not self.wiring.warn_output and now > self.on_since:
                    self.flash_until = min(now + self.wiring.flash_s, off_at)
            if self.flash_until is not None and now >= self.flash_until:
                self.flash_until = None
        elif self.lit:
            why = off_why
            if why is None:
                # A natural end: the reasons that held to the last second.
                ended = [p for p in periods if p.end == self.off_at]
                why = min(ended, key=priority) if ended else self.top
            assert why is not None  # `top` is set whenever the circuit is lit
            self.lit = False
            self.top = None
            self.warned_for = None
            self.flash_until = None
            events.append(light_event(self.id, OFF, why.why, why.member, why.booking, None))
        outputs = self.drive()
        self.deadline = self.next_deadline(periods, now)
        return outputs + events

    def drive(self) -> list[FacilityAction]:
        """The output changes the circuit's state calls for, and nothing else."""
        out: list[FacilityAction] = []
        want_light = self.lit and self.flash_until is None
        if self.light_out != want_light:
            self.light_out = want_light
            out.append(Output(self.light_name, want_light))
        if self.wiring.warn_output:
            want_warn = self.lit and self.warned_for is not None
            if self.warn_out != want_warn:
                self.warn_out = want_warn
                out.append(Output(self.warn_name, want_warn))
        return out

    def next_deadline(self, periods: list[Period], now: float) -> float | None:
        """When `step` next has something to do, given the circuit's `periods`."""
        if self.lit:
            times = [self.off_at]
            if self.warned_for is None and self.warn_s > 0:
                times.append(self.off_at - self.warn_s)
            if self.flash_until is not None:
                times.append(self.flash_until)
            return min(times)
        starts = [p.start for p in periods if p.end > now]
        return max(min(starts), now) if starts else None
