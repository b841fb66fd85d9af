"""What a member does at a kiosk screen: sign in, check in, pay to switch a court
on (docs/kiosk.md). Each goes through the facility exactly as at a court reader,
so the `access`, `light` and `debit` events and the effective credit are the
same. `firmware.core.kiosk` keeps the screens and sessions these work on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from firmware.core.actions import Action, KioskAnswer, LogEvent
from firmware.core.decide import (
    BOOKING,
    GRANTED,
    INSUFFICIENT_CREDIT,
    NO_ACCESS,
    PIN_LOCKOUT,
    UNKNOWN_CREDENTIAL,
    member_status,
)
from firmware.core.facility import pin_alerts
from firmware.core.inputs import KioskRequest
from firmware.core.kiosk_views import MAX_BLOCKS, Club, SignedIn, hhmm, light_name, offer
from firmware.core.model import Member
from firmware.core.pins import PinAlert, Place

OK, REFUSED, BAD = "ok", "refused", "bad"

PIN_REFUSED = "PIN not accepted."

_REFUSALS = {
    UNKNOWN_CREDENTIAL: "not known here",
    "inactive": "This membership is not active. Please ask at the desk.",
    "not_yet_valid": "This membership has not started yet.",
    "expired": "This membership has expired. Please ask at the desk.",
    "no_access": "You may not switch on this court.",
    "outside_schedule": "This court cannot be switched on at this time.",
    INSUFFICIENT_CREDIT: "Not enough credit.",
}


@dataclass(slots=True)
class Session:
    """A member signed in on one screen."""

    who: SignedIn
    last: float  # the screen's last request
    view: dict[str, Any] | None = None  # the panel last sent
    # What the panel was rendered from, and when it changes by time alone.
    rendered_from: tuple[object, ...] = ()
    changes_at: float = math.inf
    # The last price quote shown: a confirm uses it up, so a confirm sent twice
    # (a double tap, a retry after a slow answer) never buys twice.
    quote: dict[str, Any] | None = None


def sign_in(
    club: Club, place: Place, reader: str, credkind: str, value: str, now: float
) -> tuple[list[Action], SignedIn | None, str]:
    """Check a credential for signing in: the events it logs (`access`, and any
    PIN lockout alert), and who signs in, or None with the refusal to show.

    A PIN counts toward the lockout of `place` (the screen it was typed on, or
    the kiosk's reader) unless it signs a member in, and until then every PIN
    gets one answer (`pin_refusal`): which PINs are real must not show."""
    pins = club.facility.pins
    store = club.store
    member: Member | None = None
    alerts: list[PinAlert] = []
    if credkind == "pin" and pins.closed_for(place, now) > 0:
        reason = PIN_LOCKOUT  # not even looked up
    else:
        member = store.credentials.get(credkind, {}).get(value)
        status = member_status(member, now) if member is not None else UNKNOWN_CREDENTIAL
        booking_pin = member is None and credkind == "pin" and value in store.bookings_by_pin
        reason = NO_ACCESS if booking_pin else status or GRANTED
        if credkind == "pin":
            if reason == GRANTED and member is not None:
                pins.granted(place, now)
            else:
                alerts = pins.refused(place, now)
    granted = reason == GRANTED and member is not None
    log = LogEvent(
        "access",
        {
            "reader": reader,
            "credkind": credkind,
            "value": value[-4:],
            "member": member.id if member is not None else None,
            "booking": None,
            "granted": granted,
            "reason": reason,
        },
    )
    actions: list[Action] = [log, *pin_alerts(alerts)]
    if not granted or member is None:
        if credkind == "pin":
            return actions, None, pin_refusal(reason, pins.closed_for(place, now), place)
        # A tag or card cannot be guessed by typing: its holder may hear why.
        error = _REFUSALS.get(reason, "Not possible.")
        if reason == UNKNOWN_CREDENTIAL:
            error = f"That {credkind} is not known here."
        return actions, None, error
    return actions, SignedIn(member.id, credkind, value, reader), ""


def pin_refusal(reason: str, closed_s: float, place: Place) -> str:
    """The one answer to a PIN that signs nobody in, whatever the reason (that
    goes to the log only), and how long PIN entry stays closed here: that
    depends on how many PINs were refused, never on which."""
    where = "on this screen" if place.kind == "screen" else "at this keypad"
    minutes = f"{max(1, math.ceil(closed_s / 60))} min"
    if reason == PIN_LOCKOUT:
        return f"PIN entry {where} is closed for {minutes}. Tags and cards still work."
    if closed_s > 0:
        return f"{PIN_REFUSED} PIN entry {where} is closed for {minutes}."
    return PIN_REFUSED


def check_in(req: KioskRequest, session: Session, club: Club, now: float) -> list[Action]:
    """Check in one of the member's bookings, as at its court's reader."""
    booking_id = req.args.get("booking")
    store = club.store
    booking = store.bookings.get(booking_id) if isinstance(booking_id, str) else None
    who = session.who
    if booking is None or booking.member != who.member:
        return [answer(req, BAD, "That is not one of your bookings.")]
    light = next((lid for lid in booking.lights if lid in store.lights), None)
    if light is None:
        return [answer(req, REFUSED, "This booking has no court here.")]
    lights = club.facility.lights
    decision, done = club.facility.kiosk_use(
        who.reader,
        light,
        who.credkind,
        who.value,
        now,
        club.decide,
        club.credit,
        reasons=(BOOKING,),
    )
    actions: list[Action] = [*done]
    if decision.booking == booking.id and lights.checked_in(booking.id):
        names = ", ".join(light_name(store, lid) for lid in booking.lights)
        text = f"Checked in: {names}."
        record = store.lights.get(light)
        lit_from = booking.start - (record.lead_s if record is not None else 0)
        if lit_from > now:
            text += f" The lights come on at {hhmm(lit_from, store.site.zone)}."
        return [*actions, answer(req, OK, text)]
    opens, closes = lights.checkin_window(booking)
    if now < opens:
        error = f"Check-in opens at {hhmm(opens, store.site.zone)}."
    elif now >= closes:
        error = "This booking is over."
    else:
        error = _REFUSALS.get(decision.reason, "Check-in is not possible now.")
    return [*actions, answer(req, REFUSED, error)]


def activate(req: KioskRequest, session: Session, club: Club, now: float) -> list[Action]:
    """A price quote (`quote`), or paying for exactly the quote shown (`activate`)."""
    light, blocks = req.args.get("light"), req.args.get("blocks")
    if not isinstance(light, str) or type(blocks) is not int or not 1 <= blocks <= MAX_BLOCKS:
        return [answer(req, BAD, f"Choose a court and 1 to {MAX_BLOCKS} blocks.")]
    who = session.who
    court = offer(who, club, light, now)
    if court is None:
        return [answer(req, BAD, "That court cannot be switched on from here.")]
    if not court["allowed"]:
        return [answer(req, REFUSED, str(court["why"]))]
    if blocks > court["max_blocks"]:
        return [answer(req, REFUSED, f"At most {court['max_blocks']} blocks now.")]
    price, credit = int(court["price"]), club.credit(who.member)
    total = price * blocks
    quote = {
        "light": light,
        "name": court["name"],
        "blocks": blocks,
        "minutes": court["block_s"] * blocks // 60,
        "price": price,
        "total": total,
        "credit": credit,
        "credit_after": credit - total,
    }
    if credit < total:
        return [answer(req, REFUSED, "Not enough credit.", quote=quote)]
    if req.what == "quote":
        session.quote = quote
        return [answer(req, OK, quote=quote)]
    shown = session.quote
    if (
        shown is None
        or (shown["light"], shown["blocks"], shown["total"]) != (light, blocks, total)
        or req.args.get("total") != total
    ):
        # No quote, a used one, or the price or blocks changed since it was shown.
        return [answer(req, REFUSED, "The price has changed: check it again.", quote=quote)]
    session.quote = None
    _, done = club.facility.kiosk_use(
        who.reader,
        light,
        who.credkind,
        who.value,
        now,
        club.decide,
        club.credit,
        reasons=(GRANTED,),
        blocks=blocks,
    )
    actions: list[Action] = [*done]
    if not any(isinstance(a, LogEvent) and a.type in ("debit", "light") for a in actions):
        return [*actions, answer(req, REFUSED, "The court is already lit for longer.")]
    status = club.facility.lights.status(light)
    until = math.ceil(status.until) if status.until is not None else None
    text = f"{court['name']} is on"
    if until is not None:
        text += f" until {hhmm(until, club.store.site.zone)}"
    return [*actions, answer(req, OK, text + ".", until=until, quote=quote)]


def answer(req: KioskRequest, status: str, error: str = "", **body: Any) -> KioskAnswer:
    """The answer to `req`: `error` is the message of an `ok` answer, else its error."""
    if status == OK and error:
        body["message"] = error
    elif error:
        body["error"] = error
    return KioskAnswer(req.request, status, body)
