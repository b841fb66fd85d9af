"""Keys by kid on disk (PROTOCOL.md s2, docs/operations.md "Rotating a controller's
key"): the layout, the send marker, the refusals, `alc ctl rotate`'s file steps, the
controller's `[controller]` keys and the hub's keys directory."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from firmware.config import ConfigError, load_config
from firmware.config.keys import key_file_name, load_keyring, parse_key_file_name
from firmware.core.errors import LocalError
from firmware.core.keyring import MAX_KEYS, Keyring, key_number, kid_for
from tests.broker import Broker, free_port
from tests.sealing import seal
from tools import ctl
from tools.hub.db import HubDB
from tools.hub.keys import add_key, load_keys, read_keyring, retire_keys, switch_key, write_new_key
from tools.hub.server import Hub

K1, K2 = bytes(range(32)), bytes(range(1, 33))


def write_key(path: Path, key: bytes, mode: int = 0o600) -> None:
    path.write_text(key.hex() + "\n")
    path.chmod(mode)


# --- kids and file names -------------------------------------------------------------


def test_kids_and_file_names() -> None:
    assert kid_for("ctl1", 1) == b"ctl1" and kid_for("ctl1", 2) == b"ctl1/2"
    assert key_file_name("ctl1", 1) == "ctl1.key" and key_file_name("ctl1", 3) == "ctl1.3.key"
    assert key_number("ctl1", b"ctl1") == 1 and key_number("ctl1", b"ctl1/12") == 12
    for kid in (b"ctl2", b"ctl1/1", b"ctl1/0", b"ctl1/x", b"ctl1/", b"ctl1/2/3", b"\xff"):
        assert key_number("ctl1", kid) is None
    assert parse_key_file_name("ctl1.2.key") == ("ctl1", 2)
    assert parse_key_file_name("ctl1.key") == ("ctl1", 1)
    for name in ("ctl1.1.key", "ctl1.send", "../x.key", "ctl1.02.key", ".key", "a.b.c.key"):
        assert parse_key_file_name(name) is None
    for bad in ("../c", "", "c" * 65):
        with pytest.raises(LocalError):
            kid_for(bad, 1)
    with pytest.raises(LocalError):
        kid_for("ctl1", 0)


def test_keyring_rules() -> None:
    ring = Keyring({b"c/2": K2, b"c": K1}, b"c/2")
    assert ring.send_key == K2 and dict(ring.accepted) == {b"c": K1, b"c/2": K2}
    with pytest.raises(TypeError):
        ring.accepted[b"x"] = K1  # type: ignore[index]
    with pytest.raises(LocalError):
        Keyring({b"c": K1}, b"c/2")  # sends with a key it does not hold
    with pytest.raises(LocalError):
        Keyring({}, b"c")
    with pytest.raises(LocalError):
        Keyring({b"c": K1[:31]}, b"c")
    with pytest.raises(LocalError):
        Keyring({kid_for("c", n): K1 for n in range(1, MAX_KEYS + 2)}, b"c")


# --- the directory -------------------------------------------------------------------------


def test_every_key_file_is_accepted_and_the_lowest_sent_with(tmp_path: Path) -> None:
    write_key(tmp_path / "c1.key", K1)
    write_key(tmp_path / "c1.2.key", K2)
    write_key(tmp_path / "c2.key", K2)  # another controller's: not c1's
    ring = load_keyring(tmp_path, "c1")
    assert dict(ring.accepted) == {b"c1": K1, b"c1/2": K2} and ring.send_kid == b"c1"
    (tmp_path / "c1.send").write_text("c1/2\n")
    assert load_keyring(tmp_path, "c1").send_kid == b"c1/2"


@pytest.mark.parametrize(
    ("marker", "problem"),
    [("c1/3", "not one of its key files"), ("c2", "not one of its key files"), ("", "not one")],
)
def test_a_marker_naming_no_key_is_refused(tmp_path: Path, marker: str, problem: str) -> None:
    write_key(tmp_path / "c1.key", K1)
    (tmp_path / "c1.send").write_text(marker)
    with pytest.raises(ConfigError, match=problem):
        load_keyring(tmp_path, "c1")


def test_files_open_to_other_users_are_refused_with_the_chmod(tmp_path: Path) -> None:
    write_key(tmp_path / "c1.key", K1, mode=0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {tmp_path / 'c1.key'}"):
        load_keyring(tmp_path, "c1")
    (tmp_path / "c1.key").chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keyring(tmp_path, "c1")
    (tmp_path / "c1.key").chmod(0o600)
    (tmp_path / "c1.send").write_text("c1")
    (tmp_path / "c1.send").chmod(0o666)  # anyone could choose our send key
    with pytest.raises(ConfigError, match=f"chmod 600 {tmp_path / 'c1.send'}"):
        load_keyring(tmp_path, "c1")
    (tmp_path / "c1.send").chmod(0o644)  # readable is fine: it is not secret
    assert load_keyring(tmp_path, "c1").send_kid == b"c1"


def test_more_than_four_keys_or_none_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no c1\.key"):
        load_keyring(tmp_path, "c1")
    for n in range(1, MAX_KEYS + 2):
        write_key(tmp_path / key_file_name("c1", n), K1)
    with pytest.raises(ConfigError, match="at most 4"):
        load_keyring(tmp_path, "c1")


def test_the_hub_skips_a_bad_controller_and_serves_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_key(tmp_path / "c1.key", K1)
    write_key(tmp_path / "c2.key", K2, mode=0o644)
    write_key(tmp_path / "c3.2.key", K2)
    (tmp_path / "c3.send").write_text("c3/2")
    (tmp_path / "notes.txt").write_text("not a key")
    with caplog.at_level(logging.ERROR):
        rings = load_keys(tmp_path)
    assert sorted(rings) == ["c1", "c3"] and rings["c3"].send_kid == b"c3/2"
    assert "c2" in caplog.text and "chmod 600" in caplog.text
    assert load_keys(tmp_path / "missing") == {}


def test_the_hub_opens_every_accepted_kid_and_seals_with_the_send_key(tmp_path: Path) -> None:
    db = HubDB(tmp_path / "hub.sqlite3")
    try:
        hub = Hub(db, site="s", keys={"c1": Keyring({b"c1": K1, b"c1/2": K2}, b"c1/2")})
        topic = "alc/s/c1/sync"
        sync = {"t": "sync", "epoch": None, "v": 0, "digest": bytes(16), "full": True}
        sync |= {"reason": "boot", "req": "r"}
        for key, kid in ((K1, b"c1"), (K2, b"c1/2")):
            out = hub.handle(topic, seal(key, kid, topic, sync), 1000.0)
            assert out and all(read_kid(payload) == b"c1/2" for _topic, payload in out), (
                "the hub answers with its send key"
            )
        # Another controller's kid, even with a key we hold, is not c1's.
        assert hub.handle(topic, seal(K1, b"c2", topic, sync), 1000.0) == []
    finally:
        db.close()


def read_kid(payload: bytes) -> bytes:
    from firmware.core.wire import parse

    return parse(payload).kid


# --- the rotation's file steps ---------------------------------------------------------


def test_rotation_steps_in_a_keys_directory(tmp_path: Path) -> None:
    write_new_key(tmp_path, "c1")
    first = read_keyring(tmp_path, "c1")
    path = add_key(tmp_path, "c1")
    assert path.name == "c1.2.key" and (path.stat().st_mode & 0o777) == 0o600
    ring = read_keyring(tmp_path, "c1")
    assert set(ring.accepted) == {b"c1", b"c1/2"} and ring.send_kid == b"c1"
    assert ring.accepted[b"c1"] == first.send_key and ring.accepted[b"c1/2"] != first.send_key
    assert switch_key(tmp_path, "c1") == b"c1/2"
    assert read_keyring(tmp_path, "c1").send_kid == b"c1/2"
    assert [p.name for p in retire_keys(tmp_path, "c1")] == ["c1.key"]
    ring = read_keyring(tmp_path, "c1")
    assert dict(ring.accepted) == {b"c1/2": ring.send_key}
    # The next rotation numbers on: kids are never reused.
    assert add_key(tmp_path, "c1").name == "c1.3.key"


def test_add_refuses_a_fifth_key_and_nothing_changes(tmp_path: Path) -> None:
    write_new_key(tmp_path, "c1")
    for _ in range(MAX_KEYS - 1):
        add_key(tmp_path, "c1")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(LocalError, match="retire"):
        add_key(tmp_path, "c1")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_alc_ctl_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    args = ["--controller", "c1", "--keys", str(keys)]
    assert ctl.main(["rotate", "add", *args]) == 2  # no directory yet
    assert "cannot list keys directory" in capsys.readouterr().err
    keys.mkdir()
    assert ctl.main(["rotate", "add", *args]) == 2  # no key yet
    assert "alc ctl keygen" in capsys.readouterr().err
    assert ctl.main(["keygen", *args]) == 0
    assert ctl.main(["rotate", "add", *args]) == 0
    assert "still sending with c1" in capsys.readouterr().out
    assert ctl.main(["rotate", "switch", *args]) == 0
    assert "sending with c1/2" in capsys.readouterr().out
    assert ctl.main(["rotate", "retire", *args]) == 0
    assert "deleted c1.key" in capsys.readouterr().out
    assert ctl.main(["rotate", "add", "--controller", "../x", "--keys", str(keys)]) == 2


# --- the controller's config ----------------------------------------------------------------


def controller_toml(tmp_path: Path, keys: str) -> Path:
    path = tmp_path / "controller.toml"
    path.write_text(
        f'[controller]\nsite = "s"\nid = "c1"\ndata_dir = "d"\n{keys}\n[hal]\nbackend = "sim"\n'
    )
    return path


def test_the_controller_reads_a_keys_directory(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    write_key(keys / "c1.key", K1)
    write_key(keys / "c1.2.key", K2)
    config = load_config(controller_toml(tmp_path, 'keys_dir = "keys"'))
    ring = config.keyring()
    assert dict(ring.accepted) == {b"c1": K1, b"c1/2": K2} and config.key() == K1
    (keys / "c1.send").write_text("c1/2")
    assert config.keyring().send_kid == b"c1/2" and config.key() == K2
    (keys / "c1.2.key").chmod(0o604)
    with pytest.raises(ConfigError, match=r"controller.toml: controller.keys_dir: .*chmod 600"):
        config.keyring()


def test_a_single_key_file_is_the_first_key(tmp_path: Path) -> None:
    write_key(tmp_path / "any-name.key", K1)
    config = load_config(controller_toml(tmp_path, 'key_file = "any-name.key"'))
    assert config.keyring() == Keyring({b"c1": K1}, b"c1")
    (tmp_path / "any-name.key").chmod(0o644)
    with pytest.raises(ConfigError, match=r"controller\.key_file: .*chmod 600"):
        config.keyring()


@pytest.mark.parametrize("keys", ["", 'key_file = "k"\nkeys_dir = "keys"'])
def test_exactly_one_of_key_file_and_keys_dir(tmp_path: Path, keys: str) -> None:
    with pytest.raises(ConfigError, match=r"controller\.keys_dir: name either keys_dir"):
        load_config(controller_toml(tmp_path, keys))


def test_a_checked_retire_without_the_controllers_state_deletes_nothing(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    write_new_key(tmp_path, "c1")
    add_key(tmp_path, "c1")
    switch_key(tmp_path, "c1")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["rotate", "retire", "--controller", "c1", "--keys", str(tmp_path)]
    assert ctl.main([*args, "--site", "s", "--port", str(broker.port)]) == 2
    assert "no state of controller c1" in capsys.readouterr().err
    assert ctl.main([*args, "--site", "s", "--port", str(free_port())]) == 2
    assert "cannot reach the broker" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
