"""The wiring tables of controller.toml, checked: `[[doors]]`, `[[lights]]` and
`[[readers]]` -> `Wiring`, or one `ConfigError` naming file, table and key.

`firmware.config` checks each table's `id`; the hardware keys are checked here,
because the HAL is what understands them. Unknown keys are errors: a typo in a
pin's key must not leave a door unwired. docs/hardware.md lists every key.

Doors: `relay` (BCM pin), `fail` ("secure" | "safe", required), `active_high`
(false), `contact` and `rex` (BCM pins, optional), `contact_nc` (true), `rex_nc`
(false), `debounce_ms` (50).
Lights: `relay`, `active_high` (false), `warn` (optional), `warn_active_high`
(as `active_high`).
Readers: `kind` (rdm6300 | line | wiegand | keypad), one of `door`, `light` or
`kiosk = true`; serial kinds `port`, `baud` (9600); wiegand `d0`, `d1`; line
`credkind` ("tag" | "card"); `repeat_ms` (1000, not keypads); `gap_ms` (wiegand
25, rdm6300 200, line and keypad 500); `pin_timeout_s` (10, wiegand and keypad).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from firmware.config import Config, ConfigError

FAILS = ("secure", "safe")
READER_KINDS = ("rdm6300", "line", "wiegand", "keypad")
SERIAL_KINDS = frozenset({"rdm6300", "line", "keypad"})
BCM_PINS = range(28)  # GPIO 0-27 on the 40-pin header
UART_PORTS = frozenset({"/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0"})
UART_PINS = {14: "TXD", 15: "RXD"}
DEFAULT_BAUD = 9600
DEFAULT_DEBOUNCE_MS = 50
DEFAULT_REPEAT_MS = 1000
DEFAULT_PIN_TIMEOUT_S = 10
DEFAULT_GAP_MS = {"wiegand": 25, "rdm6300": 200, "line": 500, "keypad": 500}
_TARGETS = ("door", "light", "kiosk")
_READER_KEYS = {
    "rdm6300": {"port", "baud", "repeat_ms", "gap_ms"},
    "line": {"port", "baud", "repeat_ms", "gap_ms", "credkind"},
    "keypad": {"port", "baud", "gap_ms", "pin_timeout_s"},
    "wiegand": {"d0", "d1", "repeat_ms", "gap_ms", "pin_timeout_s"},
}
_ANY_READER_KEYS = set().union(*_READER_KEYS.values())
_REQUIRED = object()


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One relay output. `name` is `door:<id>`, `light:<id>` or `warn:<id>`;
    `safe` is its logical power-on and fault state; `inverted` is set for
    fail-safe doors, whose relay is energised to lock."""

    name: str
    pin: int
    active_high: bool
    safe: bool = False
    inverted: bool = False


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
class ReaderSpec:
    """One reader."""

    id: str
    kind: str
    port: str | None = None
    baud: int = DEFAULT_BAUD
    d0: int | None = None
    d1: int | None = None
    credkind: str = "tag"
    repeat_s: float = DEFAULT_REPEAT_MS / 1000
    gap_s: float = DEFAULT_GAP_MS["rdm6300"] / 1000
    pin_timeout_s: float = float(DEFAULT_PIN_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class Wiring:
    """Everything a backend builds, in the order it builds it (outputs first)."""

    outputs: tuple[OutputSpec, ...] = ()
    inputs: tuple[InputSpec, ...] = ()
    readers: tuple[ReaderSpec, ...] = ()

    def with_ports(self, port: str) -> Wiring:
        """The same wiring with every serial reader on `port` (the simulator's
        `loop://`)."""
        readers = tuple(replace(r, port=port) if r.port is not None else r for r in self.readers)
        return replace(self, readers=readers)


class _Table:
    """Typed reads from one wiring table; every error names file and key."""

    def __init__(self, path: Path, where: str, table: Any) -> None:
        self.path = path
        self.where = where
        if not isinstance(table, Mapping):
            raise ConfigError(f"{path}: {where}: must be a table")
        self.table: Mapping[str, Any] = table
        self.used: set[str] = {"id"}

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.where}.{key}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.table

    def _raw(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is _REQUIRED:
                raise self.error(key, "is required")
            return default
        return self.table[key]

    def text(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self._raw(key, default)
        if value is not default and (not isinstance(value, str) or not value):
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value

    def flag(self, key: str, default: Any = _REQUIRED) -> bool:
        value = self._raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def number(self, key: str, default: Any, low: int, high: int) -> int:
        value = self._raw(key, default)
        if type(value) is not int or not low <= value <= high:
            raise self.error(key, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    def pin(self, key: str, default: Any = _REQUIRED) -> int | None:
        value = self._raw(key, default)
        if value is None and default is None:
            return None
        if type(value) is not int or value not in BCM_PINS:
            raise self.error(key, f"must be a BCM GPIO number from 0 to 27, got {value!r}")
        return value

    def choice(self, key: str, choices: Iterable[str], default: Any = _REQUIRED) -> str:
        value = self._raw(key, default)
        options = tuple(choices)
        if value not in options:
            listed = ", ".join(f'"{c}"' for c in options)
            raise self.error(key, f"must be one of {listed}, got {value!r}")
        return str(value)

    def needs(self, key: str, other: str) -> None:
        if self.has(key) and not self.has(other):
            raise self.error(key, f"has no effect without {other}")

    def done(self, not_here: Iterable[str] = (), why: str = "") -> None:
        misplaced = set(not_here)
        for key in sorted(self.table):
            if key in self.used:
                continue
            if key in misplaced:
                raise self.error(key, f"is not used {why}")
            raise self.error(key, "is not a known setting")


class _Pins:
    """Who uses which GPIO, so a pin wired twice is named with both users."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users: dict[int, str] = {}

    def claim(self, pin: int | None, user: str) -> None:
        if pin is None:
            return
        if pin in self.users:
            raise ConfigError(f"{self.path}: {user}: GPIO {pin} is already {self.users[pin]}")
        self.users[pin] = user


def wiring_from_config(config: Config) -> Wiring:
    """Check the wiring tables of a loaded `Config`."""
    return parse_wiring(
        config.path, doors=config.doors, lights=config.lights, readers=config.readers
    )


def parse_wiring(
    path: Path,
    *,
    doors: Iterable[Mapping[str, Any]] = (),
    lights: Iterable[Mapping[str, Any]] = (),
    readers: Iterable[Mapping[str, Any]] = (),
) -> Wiring:
    """Check the three tables (as parsed from TOML); `path` is for messages."""
    doors, lights, readers = list(doors), list(lights), list(readers)
    pins = _Pins(path)
    for i, reader in enumerate(readers):
        port = reader.get("port") if isinstance(reader, Mapping) else None
        if port in UART_PORTS:
            for pin, name in UART_PINS.items():
                pins.claim(pin, f"the UART's {name}, used by readers[{i}] ({port})")
            break
    outputs: list[OutputSpec] = []
    inputs: list[InputSpec] = []
    door_ids = _ids(path, "doors", doors)
    light_ids = _ids(path, "lights", lights)
    for i, raw in enumerate(doors):
        _door(_Table(path, f"doors[{i}]", raw), door_ids[i], pins, outputs, inputs)
    for i, raw in enumerate(lights):
        _light(_Table(path, f"lights[{i}]", raw), light_ids[i], pins, outputs)
    ids = _ids(path, "readers", readers)
    ports: dict[str, str] = {}
    targets = (set(door_ids), set(light_ids))
    specs = tuple(
        _reader(_Table(path, f"readers[{i}]", raw), ids[i], targets, pins, ports)
        for i, raw in enumerate(readers)
    )
    return Wiring(tuple(outputs), tuple(inputs), specs)


def _ids(path: Path, name: str, tables: list[Mapping[str, Any]]) -> list[str]:
    ids: list[str] = []
    for i, table in enumerate(tables):
        id = _Table(path, f"{name}[{i}]", table).text("id")
        if id in ids:
            raise ConfigError(f"{path}: {name}[{i}].id: {id!r} is used twice")
        ids.append(id)
    return ids


def _door(
    t: _Table, id: str, pins: _Pins, outputs: list[OutputSpec], inputs: list[InputSpec]
) -> None:
    relay = t.pin("relay")
    pins.claim(relay, f"{t.where}.relay")
    active_high = t.flag("active_high", False)
    fail = t.choice("fail", FAILS)
    contact = t.pin("contact", None)
    pins.claim(contact, f"{t.where}.contact")
    rex = t.pin("rex", None)
    pins.claim(rex, f"{t.where}.rex")
    t.needs("contact_nc", "contact")
    t.needs("rex_nc", "rex")
    contact_nc = t.flag("contact_nc", True)
    rex_nc = t.flag("rex_nc", False)
    debounce_s = t.number("debounce_ms", DEFAULT_DEBOUNCE_MS, 0, 1000) / 1000
    t.done()
    assert relay is not None
    # Fail-safe locks (maglocks) are powered to lock: the relay is energised to
    # lock, so releasing the door de-energises it and the safe state (released)
    # is also the relay's idle state. See docs/hardware.md.
    safe = fail == "safe"
    outputs.append(OutputSpec(f"door:{id}", relay, active_high, safe=safe, inverted=safe))
    # With the pull-up and the switch to GND, a closed switch reads low: an NC
    # contact (closed while the door is shut) reads high when the door opens,
    # an NO button reads low when pressed.
    if contact is not None:
        inputs.append(InputSpec(f"contact:{id}", id, "contact", contact, contact_nc, debounce_s))
    if rex is not None:
        inputs.append(InputSpec(f"rex:{id}", id, "rex", rex, rex_nc, debounce_s))


def _light(t: _Table, id: str, pins: _Pins, outputs: list[OutputSpec]) -> None:
    relay = t.pin("relay")
    pins.claim(relay, f"{t.where}.relay")
    active_high = t.flag("active_high", False)
    warn = t.pin("warn", None)
    pins.claim(warn, f"{t.where}.warn")
    t.needs("warn_active_high", "warn")
    warn_active_high = t.flag("warn_active_high", active_high)
    t.done()
    assert relay is not None
    outputs.append(OutputSpec(f"light:{id}", relay, active_high))
    if warn is not None:
        outputs.append(OutputSpec(f"warn:{id}", warn, warn_active_high))


def _reader(
    t: _Table,
    id: str,
    targets: tuple[set[str], set[str]],
    pins: _Pins,
    ports: dict[str, str],
) -> ReaderSpec:
    kind = t.choice("kind", READER_KINDS)
    doors, lights = targets
    if sum(t.has(key) for key in _TARGETS) != 1:
        raise t.error("door", "a reader needs exactly one of door, light or kiosk = true")
    if t.has("door") and t.text("door") not in doors:
        raise t.error("door", f"no [[doors]] table has id {t.table['door']!r}")
    if t.has("light") and t.text("light") not in lights:
        raise t.error("light", f"no [[lights]] table has id {t.table['light']!r}")
    if t.has("kiosk") and not t.flag("kiosk"):
        raise t.error("kiosk", "must be true when given (or leave it out)")
    allowed = _READER_KEYS[kind]
    gap_ms = DEFAULT_GAP_MS[kind]
    spec = ReaderSpec(
        id=id,
        kind=kind,
        gap_s=t.number("gap_ms", gap_ms, 1, 10_000) / 1000 if "gap_ms" in allowed else 0,
        repeat_s=(
            t.number("repeat_ms", DEFAULT_REPEAT_MS, 0, 60_000) / 1000
            if "repeat_ms" in allowed
            else 0
        ),
        pin_timeout_s=(
            float(t.number("pin_timeout_s", DEFAULT_PIN_TIMEOUT_S, 1, 600))
            if "pin_timeout_s" in allowed
            else float(DEFAULT_PIN_TIMEOUT_S)
        ),
    )
    if kind in SERIAL_KINDS:
        port = t.text("port")
        if "://" not in port:  # URLs such as loop:// are each their own port
            if port in ports:
                raise t.error("port", f"{port} is already {ports[port]}")
            ports[port] = f"{t.where}.port"
        spec = replace(spec, port=port, baud=t.number("baud", DEFAULT_BAUD, 50, 4_000_000))
    else:
        d0, d1 = t.pin("d0"), t.pin("d1")
        pins.claim(d0, f"{t.where}.d0")
        pins.claim(d1, f"{t.where}.d1")
        spec = replace(spec, d0=d0, d1=d1, credkind="card")
    if kind == "rdm6300":
        spec = replace(spec, credkind="tag")
    if "credkind" in allowed:
        spec = replace(spec, credkind=t.choice("credkind", ("tag", "card"), "tag"))
    if kind == "keypad":
        spec = replace(spec, credkind="pin")
    t.done(_ANY_READER_KEYS - allowed, f"by a {kind} reader")
    return spec
