"""The typed wiring as the HAL builds it: each door's relay, contact and exit
button, each light's relays, named as the core switches and hears them."""

from __future__ import annotations

import pytest

from firmware.core.wiring import DoorSpec, LightSpec, ReaderSpec, Wiring
from hal.sim import on_loopback
from hal.wiring import InputSpec, NotWired, OutputSpec, device_specs

WIRING = Wiring(
    doors=(
        DoorSpec("front", 17, "secure", False, 27, 22, True, False, 0.03, 300.0),
        DoorSpec("back", 16, "safe", True, 26, None, False, False, 0.05, 60.0),
    ),
    lights=(LightSpec("court1", 5, False, 6, True), LightSpec("court2", 12)),
    readers=(
        ReaderSpec("front-in", "rdm6300", door="front", port="/dev/serial0"),
        ReaderSpec("back-in", "wiegand", door="back", d0=23, d1=24, credkind="card"),
    ),
)


def test_doors_and_lights_become_named_relays_and_inputs() -> None:
    specs = device_specs(WIRING)
    assert specs.outputs == (
        OutputSpec("door:front", 17, False, safe=False, inverted=False, max_on_s=300.0),
        OutputSpec("door:back", 16, True, safe=True, inverted=True, max_on_s=60.0),
        OutputSpec("light:court1", 5, False),
        OutputSpec("warn:court1", 6, True),
        OutputSpec("light:court2", 12, False),
    )
    assert specs.inputs == (
        InputSpec("contact:front", "front", "contact", 27, True, 0.03),
        InputSpec("rex:front", "front", "rex", 22, False, 0.03),
        InputSpec("contact:back", "back", "contact", 26, False, 0.05),
    )
    assert specs.readers == WIRING.readers


@pytest.mark.parametrize(
    ("wiring", "problem"),
    [
        (Wiring(doors=(DoorSpec("front"),)), "door 'front' has no relay pin"),
        (Wiring(lights=(LightSpec("court1"),)), "light 'court1' has no relay pin"),
        (Wiring(readers=(ReaderSpec("desk", None),)), "reader 'desk' has no kind"),
    ],
)
def test_a_bench_only_wiring_cannot_be_built(wiring: Wiring, problem: str) -> None:
    with pytest.raises(NotWired, match=problem):
        device_specs(wiring)


def test_specs_refuse_what_no_table_could_say() -> None:
    with pytest.raises(ValueError, match="fail"):
        DoorSpec("front", 17, "open")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_open_s"):
        DoorSpec("front", 17, max_open_s=0)
    with pytest.raises(ValueError, match="kind"):
        ReaderSpec("r", "nfc")
    with pytest.raises(ValueError, match="not both"):
        ReaderSpec("r", "line", door="front", light="court1")
    with pytest.raises(ValueError, match="credkind"):
        ReaderSpec("r", "line", credkind="face")


def test_the_simulator_puts_every_serial_reader_on_loopback() -> None:
    readers = on_loopback(WIRING).readers
    assert [r.port for r in readers] == ["loop://", None]  # Wiegand has no port
    assert on_loopback(WIRING).doors == WIRING.doors
