"""controller.toml: valid files load; every mistake is one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.config import ConfigError, load_config, read_key

EXAMPLE = Path(__file__).parent.parent / "deploy" / "controller.example.toml"

MINIMAL = """
[controller]
site = "demo"
id = "ctl1"
data_dir = "data"
key_file = "ctl1.key"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "controller.toml"
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.base_topic == "alc/demo/ctl1"
    assert config.masters == {("tag", "0000000000")}
    assert config.wiring.doors[0].id == "front" and config.unwired is None
    assert config.controller.outage_s == 600
    assert config.controller.loop_priority == "realtime"


def test_minimal_config_has_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.mqtt.port == 1883 and config.mqtt.root == "alc"
    assert config.controller.data_dir == tmp_path / "data"
    assert config.backend == "gpio"
    assert config.masters == frozenset()
    assert config.controller.loop_priority == "high"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (MINIMAL.replace('site = "demo"', 'site = "de mo"'), "controller.site"),
        (MINIMAL.replace('id = "ctl1"\n', ""), "controller.id"),
        (MINIMAL + "outage_s = -1\n", "controller.outage_s"),
        (MINIMAL + "colour = 1\n", "controller.colour"),
        (MINIMAL + 'loop_priority = "urgent"\n', "controller.loop_priority"),
        (MINIMAL + "[mqtt]\nport = 70000\n", "mqtt.port"),
        (MINIMAL + '[mqtt]\nport = "1883"\n', "mqtt.port"),
        (MINIMAL + '[[masters]]\ncredkind = "face"\nvalue = "x"\n', "masters[0].credkind"),
        (MINIMAL + "[[doors]]\nrelay = 17\n", "doors[0].id"),
        (MINIMAL + '[[doors]]\nid = "a"\nrelay = 17\n', "doors[0].fail"),
        ("doors = 3\n" + MINIMAL, "doors: must be an array of tables"),
        (MINIMAL + '[[doors]]\nid = "a"\n[[doors]]\nid = "a"\n', "doors[1].id"),
        (MINIMAL + "[wifi]\n", "wifi"),
        ("[controller\n", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, names: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and names in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_key_file(tmp_path: Path) -> None:
    good = tmp_path / "good.key"
    good.write_text("ab" * 32 + "\n")
    good.chmod(0o600)
    assert read_key(good, where="x") == bytes([0xAB]) * 32
    bad = tmp_path / "bad.key"
    bad.write_text("abc")
    bad.chmod(0o600)
    with pytest.raises(ConfigError, match="64 hex"):
        read_key(bad, where="x")
