"""`is_open`: weekly windows in the site's wall-clock time (PROTOCOL.md s3).

Every instant below is written in UTC and commented with the local time it is at
the site. Each row also carries that local time, and the test checks it first, so
a slip in the hand arithmetic fails loudly instead of testing the wrong instant.

DST changes used (all 2024):
- Europe/London  spring forward Sun 31 Mar 01:00 UTC: 01:00 GMT -> 02:00 BST
                 fall back      Sun 27 Oct 01:00 UTC: 02:00 BST -> 01:00 GMT
- Pacific/Auckland fall back    Sun  7 Apr, Sat 6 Apr 14:00 UTC: 03:00 NZDT -> 02:00 NZST
                 spring forward Sun 29 Sep, Sat 28 Sep 14:00 UTC: 02:00 NZST -> 03:00 NZDT
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from firmware.core.model import Schedule
from firmware.core.schedules import is_open
from tests.builders import rec, store_of

MON, TUE, WED, THU, FRI, SAT, SUN = (1 << i for i in range(7))
EVERY_DAY = 127


def schedule(windows: list[list[int]], closed: list[str] | None = None) -> Schedule:
    """A schedule parsed from a record body, exactly as the controller would."""
    fields: dict[str, object] = {"windows": windows}
    if closed is not None:
        fields["except_"] = closed
    return store_of([("schedule", "s", rec(**fields))]).schedules["s"]


def utc(text: str) -> float:
    """'2024-03-31 01:00:00' in UTC -> Unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def check(sched: Schedule, tz: str, when_utc: str, local: str, expected: bool) -> None:
    zone = ZoneInfo(tz)
    now = utc(when_utc)
    shown = datetime.fromtimestamp(now, zone).strftime("%a %Y-%m-%d %H:%M:%S %Z")
    assert shown == local, f"row's comment is wrong: {when_utc} UTC is {shown} in {tz}"
    assert is_open(sched, zone, now) is expected, f"{local}: expected open={expected}"


# --- plain weekly windows, UTC site ---------------------------------------------------

OFFICE = schedule([[MON | TUE | WED | THU | FRI, 9 * 60, 17 * 60]])


@pytest.mark.parametrize(
    ("when_utc", "local", "expected"),
    [
        ("2024-06-12 08:59:59", "Wed 2024-06-12 08:59:59 UTC", False),  # a second before
        ("2024-06-12 09:00:00", "Wed 2024-06-12 09:00:00 UTC", True),  # start is inclusive
        ("2024-06-12 16:59:59", "Wed 2024-06-12 16:59:59 UTC", True),
        ("2024-06-12 17:00:00", "Wed 2024-06-12 17:00:00 UTC", False),  # end is exclusive
        ("2024-06-15 12:00:00", "Sat 2024-06-15 12:00:00 UTC", False),  # not a listed day
        ("2024-06-16 12:00:00", "Sun 2024-06-16 12:00:00 UTC", False),
        ("2024-06-17 12:00:00", "Mon 2024-06-17 12:00:00 UTC", True),
        ("2024-06-14 12:00:00", "Fri 2024-06-14 12:00:00 UTC", True),
    ],
)
def test_weekday_window_boundaries(when_utc: str, local: str, expected: bool) -> None:
    check(OFFICE, "UTC", when_utc, local, expected)


@pytest.mark.parametrize("day", range(7))
def test_each_day_bit_selects_exactly_its_weekday(day: int) -> None:
    sched = schedule([[1 << day, 0, 1440]])
    monday = utc("2024-06-10 12:00:00")  # Mon 2024-06-10 12:00 UTC
    for offset in range(7):
        now = monday + offset * 86400
        assert is_open(sched, ZoneInfo("UTC"), now) is (offset == day), offset


def test_no_windows_is_never_open() -> None:
    sched = schedule([])
    for hour in range(0, 24 * 7, 5):
        assert not is_open(sched, ZoneInfo("UTC"), utc("2024-06-10 00:00:00") + hour * 3600)


def test_several_windows_any_one_opens() -> None:
    sched = schedule([[EVERY_DAY, 6 * 60, 8 * 60], [EVERY_DAY, 18 * 60, 20 * 60]])
    check(sched, "UTC", "2024-06-12 07:00:00", "Wed 2024-06-12 07:00:00 UTC", True)
    check(sched, "UTC", "2024-06-12 12:00:00", "Wed 2024-06-12 12:00:00 UTC", False)
    check(sched, "UTC", "2024-06-12 19:59:59", "Wed 2024-06-12 19:59:59 UTC", True)
    check(sched, "UTC", "2024-06-12 20:00:00", "Wed 2024-06-12 20:00:00 UTC", False)


