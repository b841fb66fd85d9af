"""`alc inspect` and `alc decode`: the troubleshooting tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.core.model import digest_bytes, digest_part
from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.core.wire import seal
from firmware.outbox_store import OutboxStore
from firmware.storage import Storage
from tests.builders import rec
from tools.cli import main

KEY = bytes(range(32))
TOPIC = "alc/demo/ctl1/cmd"


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "ctl1.key").write_text(KEY.hex())
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


def test_decode_unverified_and_verified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = seal(KEY, b"ctl1", TOPIC, {"t": "cmd", "id": "x", "cmd": "status"})
    assert main(["decode", payload.hex()]) == 0
    opened = json.loads(capsys.readouterr().out)
    assert opened["verified"] is False and opened["payload"]["cmd"] == "status"

    capture = tmp_path / "capture.bin"
    capture.write_bytes(payload)
    key_file = tmp_path / "ctl1.key"
    key_file.write_text(KEY.hex())
    args = ["decode", str(capture), "--key-file", str(key_file), "--topic", TOPIC]
    assert main(args) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["verified"] is True and checked["kid"] == "ctl1"

    # Captured on another topic: the MAC does not verify.
    assert main([*args[:-1], "alc/demo/ctl2/cmd"]) == 1
    assert "tag does not verify" in capsys.readouterr().err
