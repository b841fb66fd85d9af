"""The kiosk's pure logic through the controller core, in virtual time: the board,
sign-in by PIN and tag (and the PIN lockout, more in tests/test_pin_lockouts.py),
idle expiry, check-in, paid activation and its debit, and "Refresh kiosk screens"
counting confirmations."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from firmware.core.actions import KioskAnswer, KioskSend, Publish
from firmware.core.circuit import CircuitWiring
from firmware.core.controller import Controller
from firmware.core.doors import DoorWiring
from firmware.core.facility import Facility, Reader
from firmware.core.inputs import (
    Connected,
    ContactChanged,
    KioskRequest,
    PayloadReceived,
    Presented,
    ScreenJoined,
    ScreenLeft,
    Tick,
)
from firmware.core.kiosk import BOARD_EVERY_S, REFRESH_WAIT_S
from firmware.core.kiosk_views import IDLE_S, board_of, member_view
from firmware.core.model import digest_bytes, digest_part
from firmware.core.outbox import AppendEvents
from firmware.core.sync import SyncSession
from tests.builders import rec, store_of
from tests.core_rig import asked
from tests.sealing import seal

KEY = bytes(range(32))
BASE = "alc/demo/ctl1"
T0 = 1_781_092_800.0  # 2026-06-10 12:00 UTC, a Wednesday
A, B = "screen-aaaa-0001", "screen-bbbb-0002"

RECORDS = [
    ("site", "site", rec(tz="UTC", name="Riverside", checkin_before_s=1800)),
    ("door", "front", rec(name="Front door")),
    ("light", "c1", rec(name="Court 1", price=400, block_s=1800, max_s=7200)),
    ("light", "c2", rec(name="Court 2", price=250, checkin=True)),
    ("group", "adults", rec(doors=["front"], lights=["c1", "c2"])),
    (
        "member",
        "m1",
        rec(
            name="Ada Lovelace",
            groups=["adults"],
            creds=[["pin", "4711"], ["tag", "a1"]],
            credit=1000,
        ),
    ),
    ("member", "m2", rec(name="Bo", groups=["adults"], creds=[["tag", "b2"]], credit=0)),
    ("booking", "b1", rec(lights=["c2"], member="m1", start=int(T0) + 3600, end=int(T0) + 7200)),
    (
        "booking",
        "b2",
        rec(lights=["c1"], member="m1", start=int(T0) + 86400, end=int(T0) + 90000, pin="2468"),
    ),
]


def make() -> Controller:
    counter = itertools.count(1)
    session = SyncSession(store_of(RECORDS), "e1", 3, now=T0, new_id=lambda: f"r{next(counter)}")
    facility = Facility(
        doors=[DoorWiring("front", "secure", has_contact=True, has_rex=False)],
        lights=[CircuitWiring("c1", warn_output=True), CircuitWiring("c2", warn_output=False)],
        readers=[Reader("kiosk", None)],
        now=T0,
    )
    c = Controller(
        controller_id="ctl1",
        key=KEY,
        base_topic=BASE,
        session=session,
        boot_time=T0,
        facility=facility,
    )
    c.booted(T0, intact=True)
    c.handle(ContactChanged("front", False), T0)  # the door's first report: shut
    return c


_ids = itertools.count(1)


def ask(
    c: Controller, screen: str, what: str, now: float, **args: Any
) -> tuple[KioskAnswer, list[Any]]:
    """One request; its answer and every action of the step."""
    request = next(_ids)
    out = c.handle(KioskRequest(request, screen, what, args), now)
    answers = [a for a in out if isinstance(a, KioskAnswer) and a.request == request]
    assert len(answers) == 1, out
    return answers[0], out


def sent(out: list[Any], kind: str, screen: str | None = None) -> list[Any]:
    return [
        a.data for a in out if isinstance(a, KioskSend) and a.kind == kind and a.screen == screen
    ]


def logged(out: list[Any], type: str) -> list[dict[str, Any]]:
    return [e.body for a in out if isinstance(a, AppendEvents) for e in a.events if e.type == type]


def replies(out: list[Any]) -> list[dict[str, Any]]:
    return [a.message for a in out if isinstance(a, Publish) and a.suffix == "reply"]


def refresh(c: Controller, id: str, now: float) -> list[Any]:
    topic = f"{BASE}/cmd"
    body = {
        "t": "cmd",
        "id": id,
        "cmd": "refresh_kiosks",
        "args": {},
        "iat": int(now),
        "exp": int(now) + 60,
    }
    return c.handle(PayloadReceived(topic, seal(KEY, b"ctl1", topic, body)), now)


def test_a_screen_gets_the_public_board_and_its_changes_coalesced() -> None:
    c = make()
    out = c.handle(ScreenJoined(A), T0)
    (board,) = sent(out, "board", A)
    assert sent(out, "session", A) == [None]
    assert board["club"] == "Riverside"
    assert [(li["id"], li["name"], li["state"]) for li in board["lights"]] == [
        ("c1", "Court 1", "off"),
        ("c2", "Court 2", "off"),
    ]
    assert board["doors"] == [{"id": "front", "name": "Front door", "state": "locked"}]
    assert [b["id"] for b in board["bookings"]] == ["b1", "b2"]
    assert "m1" not in repr(board) and "Ada" not in repr(board)  # nothing personal
    # A change goes to every screen; a second change right after it waits for
    # the coalescing interval, then goes as one board.
    out = c.handle(ScreenJoined(B), T0 + 1)
    out = c.handle(Presented("nowhere", "tag", "x"), T0 + 1)  # a step that changes nothing
    assert sent(out, "board") == [] or sent(out, "board")[0]["doors"][0]["state"] == "locked"
    out = c.handle(ContactChanged("front", True), T0 + 2)
    assert [b["doors"][0]["state"] for b in sent(out, "board")] == ["alarm"]  # forced open
    out = c.handle(ContactChanged("front", False), T0 + 2 + BOARD_EVERY_S / 2)
    assert sent(out, "board") == []
    due = c.next_deadline()
    assert due is not None and due <= T0 + 2 + BOARD_EVERY_S
    out = c.handle(Tick(), T0 + 2 + BOARD_EVERY_S)
    assert [b["doors"][0]["state"] for b in sent(out, "board")] == ["locked"]
    # Changed and changed back before its slot: nothing to send, nothing due.
    t = T0 + 2 + BOARD_EVERY_S
    c.handle(ContactChanged("front", True), t + 0.01)
    out = c.handle(ContactChanged("front", False), t + 0.02)
    assert sent(out, "board") == []
    due = c.next_deadline()
    assert due is None or due > t + 0.02 + 60


def test_pin_sign_in_shows_first_name_credit_and_todays_bookings_only() -> None:
    c = make()
    c.handle(ScreenJoined(A), T0)
    answer, out = ask(c, A, "pin", T0 + 1, pin="4711")
    assert answer.status == "ok"
    view = answer.body["session"]
    assert sent(out, "session", A) == [view]
    assert view["first_name"] == "Ada" and view["credit"] == 1000
    assert [b["id"] for b in view["bookings"]] == ["b1"]  # b2 is tomorrow
    assert view["bookings"][0]["checkin"] is True and view["bookings"][0]["can_check_in"] is False
    assert view["bookings"][0]["checkin_from"] == T0 + 1800  # 30 min before the start
    assert [(o["id"], o["price"], o["max_blocks"], o["allowed"]) for o in view["courts"]] == [
        ("c1", 400, 2, True),  # 10.00 buys two blocks of 4.00
        ("c2", 250, 4, True),  # credit would buy 4; max_s (7200) of 1800 s blocks allows 4
    ]
    assert logged(out, "access")[0] | {} == {
        "reader": "kiosk-screen",
        "credkind": "pin",
        "value": "4711",
        "member": "m1",
        "booking": None,
        "granted": True,
        "reason": "granted",
    }


def test_refused_pins_close_the_keypad_even_for_a_right_one() -> None:
    c = make()
    c.handle(ScreenJoined(A), T0)
    for i in range(3):
        answer, out = ask(c, A, "pin", T0 + i, pin="0000")
        assert answer.status == "refused" and answer.body["error"].startswith("PIN not accepted.")
        assert logged(out, "access")[0]["reason"] == "unknown_credential"
    answer, out = ask(c, A, "pin", T0 + 6, pin="4711")
    assert answer.status == "refused" and "is closed for 1 min" in answer.body["error"]
    assert logged(out, "access")[0]["reason"] == "pin_lockout"
    assert c.kiosk.signed_in(A) is None
    answer, _ = ask(c, A, "pin", T0 + 62, pin="4711")  # the first lockout lasts 60 s
    assert answer.status == "ok"


def test_each_screen_counts_its_own_refused_pins_also_across_a_new_stream() -> None:
    """Refused PINs on one screen never close another (docs/operations.md "PIN
    lockouts"); a screen that reconnects keeps its lockout."""
    c = make()
    fresh = "screen-fresh-0009"
    for screen in (A, B, fresh):
        c.handle(ScreenJoined(screen), T0)
    for i in range(3):
        answer, _ = ask(c, fresh, "pin", T0 + i, pin=f"000{i}")
        assert answer.status == "refused"
    for screen in (A, B):
        answer, _ = ask(c, screen, "pin", T0 + 6, pin="4711")
        assert answer.status == "ok"
    c.handle(ScreenLeft(fresh), T0 + 7)
    c.handle(ScreenJoined(fresh), T0 + 8)  # a new stream does not start afresh
    answer, _ = ask(c, fresh, "pin", T0 + 9, pin="4711")
    assert answer.status == "refused" and c.kiosk.signed_in(fresh) is None


def test_a_booking_pin_at_the_kiosk_is_refused_like_any_pin_and_counts() -> None:
    c = make()
    c.handle(ScreenJoined(A), T0)
    for i in range(2):
        answer, out = ask(c, A, "pin", T0 + i, pin="2468")
        assert (answer.status, answer.body) == ("refused", {"error": "PIN not accepted."})
        assert logged(out, "access")[0]["reason"] == "no_access"
    ask(c, A, "pin", T0 + 2, pin="2468")
    answer, _ = ask(c, A, "pin", T0 + 7, pin="4711")
    assert answer.status == "refused"  # the third one closed the screen


def test_a_session_ends_after_60_s_idle_on_sign_out_or_when_the_screen_goes() -> None:
    c = make()
    c.handle(ScreenJoined(A), T0)
    ask(c, A, "pin", T0, pin="4711")
    ask(c, A, "touch", T0 + 30)
    assert c.next_deadline() is not None and c.next_deadline() <= T0 + 30 + IDLE_S  # type: ignore[operator]
    assert sent(c.handle(Tick(), T0 + 30 + IDLE_S - 1), "session", A) == []
    out = c.handle(Tick(), T0 + 30 + IDLE_S)
    assert sent(out, "session", A) == [None] and c.kiosk.signed_in(A) is None
    answer, _ = ask(c, A, "quote", T0 + 100, light="c1", blocks=1)
    assert answer.status == "refused" and answer.body["signed_in"] is False

    ask(c, A, "pin", T0 + 200, pin="4711")
    answer, out = ask(c, A, "sign_out", T0 + 201)
    assert answer.status == "ok" and sent(out, "session", A) == [None]

    ask(c, A, "pin", T0 + 300, pin="4711")
    c.handle(ScreenLeft(A), T0 + 301)
    assert c.kiosk.signed_in(A) is None and c.kiosk.screens == ()


def test_check_in_opens_before_the_booking_and_lights_the_court() -> None:
    c = make()
    c.handle(ScreenJoined(A), T0)
    ask(c, A, "pin", T0, pin="4711")
    answer, _ = ask(c, A, "check_in", T0, booking="b1")
    assert answer.status == "refused" and answer.body["error"] == "Check-in opens at 12:30."
    answer, _ = ask(c, A, "check_in", T0, booking="nope")
    assert answer.status == "bad"
    # Tomorrow's booking on court 1: refused, and never a paid activation instead.
    answer, out = ask(c, A, "check_in", T0, booking="b2")
    assert answer.status == "refused"
    assert logged(out, "debit") == [] and logged(out, "light") == []
    ask(c, A, "pin", T0 + 3290, pin="4711")
    answer, out = ask(c, A, "check_in", T0 + 3300, booking="b1")
    assert answer.status == "ok" and answer.body["message"] == "Checked in: Court 2."
    assert c.facility.lights.checked_in("b1")
    assert [e["what"] for e in logged(out, "light")] == ["on"]  # lead_s (300 s) before the start
    assert sent(out, "session", A)[0]["bookings"][0]["checked_in"] is True
    assert [li["state"] for li in sent(out, "board")[0]["lights"]] == ["off", "on"]


def test_paid_activation_quotes_then_debits_price_times_blocks_once() -> None:
    c = make()
    c.handle(ScreenJoined(A), T0)
    ask(c, A, "pin", T0, pin="4711")
    answer, out = ask(c, A, "quote", T0 + 1, light="c1", blocks=2)
    assert answer.status == "ok" and logged(out, "debit") == []
    assert answer.body["quote"] | {} == {
        "light": "c1",
        "name": "Court 1",
        "blocks": 2,
        "minutes": 60,
        "price": 400,
        "total": 800,
        "credit": 1000,
        "credit_after": 200,
    }
    answer, out = ask(c, A, "quote", T0 + 1, light="c1", blocks=3)
    assert answer.status == "refused"  # 12.00 > 10.00
    answer, out = ask(c, A, "activate", T0 + 2, light="c1", blocks=2, total=400)
    assert answer.status == "refused" and "price" in answer.body["error"]
    assert logged(out, "debit") == [] and c.credit("m1") == 1000
    answer, out = ask(c, A, "activate", T0 + 3, light="c1", blocks=2, total=800)
    assert answer.status == "ok", answer
    assert logged(out, "debit") == [
        {"member": "m1", "light": "c1", "amount": 800, "seconds": 3600, "balance": 200}
    ]
    assert [(e["what"], e["why"]) for e in logged(out, "light")] == [("on", "activation")]
    assert c.credit("m1") == 200
    assert sent(out, "session", A)[0]["credit"] == 200
    # No more than the credit allows, and nothing debited for a refusal.
    answer, out = ask(c, A, "activate", T0 + 4, light="c1", blocks=1, total=400)
    assert answer.status == "refused" and logged(out, "debit") == []
    answer, _ = ask(c, A, "activate", T0 + 4, light="front", blocks=1, total=0)
    assert answer.status == "bad"


def test_a_confirm_sent_twice_debits_once() -> None:
    """Review finding: a repeated `activate` (a double tap, or the page retrying
    after "the controller did not answer" while the first one went through)
    bought the blocks again. A confirm now uses up the quote it confirms."""
    c = make()
    c.handle(ScreenJoined(A), T0)
    ask(c, A, "pin", T0, pin="4711")
    answer, _ = ask(c, A, "quote", T0 + 1, light="c1", blocks=1)
    assert answer.status == "ok" and answer.body["quote"]["total"] == 400
    first, out = ask(c, A, "activate", T0 + 2, light="c1", blocks=1, total=400)
    assert first.status == "ok" and [d["amount"] for d in logged(out, "debit")] == [400]
    again, out = ask(c, A, "activate", T0 + 2, light="c1", blocks=1, total=400)
    assert again.status == "refused" and logged(out, "debit") == []
    assert "price" in again.body["error"]
    assert c.credit("m1") == 600
    # A confirm without a quote the member saw buys nothing either.
    c.handle(ScreenJoined(B), T0 + 3)
    ask(c, B, "pin", T0 + 3, pin="4711")
    answer, out = ask(c, B, "activate", T0 + 4, light="c1", blocks=1, total=400)
    assert answer.status == "refused" and logged(out, "debit") == []
    # A new quote, confirmed, buys again (a second purchase on purpose).
    ask(c, B, "quote", T0 + 5, light="c1", blocks=1)
    answer, out = ask(c, B, "activate", T0 + 6, light="c1", blocks=1, total=400)
    assert answer.status == "ok" and [d["amount"] for d in logged(out, "debit")] == [400]
    assert c.credit("m1") == 200


def test_a_tag_at_the_kiosk_reader_signs_in_on_the_screen_beside_it() -> None:
    c = make()
    c.handle(ScreenJoined(A, local=True), T0)  # the controller's own touchscreen
    c.handle(ScreenJoined(B), T0)  # a screen elsewhere on the LAN
    out = c.handle(Presented("kiosk", "tag", "a1"), T0 + 1)
    assert [v["first_name"] for v in sent(out, "session", A)] == ["Ada"]
    assert sent(out, "session", B) == []
    assert c.kiosk.signed_in(A) == "m1" and c.kiosk.signed_in(B) is None
    out = c.handle(Presented("kiosk", "tag", "zz"), T0 + 2)
    assert sent(out, "notice") == [{"error": "That tag is not known here."}]
    assert logged(out, "access")[0]["reason"] == "unknown_credential"


def test_a_screen_whose_leaving_was_never_heard_is_forgotten_at_the_next_join() -> None:
    c = make()
    c.handle(ScreenJoined(A, local=True), T0)
    c.handle(Presented("kiosk", "tag", "a1"), T0 + 1)
    assert c.kiosk.signed_in(A) == "m1"
    # A's stream ended but its ScreenLeft never reached the loop; B's join says
    # which streams are really open.
    c.handle(ScreenJoined(B, open=frozenset({B}), generation=3), T0 + 2)
    assert c.kiosk.screens == (B,)
    assert c.kiosk.signed_in(A) is None  # A's session went with it
    # Two joins that overtook each other: C's list (newer) already names D;
    # D's older list, without C, must not make the loop forget C.
    c.handle(
        ScreenJoined("screen-c", open=frozenset({B, "screen-c", "screen-d"}), generation=6), T0 + 3
    )
    c.handle(ScreenJoined("screen-d", open=frozenset({B, "screen-d"}), generation=5), T0 + 3)
    assert set(c.kiosk.screens) == {B, "screen-c", "screen-d"}


def test_a_tag_at_the_kiosk_reader_never_signs_in_on_a_lan_screen() -> None:
    c = make()
    c.handle(ScreenJoined(A), T0)  # a LAN screen, the only one connected
    out = c.handle(Presented("kiosk", "tag", "a1"), T0 + 1)
    assert c.kiosk.signed_in(A) is None and sent(out, "session", A) == []
    assert sent(out, "notice") == [{"error": "Sign in with your PIN on the screen."}]
    c.handle(ScreenJoined(B), T0 + 2)
    out = c.handle(Presented("kiosk", "tag", "a1"), T0 + 5)
    assert c.kiosk.signed_in(A) is None and c.kiosk.signed_in(B) is None
    assert sent(out, "session", B) == [] and sent(out, "session", A) == []
    assert sent(out, "notice") == [{"error": "Sign in with your PIN on the screen."}]
    # The controller's own screen joins: the tag signs in there, and only there.
    c.handle(ScreenJoined("screen-own", local=True), T0 + 6)
    out = c.handle(Presented("kiosk", "tag", "a1"), T0 + 7)
    assert c.kiosk.signed_in("screen-own") == "m1"
    assert c.kiosk.signed_in(A) is None and c.kiosk.signed_in(B) is None
    assert sent(out, "session", A) == [] and sent(out, "session", B) == []


def test_refresh_counts_the_screens_that_reloaded_and_confirmed() -> None:
    c = make()
    c.handle(Tick(), T0)
    assert [(r["status"], r["detail"]) for r in replies(refresh(c, "r0", T0))] == [
        ("done", "no kiosk screens connected")
    ]
    c.handle(ScreenJoined(A), T0)
    c.handle(ScreenJoined(B), T0)
    out = refresh(c, "r1", T0 + 1)
    assert [(r["status"], r["of"]) for r in replies(out)] == [("accepted", 2)]
    assert sent(out, "reload") == [{"refresh": "r1"}]
    # Reloading: the streams end and come back, then each page confirms.
    for screen in (A, B):
        c.handle(ScreenLeft(screen), T0 + 1.1)
        c.handle(ScreenJoined(screen), T0 + 1.5)
    answer, out = ask(c, A, "refreshed", T0 + 2, refresh="r1")
    assert answer.status == "ok" and replies(out) == []
    _, out = ask(c, B, "refreshed", T0 + 2, refresh="r1")
    assert [(r["status"], r["detail"], r["got"], r["of"]) for r in replies(out)] == [
        ("done", "2 screens reloaded and confirmed", 2, 2)
    ]
    # Two refreshes close together: a page reloaded after both began counts for both.
    refresh(c, "r3", T0 + 3)
    refresh(c, "r4", T0 + 3.1)
    for screen in (A, B):
        c.handle(ScreenJoined(screen), T0 + 3.5)
    ask(c, A, "refreshed", T0 + 4, refresh="r4")
    _, out = ask(c, B, "refreshed", T0 + 4, refresh="r4")
    assert sorted((r["id"], r["got"]) for r in replies(out) if r["status"] == "done") == [
        ("r3", 2),
        ("r4", 2),
    ]
    # One screen never comes back: after the wait, the count says so.
    refresh(c, "r2", T0 + 10)
    ask(c, A, "refreshed", T0 + 11, refresh="r2")
    assert replies(c.handle(Tick(), T0 + 10 + REFRESH_WAIT_S - 1)) == []
    out = c.handle(Tick(), T0 + 10 + REFRESH_WAIT_S)
    assert [(r["status"], r["got"], r["of"]) for r in replies(out)] == [("done", 1, 2)]
    assert "1 of 2 screens reloaded and confirmed" in replies(out)[0]["detail"]


def test_requests_from_an_unknown_screen_or_of_an_unknown_kind_change_nothing() -> None:
    c = make()
    answer, out = ask(c, A, "pin", T0, pin="4711")
    assert answer.status == "bad" and logged(out, "access") == []
    c.handle(ScreenJoined(A), T0)
    ask(c, A, "pin", T0, pin="4711")
    answer, out = ask(c, A, "launch", T0)
    assert answer.status == "bad" and logged(out, "debit") == []
    answer, _ = ask(c, A, "pin", T0, pin="12ab")
    assert answer.status == "bad"


# --- any sequence of screen actions keeps the kiosk's promises ---------------------------

SCREENS = (A, A, B)  # mostly the one screen, so sessions get somewhere
LOCAL = A  # the controller's own screen; B stands elsewhere on the LAN


class KioskMachine(RuleBasedStateMachine):
    """Screens come and go, members sign in and out, pay and idle, in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.c = make()
        self.now = T0
        self.debited = 0
        self.last_request: dict[str, float] = {}
        self.shown: dict[str, Any] = {}  # screen -> the board it shows
        self.panel: dict[str, Any] = {}  # screen -> the member panel it shows

    def handle(self, event: Any) -> list[Any]:
        out = self.c.handle(event, self.now)
        self.step(out)
        return out

    def step(self, out: list[Any]) -> None:
        for a in out:
            if isinstance(a, KioskSend):
                screens = [a.screen] if a.screen is not None else list(self.c.kiosk.screens)
                for screen in screens:
                    if a.kind == "board":
                        self.shown[screen] = a.data
                    elif a.kind == "session":
                        self.panel[screen] = a.data
        for body in logged(out, "debit"):
            event("paid for a court")
            assert body["amount"] % 400 == 0 or body["amount"] % 250 == 0
            self.debited += body["amount"]

    @initialize()
    def a_screen_is_on_the_wall(self) -> None:
        self.handle(ScreenJoined(A, local=True))

    @rule(screen=st.sampled_from(SCREENS))
    def join(self, screen: str) -> None:
        out = self.handle(ScreenJoined(screen, local=screen == LOCAL))
        assert sent(out, "session", screen) == [None]  # a page that loads shows nobody

    @rule(screen=st.sampled_from(SCREENS))
    def leave(self, screen: str) -> None:
        self.handle(ScreenLeft(screen))

    @rule(screen=st.sampled_from(SCREENS), pin=st.sampled_from(["4711", "4711", "0000", "1"]))
    def pin(self, screen: str, pin: str) -> None:
        answer, out = ask(self.c, screen, "pin", self.now, pin=pin)
        self.step(out)
        self.last_request[screen] = self.now  # at least as late as the session's own
        if answer.status == "ok":
            event("signed in by PIN")
            assert pin == "4711"

    @rule(value=st.sampled_from(["a1", "b2", "zz"]))
    def tag(self, value: str) -> None:
        out = self.handle(Presented("kiosk", "tag", value))
        # A tag at the kiosk reader never signs anyone in on a LAN screen.
        signed_in_on = {
            a.screen for a in out if isinstance(a, KioskSend) and a.kind == "session" and a.data
        }
        assert signed_in_on <= {LOCAL}
        for screen in self.c.kiosk.screens:
            if sent(out, "session", screen):
                self.last_request[screen] = self.now

    @rule(
        screen=st.sampled_from(SCREENS),
        light=st.sampled_from(["c1", "c2"]),
        blocks=st.integers(1, 5),
        pay=st.booleans(),
    )
    def buy(self, screen: str, light: str, blocks: int, pay: bool) -> None:
        what = "activate" if pay else "quote"
        quote, out = ask(self.c, screen, "quote", self.now, light=light, blocks=blocks)
        self.step(out)
        total = quote.body["quote"]["total"] if "quote" in quote.body else 0
        answer, out = ask(self.c, screen, what, self.now, light=light, blocks=blocks, total=total)
        self.step(out)
        self.last_request[screen] = self.now
        amounts = [d["amount"] for d in logged(out, "debit")]
        if pay and answer.status == "ok":
            assert amounts == ([total] if total > 0 else [])  # price x blocks, once
        else:
            assert amounts == []

    @rule(screen=st.sampled_from(SCREENS))
    def sign_out(self, screen: str) -> None:
        _, out = ask(self.c, screen, "sign_out", self.now)
        self.step(out)
        assert self.c.kiosk.signed_in(screen) is None

    @rule(seconds=st.sampled_from([1.0, 20.0, 59.0, 61.0, 400.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.handle(Tick())
        # Whatever was due is done: the loop may sleep (no busy loop).
        due = self.c.next_deadline()
        assert due is None or due > self.now
        # Rendered again only on a change, yet every screen shows what a fresh
        # render shows (any coalesced board is due by now: the last step was
        # at least a second ago).
        for screen in self.c.kiosk.screens:
            assert self.shown[screen] == board_of(self.c.store, self.c.facility, self.now)[0]
            who = self.c.kiosk.who(screen)
            fresh = member_view(who, self.c, self.now) if who is not None else None
            assert self.panel[screen] == fresh

    @invariant()
    def sessions_belong_to_connected_screens_and_never_outlive_idle(self) -> None:
        for screen in SCREENS:
            member = self.c.kiosk.signed_in(screen)
            if member is not None:
                assert screen in self.c.kiosk.screens
                # Every request a signed-in screen makes is noted above, so a
                # session still there after IDLE_S without one is a session kept too long.
                assert self.now - self.last_request.get(screen, -1e18) < IDLE_S

    @invariant()
    def credit_is_never_spent_twice_or_below_zero(self) -> None:
        assert self.c.credit("m1") == 1000 - self.debited
        assert self.c.credit("m1") >= 0


KioskMachine.TestCase.settings = settings(stateful_step_count=40)
test_kiosk_machine = KioskMachine.TestCase


def test_a_session_ends_when_the_member_loses_the_credential_or_membership() -> None:
    c = make()
    c.handle(ScreenJoined(A, local=True), T0)
    ask(c, A, "pin", T0, pin="4711")
    topic = f"{BASE}/data"
    body = rec(name="Ada Lovelace", groups=["adults"], creds=[["tag", "a1"]], credit=1000)
    delta = {
        "t": "delta",
        "epoch": "e1",
        "from": 3,
        "to": 4,
        "ops": [["put", "member", "m1", body]],
        "now": int(T0) + 5,
    }
    out = c.handle(PayloadReceived(topic, seal(KEY, b"ctl1", topic, delta)), T0 + 5)
    assert c.session.v == 4
    assert sent(out, "session", A) == [None] and c.kiosk.signed_in(A) is None
    # Signed in by tag instead; then the membership is switched off.
    c.handle(Presented("kiosk", "tag", "a1"), T0 + 6)
    assert c.kiosk.signed_in(A) == "m1"
    body = rec(name="Ada", active=False, groups=["adults"], creds=[["tag", "a1"]], credit=1000)
    delta = delta | {"from": 4, "to": 5, "ops": [["put", "member", "m1", body]]}
    out = c.handle(PayloadReceived(topic, seal(KEY, b"ctl1", topic, delta)), T0 + 7)
    assert sent(out, "session", A) == [None] and c.kiosk.signed_in(A) is None


def test_the_board_is_rendered_again_only_when_what_it_shows_may_have_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full sync built in slices renders the board once, after the swap; steps
    that change nothing on it render nothing."""
    renders: list[float] = []

    def counted(store: Any, facility: Any, now: float) -> Any:
        renders.append(now)
        return board_of(store, facility, now)

    c = make()
    c.handle(ScreenJoined(A), T0)
    boot = asked(c.handle(Connected(), T0))
    monkeypatch.setattr("firmware.core.kiosk.board_of", counted)
    for t in (T0 + 1, T0 + 2, T0 + 3):  # nothing on the board changes
        c.handle(Tick(), t)
        ask(c, A, "touch", t)
    assert renders == []
    members = [
        ("member", f"x{i}", rec(name=f"X {i}", creds=[["tag", f"t{i:05}"]])) for i in range(500)
    ]
    records = [(k, i, b) for k, i, b in RECORDS if k != "booking"] + members
    digest = digest_bytes(sum(digest_part(*r) for r in records))
    snap = {
        "t": "snap",
        "sync": boot,  # the hub answers the boot request with the new epoch's data
        "epoch": "e2",
        "v": 1,
        "page": 0,
        "pages": 1,
        "recs": [list(r) for r in records],
        "digest": digest,
        "now": int(T0) + 4,
    }
    topic = f"{BASE}/data"
    c.handle(PayloadReceived(topic, seal(KEY, b"ctl1", topic, snap)), T0 + 4)
    slices, out = 0, []
    while c.has_work():
        out += c.work(T0 + 4)
        slices += 1
    assert slices > 3 and c.session.epoch == "e2"
    assert renders == [T0 + 4]  # once, when the new data went live
    (board,) = sent(out, "board")
    assert board["bookings"] == []  # the new data has none


def test_the_board_follows_a_booking_starting_with_nothing_else_happening() -> None:
    c = make()
    c.handle(ScreenJoined(A), T0)
    start = T0 + 3600  # b1's, on c2, which waits for a check-in: nothing switches
    assert c.next_deadline() == start
    out = c.handle(Tick(), start)
    (board,) = sent(out, "board")
    assert [(b["id"], b["playing"]) for b in board["bookings"]] == [("b1", True), ("b2", False)]
