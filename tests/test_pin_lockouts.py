"""PIN lockouts end to end through the controller core, in virtual time: a door's
keypad, the kiosk's hardware keypad and the kiosk screens each count on their own;
every PIN that neither opens nor signs in counts, and gets one answer; lockouts
double up to an hour and a quiet hour resets them; the site budget raises its
alert, and in `lock` mode closes PIN entry everywhere while tags still open
(issue 12 s6; docs/operations.md "PIN lockouts")."""

from __future__ import annotations

import itertools
from typing import Any

from firmware.core.actions import KioskAnswer, KioskSend, Output
from firmware.core.circuit import CircuitWiring
from firmware.core.controller import Controller
from firmware.core.decide import Target
from firmware.core.doors import DoorWiring
from firmware.core.facility import Facility, Reader
from firmware.core.inputs import ContactChanged, KioskRequest, Presented, ScreenJoined, Tick
from firmware.core.outbox import AppendEvents
from firmware.core.pins import PinRules, Place
from firmware.core.sync import SyncSession
from tests.builders import rec, store_of

KEY = bytes(range(32))
T0 = 1_781_092_800.0  # 2026-06-10 12:00 UTC
A, B = "screen-aaaa-0001", "screen-bbbb-0002"
ADA_PIN = "4711"
EXPIRED_PIN = "5555"  # Cy's membership ended yesterday
INACTIVE_PIN = "6666"  # Di is switched off
BOOKING_PIN = "2468"  # a booking's PIN (tomorrow): signs nobody in at the kiosk
UNKNOWN = [f"{i:04d}" for i in range(20)]  # PINs nobody holds

RECORDS = [
    ("site", "site", rec(tz="UTC", name="Riverside")),
    ("door", "front", rec(name="Front door")),
    ("light", "c1", rec(name="Court 1", price=400)),
    ("group", "adults", rec(doors=["front"], lights=["c1"])),
    (
        "member",
        "ada",
        rec(name="Ada", groups=["adults"], creds=[["pin", ADA_PIN], ["tag", "a1"]], credit=900),
    ),
    (
        "member",
        "cy",
        rec(name="Cy", groups=["adults"], creds=[["pin", EXPIRED_PIN]], until=int(T0) - 86400),
    ),
    (
        "member",
        "di",
        rec(name="Di", groups=["adults"], creds=[["pin", INACTIVE_PIN]], active=False),
    ),
    (
        "booking",
        "b1",
        rec(
            lights=["c1"],
            doors=["front"],
            start=int(T0) + 86400,
            end=int(T0) + 90000,
            pin=BOOKING_PIN,
        ),
    ),
]


def make(rules: PinRules | None = None) -> Controller:
    counter = itertools.count(1)
    session = SyncSession(store_of(RECORDS), "e1", 3, now=T0, new_id=lambda: f"r{next(counter)}")
    facility = Facility(
        doors=[DoorWiring("front", "secure", has_contact=True, has_rex=False)],
        lights=[CircuitWiring("c1", warn_output=False)],
        readers=[
            Reader("front-keys", Target.door("front")),
            Reader("side-keys", Target.door("front")),
            Reader("kiosk", None),
        ],
        now=T0,
        pins=rules,
    )
    c = Controller(
        controller_id="ctl1",
        key=KEY,
        base_topic="alc/demo/ctl1",
        session=session,
        boot_time=T0,
        facility=facility,
    )
    c.booted(T0, intact=True)
    c.handle(ContactChanged("front", False), T0)
    for screen in (A, B):
        c.handle(ScreenJoined(screen), T0)
    return c


_ids = itertools.count(1)


def pin(c: Controller, screen: str, value: str, now: float) -> tuple[KioskAnswer, list[Any]]:
    """A PIN typed on `screen`'s keypad: the answer and every action of the step."""
    request = next(_ids)
    out = c.handle(KioskRequest(request, screen, "pin", {"pin": value}), now)
    (answer,) = [a for a in out if isinstance(a, KioskAnswer) and a.request == request]
    return answer, out


def logged(out: list[Any], type: str) -> list[dict[str, Any]]:
    return [e.body for a in out if isinstance(a, AppendEvents) for e in a.events if e.type == type]


def opened(out: list[Any]) -> bool:
    return Output("door:front", True) in out


def closed_for(c: Controller, place: Place, now: float) -> float:
    return c.facility.pins.closed_for(place, now)


# --- kiosk screens -----------------------------------------------------------------------


def test_one_screens_refused_pins_never_close_another_screen() -> None:
    c = make()
    for i in range(3):
        answer, _ = pin(c, A, UNKNOWN[i], T0 + i)
        assert answer.status == "refused"
    answer, _ = pin(c, A, ADA_PIN, T0 + 3)
    assert answer.status == "refused"  # A is closed, even for a right PIN
    # B is another place: Ada signs in there at once.
    answer, out = pin(c, B, ADA_PIN, T0 + 3)
    assert answer.status == "ok" and answer.body["session"]["first_name"] == "Ada"
    assert logged(out, "access")[0]["reason"] == "granted"
    # ... and B's own refused PINs do nothing to the doors' keypads either.
    for i in range(3):
        pin(c, B, UNKNOWN[i], T0 + 10 + i)
    out = c.handle(Presented("front-keys", "pin", ADA_PIN), T0 + 20)
    assert opened(out)