def test_window_in_site_time_not_utc() -> None:
    sched = schedule([[EVERY_DAY, 9 * 60, 17 * 60]])
    # 08:30 UTC is 09:30 BST (open in London, closed in UTC)
    check(sched, "Europe/London", "2024-06-12 08:30:00", "Wed 2024-06-12 09:30:00 BST", True)
    check(sched, "UTC", "2024-06-12 08:30:00", "Wed 2024-06-12 08:30:00 UTC", False)
    # 20:30 UTC Tue is 08:30 NZST Wed in Auckland: not yet open
    check(sched, "Pacific/Auckland", "2024-06-11 20:30:00", "Wed 2024-06-12 08:30:00 NZST", False)
    check(sched, "Pacific/Auckland", "2024-06-11 21:00:00", "Wed 2024-06-12 09:00:00 NZST", True)
    # 13:00 UTC is 09:00 EDT in New York: open
    check(sched, "America/New_York", "2024-06-12 13:00:00", "Wed 2024-06-12 09:00:00 EDT", True)


# --- windows past midnight ------------------------------------------------------------

LATE = schedule([[FRI, 22 * 60, 26 * 60]])  # Fri 22:00 .. Sat 02:00


@pytest.mark.parametrize(
    ("when_utc", "local", "expected"),
    [
        ("2024-06-14 21:59:59", "Fri 2024-06-14 21:59:59 UTC", False),
        ("2024-06-14 22:00:00", "Fri 2024-06-14 22:00:00 UTC", True),
        ("2024-06-14 23:59:59", "Fri 2024-06-14 23:59:59 UTC", True),
        ("2024-06-15 00:00:00", "Sat 2024-06-15 00:00:00 UTC", True),  # the tail, a Saturday
        ("2024-06-15 01:59:59", "Sat 2024-06-15 01:59:59 UTC", True),
        ("2024-06-15 02:00:00", "Sat 2024-06-15 02:00:00 UTC", False),
        ("2024-06-15 22:30:00", "Sat 2024-06-15 22:30:00 UTC", False),  # Sat is not listed
        ("2024-06-16 01:00:00", "Sun 2024-06-16 01:00:00 UTC", False),  # nor its tail
        ("2024-06-14 01:00:00", "Fri 2024-06-14 01:00:00 UTC", False),  # Thu is not listed
    ],
)
def test_window_past_midnight(when_utc: str, local: str, expected: bool) -> None:
    check(LATE, "UTC", when_utc, local, expected)


def test_sunday_window_runs_into_monday() -> None:
    sched = schedule([[SUN, 23 * 60, 25 * 60]])  # Sun 23:00 .. Mon 01:00
    check(sched, "UTC", "2024-06-16 23:30:00", "Sun 2024-06-16 23:30:00 UTC", True)
    check(sched, "UTC", "2024-06-17 00:30:00", "Mon 2024-06-17 00:30:00 UTC", True)
    check(sched, "UTC", "2024-06-17 01:00:00", "Mon 2024-06-17 01:00:00 UTC", False)
    check(sched, "UTC", "2024-06-10 00:30:00", "Mon 2024-06-10 00:30:00 UTC", True)
    check(sched, "UTC", "2024-06-11 00:30:00", "Tue 2024-06-11 00:30:00 UTC", False)


def test_full_day_window_from_noon_to_noon() -> None:
    sched = schedule([[WED, 12 * 60, 36 * 60]])  # Wed 12:00 .. Thu 12:00
    check(sched, "UTC", "2024-06-12 11:59:59", "Wed 2024-06-12 11:59:59 UTC", False)
    check(sched, "UTC", "2024-06-12 12:00:00", "Wed 2024-06-12 12:00:00 UTC", True)
    check(sched, "UTC", "2024-06-13 11:59:59", "Thu 2024-06-13 11:59:59 UTC", True)
    check(sched, "UTC", "2024-06-13 12:00:00", "Thu 2024-06-13 12:00:00 UTC", False)


# --- closed dates ---------------------------------------------------------------------


def test_except_date_closes_that_day_only() -> None:
    sched = schedule([[EVERY_DAY, 9 * 60, 17 * 60]], ["2024-06-12"])
    check(sched, "UTC", "2024-06-11 12:00:00", "Tue 2024-06-11 12:00:00 UTC", True)
    check(sched, "UTC", "2024-06-12 09:00:00", "Wed 2024-06-12 09:00:00 UTC", False)
    check(sched, "UTC", "2024-06-12 12:00:00", "Wed 2024-06-12 12:00:00 UTC", False)
    check(sched, "UTC", "2024-06-13 12:00:00", "Thu 2024-06-13 12:00:00 UTC", True)


