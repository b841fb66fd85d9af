"""The kiosk screens: the public board, member sessions, and "Refresh kiosk screens".

Pure, like the rest of the core: screens, requests and time come in as events
with `now`; what the screens should show goes out as `KioskSend` (a server-sent
event for one screen or all), answers to requests as `KioskAnswer`, and what a
member does (check-in, paid activation) goes through the facility exactly as at
a court reader, so the `access`, `light` and `debit` events and the effective
credit are the same. docs/kiosk.md has the rules for a club.

- **Board** (every screen, nothing personal): club name and time zone, every
  wired court light (off, on, warn; until when; the booking's times), the next
  bookings (times and courts, never names), every wired door (locked, unlocked,
  open, alarm). Pushed when it changes, at most every `BOARD_EVERY_S`.
- **Session** (one screen): a member signed in by PIN on the screen's keypad or
  by tag at the kiosk's reader sees their first name, effective credit, today's
  bookings (check-in where a court needs it) and the courts they may switch on
  with a price quote before they pay. It ends on sign-out, after `IDLE_S`
  without a request from that screen, when the screen's stream ends, or when the
  member's record goes or stops being valid.
- **Refresh**: every connected screen gets a `reload`; each confirms once it is
  back with a fresh board; the command is `done` when all have, or after
  `REFRESH_WAIT_S` with the count that did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from firmware.core.decide import (
    BOOKING,
    GRANTED,
    INSUFFICIENT_CREDIT,
    NO_ACCESS,
    PIN_LOCKOUT,
    UNKNOWN_CREDENTIAL,
    Decision,
    Target,
    member_status,
)
from firmware.core.facility import KIOSK_KEYPAD, Facility, FacilityAction, Output
from firmware.core.lights import WHY_BOOKING, WHY_CHECKIN
from firmware.core.model import Booking, Member
from firmware.core.steps import (
    Action,
    KioskAnswer,
    KioskRequest,
    KioskSend,
    LogEvent,
    Publish,
)
from firmware.core.store import Store

IDLE_S = 60.0  # a session ends after this long without a request from its screen
REFRESH_WAIT_S = 10.0  # how long a refresh waits for screens to confirm
BOARD_EVERY_S = 0.25  # boards are coalesced to at most four a second
MAX_SCREENS = 16
MAX_REFRESHES = 8
NEXT_BOOKINGS = 8
MAX_BLOCKS = 48

OK, REFUSED, BAD = "ok", "refused", "bad"

_REFUSALS = {
    UNKNOWN_CREDENTIAL: "not known here",
    PIN_LOCKOUT: "Too many wrong PINs. Try again in a minute.",
    "inactive": "This membership is not active. Please ask at the desk.",
    "not_yet_valid": "This membership has not started yet.",
    "expired": "This membership has expired. Please ask at the desk.",
    "no_access": "You may not switch on this court.",
    "outside_schedule": "This court cannot be switched on at this time.",
    INSUFFICIENT_CREDIT: "Not enough credit.",
}


class Club(Protocol):
    """What the kiosk needs of the controller: live data, wiring, credit, decisions."""

    @property
    def store(self) -> Store: ...

    @property
    def facility(self) -> Facility: ...

    def credit(self, member: str) -> int:
        """The member's effective credit (cents)."""
        ...

    def decide(self, target: Target, credkind: str, value: str, now: float) -> Decision:
        """An access decision on the live data."""
        ...


@dataclass(slots=True)
class _Session:
    member: str
    credkind: str
    value: str
    reader: str
    last: float
    view: dict[str, Any] | None = None
    # The last price quote shown: a confirm uses it up, so a confirm sent twice
    # (a double tap, a retry after a slow answer) never buys twice.
    quote: dict[str, Any] | None = None


@dataclass(slots=True)
class _Refresh:
    id: str
    started: float
    waiting: set[str]
    confirmed: set[str] = field(default_factory=set)


