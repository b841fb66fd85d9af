"""`alc inspect` and `alc decode`: the troubleshooting tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.core.model import digest_bytes, digest_part
from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.outbox_store import OutboxStore
from firmware.storage import Storage
from tests.builders import rec
from tests.sealing import seal
from tools.cli import main
from tools.hub.keys import read_keyring, write_new_key

KEY = bytes(range(32))
TOPIC = "alc/demo/ctl1/cmd"


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "ctl1.key").write_text(KEY.hex())
    (tmp_path / "ctl1.key").chmod(0o600)
    config = tmp_path / "controller.toml"
    config.write_text(
        '[controller]\nsite = "demo"\nid = "ctl1"\ndata_dir = "data"\nkey_file = "ctl1.key"\n'
    )
    return config


def test_inspect_reports_state_counts_and_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    records = [("member", "m1", rec(name="A")), ("door", "front", rec())]
    digest = digest_bytes(sum(digest_part(*r) for r in records))
    with Storage.open(tmp_path / "data" / "alc.sqlite3") as storage:
        storage.save_snapshot("e1", 7, records, digest, 1_700_000_000)
    assert main(["inspect", "--config", str(config), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["epoch"] == "e1" and facts["v"] == 7 and facts["digest"] == digest.hex()
    assert facts["digest_ok"] is True
    assert facts["records"] == {"member": 1, "door": 1}
    assert (facts["outbox"], facts["last_seq"], facts["debits_pending"]) == (0, 0, 0)

    with Storage.open(tmp_path / "data" / "alc.sqlite3") as storage:
        events = [LoggedEvent(1, 100, "access", {"ok": 1}), LoggedEvent(2, 101, "debit", {})]
        OutboxStore(storage).append(events, [DebitEntry(2, "m1", 400)])
    assert main(["inspect", "--config", str(config), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["outbox"], facts["outbox_oldest"], facts["last_seq"]) == (2, 100, 2)
    assert (facts["debits_pending"], facts["debits_cents"]) == (1, 400)

    with Storage.open(tmp_path / "data" / "alc.sqlite3") as storage:
        storage._connection().execute("UPDATE records SET rec = x'a0' WHERE id = 'm1'")
    assert main(["inspect", "--config", str(config)]) == 1
    assert "damaged" in capsys.readouterr().out


def test_inspect_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--config", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_decode_without_and_with_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = seal(KEY, b"ctl1", TOPIC, {"t": "cmd", "id": "x", "cmd": "status"})
    assert main(["decode", payload.hex()]) == 0
    clear = json.loads(capsys.readouterr().out)
    # Without the key only the clear parts show: the content is encrypted.
    assert clear["opened"] is False and clear["kid"] == "ctl1" and clear["alg"] == 3
    assert "payload" not in clear and len(bytes.fromhex(clear["iv"])) == 12

    capture = tmp_path / "capture.bin"
    capture.write_bytes(payload)
    key_file = tmp_path / "ctl1.key"
    key_file.write_text(KEY.hex())
    key_file.chmod(0o600)
    args = ["decode", str(capture), "--key-file", str(key_file), "--topic", TOPIC]
    assert main(args) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["opened"] is True and checked["kid"] == "ctl1"
    assert checked["payload"]["cmd"] == "status"

    # Captured on another topic: it does not open.
    assert main([*args[:-1], "alc/demo/ctl2/cmd"]) == 1
    assert "does not open" in capsys.readouterr().err

    # A key file other users can read is refused, with the fix.
    key_file.chmod(0o644)
    assert main(args) == 1
    assert f"chmod 600 {key_file}" in capsys.readouterr().err


def test_decode_with_a_keys_directory_finds_the_key_by_kid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    write_new_key(keys, "ctl1")
    write_new_key(keys, "ctl1", 2)
    second = read_keyring(keys, "ctl1").accepted[b"ctl1/2"]
    payload = seal(second, b"ctl1/2", TOPIC, {"t": "cmd", "id": "y", "cmd": "sync"})
    assert main(["decode", payload.hex(), "--keys", str(keys), "--topic", TOPIC]) == 0
    opened = json.loads(capsys.readouterr().out)
    assert opened["kid"] == "ctl1/2" and opened["payload"]["id"] == "y"
    stranger = seal(second, b"ctl9", TOPIC, {"t": "cmd", "id": "z", "cmd": "sync"})
    assert main(["decode", stranger.hex(), "--keys", str(keys), "--topic", TOPIC]) == 1
    assert "unknown kid" in capsys.readouterr().err
