"""The wiring tables checked once, by the config: good tables become typed specs,
every mistake is one ConfigError naming the file, the table and the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from firmware.config import ConfigError, load_config, parse_config
from firmware.config.wiring import parse_wiring
from firmware.core.wiring import DoorSpec, LightSpec, ReaderSpec

PATH = Path("/etc/alc/controller.toml")
DOOR = {"id": "front", "relay": 17, "fail": "secure"}
LIGHT = {"id": "court1", "relay": 5}
READER = {"id": "front-in", "kind": "rdm6300", "port": "/dev/serial0", "door": "front"}
EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "controller.example.toml"


def wire(**tables: list[dict[str, Any]]) -> Any:
    return parse_wiring(PATH, tables)


def test_a_full_wiring() -> None:
    wiring = wire(
        doors=[
            {**DOOR, "contact": 27, "rex": 22, "debounce_ms": 30},
            {
                "id": "back",
                "relay": 16,
                "fail": "safe",
                "active_high": True,
                "contact_nc": False,
                "contact": 26,
            },
        ],
        lights=[{**LIGHT, "warn": 6, "warn_active_high": True}],
        readers=[
            READER,
            {
                "id": "back-in",
                "kind": "wiegand",
                "d0": 23,
                "d1": 24,
                "door": "back",
                "gap_ms": 30,
                "pin_timeout_s": 20,
            },
            {
                "id": "court1",
                "kind": "line",
                "port": "/dev/ttyUSB0",
                "light": "court1",
                "credkind": "card",
                "repeat_ms": 0,
                "baud": 115200,
            },
            {"id": "kiosk", "kind": "keypad", "port": "/dev/ttyUSB1", "kiosk": True},
        ],
    )
    assert wiring.doors == (
        DoorSpec("front", 17, "secure", False, 27, 22, True, False, 0.03, 300.0),
        DoorSpec("back", 16, "safe", True, 26, None, False, False, 0.05, 300.0),
    )
    assert wiring.lights == (LightSpec("court1", 5, False, 6, True),)
    assert wiring.readers == (
        ReaderSpec(
            "front-in",
            "rdm6300",
            door="front",
            port="/dev/serial0",
            credkind="tag",
            gap_s=0.2,
            repeat_s=1.0,
        ),
        ReaderSpec(
            "back-in",
            "wiegand",
            door="back",
            d0=23,
            d1=24,
            credkind="card",
            gap_s=0.03,
            repeat_s=1.0,
            pin_timeout_s=20.0,
        ),
        ReaderSpec(
            "court1",
            "line",
            light="court1",
            port="/dev/ttyUSB0",
            baud=115200,
            credkind="card",
            gap_s=0.5,
            repeat_s=0.0,
        ),
        ReaderSpec("kiosk", "keypad", port="/dev/ttyUSB1", credkind="pin", gap_s=0.5, repeat_s=0.0),
    )
    assert [r.kiosk for r in wiring.readers] == [False, False, False, True]


@pytest.mark.parametrize(
    ("tables", "where", "problem"),
    [
        ({"doors": [{"id": "front", "fail": "secure"}]}, "doors[0].relay", "is required"),
        ({"doors": [{**DOOR, "relay": 40}]}, "doors[0].relay", "BCM GPIO number from 0 to 27"),
        ({"doors": [{**DOOR, "relay": "17"}]}, "doors[0].relay", "got '17'"),
        ({"doors": [{**DOOR, "relay": True}]}, "doors[0].relay", "got True"),
        ({"doors": [{"id": "front", "relay": 17}]}, "doors[0].fail", "is required"),
        ({"doors": [{**DOOR, "fail": "open"}]}, "doors[0].fail", '"secure", "safe"'),
        ({"doors": [{**DOOR, "active_high": "no"}]}, "doors[0].active_high", "true or false"),
        ({"doors": [{**DOOR, "relais": 4}]}, "doors[0].relais", "is not a known setting"),
        ({"doors": [{**DOOR, "contact_nc": False}]}, "doors[0].contact_nc", "without contact"),
        ({"doors": [{**DOOR, "debounce_ms": 5000}]}, "doors[0].debounce_ms", "0 to 1000"),
        (
            {"doors": [{**DOOR, "contact": 17}]},
            "doors[0].contact",
            "GPIO 17 is already doors[0].relay",
        ),
        (
            {"doors": [DOOR], "lights": [{**LIGHT, "relay": 17}]},
            "lights[0].relay",
            "already doors[0].relay",
        ),
        ({"doors": [DOOR, DOOR]}, "doors[1].id", "used twice"),
        ({"doors": ["front"]}, "doors[0]", "must be a table"),
        (
            {"lights": [{"id": "c", "relay": 5, "warn_active_high": True}]},
            "lights[0].warn_active_high",
            "without warn",
        ),
        ({"lights": [{"id": "c"}]}, "lights[0].relay", "is required"),
        (
            {"doors": [DOOR], "readers": [{**READER, "kind": "nfc"}]},
            "readers[0].kind",
            '"rdm6300", "line", "wiegand", "keypad"',
        ),
        (
            {"doors": [DOOR], "readers": [{"id": "r", "kind": "line", "door": "front"}]},
            "readers[0].port",
            "is required",
        ),
        (
            {"doors": [DOOR], "readers": [{**READER, "d0": 23}]},
            "readers[0].d0",
            "is not used by a rdm6300 reader",
        ),
        (
            {"doors": [DOOR], "readers": [{**READER, "credkind": "card"}]},
            "readers[0].credkind",
            "not used by a rdm6300",
        ),
        (
            {"doors": [DOOR], "readers": [{**READER, "kind": "line", "credkind": "pin"}]},
            "readers[0].credkind",
            '"tag", "card"',
        ),
        ({"doors": [DOOR], "readers": [{**READER, "baud": 0}]}, "readers[0].baud", "from 50"),
        (
            {"doors": [DOOR], "readers": [{**READER, "door": "back"}]},
            "readers[0].door",
            "no [[doors]] table has id 'back'",
        ),
        (
            {"doors": [DOOR], "readers": [{**READER, "light": "court1"}]},
            "readers[0].door",
            "exactly one of door",
        ),
        (
            {"doors": [DOOR], "readers": [{k: v for k, v in READER.items() if k != "door"}]},
            "readers[0].door",
            "exactly one",
        ),
        (
            {"lights": [LIGHT], "readers": [{**READER, "door": None, "light": "court2"}]},
            "readers[0].door",
            "exactly one",
        ),
        (
            {"readers": [{"id": "k", "kind": "keypad", "port": "loop://", "kiosk": False}]},
            "readers[0].kiosk",
            "must be true",
        ),
        (
            {
                "readers": [
                    {"id": "k", "kind": "keypad", "port": "loop://", "kiosk": True, "repeat_ms": 5}
                ]
            },
            "readers[0].repeat_ms",
            "not used by a keypad reader",
        ),
        (
            {
                "doors": [DOOR],
                "readers": [{"id": "w", "kind": "wiegand", "d0": 23, "door": "front"}],
            },
            "readers[0].d1",
            "is required",
        ),
        (
            {
                "doors": [DOOR],
                "readers": [{"id": "w", "kind": "wiegand", "d0": 23, "d1": 23, "door": "front"}],
            },
            "readers[0].d1",
            "GPIO 23 is already readers[0].d0",
        ),
        (
            {
                "doors": [DOOR],
                "readers": [
                    {"id": "w", "kind": "wiegand", "d0": 23, "d1": 24, "port": "x", "door": "front"}
                ],
            },
            "readers[0].port",
            "not used by a wiegand",
        ),
        (
            {"doors": [DOOR], "readers": [READER, {**READER, "id": "r2"}]},
            "readers[1].port",
            "/dev/serial0 is already readers[0].port",
        ),
        (
            {"doors": [{**DOOR, "relay": 14}], "readers": [READER]},
            "doors[0].relay",
            "GPIO 14 is already the UART's TXD, used by readers[0]",
        ),
    ],
)
def test_mistakes_name_file_table_and_key(
    tables: dict[str, list[Any]], where: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        wire(**tables)
    message = str(caught.value)
    assert message.startswith(f"{PATH}: {where}: "), message
    assert problem in message, message


def test_loop_urls_may_repeat() -> None:
    reader = {"id": "a", "kind": "keypad", "port": "loop://", "kiosk": True}
    assert len(wire(readers=[reader, {**reader, "id": "b"}]).readers) == 2


def test_the_example_config_is_wired_correctly() -> None:
    wiring = load_config(EXAMPLE).wiring
    assert [d.id for d in wiring.doors][:1] == ["front"]
    assert wiring.readers


def test_a_mistake_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "controller.toml"
    path.write_text(EXAMPLE.read_text().replace('fail = "secure"', 'fail = "sekure"', 1))
    with pytest.raises(ConfigError, match=rf"^{path}: doors\[0\]\.fail: must be one of"):
        load_config(path)


def test_each_door_has_a_maximum_open_time() -> None:
    doors = wire(doors=[DOOR, {**DOOR, "id": "gym", "relay": 16, "max_open_s": 900}]).doors
    assert [d.max_open_s for d in doors] == [300.0, 900.0]  # min(2 x 86400, 5 min) by default
    for bad in (0, 200_000, 1.5, "300"):
        with pytest.raises(ConfigError, match=r"doors\[0\]\.max_open_s: must be an integer"):
            wire(doors=[{**DOOR, "max_open_s": bad}])
    with pytest.raises(ConfigError, match=r"lights\[0\]\.max_open_s: is not a known setting"):
        wire(lights=[{**LIGHT, "max_open_s": 60}])


SIM = """
[controller]
site = "demo"
id = "ctl1"
data_dir = "."
key_file = "k"