class Kiosk:
    """Connected screens, their sessions, running refreshes, the last board sent."""

    def __init__(self) -> None:
        self._screens: dict[str, float] = {}
        self._local: set[str] = set()  # screens on the controller itself
        self._generation = 0  # of the newest list of open screens heard
        self._sessions: dict[str, _Session] = {}
        self._refreshes: list[_Refresh] = []
        self._board: dict[str, Any] | None = None
        self._board_at = -math.inf
        self._board_due: float | None = None
        self._board_changes: float | None = None

    @property
    def screens(self) -> tuple[str, ...]:
        """The connected screens."""
        return tuple(self._screens)

    def signed_in(self, screen: str) -> str | None:
        """The member signed in on `screen`, if any."""
        session = self._sessions.get(screen)
        return session.member if session is not None else None

    # --- screens ------------------------------------------------------------------

    def joined(
        self,
        screen: str,
        club: Club,
        now: float,
        *,
        local: bool = False,
        open: frozenset[str] | None = None,
        generation: int = 0,
    ) -> list[Action]:
        """A screen's stream opened: it gets the board and a signed-out session
        (a page that loads shows nobody, also after a reload). `local`: it runs
        on the controller itself, beside the kiosk's reader. `open`: every
        screen the server has a stream for (as of its list's `generation`); any
        other one left unheard."""
        if open is not None and generation > self._generation:
            self._generation = generation
            for gone in [s for s in self._screens if s not in open and s != screen]:
                self.left(gone)
        if screen not in self._screens and len(self._screens) >= MAX_SCREENS:
            return []
        self._screens[screen] = now
        if local:
            self._local.add(screen)
        else:
            self._local.discard(screen)
        self._sessions.pop(screen, None)
        board, _ = board_of(club.store, club.facility, now)
        return [KioskSend(screen, "board", board), KioskSend(screen, "session", None)]

    def left(self, screen: str) -> list[Action]:
        """A screen's stream ended: its session ends with it."""
        self._screens.pop(screen, None)
        self._local.discard(screen)
        self._sessions.pop(screen, None)
        return []

    # --- requests -----------------------------------------------------------------

    def request(self, req: KioskRequest, club: Club, now: float) -> list[Action]:
        """One request from a screen; always exactly one `KioskAnswer`."""
        expired = self._expire(now)  # a session idle too long is over, ticked or not
        return expired + self._request(req, club, now)

    def _request(self, req: KioskRequest, club: Club, now: float) -> list[Action]:
        if req.screen not in self._screens:
            return [_answer(req, BAD, "This screen is not connected: reload the page.")]
        if req.what == "pin":
            return self._pin(req, club, now)
        if req.what == "refreshed":
            return self._refreshed(req, now)
        session = self._sessions.get(req.screen)
        if session is None:
            return [_answer(req, REFUSED, "Not signed in.", signed_in=False)]
        session.last = now
        if req.what == "touch":
            return [_answer(req, OK)]
        if req.what == "sign_out":
            del self._sessions[req.screen]
            return [KioskSend(req.screen, "session", None), _answer(req, OK)]
        if req.what == "check_in":
            return self._check_in(req, session, club, now)
        if req.what in ("quote", "activate"):
            return self._activate(req, session, club, now)
        return [_answer(req, BAD, f"unknown request {req.what!r}")]

    def presented(
        self, reader: str, credkind: str, value: str, club: Club, now: float
    ) -> list[Action]:
        """A tag, card or PIN at the kiosk's own reader: sign the member in on
        the screen the reader stands at. That is the controller's own screen (a
        local one); with none, the only screen connected. Never on a screen
        elsewhere on the LAN beside others: the member's name and credit would
        show, and could be spent, where they are not standing."""
        screens = [s for s in self._screens if s in self._local]
        if not screens and len(self._screens) == 1:
            screens = list(self._screens)
        if not screens and self._screens:
            note = {"error": "Sign in with your PIN on the screen."}
            return [KioskSend(None, "notice", note)]
        actions, error = self._sign_in(screens, reader, credkind, value, club, now)
        if error is not None:
            # Nobody typed anything on a screen, so say it there.
            actions.append(KioskSend(None, "notice", {"error": error}))
        return actions

    def _pin(self, req: KioskRequest, club: Club, now: float) -> list[Action]:
        pin = req.args.get("pin")
        if not isinstance(pin, str) or not (pin.isascii() and pin.isdecimal()) or len(pin) > 32:
            return [_answer(req, BAD, "A PIN is 1 to 32 digits.")]
        actions, error = self._sign_in([req.screen], KIOSK_KEYPAD, "pin", pin, club, now)
        if error is not None:
            return [*actions, _answer(req, REFUSED, error)]
        view = self._sessions[req.screen].view
        return [*actions, _answer(req, OK, session=view)]

    def _sign_in(
        self, screens: list[str], reader: str, credkind: str, value: str, club: Club, now: float
    ) -> tuple[list[Action], str | None]:
        pins = club.facility.pins
        member: Member | None = None
        if credkind == "pin" and pins.locked_out(reader, now):
            reason = PIN_LOCKOUT
        else:
            member = club.store.credentials.get(credkind, {}).get(value)
            status = member_status(member, now) if member is not None else UNKNOWN_CREDENTIAL
            booking_pin = (
                member is None and credkind == "pin" and value in club.store.bookings_by_pin
            )
            reason = NO_ACCESS if booking_pin else status or GRANTED
            if credkind == "pin":
                if reason == UNKNOWN_CREDENTIAL:
                    pins.wrong_pin(reader, now)
                else:
                    pins.correct(reader, now)
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
        if not granted or member is None:
            error = _REFUSALS.get(reason, "Not possible.")
            if reason == UNKNOWN_CREDENTIAL:
                error = f"That {'PIN' if credkind == 'pin' else credkind} is not known here."
            elif reason == NO_ACCESS:
                error = "A booking PIN opens the door and the court; members sign in here."
            return [log], error
        actions: list[Action] = [log]
        for screen in screens:
            session = _Session(member.id, credkind, value, reader, now)
            self._sessions[screen] = session
            session.view = member_view(session, club, now)
            actions.append(KioskSend(screen, "session", session.view))
        return actions, None

    def _check_in(
        self, req: KioskRequest, session: _Session, club: Club, now: float
    ) -> list[Action]:
        booking_id = req.args.get("booking")
        store = club.store
        booking = store.bookings.get(booking_id) if isinstance(booking_id, str) else None
        if booking is None or booking.member != session.member:
            return [_answer(req, BAD, "That is not one of your bookings.")]
        light = next((lid for lid in booking.lights if lid in store.lights), None)
        if light is None:
            return [_answer(req, REFUSED, "This booking has no court here.")]
        lights = club.facility.lights
        decision, done = club.facility.kiosk_use(
            session.reader,
            light,
            session.credkind,
            session.value,
            now,
            club.decide,
            club.credit,
            reasons=(BOOKING,),
        )
        actions = _logged(done)
        if decision.booking == booking.id and lights.checked_in(booking.id):
            names = ", ".join(_light_name(store, lid) for lid in booking.lights)
            text = f"Checked in: {names}."
            record = store.lights.get(light)
            lit_from = booking.start - (record.lead_s if record is not None else 0)
            if lit_from > now:
                text += f" The lights come on at {_hhmm(lit_from, store.site.zone)}."
            return [*actions, _answer(req, OK, text)]
        opens, closes = lights.checkin_window(booking)
        if now < opens:
            error = f"Check-in opens at {_hhmm(opens, store.site.zone)}."
        elif now >= closes:
            error = "This booking is over."
        else:
            error = _REFUSALS.get(decision.reason, "Check-in is not possible now.")
        return [*actions, _answer(req, REFUSED, error)]

    def _activate(
        self, req: KioskRequest, session: _Session, club: Club, now: float
    ) -> list[Action]:
        light, blocks = req.args.get("light"), req.args.get("blocks")
        if not isinstance(light, str) or type(blocks) is not int or not 1 <= blocks <= MAX_BLOCKS:
            return [_answer(req, BAD, f"Choose a court and 1 to {MAX_BLOCKS} blocks.")]
        offer = _offer(session, club, light, now)
        if offer is None:
            return [_answer(req, BAD, "That court cannot be switched on from here.")]
        if not offer["allowed"]:
            return [_answer(req, REFUSED, str(offer["why"]))]
        if blocks > offer["max_blocks"]:
            return [_answer(req, REFUSED, f"At most {offer['max_blocks']} blocks now.")]
        price, credit = int(offer["price"]), club.credit(session.member)
        total = price * blocks
        quote = {
            "light": light,
            "name": offer["name"],
            "blocks": blocks,
            "minutes": offer["block_s"] * blocks // 60,
            "price": price,
            "total": total,
            "credit": credit,
            "credit_after": credit - total,
        }
        if credit < total:
            return [_answer(req, REFUSED, "Not enough credit.", quote=quote)]
        if req.what == "quote":
            session.quote = quote
            return [_answer(req, OK, quote=quote)]
        shown = session.quote
        if (
            shown is None
            or (shown["light"], shown["blocks"], shown["total"]) != (light, blocks, total)
            or req.args.get("total") != total
        ):
            # No quote, a used one, or the price or blocks changed since it was shown.
            return [_answer(req, REFUSED, "The price has changed: check it again.", quote=quote)]
        session.quote = None
        _, done = club.facility.kiosk_use(
            session.reader,
            light,
            session.credkind,
            session.value,
            now,
            club.decide,
            club.credit,
            reasons=(GRANTED,),
            blocks=blocks,
        )
        actions = _logged(done)
        if not any(isinstance(a, LogEvent) and a.type in ("debit", "light") for a in actions):
            return [*actions, _answer(req, REFUSED, "The court is already lit for longer.")]
        status = club.facility.lights.status(light)
        until = math.ceil(status.until) if status.until is not None else None
        text = f"{offer['name']} is on"
        if until is not None:
            text += f" until {_hhmm(until, club.store.site.zone)}"
        return [*actions, _answer(req, OK, text + ".", until=until, quote=quote)]

    # --- refresh ------------------------------------------------------------------

    def refresh(self, command: str, now: float) -> list[Action]:
        """The `refresh_kiosks` command: reload every connected screen."""
        screens = set(self._screens)
        if not screens:
            return [_reply(command, "done", "no kiosk screens connected", got=0, of=0)]
        if len(self._refreshes) >= MAX_REFRESHES:
            return [_reply(command, "failed", "too many refreshes running")]
        self._refreshes.append(_Refresh(command, now, screens))
        return [
            _reply(command, "accepted", got=0, of=len(screens)),
            KioskSend(None, "reload", {"refresh": command}),
        ]

    def _refreshed(self, req: KioskRequest, now: float) -> list[Action]:
        id = req.args.get("refresh")
        if not isinstance(id, str):
            return [_answer(req, BAD, "refreshed needs the refresh id")]
        out: list[Action] = []
        joined = self._screens[req.screen]
        for r in list(self._refreshes):
            # A page loaded after a refresh began is fresh for that refresh too,
            # whichever reload it confirms (two refreshes close together).
            if req.screen in r.waiting and (r.id == id or joined >= r.started):
                r.waiting.discard(req.screen)
                r.confirmed.add(req.screen)
                if not r.waiting:
                    out += self._finish_refresh(r, now)
        return [*out, _answer(req, OK)]

    def _finish_refresh(self, r: _Refresh, now: float) -> list[Action]:
        self._refreshes.remove(r)
        got, of = len(r.confirmed), len(r.confirmed) + len(r.waiting)
        if got == of:
            detail = f"{got} screen{'s' if got != 1 else ''} reloaded and confirmed"
        else:
            detail = f"{got} of {of} screens reloaded and confirmed; {of - got} did not answer"
        ms = int((now - r.started) * 1000)
        return [_reply(r.id, "done", detail, got=got, of=of, ms=ms)]

    # --- time and updates ---------------------------------------------------------

    def tick(self, club: Club, now: float) -> list[Action]:
        """Idle sessions end; refreshes that waited long enough finish."""
        out = self._expire(now)
        for r in [r for r in self._refreshes if now - r.started >= REFRESH_WAIT_S]:
            out += self._finish_refresh(r, now)
        return out

    def _expire(self, now: float) -> list[Action]:
        out: list[Action] = []
        for screen, session in list(self._sessions.items()):
            if now - session.last >= IDLE_S:
                del self._sessions[screen]
                out.append(KioskSend(screen, "session", None))
        return out

    def updates(self, club: Club, now: float) -> list[Action]:
        """After every step: push the board if it changed (coalesced), and each
        session's view if it changed (credit, bookings, check-ins)."""
        if not self._screens:
            self._board_due = None
            return []
        out: list[Action] = []
        board, changes = board_of(club.store, club.facility, now)
        self._board_changes = changes
        if board == self._board:
            self._board_due = None  # changed and changed back: nothing to send
        elif now - self._board_at >= BOARD_EVERY_S:
            self._board, self._board_at, self._board_due = board, now, None
            out.append(KioskSend(None, "board", board))
        else:
            self._board_due = self._board_at + BOARD_EVERY_S
        for screen, session in list(self._sessions.items()):
            view = member_view(session, club, now)
            if view is None:
                del self._sessions[screen]
                out.append(KioskSend(screen, "session", None))
            elif view != session.view:
                session.view = view
                out.append(KioskSend(screen, "session", view))
        return out

    def next_deadline(self) -> float | None:
        """When `tick` or `updates` next has something to do."""
        times = [s.last + IDLE_S for s in self._sessions.values()]
        times += [r.started + REFRESH_WAIT_S for r in self._refreshes]
        if self._screens and self._board_due is not None:
            times.append(self._board_due)
        if self._screens and self._board_changes is not None:
            times.append(self._board_changes)
        return min(times) if times else None