def test_an_expired_members_pin_and_an_unknown_pin_get_one_answer_and_both_count() -> None:
    c = make()
    answers = []
    reasons = []
    for i, value in enumerate([EXPIRED_PIN, UNKNOWN[0]]):
        answer, out = pin(c, A, value, T0 + i)
        answers.append((answer.status, answer.body))
        reasons.append(logged(out, "access")[0]["reason"])
    assert answers[0] == answers[1] == ("refused", {"error": "PIN not accepted."})
    assert reasons == ["expired", "unknown_credential"]  # the truth goes to the log only
    # Switched off, a booking's PIN: the same answer, and each counts.
    c2 = make()
    seen = []
    for i, value in enumerate([INACTIVE_PIN, BOOKING_PIN]):
        answer, out = pin(c2, A, value, T0 + i)
        seen.append((answer.status, answer.body, logged(out, "access")[0]["reason"]))
    assert seen == [
        ("refused", {"error": "PIN not accepted."}, "inactive"),
        ("refused", {"error": "PIN not accepted."}, "no_access"),
    ]
    # Two refused PINs so far on each controller: the third (expired again) closes the screen.
    answer, out = pin(c, A, EXPIRED_PIN, T0 + 2)
    assert answer.body == {
        "error": "PIN not accepted. PIN entry on this screen is closed for 1 min."
    }
    assert logged(out, "system") == [
        {
            "what": "pin_lockout",
            "detail": f"kiosk screen {A}: PIN entry closed for 1 min after 3 refused PINs in a row",
        }
    ]
    answer, out = pin(c, A, ADA_PIN, T0 + 30)
    assert answer.status == "refused"
    assert answer.body == {
        "error": "PIN entry on this screen is closed for 1 min. Tags and cards still work."
    }
    assert logged(out, "access")[0]["reason"] == "pin_lockout"
    assert logged(out, "access")[0]["member"] is None  # not even looked up


def test_the_lockout_doubles_and_caps_at_an_hour_at_a_screen() -> None:
    c = make()
    now = T0
    for i in range(2):
        pin(c, A, UNKNOWN[i], now)
    lengths = []
    for i in range(9):
        pin(c, A, UNKNOWN[2 + i], now)
        closed = closed_for(c, Place.screen(A), now)
        lengths.append(closed / 60)
        # A right PIN a second before it opens is still refused.
        answer, out = pin(c, A, ADA_PIN, now + closed - 1)
        assert answer.status == "refused" and logged(out, "access")[0]["reason"] == "pin_lockout"
        now += closed
    assert lengths == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    answer, _ = pin(c, A, ADA_PIN, now)
    assert answer.status == "ok"  # and that right PIN starts the screen afresh
    c.handle(KioskRequest(next(_ids), A, "sign_out", {}), now)
    for i in range(3):
        pin(c, A, UNKNOWN[i], now + 1)
    assert closed_for(c, Place.screen(A), now + 1) == 60


def test_a_quiet_hour_resets_a_screen() -> None:
    def two_lockouts() -> Controller:
        c = make()
        for i, t in enumerate((0, 1, 2, 62)):  # closed 1 min at T0 + 2, then 2 min
            pin(c, A, UNKNOWN[i], T0 + t)
        assert closed_for(c, Place.screen(A), T0 + 62) == 120  # opens at T0 + 182
        return c

    quiet = T0 + 182 + 3600  # an hour after the last lockout ended
    c = two_lockouts()
    pin(c, A, UNKNOWN[5], quiet - 1)
    assert closed_for(c, Place.screen(A), quiet - 1) == 240  # not quiet yet: 4 min next
    c = two_lockouts()
    for i in range(2):
        pin(c, A, UNKNOWN[5 + i], quiet + i)
        assert closed_for(c, Place.screen(A), quiet + i) == 0  # two typos are free again
    pin(c, A, UNKNOWN[9], quiet + 2)
    assert closed_for(c, Place.screen(A), quiet + 2) == 60  # and the next lockout is 1 min


# --- readers -------------------------------------------------------------------------------


def test_every_refused_pin_at_a_door_keypad_counts_and_the_door_stays_shut() -> None:
    c = make()
    reasons = []
    for i, value in enumerate([EXPIRED_PIN, BOOKING_PIN, UNKNOWN[0]]):
        out = c.handle(Presented("front-keys", "pin", value), T0 + i)
        assert not opened(out)
        reasons.append(logged(out, "access")[0]["reason"])
    assert reasons == ["expired", "outside_schedule", "unknown_credential"]
    assert logged(out, "system")[0]["detail"].startswith("reader front-keys: PIN entry closed")
    out = c.handle(Presented("front-keys", "pin", ADA_PIN), T0 + 10)
    assert not opened(out) and logged(out, "access")[0]["reason"] == "pin_lockout"
    # The other keypad, a tag at this one and the screens are not affected.
    assert opened(c.handle(Presented("side-keys", "pin", ADA_PIN), T0 + 11))
    c.handle(ContactChanged("front", True), T0 + 12)
    c.handle(ContactChanged("front", False), T0 + 13)
    assert opened(c.handle(Presented("front-keys", "tag", "a1"), T0 + 14))
    assert pin(c, A, ADA_PIN, T0 + 15)[0].status == "ok"
    # A right PIN once it opens again starts the keypad afresh.
    c.handle(ContactChanged("front", True), T0 + 16)
    c.handle(ContactChanged("front", False), T0 + 17)
    assert opened(c.handle(Presented("front-keys", "pin", ADA_PIN), T0 + 62))
    assert closed_for(c, Place.reader("front-keys"), T0 + 62) == 0
    assert c.facility.pins.held == 0


