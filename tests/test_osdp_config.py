"""An OSDP reader's table (firmware/config/wiring.py): address, baud, the key
file (32 hex digits, private to its owner) and install mode; every mistake is
one ConfigError naming the file, the table and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from firmware.config import ConfigError
from firmware.config.wiring import parse_wiring

KEY = bytes(range(16))
DOOR = {"id": "front", "relay": 17, "fail": "secure"}


def key_file(tmp: Path, text: str = KEY.hex() + "\n", mode: int = 0o600) -> Path:
    path = tmp / "front-in.scbk"
    path.write_text(text)
    path.chmod(mode)
    return path


def reader(tmp: Path, **changes: Any) -> dict[str, Any]:
    base = {
        "id": "front-in",
        "kind": "osdp",
        "port": "/dev/ttyUSB0",
        "scbk_file": "front-in.scbk",
        "door": "front",
    }
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def wire(tmp: Path, table: dict[str, Any]) -> Any:
    return parse_wiring(tmp / "controller.toml", {"doors": [DOOR], "readers": [table]})


def test_an_osdp_reader_with_its_key(tmp_path: Path) -> None:
    key_file(tmp_path)
    (spec,) = wire(tmp_path, reader(tmp_path, address=5, baud=115200, install=True)).readers
    assert (spec.kind, spec.port, spec.baud, spec.address) == ("osdp", "/dev/ttyUSB0", 115200, 5)
    assert spec.scbk == KEY and spec.install and spec.credkind == "card"
    assert spec.scbk_file == str(tmp_path / "front-in.scbk")  # relative to the config
    assert KEY.hex() not in repr(spec)  # a secret never reaches a log line


def test_the_defaults(tmp_path: Path) -> None:
    key_file(tmp_path)
    (spec,) = wire(tmp_path, reader(tmp_path)).readers
    assert (spec.baud, spec.address, spec.install) == (9600, 0, False)


@pytest.mark.parametrize(
    ("changes", "key", "says"),
    [
        ({"scbk_file": None}, "scbk_file", "required"),
        ({"address": 127}, "address", "126"),
        ({"baud": 9601}, "baud", "OSDP runs at one of"),
        ({"install": "yes"}, "install", "true or false"),
        ({"gap_ms": 10}, "gap_ms", "osdp"),
        ({"d0": 23}, "d0", "osdp"),
    ],
)
def test_mistakes_name_the_table_and_the_key(
    tmp_path: Path, changes: dict[str, Any], key: str, says: str
) -> None:
    key_file(tmp_path)
    with pytest.raises(ConfigError) as e:
        wire(tmp_path, reader(tmp_path, **changes))
    assert "readers[0]" in str(e.value) and key in str(e.value) and says in str(e.value)


@pytest.mark.parametrize(
    ("text", "mode", "says"),
    [
        (KEY.hex(), 0o644, "chmod 600"),
        ("", 0o600, "empty"),
        ("not hex at all, not hex at all!!", 0o600, "32 hex digits"),
        (KEY.hex()[:-2], 0o600, "32 hex digits"),
    ],
)
def test_a_bad_key_file_is_refused_with_the_fix(
    tmp_path: Path, text: str, mode: int, says: str
) -> None:
    key_file(tmp_path, text, mode)
    with pytest.raises(ConfigError) as e:
        wire(tmp_path, reader(tmp_path))
    assert "readers[0].scbk_file" in str(e.value) and says in str(e.value)


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"front-in\.scbk"):
        wire(tmp_path, reader(tmp_path))


def test_osdp_readers_share_a_bus_at_one_speed_and_their_own_addresses(tmp_path: Path) -> None:
    key_file(tmp_path)
    tables = {"doors": [DOOR], "readers": [reader(tmp_path), reader(tmp_path, id="out", address=2)]}
    wiring = parse_wiring(tmp_path / "controller.toml", tables)
    assert [(r.port, r.address) for r in wiring.readers] == [
        ("/dev/ttyUSB0", 0),
        ("/dev/ttyUSB0", 2),
    ]


@pytest.mark.parametrize(
    ("second", "key", "says"),
    [
        ({"address": 0}, "readers[1].address", "already readers[0]'s"),
        ({"address": 2, "baud": 19200}, "readers[1].baud", "one per bus"),
        ({"kind": "rdm6300", "scbk_file": None}, "readers[1].port", "already readers[0].port"),
    ],
)
def test_a_bus_shared_wrongly_is_refused(
    tmp_path: Path, second: dict[str, Any], key: str, says: str
) -> None:
    key_file(tmp_path)
    tables = {"doors": [DOOR], "readers": [reader(tmp_path), reader(tmp_path, id="out", **second)]}
    with pytest.raises(ConfigError) as e:
        parse_wiring(tmp_path / "controller.toml", tables)
    assert key in str(e.value) and says in str(e.value)
