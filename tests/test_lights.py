"""`Lights`: court light circuits in virtual time (PROTOCOL.md s3, s5, s6).

Each timeline test drives the state machine the way the runtime does: it calls
`tick` at every `next_deadline()` and compares the exact actions of each call.
Times are seconds after `T0`; `run(lights, upto)` returns `(time - T0, actions)`
for every tick up to `T0 + upto`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.core.actions import FacilityAction, LogEvent, Output
from firmware.core.circuit import CircuitWiring, light_event
from firmware.core.decide import Decision
from firmware.core.errors import LocalError, RemoteError
from firmware.core.lights import Lights, debit_event
from firmware.core.store import Store
from tests.builders import rec, store_of

T0 = 1_718_000_000

ON, WARN, OFF, EXTENDED = "on", "warn", "off", "extended"
BOOKING, CHECKIN, REMOTE = "booking", "checkin", "remote"
ACT = "activation"

Timeline = list[tuple[float, list[FacilityAction]]]


# --- helpers ------------------------------------------------------------------------


def club(*records: tuple[str, str, bytes], checkin_before_s: int = 1800) -> Store:
    return store_of([("site", "site", rec(checkin_before_s=checkin_before_s)), *records])


def light(id: str = "c1", **fields: Any) -> tuple[str, str, bytes]:
    return ("light", id, rec(**fields))


def booking(
    id: str,
    start: int,
    end: int,
    *,
    lights: tuple[str, ...] = ("c1",),
    member: str | None = "m1",
    pin: str | None = None,
) -> tuple[str, str, bytes]:
    body = rec(lights=list(lights), start=T0 + start, end=T0 + end, member=member, pin=pin)
    return ("booking", id, body)


def lamp(on: bool, id: str = "c1") -> Output:
    return Output(f"light:{id}", on)


def warn(on: bool, id: str = "c1") -> Output:
    return Output(f"warn:{id}", on)


def ev(
    what: str,
    why: str,
    until: float | None = None,
    member: str | None = None,
    booking: str | None = None,
    light: str = "c1",
) -> LogEvent:
    return light_event(light, what, why, member, booking, None if until is None else T0 + until)


def debit(amount: int, seconds: int, balance: int, member: str = "m1") -> LogEvent:
    return debit_event(member, "c1", amount, seconds, balance)


WARN_OUT = CircuitWiring("c1", warn_output=True)
FLASH = CircuitWiring("c1", warn_output=False, flash_s=2.0)


def boot(store: Store, *wirings: CircuitWiring, at: float = 0) -> Lights:
    """A powered-on controller that has taken `store` at `T0 + at` with nothing lit."""
    lights = Lights(wirings or (WARN_OUT,), T0 + at)
    lights.power_on()
    assert lights.refresh(store, T0 + at) == []
    return lights


def run(lights: Lights, upto: float) -> Timeline:
    out: Timeline = []
    for _ in range(1000):
        at = lights.next_deadline()
        if at is None or at > T0 + upto:
            return out
        out.append((at - T0, lights.tick(at)))
    raise AssertionError("deadlines never settle")


def granted(member: str | None = "m1") -> Decision:
    return Decision(True, "granted", member)


def checked_in(booking: str, member: str | None = "m1") -> Decision:
    return Decision(True, "booking", member, booking)


# --- power on, empty data -----------------------------------------------------------


def test_power_on_switches_every_output_off() -> None:
    lights = Lights([WARN_OUT, CircuitWiring("c2", warn_output=False)], T0)
    assert lights.power_on() == [lamp(False), warn(False), lamp(False, "c2")]


def test_empty_store_lights_nothing() -> None:
    lights = boot(Store())
    assert lights.next_deadline() is None
    assert lights.tick(T0 + 86400) == []
    assert lights.presented("c1", granted(), T0, 10_000) == []  # no light record: no price
    assert lights.presented("nowhere", granted(), T0, 10_000) == []


def test_refresh_before_power_on_drives_the_outputs_once() -> None:
    lights = Lights([WARN_OUT], T0)
    assert lights.refresh(Store(), T0) == [lamp(False), warn(False)]
    assert lights.refresh(Store(), T0) == []


def test_wiring_is_checked() -> None:
    with pytest.raises(LocalError):
        CircuitWiring("c1", warn_output=False, flash_s=0)
    with pytest.raises(LocalError):
        Lights([WARN_OUT, WARN_OUT], T0)


# --- bookings -----------------------------------------------------------------------


def test_booking_with_lead_lag_and_warn_output() -> None:
    lights = boot(club(light(), booking("b1", 3600, 7200)))
    assert lights.next_deadline() == T0 + 3300
    assert run(lights, 10_000) == [
        (3300, [lamp(True), ev(ON, BOOKING, 7500, "m1", "b1")]),
        (7200, [warn(True), ev(WARN, BOOKING, 7500, "m1", "b1")]),
        (7500, [lamp(False), warn(False), ev(OFF, BOOKING, None, "m1", "b1")]),
    ]
    assert lights.next_deadline() is None


def test_booking_warning_flashes_the_circuit_without_warn_output() -> None:
    lights = boot(club(light(lead_s=600, lag_s=120, warn_s=60), booking("b1", 3600, 7200)), FLASH)
    assert run(lights, 10_000) == [
        (3000, [lamp(True), ev(ON, BOOKING, 7320, "m1", "b1")]),
        (7260, [lamp(False), ev(WARN, BOOKING, 7320, "m1", "b1")]),
        (7262, [lamp(True)]),
        (7320, [lamp(False), ev(OFF, BOOKING, None, "m1", "b1")]),
    ]


def test_no_warning_when_warn_s_is_zero() -> None:
    lights = boot(club(light(lead_s=0, lag_s=0, warn_s=0), booking("b1", 3600, 7200)))
    assert run(lights, 10_000) == [
        (3600, [lamp(True), ev(ON, BOOKING, 7200, "m1", "b1")]),
        (7200, [lamp(False), ev(OFF, BOOKING, None, "m1", "b1")]),
    ]


def test_overlapping_bookings_make_one_period_with_one_warning() -> None:
    store = club(light(), booking("b1", 3600, 7200), booking("b2", 6000, 9000, member="m2"))
    lights = boot(store)
    assert run(lights, 20_000) == [
        (3300, [lamp(True), ev(ON, BOOKING, 9300, "m1", "b1")]),
        (9000, [warn(True), ev(WARN, BOOKING, 9300, "m2", "b2")]),
        (9300, [lamp(False), warn(False), ev(OFF, BOOKING, None, "m2", "b2")]),
    ]


@pytest.mark.parametrize(("lead", "lag"), [(0, 0), (300, 300)])
def test_back_to_back_bookings_make_one_period(lead: int, lag: int) -> None:
    store = club(
        light(lead_s=lead, lag_s=lag),
        booking("b1", 3600, 7200),
        booking("b2", 7200, 10800, member="m2"),
    )
    lights = boot(store, FLASH)
    end = 10800 + lag
    assert run(lights, 20_000) == [
        (3600 - lead, [lamp(True), ev(ON, BOOKING, end, "m1", "b1")]),
        (end - 300, [lamp(False), ev(WARN, BOOKING, end, "m2", "b2")]),
        (end - 298, [lamp(True)]),
        (end, [lamp(False), ev(OFF, BOOKING, None, "m2", "b2")]),
    ]


def test_bookings_with_a_gap_are_two_periods() -> None:
    store = club(light(), booking("b1", 3600, 7200), booking("b2", 8000, 9000, member="m2"))
    lights = boot(store)
    assert run(lights, 20_000) == [
        (3300, [lamp(True), ev(ON, BOOKING, 7500, "m1", "b1")]),
        (7200, [warn(True), ev(WARN, BOOKING, 7500, "m1", "b1")]),
        (7500, [lamp(False), warn(False), ev(OFF, BOOKING, None, "m1", "b1")]),
        (7700, [lamp(True), ev(ON, BOOKING, 9300, "m2", "b2")]),
        (9000, [warn(True), ev(WARN, BOOKING, 9300, "m2", "b2")]),
        (9300, [lamp(False), warn(False), ev(OFF, BOOKING, None, "m2", "b2")]),
    ]


def test_one_booking_lights_each_of_its_courts() -> None:
    store = club(light("c1"), light("c2"), booking("b1", 3600, 7200, lights=("c1", "c2")))
    lights = boot(store, WARN_OUT, CircuitWiring("c2", warn_output=False))
    assert run(lights, 3300) == [
        (
            3300,
            [
                lamp(True),
                ev(ON, BOOKING, 7500, "m1", "b1"),
                lamp(True, "c2"),
                ev(ON, BOOKING, 7500, "m1", "b1", light="c2"),
            ],
        )
    ]


def test_a_booking_of_a_light_without_record_lights_nothing() -> None:
    lights = boot(club(booking("b1", 0, 7200)))
    assert lights.next_deadline() is None


# --- check-in -----------------------------------------------------------------------


CHECKIN_CLUB = club(light(checkin=True), booking("b1", 3600, 7200, pin="4321"))


def test_checkin_light_stays_off_until_checkin() -> None:
    lights = boot(CHECKIN_CLUB)
    assert lights.next_deadline() is None
    assert run(lights, 20_000) == []


def test_checkin_too_early_is_refused() -> None:
    lights = boot(CHECKIN_CLUB)
    # The window opens checkin_before_s (1800) before the start, at 1800.
    assert lights.presented("c1", checked_in("b1"), T0 + 1799, 0) == []
    assert lights.next_deadline() is None
    assert run(lights, 20_000) == []


def test_early_checkin_lights_the_booking_from_its_lead() -> None:
    lights = boot(CHECKIN_CLUB)
    assert lights.presented("c1", checked_in("b1"), T0 + 1800, 0) == []
    assert run(lights, 20_000) == [
        (3300, [lamp(True), ev(ON, CHECKIN, 7500, "m1", "b1")]),
        (7200, [warn(True), ev(WARN, CHECKIN, 7500, "m1", "b1")]),
        (7500, [lamp(False), warn(False), ev(OFF, CHECKIN, None, "m1", "b1")]),
    ]


def test_checkin_during_booking_lights_at_once_until_end_plus_lag() -> None:
    lights = boot(CHECKIN_CLUB)
    # A PIN booking without member checks in with member None just the same.
    assert lights.presented("c1", checked_in("b1", None), T0 + 4000, 0) == [
        lamp(True),
        ev(ON, CHECKIN, 7500, "m1", "b1"),
    ]
    assert lights.presented("c1", checked_in("b1"), T0 + 4100, 0) == []  # once is enough
    assert run(lights, 20_000)[-1] == (
        7500,
        [lamp(False), warn(False), ev(OFF, CHECKIN, None, "m1", "b1")],
    )


def test_checkin_after_the_end_is_refused() -> None:
    lights = boot(CHECKIN_CLUB)
    assert lights.presented("c1", checked_in("b1"), T0 + 7200, 0) == []
    assert lights.next_deadline() is None


def test_checkin_covers_every_court_of_the_booking() -> None:
    store = club(
        light("c1", checkin=True),
        light("c2", checkin=True),
        booking("b1", 3600, 7200, lights=("c1", "c2")),
    )
    lights = boot(store, WARN_OUT, CircuitWiring("c2", warn_output=True))
    assert lights.presented("c2", checked_in("b1"), T0 + 3600, 0) == [
        lamp(True),
        ev(ON, CHECKIN, 7500, "m1", "b1"),
        lamp(True, "c2"),
        ev(ON, CHECKIN, 7500, "m1", "b1", light="c2"),
    ]


def test_checkin_at_the_kiosk_needs_no_wired_light() -> None:
    lights = boot(CHECKIN_CLUB)
    assert lights.presented("kiosk", checked_in("b1"), T0 + 3600, 0) == [
        lamp(True),
        ev(ON, CHECKIN, 7500, "m1", "b1"),
    ]


def test_checkin_of_an_unknown_booking_or_on_a_plain_light_does_nothing() -> None:
    lights = boot(club(light(), booking("b1", 3600, 7200)))
    assert lights.presented("c1", checked_in("nope"), T0 + 3000, 0) == []
    assert lights.presented("c1", checked_in("b1"), T0 + 3000, 0) == []
    assert lights.next_deadline() == T0 + 3300


def test_denied_decisions_do_nothing() -> None:
    lights = boot(club(light(price=100)))
    denied = Decision(False, "insufficient_credit", "m1")
    assert lights.presented("c1", denied, T0, 10_000) == []
    assert lights.next_deadline() is None


# --- self-activation ----------------------------------------------------------------


PAID = light(price=200, block_s=1800, max_s=3600)


def test_activation_debits_extends_and_stops_at_max_s() -> None:
    lights = boot(club(PAID))
    assert lights.presented("c1", granted(), T0, 500) == [
        debit(200, 1800, 300),
        lamp(True),
        ev(ON, ACT, 1800, "m1"),
    ]
    assert lights.presented("c1", granted(), T0 + 600, 300) == [
        debit(200, 1800, 100),
        ev(EXTENDED, ACT, 3600, "m1"),
    ]
    # A third block would make 5400 s > max_s: refused, no debit.
    assert lights.presented("c1", granted(), T0 + 700, 10_000) == []
    assert run(lights, 10_000) == [
        (3300, [warn(True), ev(WARN, ACT, 3600, "m1")]),
        (3600, [lamp(False), warn(False), ev(OFF, ACT, None, "m1")]),
    ]


def test_activation_needs_credit_for_the_price() -> None:
    lights = boot(club(PAID))
    assert lights.presented("c1", granted(), T0, 199) == []
    assert lights.next_deadline() is None
    assert lights.presented("c1", granted(), T0, 200) == [
        debit(200, 1800, 0),
        lamp(True),
        ev(ON, ACT, 1800, "m1"),
    ]
    # The next block needs credit again.
    assert lights.presented("c1", granted(), T0 + 60, 0) == []


def test_extension_during_the_warning_withdraws_it() -> None:
    lights = boot(club(light(price=50, block_s=600, max_s=3600, warn_s=300)))
    lights.presented("c1", granted(), T0, 500)
    assert run(lights, 300) == [(300, [warn(True), ev(WARN, ACT, 600, "m1")])]
    assert lights.presented("c1", granted("m2"), T0 + 400, 450) == [
        debit(50, 600, 400, member="m2"),
        warn(False),
        ev(EXTENDED, ACT, 1200, "m2"),
    ]
    assert run(lights, 5000) == [
        (900, [warn(True), ev(WARN, ACT, 1200, "m1")]),
        (1200, [lamp(False), warn(False), ev(OFF, ACT, None, "m1")]),
    ]


def test_extension_during_a_flash_switches_back_on() -> None:
    lights = boot(club(light(price=50, block_s=600, max_s=3600, warn_s=300)), FLASH)
    lights.presented("c1", granted(), T0, 500)
    assert run(lights, 300) == [(300, [lamp(False), ev(WARN, ACT, 600, "m1")])]
    assert lights.presented("c1", granted(), T0 + 301, 450) == [
        debit(50, 600, 400),
        lamp(True),
        ev(EXTENDED, ACT, 1200, "m1"),
    ]
    assert lights.next_deadline() == T0 + 900


def test_a_new_activation_after_the_last_one_ended_starts_afresh() -> None:
    lights = boot(club(PAID))
    lights.presented("c1", granted(), T0, 1000)
    run(lights, 1800)
    assert lights.presented("c1", granted(), T0 + 2000, 800) == [
        debit(200, 1800, 600),
        lamp(True),
        ev(ON, ACT, 3800, "m1"),
    ]


def test_max_s_counts_from_the_first_block() -> None:
    lights = boot(club(light(price=0, block_s=600, max_s=1199)))
    assert lights.presented("c1", granted(), T0, 0) == [lamp(True), ev(ON, ACT, 600, "m1")]
    assert lights.presented("c1", granted(), T0 + 200, 0) == []  # 1200 s > 1199 s
    assert run(lights, 5000)[-1] == (600, [lamp(False), warn(False), ev(OFF, ACT, None, "m1")])


def test_block_longer_than_max_s_is_never_granted() -> None:
    lights = boot(club(light(price=0, block_s=3600, max_s=1800)))
    assert lights.presented("c1", granted(), T0, 0) == []


def test_free_light_activates_without_debit() -> None:
    lights = boot(club(light(price=0, block_s=600)))
    assert lights.presented("c1", granted(), T0, 0) == [lamp(True), ev(ON, ACT, 600, "m1")]


def test_master_activates_for_free_even_without_a_light_record() -> None:
    lights = boot(Store())
    master = Decision(True, "master")
    assert lights.presented("c1", master, T0, 0) == [lamp(True), ev(ON, ACT, 1800, None)]


def test_activation_is_refused_while_a_booking_lights_longer() -> None:
    store = club(PAID, booking("b1", 3600, 7200))
    lights = boot(store)
    assert run(lights, 4000) == [(3300, [lamp(True), ev(ON, BOOKING, 7500, "m1", "b1")])]
    # Lit until 7500 anyway: no time to sell, no debit.
    assert lights.presented("c1", granted("m2"), T0 + 4000, 1000) == []
    # Until 8800 is later than 7500: granted, and the warning moves with it.
    assert lights.presented("c1", granted("m2"), T0 + 7000, 1000) == [
        debit(200, 1800, 800, member="m2"),
        ev(EXTENDED, ACT, 8800, "m2"),
    ]
    assert run(lights, 20_000) == [
        (8500, [warn(True), ev(WARN, ACT, 8800, "m2")]),
        (8800, [lamp(False), warn(False), ev(OFF, ACT, None, "m2")]),
    ]


def test_events_name_the_reason_by_priority() -> None:
    store = club(light(price=0, block_s=1800, lead_s=300, lag_s=0), booking("b1", 1000, 2000))
    lights = boot(store)
    assert lights.presented("c1", granted("m2"), T0, 0) == [lamp(True), ev(ON, ACT, 2000, "m2")]
    # The booking starts lighting at 700 (merged) and outranks the activation.
    assert run(lights, 5000) == [
        (1700, [warn(True), ev(WARN, BOOKING, 2000, "m1", "b1")]),
        (2000, [lamp(False), warn(False), ev(OFF, BOOKING, None, "m1", "b1")]),
    ]


# --- remote -------------------------------------------------------------------------


def test_set_light_on_for_s() -> None:
    lights = boot(Store())  # no light record: the protocol's warn_s (300)
    assert lights.set_light("c1", True, 600, T0) == [lamp(True), ev(ON, REMOTE, 600)]
    assert run(lights, 5000) == [
        (300, [warn(True), ev(WARN, REMOTE, 600)]),
        (600, [lamp(False), warn(False), ev(OFF, REMOTE)]),
    ]


def test_set_light_on_shorter_than_the_warning() -> None:
    lights = boot(club(light()), FLASH)
    # Warned at once; no flash at the very moment it comes on.
    assert lights.set_light("c1", True, 100, T0) == [
        lamp(True),
        ev(ON, REMOTE, 100),
        ev(WARN, REMOTE, 100),
    ]
    assert run(lights, 5000) == [(100, [lamp(False), ev(OFF, REMOTE)])]


def test_set_light_again_replaces_the_remote_period() -> None:
    lights = boot(club(light(warn_s=0)))
    lights.set_light("c1", True, 3600, T0)
    assert lights.set_light("c1", True, 60, T0 + 10) == []
    assert run(lights, 5000) == [(70, [lamp(False), ev(OFF, REMOTE)])]


def test_set_light_off() -> None:
    lights = boot(club(light()))
    lights.set_light("c1", True, 600, T0)
    assert lights.set_light("c1", False, None, T0 + 100) == [lamp(False), ev(OFF, REMOTE)]
    assert lights.next_deadline() is None
    assert lights.set_light("c1", False, None, T0 + 200) == []


def test_set_light_off_ends_an_activation_without_refund() -> None:
    lights = boot(club(PAID))
    lights.presented("c1", granted(), T0, 500)
    assert lights.set_light("c1", False, None, T0 + 100) == [lamp(False), ev(OFF, REMOTE)]
    assert lights.next_deadline() is None
    # Presenting again is a fresh activation, paid again.
    assert lights.presented("c1", granted(), T0 + 200, 300) == [
        debit(200, 1800, 100),
        lamp(True),
        ev(ON, ACT, 2000, "m1"),
    ]


def test_set_light_off_suppresses_the_booking_until_presented_again() -> None:
    store = club(light(), booking("b1", 3600, 7200), booking("b2", 9000, 10000, member="m2"))
    lights = boot(store)
    run(lights, 4000)
    assert lights.set_light("c1", False, None, T0 + 4000) == [lamp(False), ev(OFF, REMOTE)]
    assert lights.next_deadline() == T0 + 8700  # b2 lights as usual
    assert lights.presented("c1", checked_in("b1"), T0 + 5000, 0) == [
        lamp(True),
        ev(ON, BOOKING, 7500, "m1", "b1"),
    ]


def test_set_light_errors() -> None:
    lights = boot(club(light()))
    with pytest.raises(RemoteError):
        lights.set_light("nowhere", True, 60, T0)
    for bad in (None, 0, -5, math.inf, math.nan, 86401, True):
        with pytest.raises(RemoteError):
            lights.set_light("c1", True, bad, T0)
    assert lights.next_deadline() is None


# --- data changes -------------------------------------------------------------------


def test_cancelled_booking_goes_off_at_once() -> None:
    lights = boot(club(light(), booking("b1", 3600, 7200)))
    run(lights, 4000)
    assert lights.refresh(club(light()), T0 + 4000) == [
        lamp(False),
        ev(OFF, BOOKING, None, "m1", "b1"),
    ]
    assert lights.next_deadline() is None


def test_booking_moved_later_goes_off_and_comes_back() -> None:
    lights = boot(club(light(), booking("b1", 3600, 7200)))
    run(lights, 4000)
    assert lights.refresh(club(light(), booking("b1", 9000, 10000)), T0 + 4000) == [
        lamp(False),
        ev(OFF, BOOKING, None, "m1", "b1"),
    ]
    assert run(lights, 20_000) == [
        (8700, [lamp(True), ev(ON, BOOKING, 10300, "m1", "b1")]),
        (10000, [warn(True), ev(WARN, BOOKING, 10300, "m1", "b1")]),
        (10300, [lamp(False), warn(False), ev(OFF, BOOKING, None, "m1", "b1")]),
    ]


def test_booking_extended_during_its_warning() -> None:
    lights = boot(club(light(), booking("b1", 3600, 7200)))
    run(lights, 7300)
    assert lights.refresh(club(light(), booking("b1", 3600, 9000)), T0 + 7300) == [warn(False)]
    assert run(lights, 20_000) == [
        (9000, [warn(True), ev(WARN, BOOKING, 9300, "m1", "b1")]),
        (9300, [lamp(False), warn(False), ev(OFF, BOOKING, None, "m1", "b1")]),
    ]


def test_booking_shortened_into_its_warning() -> None:
    lights = boot(club(light(), booking("b1", 3600, 7200)))
    run(lights, 4000)
    assert lights.refresh(club(light(), booking("b1", 3600, 4000)), T0 + 4000) == [
        warn(True),
        ev(WARN, BOOKING, 4300, "m1", "b1"),
    ]
    assert run(lights, 20_000) == [
        (4300, [lamp(False), warn(False), ev(OFF, BOOKING, None, "m1", "b1")])
    ]


def test_booking_added_after_its_lead_started_lights_at_once() -> None:
    lights = boot(club(light()))
    assert lights.refresh(club(light(), booking("b1", 3600, 7200)), T0 + 3500) == [
        lamp(True),
        ev(ON, BOOKING, 7500, "m1", "b1"),
    ]


def test_moved_booking_keeps_its_checkin_only_inside_the_new_window() -> None:
    lights = boot(CHECKIN_CLUB)
    lights.presented("c1", checked_in("b1"), T0 + 2000, 0)
    moved = club(light(checkin=True), booking("b1", 3000, 7200))  # window from 1200: kept
    assert lights.refresh(moved, T0 + 2000) == []
    assert lights.next_deadline() == T0 + 2700
    tomorrow = club(light(checkin=True), booking("b1", 90000, 93600))
    assert lights.refresh(tomorrow, T0 + 2000) == []
    assert lights.next_deadline() is None


def test_cancelled_booking_keeps_an_activation_lit() -> None:
    lights = boot(club(light(price=0, block_s=600, warn_s=0), booking("b1", 400, 3600)))
    assert run(lights, 100) == [(100, [lamp(True), ev(ON, BOOKING, 3900, "m1", "b1")])]
    lights.presented("c1", granted("m2"), T0 + 3500, 0)
    assert lights.refresh(club(light(price=0, block_s=600, warn_s=0)), T0 + 3600) == []
    assert run(lights, 20_000) == [(4100, [lamp(False), ev(OFF, ACT, None, "m2")])]


# --- property: never lit without a reason, always off once reasons are over ---------


@dataclass
class Model:
    """The reasons to be lit, computed from the inputs alone (an upper bound:
    suppression by a remote off is checked separately, not modelled)."""

    checkin_before_s: int
    params: dict[str, dict[str, Any]]
    bookings: dict[str, tuple[tuple[str, ...], int, int, str | None]] = field(default_factory=dict)
    checkins: list[tuple[str, float]] = field(default_factory=list)
    grants: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)
    remotes: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    remote_offs: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    seq: int = 0

    def store(self) -> Store:
        records = [light(lid, **p) for lid, p in self.params.items()]
        for bid, (lids, start, end, member) in self.bookings.items():
            body = rec(lights=list(lids), start=start, end=end, member=member)
            records.append(("booking", bid, body))
        return club(*records, checkin_before_s=self.checkin_before_s)

    def intervals(self, lid: str) -> list[tuple[float, float]]:
        p = self.params[lid]
        out: list[tuple[float, float]] = []
        for bid, (lids, start, end, _m) in self.bookings.items():
            if lid not in lids:
                continue
            lo: float = start - p["lead_s"]
            hi: float = end + p["lag_s"]
            if p["checkin"]:
                valid = [
                    at
                    for b, at in self.checkins
                    if b == bid and start - self.checkin_before_s <= at < end
                ]
                if not valid:
                    continue
                lo = max(lo, min(valid))
            out.append((lo, hi))
        offs = self.remote_offs.get(lid, [])
        for at, max_s, seq in self.grants.get(lid, []):
            cut = min([t for t, s in offs if s > seq], default=math.inf)
            out.append((at, min(at + max_s, cut)))
        remotes = self.remotes.get(lid, [])
        for at, until, seq in remotes:
            later = [t for t, s in offs if s > seq] + [t for t, _e, s in remotes if s > seq]
            out.append((at, min([until, *later])))
        return out


def covered(intervals: list[tuple[float, float]], a: float, b: float) -> bool:
    """True when the union of `intervals` covers [a, b)."""
    cur = a
    for lo, hi in sorted(intervals):
        if lo <= cur < hi:
            cur = hi
    return cur >= b


LIGHT_IDS = ("c1", "c2")

light_params = st.fixed_dictionaries(
    {
        "lead_s": st.integers(0, 600),
        "lag_s": st.integers(0, 600),
        "warn_s": st.integers(0, 400),
        "checkin": st.booleans(),
        "price": st.sampled_from([0, 100]),
        "block_s": st.integers(1, 900),
        "max_s": st.integers(1, 2400),
    }
)
members = st.sampled_from(["m1", "m2", None])
op = st.one_of(
    st.tuples(
        st.just("book"),
        st.sampled_from(["b1", "b2", "b3"]),
        st.sampled_from([("c1",), ("c2",), ("c1", "c2")]),
        st.integers(-1000, 3000),
        st.integers(1, 2000),
        members,
    ),
    st.tuples(st.just("cancel"), st.sampled_from(["b1", "b2", "b3"])),
    st.tuples(st.just("relight"), st.sampled_from(LIGHT_IDS), light_params),
    st.tuples(st.just("checkin"), st.sampled_from(["b1", "b2", "b3", "b9"])),
    st.tuples(
        st.just("present"),
        st.sampled_from(LIGHT_IDS),
        st.sampled_from(["granted", "master", "denied"]),
        members,
        st.integers(0, 300),
    ),
    st.tuples(st.just("remote_on"), st.sampled_from(LIGHT_IDS), st.integers(1, 3000)),
    st.tuples(st.just("remote_off"), st.sampled_from(LIGHT_IDS)),
    st.tuples(st.just("tick")),
    # Go to (just around) a moment where a booking's rules change, where bugs hide.
    st.tuples(
        st.just("jump"),
        st.sampled_from(["b1", "b2", "b3"]),
        st.sampled_from(["checkin_from", "lead", "start", "end", "lag"]),
        st.integers(-1, 1),
    ),
)


@given(
    checkin_before_s=st.integers(0, 1800),
    params=st.fixed_dictionaries({lid: light_params for lid in LIGHT_IDS}),
    flash=st.booleans(),
    steps=st.lists(st.tuples(st.sampled_from([0, 1]) | st.integers(0, 400), op), max_size=40),
)
def test_never_lit_without_a_reason_and_always_off_at_the_end(
    checkin_before_s: int,
    params: dict[str, dict[str, Any]],
    flash: bool,
    steps: list[tuple[int, tuple[Any, ...]]],
) -> None:
    model = Model(checkin_before_s, {lid: dict(p) for lid, p in params.items()})
    wirings = [CircuitWiring("c1", warn_output=True), CircuitWiring("c2", not flash, 0.5)]
    lights = Lights(wirings, T0)
    outputs: dict[str, bool] = {}
    events: dict[str, list[str]] = {lid: [] for lid in LIGHT_IDS}
    last = float(T0)

    def take(actions: list[FacilityAction], now: float) -> None:
        """Apply actions, checking the ones whose rules do not need the model."""
        nonlocal last
        for a in actions:
            if isinstance(a, Output):
                assert not a.held  # no light is spared the HAL's limits
                outputs[a.name] = a.on
            elif a.type == "light":
                light, what = a.body["light"], a.body["what"]
                events[light].append(what)
                lit = events[light].count(ON) > events[light].count(OFF)
                assert lit == (what != OFF), events[light]
                assert (a.body["until"] is None) == (what == OFF)
        last = now

    def check_until(now: float) -> None:
        """Outputs were constant over [last, now): lit only where a reason holds."""
        for lid in LIGHT_IDS:
            if outputs.get(f"light:{lid}"):
                assert covered(model.intervals(lid), last, now), (lid, last - T0, now - T0)

    def advance(to: float) -> None:
        for _ in range(1000):
            at = lights.next_deadline()
            if at is None or at > to:
                break
            assert at >= last  # never asks to run in the past
            check_until(at)
            take(lights.tick(at), at)
        else:
            raise AssertionError("deadlines never settle")
        check_until(to)

    take(lights.power_on(), T0)
    take(lights.refresh(model.store(), T0), T0)
    now = float(T0)
    for dt, (kind, *args) in steps:
        if kind == "jump":
            bid, edge, delta = args
            if bid not in model.bookings:
                continue
            lids, start, end, _member = model.bookings[bid]
            p = model.params[lids[0]]
            edges = {
                "checkin_from": start - checkin_before_s,
                "lead": start - p["lead_s"],
                "start": start,
                "end": end,
                "lag": end + p["lag_s"],
            }
            to = edges[edge] + delta
            if to > now:
                now = to
                advance(now)
                take(lights.tick(now), now)
            continue
        now += dt
        advance(now)
        model.seq += 1
        if kind == "book":
            bid, lids, start, length, member = args
            model.bookings[bid] = (lids, int(now) + start, int(now) + start + length, member)
            take(lights.refresh(model.store(), now), now)
        elif kind == "cancel":
            model.bookings.pop(args[0], None)
            take(lights.refresh(model.store(), now), now)
        elif kind == "relight":
            model.params[args[0]] = dict(args[1])
            take(lights.refresh(model.store(), now), now)
        elif kind == "checkin":
            bid = args[0]
            model.checkins.append((bid, now))
            lid = model.bookings[bid][0][0] if bid in model.bookings else "c1"
            take(lights.presented(lid, checked_in(bid), now, 0), now)
        elif kind == "present":
            lid, how, member, credit = args
            p = model.params[lid]
            decision = {
                "granted": Decision(True, "granted", member),
                "master": Decision(True, "master"),
                "denied": Decision(False, "no_access", member),
            }[how]
            actions = lights.presented(lid, decision, now, credit)
            debits = [a for a in actions if isinstance(a, LogEvent) and a.type == "debit"]
            if how == "denied" or (how == "granted" and (member is None or credit < p["price"])):
                assert actions == []
            elif how == "granted" or how == "master":
                model.grants.setdefault(lid, []).append((now, p["max_s"], model.seq))
            if how == "granted" and p["price"] > 0 and actions:
                assert debits == [
                    debit_event(str(member), lid, p["price"], p["block_s"], credit - p["price"])
                ]
            else:
                assert debits == []
            take(actions, now)
        elif kind == "remote_on":
            lid, s = args
            model.remotes.setdefault(lid, []).append((now, now + s, model.seq))
            take(lights.set_light(lid, True, s, now), now)
        elif kind == "remote_off":
            lid = args[0]
            model.remote_offs.setdefault(lid, []).append((now, model.seq))
            take(lights.set_light(lid, False, None, now), now)
            assert not outputs.get(f"light:{lid}")
        else:
            take(lights.tick(now), now)

    # Past every booking and every reason the model knows of, all is off and settled.
    ends = [hi for lid in LIGHT_IDS for _lo, hi in model.intervals(lid) if hi != math.inf]
    ends += [end + 600 for _lids, _start, end, _member in model.bookings.values()]
    final = max([now, *ends]) + 1
    advance(final)
    take(lights.tick(final), final)
    assert lights.next_deadline() is None
    for lid in LIGHT_IDS:
        assert not outputs.get(f"light:{lid}")
        assert not outputs.get(f"warn:{lid}")
        assert not lights.is_on(lid)
        assert events[lid].count(ON) == events[lid].count(OFF)