def test_the_kiosks_hardware_keypad_counts_on_its_own() -> None:
    c = make()
    local = "screen-local-001"  # the touchscreen beside the kiosk's keypad
    c.handle(ScreenJoined(local, local=True), T0)
    for i in range(3):
        c.handle(Presented("kiosk", "pin", UNKNOWN[i]), T0 + i)
    assert closed_for(c, Place.reader("kiosk"), T0 + 3) == 59
    assert closed_for(c, Place.screen(A), T0 + 3) == 0
    out = c.handle(Presented("kiosk", "pin", ADA_PIN), T0 + 4)
    assert logged(out, "access")[0]["reason"] == "pin_lockout"
    notices = [a.data for a in out if isinstance(a, KioskSend) and a.kind == "notice"]
    assert notices == [
        {"error": "PIN entry at this keypad is closed for 1 min. Tags and cards still work."}
    ]
    assert c.kiosk.signed_in(local) is None
    # The screen's own keypad is open: Ada signs in there.
    assert pin(c, local, ADA_PIN, T0 + 5)[0].status == "ok"
    assert c.kiosk.signed_in(local) == "ada"


# --- the site budget -----------------------------------------------------------------------


def test_the_budget_raises_an_alert_and_says_when_it_ends() -> None:
    c = make(PinRules(budget_per_hour=5))
    alerts: list[dict[str, Any]] = []
    places = [("screen", A), ("screen", B), ("reader", "front-keys"), ("reader", "side-keys")]
    for i, (kind, where) in enumerate(places + places[:1]):
        if kind == "screen":
            _, out = pin(c, where, UNKNOWN[i], T0 + i)
        else:
            out = c.handle(Presented(where, "pin", UNKNOWN[i]), T0 + i)
        alerts += [e for e in logged(out, "system") if e["what"] == "pin_budget"]
    assert alerts == [
        {
            "what": "pin_budget",
            "detail": "5 refused PINs within an hour at this site reached its budget. "
            "Someone may be guessing PINs.",
        }
    ]
    # `alert` closes nothing: Ada still gets in with her PIN everywhere.
    assert opened(c.handle(Presented("side-keys", "pin", ADA_PIN), T0 + 10))
    assert pin(c, B, ADA_PIN, T0 + 10)[0].status == "ok"
    # The controller wakes when the hour is over, and says so.
    assert c.next_deadline() is not None and c.next_deadline() <= T0 + 3600
    out = c.handle(Tick(), T0 + 3600)
    assert [e["what"] for e in logged(out, "system")] == ["pin_budget"]
    assert "fell below the site budget of 5" in logged(out, "system")[0]["detail"]


def test_lock_mode_closes_pin_entry_everywhere_while_tags_still_open() -> None:
    c = make(PinRules(budget_per_hour=4, budget_action="lock"))
    pin(c, A, UNKNOWN[0], T0)
    pin(c, A, UNKNOWN[1], T0 + 1)
    c.handle(Presented("front-keys", "pin", UNKNOWN[2]), T0 + 2)
    out = c.handle(Presented("side-keys", "pin", UNKNOWN[3]), T0 + 3)
    (alert,) = [e for e in logged(out, "system") if e["what"] == "pin_budget"]
    assert "PIN entry is closed at every reader and screen" in alert["detail"]
    # Every place is closed now, also ones that never saw a refused PIN.
    out = c.handle(Presented("side-keys", "pin", ADA_PIN), T0 + 60)
    assert not opened(out) and logged(out, "access")[0]["reason"] == "pin_lockout"
    answer, out = pin(c, B, ADA_PIN, T0 + 60)
    assert answer.status == "refused" and logged(out, "access")[0]["reason"] == "pin_lockout"
    assert "closed" in answer.body["error"]
    # Tags and cards are never affected.
    assert opened(c.handle(Presented("front-keys", "tag", "a1"), T0 + 61))
    c.handle(ContactChanged("front", True), T0 + 62)
    c.handle(ContactChanged("front", False), T0 + 63)
    # An hour after the first refused PIN counted, PIN entry opens again.
    out = c.handle(Tick(), T0 + 3600)
    assert "PIN entry is open again" in logged(out, "system")[0]["detail"]
    assert opened(c.handle(Presented("side-keys", "pin", ADA_PIN), T0 + 3600))
    assert pin(c, B, ADA_PIN, T0 + 3600)[0].status == "ok"
