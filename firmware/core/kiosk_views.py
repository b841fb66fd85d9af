"""What the kiosk screens show: the public board and a signed-in member's panel,
rendered from the live data and the facility (docs/kiosk.md). Pure functions of
their inputs and `now`; `firmware.core.kiosk` decides when to render them again.

Each render also says when it next changes by time alone (a booking starts or
ends, a check-in window opens, a schedule's minute turns), so the kiosk renders
again then, and otherwise only when the data, a door or light, or a member's
credit changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from firmware.core.circuit import WHY_BOOKING, WHY_CHECKIN
from firmware.core.decide import GRANTED, INSUFFICIENT_CREDIT, Decision, Target, member_status
from firmware.core.facility import Facility
from firmware.core.model import Booking
from firmware.core.store import Store

IDLE_S = 60.0  # a session ends after this long without a request from its screen
NEXT_BOOKINGS = 8
MAX_BLOCKS = 48


class Club(Protocol):
    """What the kiosk needs of the controller: live data, wiring, credit, decisions."""

    @property
    def store(self) -> Store: ...

    @property
    def facility(self) -> Facility: ...

    @property
    def credit_changes(self) -> int:
        """Moves whenever any member's effective credit may have changed."""
        ...

    def credit(self, member: str) -> int:
        """The member's effective credit (cents)."""
        ...

    def decide(self, target: Target, credkind: str, value: str, now: float) -> Decision:
        """An access decision on the live data."""
        ...


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Who is signed in on a screen, with which credential, at which reader."""

    member: str
    credkind: str
    value: str
    reader: str


# --- the board ----------------------------------------------------------------------------


def board_of(store: Store, facility: Facility, now: float) -> tuple[dict[str, Any], float | None]:
    """The public board, and when it next changes by time alone (a booking ends
    or starts), if it does."""
    lights = []
    for lid in facility.lights.ids:
        st = facility.lights.status(lid)
        booking = store.bookings.get(st.booking) if st.booking is not None else None
        state = "warn" if st.warning else "on" if st.lit else "off"
        lights.append(
            {
                "id": lid,
                "name": light_name(store, lid),
                "state": state,
                "until": math.ceil(st.until) if st.until is not None else None,
                "why": st.why,
                "booking": _booking_times(booking) if booking is not None else None,
            }
        )
    upcoming: dict[str, Booking] = {}
    for lid in facility.lights.ids:
        for b in store.bookings_by_light.get(lid, {}).values():
            if b.end > now:
                upcoming[b.id] = b
    nearest = sorted(upcoming.values(), key=lambda b: (b.start, b.id))[:NEXT_BOOKINGS]
    bookings = [
        {
            **_booking_times(b),
            "lights": [light_name(store, lid) for lid in b.lights if lid in store.lights],
            "checkin": needs_checkin(store, b),
            "checked_in": facility.lights.checked_in(b.id),
            "playing": b.start <= now,
        }
        for b in nearest
    ]
    moments = [t for b in nearest for t in (b.start, b.end) if t > now]
    doors = []
    for did in facility.doors.ids:
        ds = facility.doors.status(did)
        record = store.doors.get(did)
        if ds.held or ds.forced:
            door_state = "alarm"
        elif ds.open:
            door_state = "open"
        else:
            door_state = "unlocked" if ds.unlocked else "locked"
        name = record.name if record is not None and record.name else did
        doors.append({"id": did, "name": name, "state": door_state})
    site = store.site
    board = {
        "club": site.name or "",
        "tz": site.tz,
        "lights": lights,
        "bookings": bookings,
        "doors": doors,
    }
    return board, (min(moments) if moments else None)


# --- a member's panel ---------------------------------------------------------------------


def member_view(who: SignedIn, club: Club, now: float) -> dict[str, Any] | None:
    """What a signed-in member sees; None when they may no longer be signed in."""
    store = club.store
    member = store.members.get(who.member)
    if member is None or member_status(member, now) is not None:
        return None
    holder = store.credentials.get(who.credkind, {}).get(who.value)
    if holder is None or holder.id != member.id:
        return None  # the credential they signed in with was taken away
    lights = club.facility.lights
    tomorrow = _next_midnight(now, store.site.zone)
    bookings = []
    mine = store.bookings_by_member.get(member.id, {}).values()
    for b in sorted(mine, key=lambda b: (b.start, b.id)):
        if b.end <= now or b.start >= tomorrow:
            continue
        needs = needs_checkin(store, b)
        checked = lights.checked_in(b.id)
        opens, closes = lights.checkin_window(b)
        bookings.append(
            {
                **_booking_times(b),
                "lights": [light_name(store, lid) for lid in b.lights if lid in store.lights],
                "checkin": needs,
                "checked_in": checked,
                "can_check_in": needs and not checked and opens <= now < closes,
                "checkin_from": int(opens),
            }
        )
    courts = []
    for lid in lights.ids:
        court = offer(who, club, lid, now)
        if court is not None:
            courts.append(court)
    return {
        "first_name": (member.name.split() or ["Member"])[0],
        "credit": club.credit(member.id),
        "bookings": bookings,
        "courts": courts,
        "idle_s": int(IDLE_S),
    }


def member_view_changes(who: SignedIn, club: Club, now: float) -> float:
    """When a member's panel next changes by time alone, at the latest: the next
    whole minute (schedules are minute-granular), or sooner a moment of one of
    their bookings (its start and end, its check-in and PIN windows), of their
    membership, or midnight."""
    store = club.store
    site = store.site
    times = [(math.floor(now / 60.0) + 1) * 60.0, _next_midnight(now, site.zone)]
    member = store.members.get(who.member)
    if member is not None:
        times += [t for t in (member.valid_from, member.valid_until) if t is not None]
    lights = club.facility.lights
    for b in store.bookings_by_member.get(who.member, {}).values():
        opens, closes = lights.checkin_window(b)
        times += [b.start, b.end, opens, closes]
        times += [b.start - site.pin_before_s, b.end + site.pin_after_s]
    return min(t for t in times if t > now)


def offer(who: SignedIn, club: Club, light: str, now: float) -> dict[str, Any] | None:
    """A court the member may pay to switch on (or could, with more credit);
    None when it is not offered to them at all."""
    store = club.store
    record = store.lights.get(light)
    if record is None or light not in club.facility.lights.ids:
        return None
    decision = club.decide(Target.light(light), who.credkind, who.value, now)
    if decision.reason not in (GRANTED, INSUFFICIENT_CREDIT):
        return None
    st = club.facility.lights.status(light)
    used = 0.0
    if st.activation_since is not None and st.activation_until is not None:
        used = st.activation_until - st.activation_since
    by_time = max(int((record.max_s - used) // record.block_s), 0) if record.block_s > 0 else 0
    credit = club.credit(who.member)
    by_credit = credit // record.price if record.price > 0 else MAX_BLOCKS
    max_blocks = min(by_time, by_credit, MAX_BLOCKS)
    why = ""
    if st.why in (WHY_BOOKING, WHY_CHECKIN) and st.until is not None:
        # Someone's booking lights it: time bought now would mostly be theirs.
        why = f"Booked until {hhmm(st.until, store.site.zone)}."
    elif decision.reason == INSUFFICIENT_CREDIT or by_credit < 1:
        why = "Not enough credit."
    elif by_time < 1:
        why = "This court is already on for as long as it can be."
    return {
        "id": light,
        "name": record.name or light,
        "price": record.price,
        "block_s": record.block_s,
        "max_blocks": max_blocks,
        "allowed": max_blocks >= 1 and not why,
        "why": why,
        "state": "warn" if st.warning else "on" if st.lit else "off",
    }


# --- small pieces -------------------------------------------------------------------------


def needs_checkin(store: Store, booking: Booking) -> bool:
    """True when a court of `booking` lights only once it is checked in."""
    return any(
        (light := store.lights.get(lid)) is not None and light.checkin for lid in booking.lights
    )


def light_name(store: Store, light: str) -> str:
    """A court's name for the screens (its id when the record has none)."""
    record = store.lights.get(light)
    return record.name if record is not None and record.name else light


def hhmm(t: float, zone: ZoneInfo) -> str:
    """`t` as the site's wall-clock time."""
    return datetime.fromtimestamp(t, zone).strftime("%H:%M")


def _booking_times(booking: Booking) -> dict[str, Any]:
    return {"id": booking.id, "start": booking.start, "end": booking.end}


def _next_midnight(now: float, zone: ZoneInfo) -> float:
    local = datetime.fromtimestamp(now, zone).date() + timedelta(days=1)
    return datetime(local.year, local.month, local.day, tzinfo=zone).timestamp()