def test_except_date_closes_the_tail_after_midnight() -> None:
    # Fri and Sat 22:00 .. 02:00 next day; Friday 14 June is closed.
    sched = schedule([[FRI | SAT, 22 * 60, 26 * 60]], ["2024-06-14"])
    check(sched, "UTC", "2024-06-14 23:00:00", "Fri 2024-06-14 23:00:00 UTC", False)
    check(sched, "UTC", "2024-06-15 01:00:00", "Sat 2024-06-15 01:00:00 UTC", False)  # Fri's tail
    check(sched, "UTC", "2024-06-15 23:00:00", "Sat 2024-06-15 23:00:00 UTC", True)
    check(sched, "UTC", "2024-06-16 01:00:00", "Sun 2024-06-16 01:00:00 UTC", True)  # Sat's tail
    check(sched, "UTC", "2024-06-21 23:00:00", "Fri 2024-06-21 23:00:00 UTC", True)  # next Fri


def test_except_date_does_not_close_the_previous_days_tail() -> None:
    # Same windows, but Saturday 15 June is closed: Friday's tail into it stays open.
    sched = schedule([[FRI | SAT, 22 * 60, 26 * 60]], ["2024-06-15"])
    check(sched, "UTC", "2024-06-14 23:00:00", "Fri 2024-06-14 23:00:00 UTC", True)
    check(sched, "UTC", "2024-06-15 01:00:00", "Sat 2024-06-15 01:00:00 UTC", True)
    check(sched, "UTC", "2024-06-15 23:00:00", "Sat 2024-06-15 23:00:00 UTC", False)
    check(sched, "UTC", "2024-06-16 01:00:00", "Sun 2024-06-16 01:00:00 UTC", False)


def test_except_date_is_a_site_local_date() -> None:
    sched = schedule([[EVERY_DAY, 0, 1440]], ["2024-06-12"])
    # 12:30 UTC Tue 11 June is already Wed 12 June in Auckland: closed there.
    check(sched, "Pacific/Auckland", "2024-06-11 12:30:00", "Wed 2024-06-12 00:30:00 NZST", False)
    check(sched, "Pacific/Auckland", "2024-06-11 11:59:59", "Tue 2024-06-11 23:59:59 NZST", True)
    # 23:30 UTC Wed 12 June is still Wed 12 June in New York: closed there ...
    check(sched, "America/New_York", "2024-06-12 23:30:00", "Wed 2024-06-12 19:30:00 EDT", False)
    # ... and 03:30 UTC Wed 12 June is Tue 11 June 23:30 there: open.
    check(sched, "America/New_York", "2024-06-12 03:30:00", "Tue 2024-06-11 23:30:00 EDT", True)


# --- DST: Europe/London ---------------------------------------------------------------

LONDON = "Europe/London"


@pytest.mark.parametrize(
    ("when_utc", "local", "expected"),
    [
        # Sun 31 Mar 2024, 01:00-03:00 wall clock; 01:00..01:59 local do not exist.
        ("2024-03-31 00:30:00", "Sun 2024-03-31 00:30:00 GMT", False),
        ("2024-03-31 00:59:59", "Sun 2024-03-31 00:59:59 GMT", False),
        ("2024-03-31 01:00:00", "Sun 2024-03-31 02:00:00 BST", True),  # clocks jump into it
        ("2024-03-31 01:59:59", "Sun 2024-03-31 02:59:59 BST", True),
        ("2024-03-31 02:00:00", "Sun 2024-03-31 03:00:00 BST", False),  # one real hour only
    ],
)
def test_london_spring_forward_window(when_utc: str, local: str, expected: bool) -> None:
    check(schedule([[SUN, 60, 180]]), LONDON, when_utc, local, expected)


@pytest.mark.parametrize(
    ("when_utc", "local", "expected"),
    [
        # Sun 27 Oct 2024, 00:30-02:30 wall clock; 01:00..01:59 happen twice.
        ("2024-10-26 23:29:59", "Sun 2024-10-27 00:29:59 BST", False),
        ("2024-10-26 23:30:00", "Sun 2024-10-27 00:30:00 BST", True),
        ("2024-10-27 00:15:00", "Sun 2024-10-27 01:15:00 BST", True),  # first 01:15
        ("2024-10-27 00:59:59", "Sun 2024-10-27 01:59:59 BST", True),
        ("2024-10-27 01:00:00", "Sun 2024-10-27 01:00:00 GMT", True),  # clocks go back
        ("2024-10-27 01:15:00", "Sun 2024-10-27 01:15:00 GMT", True),  # second 01:15
        ("2024-10-27 02:29:59", "Sun 2024-10-27 02:29:59 GMT", True),  # three real hours
        ("2024-10-27 02:30:00", "Sun 2024-10-27 02:30:00 GMT", False),
    ],
)
def test_london_fall_back_window(when_utc: str, local: str, expected: bool) -> None:
    check(schedule([[SUN, 30, 150]]), LONDON, when_utc, local, expected)