# --- what the screens show ------------------------------------------------------------


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
                "name": _light_name(store, lid),
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
            "lights": [_light_name(store, lid) for lid in b.lights if lid in store.lights],
            "checkin": _needs_checkin(store, b),
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


def member_view(session: _Session, club: Club, now: float) -> dict[str, Any] | None:
    """What a signed-in member sees; None when they may no longer be signed in."""
    store = club.store
    member = store.members.get(session.member)
    if member is None or member_status(member, now) is not None:
        return None
    holder = store.credentials.get(session.credkind, {}).get(session.value)
    if holder is None or holder.id != member.id:
        return None  # the credential they signed in with was taken away
    lights = club.facility.lights
    tomorrow = _next_midnight(now, store.site.zone)
    bookings = []
    mine = store.bookings_by_member.get(member.id, {}).values()
    for b in sorted(mine, key=lambda b: (b.start, b.id)):
        if b.end <= now or b.start >= tomorrow:
            continue
        needs = _needs_checkin(store, b)
        checked = lights.checked_in(b.id)
        opens, closes = lights.checkin_window(b)
        bookings.append(
            {
                **_booking_times(b),
                "lights": [_light_name(store, lid) for lid in b.lights if lid in store.lights],
                "checkin": needs,
                "checked_in": checked,
                "can_check_in": needs and not checked and opens <= now < closes,
                "checkin_from": int(opens),
            }
        )
    courts = []
    for lid in lights.ids:
        offer = _offer(session, club, lid, now)
        if offer is not None:
            courts.append(offer)
    return {
        "first_name": (member.name.split() or ["Member"])[0],
        "credit": club.credit(member.id),
        "bookings": bookings,
        "courts": courts,
        "idle_s": int(IDLE_S),
    }


