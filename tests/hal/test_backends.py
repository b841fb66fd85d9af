"""The backend conformance suite: every registered backend, built from the same
controller.toml through the registry, keeps the same promises: outputs safe from
power-on to close, active_high and fail-safe doors honoured, contacts and exit
buttons debounced into events, every reader kind reporting, threads stopped."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import gpiozero
import pytest
from gpiozero.pins.mock import MockFactory

from firmware.config import Config, parse_config
from hal import rdm6300, wiegand
from hal.backend import Backend, UnknownOutput
from hal.errors import HardwareError
from hal.events import ContactSensed, CredentialRead, ExitPressed
from hal.registry import BACKENDS, create_backend
from hal.serialport import SerialReader
from tests.hal.conftest import WAIT_S, Events, FakeClock

TOML = """
[controller]
site = "demo"
id = "ctl1"
data_dir = "."
key_file = "ctl1.key"

[hal]
backend = "{backend}"

[[doors]]
id = "front"
relay = 17
active_high = false
fail = "secure"
contact = 27
rex = 22

[[doors]]
id = "back"
relay = 16
active_high = true
fail = "safe"

[[lights]]
id = "court1"
relay = 5
warn = 6

[[readers]]
id = "front-in"
kind = "rdm6300"
port = "loop://"
door = "front"

[[readers]]
id = "back-in"
kind = "wiegand"
d0 = 23
d1 = 24
door = "back"

[[readers]]
id = "kiosk"
kind = "keypad"
port = "loop://"
kiosk = true
"""

# Electrical levels of the outputs in their safe states.
SAFE_LEVELS = {"door:front": True, "door:back": False, "light:court1": True, "warn:court1": True}


def config(backend: str) -> Config:
    return parse_config(
        Path("/etc/alc/controller.toml"), tomllib.loads(TOML.format(backend=backend))
    )


@pytest.fixture(params=sorted(BACKENDS))
def backend(
    request: pytest.FixtureRequest, factory: MockFactory, clock: FakeClock, events: Events
) -> Iterator[Backend]:
    name: str = request.param
    options = {"pin_factory": factory} if name == "gpio" else {}
    built = create_backend(name, config(name).wiring, events, clock=clock, **options)
    try:
        yield built
    finally:
        built.close()


def pins(backend: Backend) -> MockFactory:
    factory = backend.pin_factory  # type: ignore[attr-defined]
    assert isinstance(factory, MockFactory)
    return factory


def levels(backend: Backend) -> dict[str, bool]:
    return {o.name: bool(pins(backend).pin(o.pin).state) for o in backend.specs.outputs}


def test_outputs_are_safe_from_power_on(backend: Backend) -> None:
    assert levels(backend) == SAFE_LEVELS
    assert {n: o.value for n, o in backend.outputs.items()} == {
        "door:front": False,  # locked
        "door:back": True,  # fail-safe: released, its maglock unpowered
        "light:court1": False,
        "warn:court1": False,
    }
    assert all(not o.energised for o in backend.outputs.values())


def test_set_output_honours_active_high_and_fail_safe(backend: Backend) -> None:
    backend.set_output("door:front", True)  # release: active-low relay on
    backend.set_output("door:back", False)  # lock: energise, active-high
    backend.set_output("light:court1", True)
    assert levels(backend) == {
        **SAFE_LEVELS,
        "door:front": False,
        "door:back": True,
        "light:court1": False,
    }
    with pytest.raises(UnknownOutput):
        backend.set_output("door:nowhere", True)


def test_contact_and_exit_button(backend: Backend, clock: FakeClock, events: Events) -> None:
    pins(backend).pin(27).drive_low()  # the door is shut
    backend.start()
    events.wait_count(ContactSensed, 1)
    pins(backend).pin(27).drive_high()
    clock.advance(0.05)
    events.wait_count(ContactSensed, 2)
    pins(backend).pin(22).drive_low()
    clock.advance(0.05)
    events.wait_count(ExitPressed, 1)
    pins(backend).pin(22).drive_high()
    clock.advance(0.05)
    backend.poll()
    assert events.seen == [
        ContactSensed("front", False),
        ContactSensed("front", True),
        ExitPressed("front"),
    ]


def test_every_reader_kind_reports(backend: Backend, clock: FakeClock, events: Events) -> None:
    backend.start()
    for reader_id, data in (("front-in", rdm6300.encode("0a1b2c3d4e")), ("kiosk", b"12#")):
        reader = backend.readers[reader_id]
        assert isinstance(reader, SerialReader) and reader.opened.wait(WAIT_S)
        reader.connection.write(data)
    for bit in wiegand.encode_26(33, 119):
        pin = pins(backend).pin(24 if bit else 23)
        pin.drive_low()
        pin.drive_high()
    clock.advance(0.05)
    reads = events.wait_count(CredentialRead, 3)
    assert sorted(reads, key=str) == sorted(
        [
            CredentialRead("front-in", "tag", "0a1b2c3d4e"),
            CredentialRead("kiosk", "pin", "12"),
            CredentialRead("back-in", "card", "33:00119"),
        ],
        key=str,
    )


def test_close_returns_every_output_to_safe(backend: Backend) -> None:
    backend.start()
    for name in backend.outputs:
        backend.outputs[name].set(not backend.outputs[name].safe)
    backend.outputs["light:court1"].pulse(60)
    assert levels(backend) != SAFE_LEVELS
    backend.close()
    backend.close()
    assert levels(backend) == SAFE_LEVELS
    assert all(o.closed and o.value == o.safe for o in backend.outputs.values())


def test_a_failed_build_releases_what_it_built(factory: MockFactory, events: Events) -> None:
    squatter = gpiozero.DigitalInputDevice(24, pin_factory=factory)  # D1 taken
    try:
        with pytest.raises(HardwareError, match=r"back-in.*GPIO 23, 24"):
            create_backend("gpio", config("gpio").wiring, events, pin_factory=factory)
        # The outputs built before the reader failed were released, safe.
        assert factory.pin(17).function == "input"
        assert factory.pin(17).state is True
    finally:
        squatter.close()