@pytest.mark.parametrize(
    ("when_utc", "local", "expected"),
    [
        # Sat 30 Mar 22:00 .. Sun 31 Mar 03:00 wall clock, across the spring change.
        ("2024-03-30 21:59:59", "Sat 2024-03-30 21:59:59 GMT", False),
        ("2024-03-30 22:00:00", "Sat 2024-03-30 22:00:00 GMT", True),
        ("2024-03-31 00:30:00", "Sun 2024-03-31 00:30:00 GMT", True),
        ("2024-03-31 01:00:00", "Sun 2024-03-31 02:00:00 BST", True),
        ("2024-03-31 01:59:59", "Sun 2024-03-31 02:59:59 BST", True),
        ("2024-03-31 02:00:00", "Sun 2024-03-31 03:00:00 BST", False),
    ],
)
def test_london_window_past_midnight_across_spring_forward(
    when_utc: str, local: str, expected: bool
) -> None:
    check(schedule([[SAT, 22 * 60, 27 * 60]]), LONDON, when_utc, local, expected)


@pytest.mark.parametrize(
    ("when_utc", "local", "expected"),
    [
        # Sat 26 Oct 23:00 .. Sun 27 Oct 01:30 wall clock, across the fall-back change:
        # the wall clock shows 01:00..01:29 twice, and the window is open both times.
        ("2024-10-26 21:59:59", "Sat 2024-10-26 22:59:59 BST", False),
        ("2024-10-26 22:00:00", "Sat 2024-10-26 23:00:00 BST", True),
        ("2024-10-26 23:59:59", "Sun 2024-10-27 00:59:59 BST", True),
        ("2024-10-27 00:29:59", "Sun 2024-10-27 01:29:59 BST", True),
        ("2024-10-27 00:30:00", "Sun 2024-10-27 01:30:00 BST", False),
        ("2024-10-27 01:00:00", "Sun 2024-10-27 01:00:00 GMT", True),
        ("2024-10-27 01:29:59", "Sun 2024-10-27 01:29:59 GMT", True),
        ("2024-10-27 01:30:00", "Sun 2024-10-27 01:30:00 GMT", False),
    ],
)
def test_london_window_past_midnight_across_fall_back(
    when_utc: str, local: str, expected: bool
) -> None:
    check(schedule([[SAT, 23 * 60, 25 * 60 + 30]]), LONDON, when_utc, local, expected)


def test_london_except_date_closes_tail_across_spring_forward() -> None:
    sched = schedule([[SAT, 22 * 60, 27 * 60]], ["2024-03-30"])
    check(sched, LONDON, "2024-03-30 22:00:00", "Sat 2024-03-30 22:00:00 GMT", False)
    check(sched, LONDON, "2024-03-31 01:30:00", "Sun 2024-03-31 02:30:00 BST", False)
    sched = schedule([[SAT, 22 * 60, 27 * 60]], ["2024-03-31"])
    check(sched, LONDON, "2024-03-31 01:30:00", "Sun 2024-03-31 02:30:00 BST", True)


# --- DST: Pacific/Auckland ------------------------------------------------------------

AUCKLAND = "Pacific/Auckland"


@pytest.mark.parametrize(
    ("when_utc", "local", "expected"),
    [
        # Sun 29 Sep 2024, 01:00-03:00 wall clock; 02:00..02:59 local do not exist.
        ("2024-09-28 12:59:59", "Sun 2024-09-29 00:59:59 NZST", False),
        ("2024-09-28 13:00:00", "Sun 2024-09-29 01:00:00 NZST", True),
        ("2024-09-28 13:59:59", "Sun 2024-09-29 01:59:59 NZST", True),
        ("2024-09-28 14:00:00", "Sun 2024-09-29 03:00:00 NZDT", False),  # 02:xx skipped
    ],
)
def test_auckland_spring_forward_window(when_utc: str, local: str, expected: bool) -> None:
    check(schedule([[SUN, 60, 180]]), AUCKLAND, when_utc, local, expected)


