"""Relays: the safe state at power-on and close, active_high, fail-safe doors,
the pulse policy and a door's maximum on-time, on the test's clock."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from firmware.core.wiring import DoorSpec, LightSpec, Wiring
from hal.events import HalEvent, OutputCut
from hal.gpio import GpioBackend, GpioRelay
from hal.wiring import OutputSpec
from tests.hal.conftest import Events, FakeClock


def make(
    factory: MockFactory, clock: FakeClock, sink: Events | None = None, **spec: object
) -> GpioRelay:
    fields: dict[str, object] = {"name": "light:court1", "pin": 5, "active_high": False}
    fields.update(spec)
    spec_ = OutputSpec(**fields)  # type: ignore[arg-type]
    return GpioRelay(spec_, sink or Events(), clock=clock, pin_factory=factory)


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


# --- the maximum on-time of a door (issue 12 s2) -----------------------------------------


def door(factory: MockFactory, clock: FakeClock, events: Events, **spec: object) -> GpioRelay:
    fields: dict[str, object] = {"name": "door:front", "pin": 17, "max_on_s": 300.0}
    fields.update(spec)
    return make(factory, clock, events, **fields)


def test_a_door_left_released_is_relocked_at_its_max_on_time(
    factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    out = door(factory, clock, events)
    out.set(True)
    assert out.deadline() == clock.now + 300
    clock.advance(299.9)
    out.poll()
    assert out.value is True and events.seen == []
    clock.advance(0.1)
    out.poll()
    assert (out.value, factory.pin(17).state) == (False, True)  # locked, coil off
    assert events.seen == [OutputCut("door:front")]
    assert out.deadline() is None
    clock.advance(1000)
    out.poll()
    assert events.seen == [OutputCut("door:front")]  # reported once
    out.close()


def test_each_unheld_on_starts_the_limit_again_and_off_ends_it(
    factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    out = door(factory, clock, events)
    out.set(True)
    clock.advance(200)
    out.set(True)  # the core's fresh say-so
    assert out.deadline() == clock.now + 300
    out.set(False)
    assert out.deadline() is None
    clock.advance(1000)
    out.poll()
    assert out.value is False and events.seen == []
    out.close()


def test_a_held_door_stays_released_until_the_core_says_otherwise(
    factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    out = door(factory, clock, events)
    out.set(True, held=True)  # an open schedule, or mode "unlocked"
    assert out.deadline() is None
    clock.advance(12 * 3600)
    out.poll()
    assert out.value is True and events.seen == []
    out.set(True)  # the hold ended, the door is still on a momentary unlock
    assert out.deadline() == clock.now + 300
    clock.advance(300)
    out.poll()
    assert out.value is False and events.seen == [OutputCut("door:front")]
    out.close()


def test_a_pulse_longer_than_the_limit_is_cut(
    factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    out = door(factory, clock, events, max_on_s=5.0)
    out.pulse(60)
    assert out.deadline() == clock.now + 5
    clock.advance(5)
    out.poll()
    assert out.value is False and events.seen == [OutputCut("door:front")]
    out.close()


def test_a_fail_safe_door_is_cut_by_locking_it(
    factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    out = door(factory, clock, events, safe=True, inverted=True)
    out.set(False)  # the core locks it after power-on
    out.set(True)
    assert out.energised is False  # released: the maglock unpowered
    clock.advance(300)
    out.poll()
    assert (out.value, out.energised, factory.pin(17).state) == (False, True, False)
    assert events.seen == [OutputCut("door:front")]
    out.close()


def test_the_power_on_state_and_lights_have_no_limit(
    factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    maglock = door(factory, clock, events, safe=True, inverted=True)
    assert maglock.value is True and maglock.deadline() is None  # the HAL's own safe state
    light = make(factory, clock, events)
    light.set(True)
    clock.advance(24 * 3600)
    light.poll()
    maglock.poll()
    assert (light.value, maglock.value, light.deadline()) == (True, True, None)
    assert events.seen == []
    light.close()
    maglock.close()
    with pytest.raises(ValueError, match="max_on_s"):
        door(factory, clock, events, max_on_s=0.0)


def test_the_backend_applies_each_doors_max_open_s_on_its_timer_thread(
    factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    wiring = Wiring(
        doors=(DoorSpec("front", relay=17, max_open_s=10.0), DoorSpec("back", relay=16)),
        lights=(LightSpec("court1", relay=5),),
    )
    with GpioBackend(wiring, events, clock=clock, pin_factory=factory) as backend:
        backend.start()
        backend.set_output("door:front", True)
        backend.set_output("door:back", True, held=True)
        backend.set_output("light:court1", True)
        clock.advance(10)  # the timer thread notices a jump of this clock by itself
        cuts = events.wait_count(OutputCut, 1)
        assert cuts == [OutputCut("door:front")]
        assert backend.outputs["door:front"].value is False
        clock.advance(3600)
        backend.poll()
        assert backend.outputs["door:back"].value is True  # held
        assert backend.outputs["light:court1"].value is True  # lights have no limit
        backend.set_output("door:back", False)
        backend.set_output("door:back", True)
        assert backend.outputs["door:back"].deadline() == clock.now + 300  # the default
    seen: list[HalEvent] = [e for e in events.seen if isinstance(e, OutputCut)]
    assert seen == [OutputCut("door:front")]