def _offer(session: _Session, club: Club, light: str, now: float) -> dict[str, Any] | None:
    """A court the member may pay to switch on (or could, with more credit);
    None when it is not offered to them at all."""
    store = club.store
    record = store.lights.get(light)
    if record is None or light not in club.facility.lights.ids:
        return None
    decision = club.decide(Target.light(light), session.credkind, session.value, now)
    if decision.reason not in (GRANTED, INSUFFICIENT_CREDIT):
        return None
    st = club.facility.lights.status(light)
    used = 0.0
    if st.activation_since is not None and st.activation_until is not None:
        used = st.activation_until - st.activation_since
    by_time = max(int((record.max_s - used) // record.block_s), 0) if record.block_s > 0 else 0
    credit = club.credit(session.member)
    by_credit = credit // record.price if record.price > 0 else MAX_BLOCKS
    max_blocks = min(by_time, by_credit, MAX_BLOCKS)
    why = ""
    if st.why in (WHY_BOOKING, WHY_CHECKIN) and st.until is not None:
        # Someone's booking lights it: time bought now would mostly be theirs.
        why = f"Booked until {_hhmm(st.until, store.site.zone)}."
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


def _needs_checkin(store: Store, booking: Booking) -> bool:
    return any(
        (light := store.lights.get(lid)) is not None and light.checkin for lid in booking.lights
    )


def _booking_times(booking: Booking) -> dict[str, Any]:
    return {"id": booking.id, "start": booking.start, "end": booking.end}


def _light_name(store: Store, light: str) -> str:
    record = store.lights.get(light)
    return record.name if record is not None and record.name else light


def _next_midnight(now: float, zone: ZoneInfo) -> float:
    local = datetime.fromtimestamp(now, zone).date() + timedelta(days=1)
    return datetime(local.year, local.month, local.day, tzinfo=zone).timestamp()


def _hhmm(t: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(t, zone).strftime("%H:%M")


def _logged(actions: list[FacilityAction]) -> list[Action]:
    return [a if isinstance(a, Output) else LogEvent(a.type, a.body) for a in actions]


def _answer(req: KioskRequest, status: str, error: str = "", **body: Any) -> KioskAnswer:
    if status == OK and error:
        body["message"] = error
    elif error:
        body["error"] = error
    return KioskAnswer(req.request, status, body)


def _reply(id: str, status: str, detail: str = "", **extra: Any) -> Publish:
    return Publish("reply", {"t": "reply", "id": id, "status": status, "detail": detail, **extra})