[hal]
backend = "{backend}"

[[doors]]
id = "front"
contact = 27
fail = "safe"

[[lights]]
id = "court1"
warn = 6

[[readers]]
id = "front-in"
door = "front"

[[readers]]
id = "desk"
kiosk = true
"""


def test_a_simulator_may_run_on_tables_without_pins() -> None:
    """On `backend = "sim"` incomplete tables are allowed: the core gets what it
    needs, the config says why nothing is wired, and the runtime builds no HAL."""
    config = parse_config(PATH, tomllib.loads(SIM.format(backend="sim")))
    assert config.unwired is not None and "doors[0].relay: is required" in config.unwired
    wiring = config.wiring
    assert wiring.doors == (DoorSpec("front", None, "safe", contact=27),)
    assert wiring.lights == (LightSpec("court1", None, warn=6),)
    assert wiring.readers == (ReaderSpec("front-in", None, door="front"), ReaderSpec("desk", None))
    with pytest.raises(ConfigError, match=r"doors\[0\]\.relay: is required"):
        parse_config(PATH, tomllib.loads(SIM.format(backend="gpio")))


@pytest.mark.parametrize("backend", ["gpio", "sim"])
def test_ids_are_checked_on_every_backend(backend: str) -> None:
    text = SIM.format(backend=backend)
    for broken, where in [
        (text.replace('id = "desk"', 'id = "front-in"'), r"readers\[1\]\.id: 'front-in' is used"),
        (text.replace('id = "court1"', "id = 7"), r"lights\[0\]\.id: must be a non-empty string"),
        (text.replace('id = "desk"\n', ""), r"readers\[1\]\.id: is required"),
    ]:
        with pytest.raises(ConfigError, match=rf"^{PATH}: {where}"):
            parse_config(PATH, tomllib.loads(broken))
