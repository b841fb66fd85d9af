"""PIN lockouts at the kiosk over plain HTTP, against a real controller, hub and
mosquitto (tests/kiosk_club.py): each screen counts its own refused PINs, an
expired member's PIN and an unknown one get the very same answer and both
count, and the site budget in `lock` mode closes every screen (issue 12 s6).
Time here is the wall clock, so the timed rules are in tests/test_pin_lockouts.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Broker
from tests.harness import logged_events
from tests.kiosk_club import ADA_PIN, kiosk_rig, post
from tests.test_kiosk_http import Stream

A, B, C = "screen-pins-000a", "screen-pins-000b", "screen-pins-000c"
EXPIRED_PIN = "5555"


def expired_member() -> str:
    return f"""
[[member]]
id = "m9"
name = "Cy Expired"
groups = ["adults"]
creds = [["pin", "{EXPIRED_PIN}"]]
until = {int(time.time()) - 86400}
"""


def refused(error: str) -> tuple[int, dict[str, str]]:
    """How the kiosk server answers a refused request."""
    return 403, {"status": "refused", "error": error}


def typed(base: str, screen: str, pin: str) -> tuple[int, Any]:
    return post(base + "/api/pin", {"screen": screen, "pin": pin})


def test_screens_count_on_their_own_and_every_refusal_is_the_same(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="alc.events")
    with kiosk_rig(broker, tmp_path, data=expired_member()) as (_rig, base):
        streams = [Stream(base, screen) for screen in (A, B)]
        try:
            for stream in streams:
                stream.next("board")
            expired = typed(base, A, EXPIRED_PIN)
            unknown = typed(base, A, "0000")
            assert expired == unknown == refused("PIN not accepted.")
            # Both counted: the third refused PIN closes screen A.
            assert typed(base, A, "0001") == refused(
                "PIN not accepted. PIN entry on this screen is closed for 1 min."
            )
            status, answer = typed(base, A, ADA_PIN)
            assert status == 403 and answer["error"].startswith("PIN entry on this screen")
            # Screen B is another place: Ada signs in there.
            status, answer = typed(base, B, ADA_PIN)
            assert status == 200 and answer["session"]["first_name"] == "Ada"
        finally:
            for stream in streams:
                stream.close()
    access = [body for type_, body in logged_events(caplog) if type_ == "access"]
    assert [(a["reader"], a["reason"]) for a in access] == [
        ("kiosk-screen", "expired"),
        ("kiosk-screen", "unknown_credential"),
        ("kiosk-screen", "unknown_credential"),
        ("kiosk-screen", "pin_lockout"),
        ("kiosk-screen", "granted"),
    ]
    system = [body for type_, body in logged_events(caplog) if type_ == "system"]
    assert {
        "what": "pin_lockout",
        "detail": f"kiosk screen {A}: PIN entry closed for 1 min after 3 refused PINs in a row",
    } in system


def test_the_budget_in_lock_mode_closes_every_screen(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="alc.events")
    pins = '\n[pins]\nbudget_per_hour = 4\nbudget_action = "lock"\n'
    with kiosk_rig(broker, tmp_path, config=pins) as (_rig, base):
        streams = [Stream(base, screen) for screen in (A, B, C)]
        try:
            for stream in streams:
                stream.next("board")
            for screen, pin in ((A, "0000"), (A, "0001"), (B, "0002")):
                assert typed(base, screen, pin) == refused("PIN not accepted.")
            # The fourth reaches the budget.
            assert typed(base, B, "0003") == refused(
                "PIN not accepted. PIN entry on this screen is closed for 60 min."
            )
            # C never saw a refused PIN, and Ada's right PIN is refused there too.
            assert typed(base, C, ADA_PIN) == refused(
                "PIN entry on this screen is closed for 60 min. Tags and cards still work."
            )
        finally:
            for stream in streams:
                stream.close()
    system = [body for type_, body in logged_events(caplog) if type_ == "system"]
    budget = [s["detail"] for s in system if s["what"] == "pin_budget"]
    assert budget == [
        "4 refused PINs within an hour at this site reached its budget. PIN entry is "
        "closed at every reader and screen (tags and cards still work)."
    ]
