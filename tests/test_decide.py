"""`decide`: one table row per reason code, plus the edges (PROTOCOL.md s3, s5).

The club below lives in Europe/London; `at("HH:MM")` is that wall-clock time on
Wednesday 12 June 2024 (BST, UTC+1), `at("HH:MM", day=15)` on Saturday 15 June.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest

from firmware.core import decide as d
from firmware.core.decide import Decision, Target, decide
from firmware.core.store import Store
from tests.builders import rec, store_of

LONDON = ZoneInfo("Europe/London")
EVERY_DAY = 127
MON_TO_FRI = 31


def at(hhmm: str, *, day: int = 12, second: int = 0) -> int:
    hour, minute = map(int, hhmm.split(":"))
    return int(datetime(2024, 6, day, hour, minute, second, tzinfo=LONDON).timestamp())


BK1_START, BK1_END = at("19:00"), at("20:00")

CLUB = [
    ("site", "site", rec(tz="Europe/London", name="Riverside")),
    ("schedule", "day", rec(windows=[[EVERY_DAY, 7 * 60, 22 * 60]])),
    ("schedule", "evening", rec(windows=[[MON_TO_FRI, 18 * 60, 22 * 60]])),
    ("schedule", "courts", rec(windows=[[EVERY_DAY, 8 * 60, 23 * 60]])),
    ("door", "main", rec(unlock_s=4, extended_s=20)),
    ("door", "side", rec()),  # defaults: unlock_s 5, extended_s 30
    ("door", "gym", rec(unlock_s=6)),
    ("door", "store", rec()),  # listed only by a group with a missing schedule
    ("door", "vault", rec(mode="locked", unlock_s=3)),
    ("door", "lobby", rec(mode="unlocked", unlock_s=7)),
    ("light", "c1", rec(price=200, schedule="courts")),
    ("light", "c2", rec()),  # free, no schedule of its own
    ("light", "c3", rec(schedule="no-such-schedule")),
    (
        "group",
        "all",
        rec(doors=["main", "side", "vault", "lobby"], lights=["c1", "c2", "c3"], schedule="day"),
    ),
    ("group", "evening", rec(doors=["gym"], schedule="evening")),
    ("group", "broken", rec(doors=["store"], schedule="no-such-schedule")),
    ("group", "ghost-door", rec(doors=["no-such-door"])),
    ("member", "alice", rec(creds=[["tag", "aa01"]], groups=["all"], credit=500)),
    ("member", "bob", rec(creds=[["card", "bb02"]], groups=["all"], extended=True)),
    ("member", "dave", rec(creds=[["tag", "dd04"]], groups=["all"], active=False)),
    ("member", "erin", rec(creds=[["tag", "ee05"]], groups=["all"], from_=at("12:00"))),
    ("member", "frank", rec(creds=[["tag", "ff06"]], groups=["all"], until=at("12:00"))),
    ("member", "gina", rec(creds=[["tag", "gg07"]], groups=["no-such-group"])),
    ("member", "hank", rec(creds=[["tag", "hh08"], ["pin", "7777"]], groups=["evening"])),
    ("member", "ivan", rec(creds=[["tag", "ii09"]], groups=["broken", "ghost-door"])),
    ("member", "judy", rec(creds=[["pin", "2468"]], groups=["all"], credit=100)),
    (
        "booking",
        "bk1",
        rec(
            lights=["c1"], doors=["main"], start=BK1_START, end=BK1_END, member="alice", pin="4321"
        ),
    ),
    (
        "booking",
        "bk2",
        rec(lights=["c2"], doors=["side"], start=at("10:00"), end=at("11:00"), pin="5555"),
    ),
    ("booking", "bk3", rec(doors=["gym"], start=at("10:00"), end=at("11:00"), pin="7777")),
    ("booking", "bk4", rec(lights=["c2"], start=at("10:00"), end=at("11:00"), member="dave")),
]

CUSTOM_SITE = [
    ("site", "site", rec(tz="Pacific/Auckland", pin_before_s=600, pin_after_s=0)),
    ("door", "main", rec()),
    ("booking", "b", rec(doors=["main"], start=1_000_000, end=1_003_600, pin="1111")),
]

DATASETS: dict[str, Store] = {
    "club": store_of(CLUB),
    "custom-site": store_of(CUSTOM_SITE),
    "empty": store_of([]),
}

MASTERS = (("card", "M0001"),)


class Row(NamedTuple):
    target: Target
    credkind: str
    value: str
    now: int
    expected: Decision
    dataset: str = "club"
    pending: Mapping[str, int] = {}


DOOR, LIGHT = Target.door, Target.light
NOON = at("12:00")


def yes(reason: str, member: str | None, unlock_s: int, booking: str | None = None) -> Decision:
    return Decision(True, reason, member, booking, unlock_s)


def no(reason: str, member: str | None = None) -> Decision:
    return Decision(False, reason, member, None, 0)


ROWS: dict[str, Row] = {
    # --- one row per reason code ---------------------------------------------------
    "granted": Row(DOOR("main"), "tag", "aa01", NOON, yes("granted", "alice", 4)),
    "booking": Row(DOOR("main"), "pin", "4321", BK1_START, yes("booking", "alice", 4, "bk1")),
    "master": Row(DOOR("main"), "card", "M0001", NOON, yes("master", None, 4)),
    "unknown_credential": Row(DOOR("main"), "tag", "zz99", NOON, no("unknown_credential")),
    "inactive": Row(DOOR("main"), "tag", "dd04", NOON, no("inactive", "dave")),
    "not_yet_valid": Row(DOOR("main"), "tag", "ee05", NOON - 1, no("not_yet_valid", "erin")),
    "expired": Row(DOOR("main"), "tag", "ff06", NOON, no("expired", "frank")),
    "no_access": Row(DOOR("gym"), "tag", "aa01", NOON, no("no_access", "alice")),
    "outside_schedule": Row(
        DOOR("main"), "tag", "aa01", at("06:59"), no("outside_schedule", "alice")
    ),
    "door_locked": Row(DOOR("vault"), "tag", "aa01", NOON, no("door_locked", "alice")),
    "insufficient_credit": Row(LIGHT("c1"), "pin", "2468", NOON, no("insufficient_credit", "judy")),
    # --- masters -------------------------------------------------------------------
    "master at a locked door": Row(DOOR("vault"), "card", "M0001", NOON, yes("master", None, 3)),
    "master with an empty dataset": Row(
        DOOR("front"), "card", "M0001", NOON, yes("master", None, 5), dataset="empty"
    ),
    "master at an unknown door": Row(
        DOOR("nowhere"), "card", "M0001", NOON, yes("master", None, 5)
    ),
    "master at a light": Row(LIGHT("c1"), "card", "M0001", at("03:00"), yes("master", None, 0)),
    "master at a light, empty dataset": Row(
        LIGHT("c1"), "card", "M0001", NOON, yes("master", None, 0), dataset="empty"
    ),
    "master value under another credkind is not a master": Row(
        DOOR("main"), "tag", "M0001", NOON, no("unknown_credential")
    ),
    # --- door targets --------------------------------------------------------------
    "extended member gets extended_s": Row(
        DOOR("main"), "card", "bb02", NOON, yes("granted", "bob", 20)
    ),
    "extended member, default extended_s": Row(
        DOOR("side"), "card", "bb02", NOON, yes("granted", "bob", 30)
    ),
    "default unlock_s": Row(DOOR("side"), "tag", "aa01", NOON, yes("granted", "alice", 5)),
    "unknown door": Row(DOOR("nowhere"), "tag", "aa01", NOON, no("no_access", "alice")),
    "empty dataset, no door": Row(
        DOOR("main"), "tag", "aa01", NOON, no("no_access"), dataset="empty"
    ),
    "locked door, unknown credential": Row(DOOR("vault"), "tag", "zz99", NOON, no("door_locked")),
    "unlocked door, unknown credential": Row(
        DOOR("lobby"), "tag", "zz99", at("03:00"), yes("granted", None, 7)
    ),
    "unlocked door, inactive member": Row(
        DOOR("lobby"), "tag", "dd04", NOON, yes("granted", "dave", 7)
    ),
    "unknown pin": Row(DOOR("main"), "pin", "9999", NOON, no("unknown_credential")),
    # --- member validity boundaries ------------------------------------------------
    "from is inclusive": Row(DOOR("main"), "tag", "ee05", NOON, yes("granted", "erin", 4)),
    "until is exclusive": Row(DOOR("main"), "tag", "ff06", NOON - 1, yes("granted", "frank", 4)),
    "inactive beats a booking at a light": Row(
        LIGHT("c2"), "tag", "dd04", at("10:30"), no("inactive", "dave")
    ),
    # --- group schedules -----------------------------------------------------------
    "group schedule opens at 07:00": Row(
        DOOR("main"), "tag", "aa01", at("07:00"), yes("granted", "alice", 4)
    ),
    "group schedule last second": Row(
        DOOR("main"), "tag", "aa01", at("21:59", second=59), yes("granted", "alice", 4)
    ),
    "group schedule closes at 22:00": Row(
        DOOR("main"), "tag", "aa01", at("22:00"), no("outside_schedule", "alice")
    ),
    "weekday evening group, morning": Row(
        DOOR("gym"), "tag", "hh08", NOON, no("outside_schedule", "hank")
    ),
    "weekday evening group, evening": Row(
        DOOR("gym"), "tag", "hh08", at("18:00"), yes("granted", "hank", 6)
    ),
    "weekday evening group, Saturday": Row(
        DOOR("gym"), "tag", "hh08", at("19:00", day=15), no("outside_schedule", "hank")
    ),
    # --- missing references fail closed --------------------------------------------
    "missing group grants nothing": Row(DOOR("main"), "tag", "gg07", NOON, no("no_access", "gina")),
    "missing schedule is never open": Row(
        DOOR("store"), "tag", "ii09", NOON, no("outside_schedule", "ivan")
    ),
    "group listing a missing door": Row(
        DOOR("no-such-door"), "tag", "ii09", NOON, no("no_access", "ivan")
    ),
    "light with a missing schedule": Row(
        LIGHT("c3"), "tag", "aa01", NOON, no("outside_schedule", "alice")
    ),
    "unknown light": Row(LIGHT("c9"), "tag", "aa01", NOON, no("no_access", "alice")),
    # --- booking PINs --------------------------------------------------------------
    "booking PIN at its light": Row(
        LIGHT("c1"), "pin", "4321", BK1_START, yes("booking", "alice", 0, "bk1")
    ),
    "booking PIN at the wrong door": Row(DOOR("side"), "pin", "4321", BK1_START, no("no_access")),
    "booking PIN at the wrong light": Row(LIGHT("c2"), "pin", "4321", BK1_START, no("no_access")),
    "booking PIN, first second of window": Row(
        DOOR("main"), "pin", "4321", BK1_START - 1800, yes("booking", "alice", 4, "bk1")
    ),
    "booking PIN, a second too early": Row(
        DOOR("main"), "pin", "4321", BK1_START - 1801, no("outside_schedule")
    ),
    "booking PIN, last second of window": Row(
        DOOR("main"), "pin", "4321", BK1_END + 899, yes("booking", "alice", 4, "bk1")
    ),
    "booking PIN, window has ended": Row(
        DOOR("main"), "pin", "4321", BK1_END + 900, no("outside_schedule")
    ),
    "booking PIN without a member": Row(
        DOOR("side"), "pin", "5555", at("10:00"), yes("booking", None, 5, "bk2")
    ),
    "booking PIN ignores group schedules": Row(
        LIGHT("c2"), "pin", "5555", at("09:30"), yes("booking", None, 0, "bk2")
    ),
    "booking PIN is only a pin": Row(
        DOOR("side"), "tag", "5555", at("10:00"), no("unknown_credential")
    ),
    "booking PIN before a member's own pin": Row(
        DOOR("gym"), "pin", "7777", at("10:30"), yes("booking", None, 6, "bk3")
    ),
    "member pin that is also a booking PIN elsewhere": Row(
        DOOR("main"), "pin", "7777", at("10:30"), no("no_access", "hank")
    ),
    "member pin that is a booking PIN out of window": Row(
        DOOR("gym"), "pin", "7777", at("18:30"), yes("granted", "hank", 6)
    ),
    "booking PIN, custom site window, first second": Row(
        DOOR("main"),
        "pin",
        "1111",
        1_000_000 - 600,
        yes("booking", None, 5, "b"),
        dataset="custom-site",
    ),
    "booking PIN, custom site window, too early": Row(
        DOOR("main"), "pin", "1111", 1_000_000 - 601, no("outside_schedule"), dataset="custom-site"
    ),
    "booking PIN, custom site window, last second": Row(
        DOOR("main"), "pin", "1111", 1_003_599, yes("booking", None, 5, "b"), dataset="custom-site"
    ),
    "booking PIN, custom site window, over": Row(
        DOOR("main"), "pin", "1111", 1_003_600, no("outside_schedule"), dataset="custom-site"
    ),
    # --- lights: booking member, schedules, credit ---------------------------------
    "booking member at its light": Row(
        LIGHT("c1"), "tag", "aa01", BK1_START, yes("booking", "alice", 0, "bk1")
    ),
    "booking member, window start": Row(
        LIGHT("c1"), "tag", "aa01", BK1_START - 1800, yes("booking", "alice", 0, "bk1")
    ),
    "booking member, before window": Row(
        LIGHT("c1"), "tag", "aa01", BK1_START - 1801, yes("granted", "alice", 0)
    ),
    "booking member after its window, group closed": Row(
        LIGHT("c1"), "tag", "aa01", at("23:00"), no("outside_schedule", "alice")
    ),
    "booking member at a door is not a booking": Row(
        DOOR("main"), "tag", "aa01", BK1_START, yes("granted", "alice", 4)
    ),
    "booking is free of charge": Row(
        LIGHT("c1"),
        "tag",
        "aa01",
        BK1_START,
        yes("booking", "alice", 0, "bk1"),
        pending={"alice": 10_000},
    ),
    "light: group schedule closed": Row(
        LIGHT("c2"), "tag", "aa01", at("06:30"), no("outside_schedule", "alice")
    ),
    "light: own schedule closed": Row(
        LIGHT("c1"), "tag", "aa01", at("07:30"), no("outside_schedule", "alice")
    ),
    "light: own schedule open": Row(
        LIGHT("c1"), "tag", "aa01", at("08:00"), yes("granted", "alice", 0)
    ),
    "light: no group lists it": Row(
        LIGHT("c1"), "tag", "hh08", at("19:00"), no("no_access", "hank")
    ),
    "light: free light, zero credit": Row(
        LIGHT("c2"), "card", "bb02", NOON, yes("granted", "bob", 0)
    ),
    "credit exactly the price": Row(
        LIGHT("c1"), "tag", "aa01", NOON, yes("granted", "alice", 0), pending={"alice": 300}
    ),
    "pending debits reduce credit": Row(
        LIGHT("c1"), "tag", "aa01", NOON, no("insufficient_credit", "alice"), pending={"alice": 301}
    ),
    "other members' pending debits do not count": Row(
        LIGHT("c1"), "tag", "aa01", NOON, yes("granted", "alice", 0), pending={"judy": 10_000}
    ),
    "pending debits do not matter at doors": Row(
        DOOR("main"), "tag", "aa01", NOON, yes("granted", "alice", 4), pending={"alice": 10_000}
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_decide(row: Row) -> None:
    got = decide(
        DATASETS[row.dataset],
        row.target,
        row.credkind,
        row.value,
        row.now,
        masters=MASTERS,
        pending_debits=row.pending,
    )
    assert got == row.expected


def test_every_reason_code_but_pin_lockout_has_a_row() -> None:
    reasons = {
        value for name, value in vars(d).items() if name.isupper() and isinstance(value, str)
    }
    reasons -= {d.PIN_LOCKOUT}
    assert reasons == {
        "granted",
        "booking",
        "master",
        "unknown_credential",
        "inactive",
        "not_yet_valid",
        "expired",
        "no_access",
        "outside_schedule",
        "door_locked",
        "insufficient_credit",
    }
    assert reasons <= set(ROWS)
    for reason in reasons:
        assert ROWS[reason].expected.reason == reason


def test_masters_pass_whatever_the_data_says() -> None:
    store = DATASETS["club"]
    masters = (("tag", "dd04"),)  # dave is inactive, but also a local master
    kwargs: dict[str, Any] = {"masters": masters}
    assert decide(store, DOOR("main"), "tag", "dd04", at("03:00"), **kwargs) == yes(
        "master", None, 4
    )
    assert decide(store, DOOR("main"), "tag", "dd04", at("03:00")) == no("inactive", "dave")


def test_credential_claimed_twice_belongs_to_the_later_member() -> None:
    records = [
        ("door", "main", rec()),
        ("group", "g", rec(doors=["main"])),
        ("member", "old", rec(creds=[["tag", "x1"]], groups=["g"])),
        ("member", "new", rec(creds=[["tag", "x1"]], groups=["g"], extended=True)),
    ]
    built = Store.build(records)
    assert [(c.loser, c.winner) for c in built.conflicts] == [("old", "new")]
    assert decide(built.store, DOOR("main"), "tag", "x1", NOON) == yes("granted", "new", 30)
