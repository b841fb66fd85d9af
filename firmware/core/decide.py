"""The access decision: who may open this door or switch on this light, now.

`decide` is a pure function of the live store, the target, the presented credential
and the time; docs/decisions.md walks through its order for a club technician.
Every path that cannot prove access fails closed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from firmware.core.model import Booking, Member
from firmware.core.schedules import is_open
from firmware.core.store import Store

GRANTED = "granted"
BOOKING = "booking"
MASTER = "master"
UNKNOWN_CREDENTIAL = "unknown_credential"
INACTIVE = "inactive"
NOT_YET_VALID = "not_yet_valid"
EXPIRED = "expired"
NO_ACCESS = "no_access"
OUTSIDE_SCHEDULE = "outside_schedule"
DOOR_LOCKED = "door_locked"
INSUFFICIENT_CREDIT = "insufficient_credit"
PIN_LOCKOUT = "pin_lockout"  # given by the door logic (issue: doors), not by decide

DEFAULT_UNLOCK_S = 5  # a door the dataset does not know yet (masters only)

_EMPTY: Mapping[str, int] = {}


@dataclass(frozen=True, slots=True)
class Target:
    """What the credential was presented at: a door or a light circuit."""

    kind: Literal["door", "light"]
    id: str

    @classmethod
    def door(cls, id: str) -> Target:
        return cls("door", id)

    @classmethod
    def light(cls, id: str) -> Target:
        return cls("light", id)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one presentation. `unlock_s` is how long a door unlocks
    (0 when denied, and for lights)."""

    granted: bool
    reason: str
    member: str | None = None
    booking: str | None = None
    unlock_s: int = 0


def schedule_allows(store: Store, schedule_id: str | None, now: float) -> bool:
    """A null schedule is always open; a reference to a missing one never is."""
    if schedule_id is None:
        return True
    schedule = store.schedules.get(schedule_id)
    return schedule is not None and is_open(schedule, store.site.zone, now)


def booking_window_open(store: Store, booking: Booking, now: float) -> bool:
    """A booking grants from `pin_before_s` before its start to `pin_after_s` after its end."""
    site = store.site
    return booking.start - site.pin_before_s <= now < booking.end + site.pin_after_s


def decide(
    store: Store,
    target: Target,
    credkind: str,
    value: str,
    now: float,
    *,
    masters: Collection[tuple[str, str]] = (),
    pending_debits: Mapping[str, int] = _EMPTY,
) -> Decision:
    """Decide one presentation of (credkind, value) at `target` at time `now`.

    `masters` are the local config's master credentials, valid with no data at all.
    `pending_debits` maps member id -> cents debited here but not yet reflected in
    the member's `credit` from the hub (the effective balance is credit - pending).
    """
    is_door = target.kind == "door"
    door = store.doors.get(target.id) if is_door else None
    if (credkind, value) in masters:
        unlock = door.unlock_s if door is not None else (DEFAULT_UNLOCK_S if is_door else 0)
        return Decision(True, MASTER, None, None, unlock)

    index = store.credentials.get(credkind)
    member = index.get(value) if index is not None else None
    member_id = member.id if member is not None else None

    if is_door:
        if door is None:
            return Decision(False, NO_ACCESS, member_id)
        if door.mode == "locked":
            return Decision(False, DOOR_LOCKED, member_id)
        if door.mode == "unlocked":
            return Decision(True, GRANTED, member_id, None, door.unlock_s)
    elif target.id not in store.lights:
        return Decision(False, NO_ACCESS, member_id)

    # A booking PIN opens its own doors and lights around the booking's time.
    pin_bookings = store.bookings_by_pin.get(value) if credkind == "pin" else None
    pin_booked_here = False
    if pin_bookings:
        for booking in pin_bookings.values():
            if target.id in (booking.doors if is_door else booking.lights):
                pin_booked_here = True
                if booking_window_open(store, booking, now):
                    unlock_s = door.unlock_s if door is not None else 0
                    return Decision(True, BOOKING, booking.member, booking.id, unlock_s)

    if member is None:
        if pin_booked_here:
            return Decision(False, OUTSIDE_SCHEDULE, None)
        if pin_bookings:
            return Decision(False, NO_ACCESS, None)
        return Decision(False, UNKNOWN_CREDENTIAL, None)

    refusal = _member_status(member, now)
    if refusal is not None:
        return Decision(False, refusal, member_id)

    if door is not None:
        reason = _group_access(store, member, store.door_groups.get(target.id), now)
        if reason != GRANTED:
            return Decision(False, reason, member_id)
        unlock_s = door.extended_s if member.extended else door.unlock_s
        return Decision(True, GRANTED, member_id, None, unlock_s)

    # The booking's own member may use its lights, free of charge.
    for booking in store.bookings_by_member.get(member.id, {}).values():
        if target.id in booking.lights and booking_window_open(store, booking, now):
            return Decision(True, BOOKING, member_id, booking.id, 0)
    reason = _group_access(store, member, store.light_groups.get(target.id), now)
    if reason != GRANTED:
        return Decision(False, reason, member_id)

    # Self-activation of a light: its own schedule, then credit.
    light = store.lights[target.id]
    if not schedule_allows(store, light.schedule, now):
        return Decision(False, OUTSIDE_SCHEDULE, member_id)
    if member.credit - pending_debits.get(member.id, 0) < light.price:
        return Decision(False, INSUFFICIENT_CREDIT, member_id)
    return Decision(True, GRANTED, member_id)


def member_status(member: Member, now: float) -> str | None:
    """Why `member` may not use anything at `now` (`inactive`, `not_yet_valid`,
    `expired`), or None when their membership is valid."""
    return _member_status(member, now)


def _member_status(member: Member, now: float) -> str | None:
    if not member.active:
        return INACTIVE
    if member.valid_from is not None and now < member.valid_from:
        return NOT_YET_VALID
    if member.valid_until is not None and now >= member.valid_until:
        return EXPIRED
    return None


def _group_access(
    store: Store, member: Member, groups: Mapping[str, object] | None, now: float
) -> str:
    """GRANTED when one of the member's groups grants the target right now."""
    if not groups:
        return NO_ACCESS
    reason = NO_ACCESS
    for group_id in member.groups:
        group = store.groups.get(group_id)
        if group is None or group_id not in groups:
            continue
        if schedule_allows(store, group.schedule, now):
            return GRANTED
        reason = OUTSIDE_SCHEDULE
    return reason
