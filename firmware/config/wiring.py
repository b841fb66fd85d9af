"""controller.toml's `[[doors]]`, `[[lights]]` and `[[readers]]` -> a typed `Wiring`,
checked once, or one `ConfigError` naming file, table and key.

Unknown keys are errors: a typo in a pin's key must not leave a door unwired.
docs/hardware.md lists every key for technicians:

- doors: `relay` (BCM pin), `fail` ("secure" | "safe", required), `active_high`
  (false), `contact` and `rex` (BCM pins, optional), `contact_nc` (true), `rex_nc`
  (false), `debounce_ms` (50), `max_open_s` (300);
- lights: `relay`, `active_high` (false), `warn` (optional), `warn_active_high`
  (as `active_high`);
- readers: `kind` (rdm6300 | line | wiegand | keypad | osdp), one of `door`,
  `light` or `kiosk = true`; serial kinds and osdp `port`, `baud` (9600); wiegand
  `d0`, `d1`; line `credkind` ("tag" | "card"); `repeat_ms` (1000, not keypads);
  `gap_ms` (wiegand 25, rdm6300 200, line and keypad 500); `pin_timeout_s` (10,
  wiegand, keypad and osdp); osdp `address` (0), `scbk_file` (required: 32 hex
  digits, private to its owner), `install` (false). OSDP readers may share a
  port (one RS-485 bus) at one `baud`, each at its own `address`.

A simulator may run with tables that are not complete (no pins at all, say):
`bench_only_wiring` then keeps what the core needs (ids, what each reader serves,
which doors have a contact or exit button) and nothing the HAL would build.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from firmware.config.private_files import read_private_line
from firmware.config.tables import ConfigError, Table
from firmware.core.limits import MAX_UNLOCK_S
from firmware.core.wiring import (
    DEFAULT_BAUD,
    DEFAULT_DEBOUNCE_S,
    DEFAULT_GAP_S,
    DEFAULT_MAX_OPEN_S,
    DEFAULT_PIN_TIMEOUT_S,
    DEFAULT_REPEAT_S,
    FAILS,
    OSDP_BAUDS,
    READER_KINDS,
    SCBK_LEN,
    SERIAL_KINDS,
    DoorSpec,
    Fail,
    LightSpec,
    ReaderSpec,
    Wiring,
)

UART_PORTS = frozenset({"/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0"})
UART_PINS = {14: "TXD", 15: "RXD"}
TABLES = ("doors", "lights", "readers")
_TARGETS = ("door", "light", "kiosk")
_READER_KEYS = {
    "rdm6300": {"port", "baud", "repeat_ms", "gap_ms"},
    "line": {"port", "baud", "repeat_ms", "gap_ms", "credkind"},
    "keypad": {"port", "baud", "gap_ms", "pin_timeout_s"},
    "wiegand": {"d0", "d1", "repeat_ms", "gap_ms", "pin_timeout_s"},
    "osdp": {"port", "baud", "repeat_ms", "pin_timeout_s", "address", "scbk_file", "install"},
}
_ANY_READER_KEYS = set().union(*_READER_KEYS.values())


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


def tables_of(path: Path, data: Mapping[str, Any]) -> dict[str, list[Table]]:
    """The three arrays of tables of a parsed controller.toml, each table's `id`
    checked (present, a non-empty string, not used twice in its array)."""
    tables: dict[str, list[Table]] = {}
    for name in TABLES:
        raw = data.get(name, [])
        if not isinstance(raw, list):
            raise ConfigError(f"{path}: {name}: must be an array of tables ([[{name}]])")
        seen: set[str] = set()
        tables[name] = []
        for i, entry in enumerate(raw):
            t = Table(path, f"{name}[{i}]", entry)
            id = t.text("id")
            if id in seen:
                raise t.error("id", f"{id!r} is used twice")
            seen.add(id)
            tables[name].append(t)
    return tables


def parse_wiring(path: Path, data: Mapping[str, Any]) -> Wiring:
    """Check the wiring tables of a parsed controller.toml (`path` is for messages)."""
    tables = tables_of(path, data)
    doors, lights, readers = tables["doors"], tables["lights"], tables["readers"]
    pins = _Pins(path)
    for t in readers:
        port = t.table.get("port")
        if port in UART_PORTS:
            for pin, name in UART_PINS.items():
                pins.claim(pin, f"the UART's {name}, used by {t.name} ({port})")
            break
    door_specs = tuple(_door(t, pins) for t in doors)
    light_specs = tuple(_light(t, pins) for t in lights)
    targets = ({d.id for d in door_specs}, {c.id for c in light_specs})
    ports: dict[str, tuple[str, str]] = {}
    reader_specs = tuple(_reader(t, targets, pins, ports) for t in readers)
    _check_buses(readers, reader_specs)
    return Wiring(door_specs, light_specs, reader_specs)


def bench_only_wiring(path: Path, data: Mapping[str, Any]) -> Wiring:
    """What the core needs from tables that `parse_wiring` refused: ids, what each
    reader serves, which doors have a contact or exit button, which lights a warn
    output. No pins, no reader kinds: nothing for a HAL to build."""
    tables = tables_of(path, data)

    def text(t: Table, key: str) -> str | None:
        value = t.table.get(key)
        return value if isinstance(value, str) and value else None

    def present(t: Table, key: str) -> int | None:
        value = t.table.get(key)
        return value if type(value) is int else None

    doors = tuple(
        DoorSpec(
            t.text("id"),
            fail="safe" if t.table.get("fail") == "safe" else "secure",
            contact=present(t, "contact"),
            rex=present(t, "rex"),
        )
        for t in tables["doors"]
    )
    lights = tuple(LightSpec(t.text("id"), warn=present(t, "warn")) for t in tables["lights"])
    readers = tuple(
        ReaderSpec(t.text("id"), None, door=text(t, "door"), light=text(t, "light"))
        for t in tables["readers"]
    )
    return Wiring(doors, lights, readers)


def _door(t: Table, pins: _Pins) -> DoorSpec:
    relay = t.pin("relay")
    pins.claim(relay, f"{t.name}.relay")
    active_high = t.flag("active_high", False)
    fail: Fail = "safe" if t.choice("fail", FAILS) == "safe" else "secure"
    contact = t.pin("contact", None)
    pins.claim(contact, f"{t.name}.contact")
    rex = t.pin("rex", None)
    pins.claim(rex, f"{t.name}.rex")
    t.needs("contact_nc", "contact")
    t.needs("rex_nc", "rex")
    spec = DoorSpec(
        str(t.table["id"]),
        relay=relay,
        fail=fail,
        active_high=active_high,
        contact=contact,
        rex=rex,
        contact_nc=t.flag("contact_nc", True),
        rex_nc=t.flag("rex_nc", False),
        debounce_s=t.number("debounce_ms", round(DEFAULT_DEBOUNCE_S * 1000), 0, 1000) / 1000,
        max_open_s=float(t.number("max_open_s", round(DEFAULT_MAX_OPEN_S), 1, 2 * MAX_UNLOCK_S)),
    )
    t.done()
    return spec


def _light(t: Table, pins: _Pins) -> LightSpec:
    relay = t.pin("relay")
    pins.claim(relay, f"{t.name}.relay")
    active_high = t.flag("active_high", False)
    warn = t.pin("warn", None)
    pins.claim(warn, f"{t.name}.warn")
    t.needs("warn_active_high", "warn")
    spec = LightSpec(
        str(t.table["id"]),
        relay=relay,
        active_high=active_high,
        warn=warn,
        warn_active_high=t.flag("warn_active_high", active_high),
    )
    t.done()
    return spec


def _reader(
    t: Table,
    targets: tuple[set[str], set[str]],
    pins: _Pins,
    ports: dict[str, tuple[str, str]],
) -> ReaderSpec:
    kind = t.choice("kind", READER_KINDS)
    doors, lights = targets
    if sum(t.has(key) for key in _TARGETS) != 1:
        raise t.error("door", "a reader needs exactly one of door, light or kiosk = true")
    door = light = None
    if t.has("door"):
        door = t.text("door")
        if door not in doors:
            raise t.error("door", f"no [[doors]] table has id {door!r}")
    if t.has("light"):
        light = t.text("light")
        if light not in lights:
            raise t.error("light", f"no [[lights]] table has id {light!r}")
    if t.has("kiosk") and not t.flag("kiosk"):
        raise t.error("kiosk", "must be true when given (or leave it out)")
    allowed = _READER_KEYS[kind]
    gap_ms = round(DEFAULT_GAP_S[kind] * 1000)
    repeat_ms = round(DEFAULT_REPEAT_S * 1000)
    timeout_s = round(DEFAULT_PIN_TIMEOUT_S)
    spec = ReaderSpec(
        str(t.table["id"]),
        kind,
        door=door,
        light=light,
        gap_s=t.number("gap_ms", gap_ms, 1, 10_000) / 1000 if "gap_ms" in allowed else 0,
        repeat_s=(
            t.number("repeat_ms", repeat_ms, 0, 60_000) / 1000 if "repeat_ms" in allowed else 0
        ),
        pin_timeout_s=(
            float(t.number("pin_timeout_s", timeout_s, 1, 600))
            if "pin_timeout_s" in allowed
            else DEFAULT_PIN_TIMEOUT_S
        ),
    )
    if kind in SERIAL_KINDS or kind == "osdp":
        port = t.text("port")
        if "://" not in port:  # URLs such as loop:// are each their own port
            user, user_kind = ports.setdefault(port, (f"{t.name}.port", kind))
            if user != f"{t.name}.port" and not kind == user_kind == "osdp":
                raise t.error("port", f"{port} is already {user}")
        spec = replace(spec, port=port, baud=t.number("baud", DEFAULT_BAUD, 50, 4_000_000))
    if kind == "osdp":
        spec = _osdp(t, spec)
    elif kind not in SERIAL_KINDS:
        d0, d1 = t.pin("d0"), t.pin("d1")
        pins.claim(d0, f"{t.name}.d0")
        pins.claim(d1, f"{t.name}.d1")
        spec = replace(spec, d0=d0, d1=d1, credkind="card")
    if kind == "rdm6300":
        spec = replace(spec, credkind="tag")
    if "credkind" in allowed:
        spec = replace(spec, credkind=t.choice("credkind", ("tag", "card"), "tag"))
    if kind == "keypad":
        spec = replace(spec, credkind="pin")
    t.done(_ANY_READER_KEYS - allowed, f"by a {kind} reader")
    return spec


def _check_buses(tables: list[Table], specs: tuple[ReaderSpec, ...]) -> None:
    """OSDP readers may share a port (an RS-485 bus): at one speed, each at an
    address of its own."""
    first: dict[str, tuple[Table, ReaderSpec]] = {}
    addresses: dict[tuple[str, int], str] = {}
    for t, spec in zip(tables, specs, strict=True):
        if spec.kind != "osdp" or spec.port is None or "://" in spec.port:
            continue
        t0, spec0 = first.setdefault(spec.port, (t, spec))
        if spec.baud != spec0.baud:
            raise t.error("baud", f"{spec.port} runs at {spec0.baud} for {t0.name}: one per bus")
        used = addresses.setdefault((spec.port, spec.address), t.name)
        if used != t.name:
            raise t.error("address", f"{spec.address} on {spec.port} is already {used}'s")


def _osdp(t: Table, spec: ReaderSpec) -> ReaderSpec:
    """An OSDP reader's bus address, line speed and secure channel key."""
    if spec.baud not in OSDP_BAUDS:
        raise t.error("baud", f"OSDP runs at one of {', '.join(map(str, OSDP_BAUDS))}")
    path = t.path_value("scbk_file")
    assert path is not None
    return replace(
        spec,
        credkind="card",
        address=t.number("address", 0, 0, 126),
        scbk=read_scbk(path, where=f"{t.path}: {t.name}.scbk_file"),
        scbk_file=str(path),
        install=t.flag("install", False),
    )


def read_scbk(path: Path, *, where: str) -> bytes:
    """An OSDP secure channel base key: a file private to its owner whose first
    line is 32 hex digits (`alc ctl osdp-keyset` writes one). `ConfigError`
    naming `where` and the fix otherwise."""
    line = read_private_line(path, where=where).strip()
    try:
        key = bytes.fromhex(line)
    except ValueError:
        key = b""
    if len(key) != SCBK_LEN:
        raise ConfigError(
            f"{where}: {path} must hold the key as {2 * SCBK_LEN} hex digits on its first line"
        )
    return key
