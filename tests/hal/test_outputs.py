"""Outputs: the safe state at power-on and close, active_high, fail-safe doors,
and the pulse policy on the test's clock."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from hal.gpio import GpioOutput
from hal.wiring import OutputSpec
from tests.hal.conftest import FakeClock


def make(factory: MockFactory, clock: FakeClock, **spec: object) -> GpioOutput:
    fields: dict[str, object] = {"name": "light:court1", "pin": 5, "active_high": False}
    fields.update(spec)
    return GpioOutput(OutputSpec(**fields), clock=clock, pin_factory=factory)  # type: ignore[arg-type]


def levels_since_output(factory: MockFactory, pin: int) -> list[bool]:
    # A MockPin's history starts with its state as an unconfigured input; what
    # follows is what the output drove.
    return [state.state for state in factory.pin(pin).states[1:]] or [
        factory.pin(pin).states[0].state
    ]


@pytest.mark.parametrize(("active_high", "off_level"), [(False, True), (True, False)])
def test_created_off_and_switched_by_active_high(
    factory: MockFactory, clock: FakeClock, active_high: bool, off_level: bool
) -> None:
    out = make(factory, clock, active_high=active_high)
    pin = factory.pin(5)
    assert pin.function == "output"
    assert pin.state == off_level
    assert levels_since_output(factory, 5) == [off_level]  # never drove "on" first
    assert (out.value, out.energised) == (False, False)
    out.set(True)
    assert pin.state == (not off_level)
    out.set(False)
    assert pin.state == off_level
    out.close()


def test_fail_safe_door_is_released_at_power_on_with_the_relay_idle(
    factory: MockFactory, clock: FakeClock
) -> None:
    # A maglock is powered through NO: relay idle = unpowered = door released.
    door = make(factory, clock, name="door:back", pin=17, safe=True, inverted=True)
    assert (door.value, door.energised) == (True, False)
    assert factory.pin(17).state is True  # active-low board, coil off
    door.set(False)  # lock: power the maglock
    assert (door.energised, factory.pin(17).state) == (True, False)
    door.close()
    assert (door.value, factory.pin(17).state) == (True, True)


def test_close_returns_to_safe_and_later_sets_are_ignored(
    factory: MockFactory, clock: FakeClock
) -> None:
    out = make(factory, clock, name="door:front", pin=17)
    out.set(True)
    assert factory.pin(17).state is False
    out.close()
    assert out.closed and out.value is False
    assert factory.pin(17).state is True
    out.set(True)
    out.pulse(1)
    assert out.value is False
    out.close()


def test_pulse_on_the_test_clock(factory: MockFactory, clock: FakeClock) -> None:
    out = make(factory, clock)
    out.pulse(3)
    assert out.value is True
    assert out.deadline() == clock.now + 3
    clock.advance(2.9)
    out.poll()
    assert out.value is True
    clock.advance(0.1)
    out.poll()
    assert out.value is False
    assert out.deadline() is None
    out.close()


def test_set_cancels_a_pulse(factory: MockFactory, clock: FakeClock) -> None:
    out = make(factory, clock)
    out.pulse(3)
    out.set(True)
    clock.advance(10)
    out.poll()
    assert out.value is True
    with pytest.raises(ValueError):
        out.pulse(0)
    out.close()
