"""The wiring tables checked: good tables become specs, every mistake is one
ConfigError naming the file, the table and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from firmware.config import ConfigError, load_config
from hal.wiring import InputSpec, OutputSpec, ReaderSpec, parse_wiring, wiring_from_config

PATH = Path("/etc/alc/controller.toml")
DOOR = {"id": "front", "relay": 17, "fail": "secure"}
LIGHT = {"id": "court1", "relay": 5}
READER = {"id": "front-in", "kind": "rdm6300", "port": "/dev/serial0", "door": "front"}
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "controller.example.toml"


def wire(**tables: list[dict[str, Any]]) -> Any:
    return parse_wiring(PATH, **tables)


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
    assert wiring.outputs == (
        OutputSpec("door:front", 17, False, safe=False, inverted=False),
        OutputSpec("door:back", 16, True, safe=True, inverted=True),
        OutputSpec("light:court1", 5, False),
        OutputSpec("warn:court1", 6, True),
    )
    assert wiring.inputs == (
        InputSpec("contact:front", "front", "contact", 27, True, 0.03),
        InputSpec("rex:front", "front", "rex", 22, False, 0.03),
        InputSpec("contact:back", "back", "contact", 26, False, 0.05),
    )
    assert wiring.readers == (
        ReaderSpec(
            "front-in", "rdm6300", port="/dev/serial0", credkind="tag", gap_s=0.2, repeat_s=1.0
        ),
        ReaderSpec(
            "back-in",
            "wiegand",
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
            port="/dev/ttyUSB0",
            baud=115200,
            credkind="card",
            gap_s=0.5,
            repeat_s=0.0,
        ),
        ReaderSpec("kiosk", "keypad", port="/dev/ttyUSB1", credkind="pin", gap_s=0.5, repeat_s=0.0),
    )
    assert wiring.with_ports("loop://").readers[1].port is None
    assert {r.port for r in wiring.with_ports("loop://").readers} == {None, "loop://"}


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
    config = load_config(EXAMPLE)
    wiring = wiring_from_config(config)
    assert [o.name for o in wiring.outputs][:1] == ["door:front"]
    assert wiring.readers


def test_a_mistake_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "controller.toml"
    path.write_text(EXAMPLE.read_text().replace('fail = "secure"', 'fail = "sekure"', 1))
    with pytest.raises(ConfigError, match=rf"^{path}: doors\[0\]\.fail: must be one of"):
        wiring_from_config(load_config(path))