def test_auckland_window_inside_the_skipped_hour_never_opens() -> None:
    sched = schedule([[SUN, 2 * 60, 2 * 60 + 30]])  # Sun 02:00-02:30, which does not exist
    start = utc("2024-09-28 12:00:00")  # Sun 2024-09-29 00:00 NZST
    for minute in range(0, 4 * 60):  # through Sun 05:00 NZDT
        assert not is_open(sched, ZoneInfo(AUCKLAND), start + minute * 60), minute
    # ... while on an ordinary Sunday it does.
    check(sched, AUCKLAND, "2024-10-05 13:15:00", "Sun 2024-10-06 02:15:00 NZDT", True)


@pytest.mark.parametrize(
    ("when_utc", "local", "expected"),
    [
        # Sun 7 Apr 2024, 01:30-03:30 wall clock; 02:00..02:59 happen twice.
        ("2024-04-06 12:29:59", "Sun 2024-04-07 01:29:59 NZDT", False),
        ("2024-04-06 12:30:00", "Sun 2024-04-07 01:30:00 NZDT", True),
        ("2024-04-06 13:30:00", "Sun 2024-04-07 02:30:00 NZDT", True),  # first 02:30
        ("2024-04-06 14:00:00", "Sun 2024-04-07 02:00:00 NZST", True),  # clocks go back
        ("2024-04-06 14:30:00", "Sun 2024-04-07 02:30:00 NZST", True),  # second 02:30
        ("2024-04-06 15:29:59", "Sun 2024-04-07 03:29:59 NZST", True),
        ("2024-04-06 15:30:00", "Sun 2024-04-07 03:30:00 NZST", False),
    ],
)
def test_auckland_fall_back_window(when_utc: str, local: str, expected: bool) -> None:
    check(schedule([[SUN, 90, 210]]), AUCKLAND, when_utc, local, expected)


@pytest.mark.parametrize(
    ("when_utc", "local", "expected"),
    [
        # Sat 28 Sep 22:00 .. Sun 29 Sep 04:00 wall clock, across the spring change.
        ("2024-09-28 09:59:59", "Sat 2024-09-28 21:59:59 NZST", False),
        ("2024-09-28 10:00:00", "Sat 2024-09-28 22:00:00 NZST", True),
        ("2024-09-28 13:59:59", "Sun 2024-09-29 01:59:59 NZST", True),
        ("2024-09-28 14:00:00", "Sun 2024-09-29 03:00:00 NZDT", True),
        ("2024-09-28 14:59:59", "Sun 2024-09-29 03:59:59 NZDT", True),
        ("2024-09-28 15:00:00", "Sun 2024-09-29 04:00:00 NZDT", False),
    ],
)
def test_auckland_window_past_midnight_across_spring_forward(
    when_utc: str, local: str, expected: bool
) -> None:
    check(schedule([[SAT, 22 * 60, 28 * 60]]), AUCKLAND, when_utc, local, expected)


@pytest.mark.parametrize(
    ("when_utc", "local", "expected"),
    [
        # Sat 6 Apr 23:00 .. Sun 7 Apr 02:30 wall clock, across the fall-back change:
        # 02:00..02:29 happen twice and the window is open both times.
        ("2024-04-06 09:59:59", "Sat 2024-04-06 22:59:59 NZDT", False),
        ("2024-04-06 10:00:00", "Sat 2024-04-06 23:00:00 NZDT", True),
        ("2024-04-06 13:29:59", "Sun 2024-04-07 02:29:59 NZDT", True),
        ("2024-04-06 13:30:00", "Sun 2024-04-07 02:30:00 NZDT", False),
        ("2024-04-06 14:00:00", "Sun 2024-04-07 02:00:00 NZST", True),
        ("2024-04-06 14:29:59", "Sun 2024-04-07 02:29:59 NZST", True),
        ("2024-04-06 14:30:00", "Sun 2024-04-07 02:30:00 NZST", False),
    ],
)
def test_auckland_window_past_midnight_across_fall_back(
    when_utc: str, local: str, expected: bool
) -> None:
    check(schedule([[SAT, 23 * 60, 26 * 60 + 30]]), AUCKLAND, when_utc, local, expected)


def test_auckland_except_date_closes_tail_across_fall_back() -> None:
    sched = schedule([[SAT, 23 * 60, 26 * 60 + 30]], ["2024-04-06"])
    check(sched, AUCKLAND, "2024-04-06 10:00:00", "Sat 2024-04-06 23:00:00 NZDT", False)
    check(sched, AUCKLAND, "2024-04-06 14:00:00", "Sun 2024-04-07 02:00:00 NZST", False)
