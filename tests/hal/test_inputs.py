"""Door contacts and exit buttons: debounce on the test's clock, NC/NO mapping,
the state at start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from hal.backend import input_report
from hal.events import ContactSensed, ExitPressed
from hal.gpio import GpioInput
from hal.wiring import InputSpec
from tests.hal.conftest import Events, FakeClock

DEBOUNCE = 0.05


def make(factory: MockFactory, clock: FakeClock, events: Events, role: str, nc: bool) -> GpioInput:
    spec = InputSpec(f"{role}:front", "front", role, 27, nc, DEBOUNCE)
    return GpioInput(spec, events, input_report(spec), clock=clock, pin_factory=factory)


@pytest.fixture
def contact(factory: MockFactory, clock: FakeClock, events: Events) -> Iterator[GpioInput]:
    factory.pin(27)  # NC reed switch, door shut: the switch holds the pin low
    contact = make(factory, clock, events, "contact", nc=True)
    factory.pin(27).drive_low()
    contact.start()
    yield contact
    contact.close()


def test_contact_reports_its_state_at_start(contact: GpioInput, events: Events) -> None:
    assert events.seen == [ContactSensed("front", open=False)]
    assert contact.active is False


def test_bounces_inside_the_window_give_one_event(
    contact: GpioInput, factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    pin = factory.pin(27)
    for _ in range(5):  # the door opens, the reed chatters for 20 ms
        pin.drive_high()
        clock.advance(0.002)
        pin.drive_low()
        clock.advance(0.002)
    pin.drive_high()
    contact.poll()
    assert contact.deadline() == pytest.approx(clock.now + DEBOUNCE)
    clock.advance(DEBOUNCE - 0.001)
    contact.poll()
    assert events.seen[1:] == []
    clock.advance(0.001)
    contact.poll()
    assert events.seen[1:] == [ContactSensed("front", open=True)]
    assert contact.deadline() is None
    clock.advance(1)
    contact.poll()
    assert events.seen[1:] == [ContactSensed("front", open=True)]


def test_a_glitch_shorter_than_the_window_gives_nothing(
    contact: GpioInput, factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    factory.pin(27).drive_high()
    clock.advance(0.01)
    factory.pin(27).drive_low()
    clock.advance(1)
    contact.poll()
    assert events.seen[1:] == []


def test_settle_ends_the_window_at_once(
    contact: GpioInput, factory: MockFactory, events: Events
) -> None:
    factory.pin(27).drive_high()
    contact.settle()
    assert events.seen[1:] == [ContactSensed("front", open=True)]


def drive(factory: MockFactory, high: bool) -> None:
    pin = factory.pin(27)
    if high:
        pin.drive_high()
    else:
        pin.drive_low()


@pytest.mark.parametrize("nc", [False, True])
def test_exit_button_reports_a_press_not_a_release(
    factory: MockFactory, clock: FakeClock, events: Events, nc: bool
) -> None:
    pressed_high = nc  # an NO button pulls the pin low when pressed
    rex = make(factory, clock, events, "rex", nc=nc)
    drive(factory, high=not pressed_high)
    rex.start()
    assert events.seen == []  # a button has no state to report at start
    for pressed in (True, False, True, False):
        drive(factory, high=pressed == pressed_high)
        clock.advance(DEBOUNCE)
        rex.poll()
    assert events.seen == [ExitPressed("front"), ExitPressed("front")]
    rex.close()


def test_no_contact_reads_open_when_low(
    factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    contact = make(factory, clock, events, "contact", nc=False)
    contact.start()  # pulled up, switch open: an NO contact says the door is shut
    factory.pin(27).drive_low()
    clock.advance(DEBOUNCE)
    contact.poll()
    assert events.seen == [ContactSensed("front", False), ContactSensed("front", True)]
    contact.close()
    contact.close()


def test_edges_before_start_and_after_close_are_ignored(
    factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    contact = make(factory, clock, events, "contact", nc=True)
    factory.pin(27).drive_low()
    factory.pin(27).drive_high()
    assert contact.deadline() is None
    contact.close()
    contact.start()
    clock.advance(1)
    contact.poll()
    assert events.seen == []
