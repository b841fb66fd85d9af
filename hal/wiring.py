"""The wiring as the HAL builds it: each door's lock relay, contact and exit button,
each light's relays, as named devices (`OutputSpec`, `InputSpec`), from the typed
`firmware.core.wiring.Wiring` that `firmware.config` checked.

Output names are what the core switches: `door:<id>` (on = released),
`light:<id>`, `warn:<id>`. Input names: `contact:<door>`, `rex:<door>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.core.errors import LocalError
from firmware.core.wiring import ReaderSpec, Wiring


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One relay output. `safe` is its logical power-on and fault state; `inverted`
    is set for fail-safe doors, whose relay is energised to lock; `max_on_s`, for
    door outputs, is the longest it stays on unless held (None: no limit)."""

    name: str
    pin: int
    active_high: bool
    safe: bool = False
    inverted: bool = False
    max_on_s: float | None = None


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input: a door contact (`contact:<door>`) or exit button (`rex:<door>`),
    wired to GND with the pin's pull-up."""

    name: str
    door_id: str
    role: str  # "contact" | "rex"
    pin: int
    active_when_high: bool
    debounce_s: float


@dataclass(frozen=True, slots=True)
class DeviceSpecs:
    """Everything a backend builds, in the order it builds it (outputs first)."""

    outputs: tuple[OutputSpec, ...] = ()
    inputs: tuple[InputSpec, ...] = ()
    readers: tuple[ReaderSpec, ...] = ()


class NotWired(LocalError):
    """A spec without its pins or kind (a simulator's bench-only wiring) was given
    to a backend."""


def device_specs(wiring: Wiring) -> DeviceSpecs:
    """The devices of `wiring`."""
    outputs: list[OutputSpec] = []
    inputs: list[InputSpec] = []
    for door in wiring.doors:
        if door.relay is None:
            raise NotWired(f"door {door.id!r} has no relay pin")
        # Fail-safe locks (maglocks) are powered to lock: the relay is energised to
        # lock, so releasing the door de-energises it and the safe state (released)
        # is also the relay's idle state. See docs/hardware.md.
        safe = door.fail == "safe"
        outputs.append(
            OutputSpec(
                f"door:{door.id}",
                door.relay,
                door.active_high,
                safe=safe,
                inverted=safe,
                max_on_s=door.max_open_s,
            )
        )
        # With the pull-up and the switch to GND, a closed switch reads low: an NC
        # contact (closed while the door is shut) reads high when the door opens,
        # an NO button reads low when pressed.
        if door.contact is not None:
            inputs.append(
                InputSpec(
                    f"contact:{door.id}",
                    door.id,
                    "contact",
                    door.contact,
                    door.contact_nc,
                    door.debounce_s,
                )
            )
        if door.rex is not None:
            inputs.append(
                InputSpec(f"rex:{door.id}", door.id, "rex", door.rex, door.rex_nc, door.debounce_s)
            )
    for light in wiring.lights:
        if light.relay is None:
            raise NotWired(f"light {light.id!r} has no relay pin")
        outputs.append(OutputSpec(f"light:{light.id}", light.relay, light.active_high))
        if light.warn is not None:
            outputs.append(OutputSpec(f"warn:{light.id}", light.warn, light.warn_active_high))
    for reader in wiring.readers:
        if reader.kind is None:
            raise NotWired(f"reader {reader.id!r} has no kind")
    return DeviceSpecs(tuple(outputs), tuple(inputs), wiring.readers)
