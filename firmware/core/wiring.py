"""The wiring of one controller, typed: its doors, lights and readers, and the pins
and ports they are on.

`firmware.config` reads controller.toml's `[[doors]]`, `[[lights]]` and
`[[readers]]` tables once, checks them, and hands out a `Wiring`. The core builds
its facility from it (`firmware.core.facility.facility_from`), the HAL its devices
(`hal.registry.create_backend`); neither reads TOML. A leaf module: the standard
library and `firmware.core.limits` only, so the HAL may import it.

Pins are BCM GPIO numbers. docs/hardware.md explains every field to technicians.
A door or light whose `relay` is None, or a reader whose `kind` is None, is not
wired to anything: only a simulator whose tables are incomplete has those, and it
runs on bench inputs alone (`Config.unwired` says why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from firmware.core.limits import CREDKINDS, MAX_UNLOCK_S

Fail = Literal["secure", "safe"]
FAILS: tuple[Fail, ...] = ("secure", "safe")
"""A door's state whenever the controller is not driving it (docs/hardware.md)."""
READER_KINDS = ("rdm6300", "line", "wiegand", "keypad", "osdp")
SERIAL_KINDS = frozenset({"rdm6300", "line", "keypad"})
BCM_PINS = range(28)  # GPIO 0-27 on the 40-pin header

DEFAULT_BAUD = 9600
DEFAULT_DEBOUNCE_S = 0.05
DEFAULT_REPEAT_S = 1.0
DEFAULT_PIN_TIMEOUT_S = 10.0
DEFAULT_GAP_S = {"wiegand": 0.025, "rdm6300": 0.2, "line": 0.5, "keypad": 0.5, "osdp": 0.0}
OSDP_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400)
OSDP_ADDRESSES = range(127)  # 0x7F is the broadcast address
SCBK_LEN = 16  # bytes: an OSDP secure channel base key is AES-128
DEFAULT_MAX_OPEN_S = float(min(2 * MAX_UNLOCK_S, 300))
"""How long the HAL lets a door stay released unless the core holds it open:
twice the longest `unlock_s` a door record may carry, capped at 5 minutes."""


@dataclass(frozen=True, slots=True)
class DoorSpec:
    """One door: its lock relay, and its contact and exit button if fitted.

    `fail` is what the door does when the controller is not driving it ("secure":
    locked, "safe": released). `contact_nc` and `rex_nc` say whether the switch is
    closed at rest. `max_open_s` is the longest the HAL leaves the door released
    unless the core says it is held open."""

    id: str
    relay: int | None = None
    fail: Fail = "secure"
    active_high: bool = False
    contact: int | None = None
    rex: int | None = None
    contact_nc: bool = True
    rex_nc: bool = False
    debounce_s: float = DEFAULT_DEBOUNCE_S
    max_open_s: float = DEFAULT_MAX_OPEN_S

    def __post_init__(self) -> None:
        if self.fail not in FAILS:
            raise ValueError(f"door {self.id!r}: fail must be one of {', '.join(FAILS)}")
        if self.debounce_s < 0:
            raise ValueError(f"door {self.id!r}: debounce_s must not be negative")
        if not self.max_open_s > 0:
            raise ValueError(f"door {self.id!r}: max_open_s must be positive")


@dataclass(frozen=True, slots=True)
class LightSpec:
    """One light circuit: its relay, and a warning lamp's relay if fitted (else the
    circuit itself flashes to warn)."""

    id: str
    relay: int | None = None
    active_high: bool = False
    warn: int | None = None
    warn_active_high: bool = False


@dataclass(frozen=True, slots=True)
class ReaderSpec:
    """One reader, and what it serves: a `door`, a `light`, or neither (a kiosk
    reader, which signs members in at the kiosk screens).

    Serial kinds (rdm6300, line, keypad) read `port` at `baud`; Wiegand readers
    pulse `d0` and `d1`. An OSDP reader answers at `address` on the RS-485 bus
    on `port`, over a secure channel keyed with `scbk` (read from `scbk_file`);
    `install` lets one still on the default key in and gives it `scbk`.
    `credkind` is what a read is (keypads: "pin"); `repeat_s` suppresses the
    same credential read again within it; `gap_s` ends a frame; `pin_timeout_s`
    drops a half-typed PIN."""

    id: str
    kind: str | None
    door: str | None = None
    light: str | None = None
    port: str | None = None
    baud: int = DEFAULT_BAUD
    d0: int | None = None
    d1: int | None = None
    credkind: str = "tag"
    repeat_s: float = DEFAULT_REPEAT_S
    gap_s: float = DEFAULT_GAP_S["rdm6300"]
    pin_timeout_s: float = DEFAULT_PIN_TIMEOUT_S
    address: int = 0
    scbk: bytes | None = field(default=None, repr=False)  # a secret: never in a log line
    scbk_file: str | None = None
    install: bool = False

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in READER_KINDS:
            raise ValueError(f"reader {self.id!r}: kind must be one of {', '.join(READER_KINDS)}")
        if self.door is not None and self.light is not None:
            raise ValueError(f"reader {self.id!r} serves a door or a light, not both")
        if self.credkind not in CREDKINDS:
            raise ValueError(f"reader {self.id!r}: credkind must be one of {', '.join(CREDKINDS)}")
        if self.scbk is not None and len(self.scbk) != SCBK_LEN:
            raise ValueError(f"reader {self.id!r}: scbk must be {SCBK_LEN} bytes")
        if self.address not in OSDP_ADDRESSES:
            raise ValueError(f"reader {self.id!r}: address must be 0 to 126")

    @property
    def kiosk(self) -> bool:
        """True for a kiosk reader (it serves no door and no light)."""
        return self.door is None and self.light is None


@dataclass(frozen=True, slots=True)
class Wiring:
    """Everything wired to one controller, in the order of controller.toml."""

    doors: tuple[DoorSpec, ...] = ()
    lights: tuple[LightSpec, ...] = ()
    readers: tuple[ReaderSpec, ...] = ()
