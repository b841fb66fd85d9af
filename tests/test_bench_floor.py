"""`alc bench decide` beside the floor: the ratios and the --json keys, with a
stand-in floor.py (fixed figures) or none. No test here looks at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_floor_ref import FAKE
from tools import cli

ARGV = ["bench", "decide", "--members", "300", "--presentations", "300"]


def test_json_carries_the_floor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "floor.py"
    fake.write_text(FAKE)
    monkeypatch.setenv("ALC_FLOOR", str(fake))
    assert cli.main([*ARGV, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert (figures["floor_us"], figures["store_us"]) == (3.25, 2.5)
    assert figures["per_record_us"] > 0


def test_table_prints_ratios_to_the_floor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "floor.py"
    fake.write_text(FAKE)
    monkeypatch.setenv("ALC_FLOOR", str(fake))
    assert cli.main(ARGV) == 0
    out = capsys.readouterr().out
    assert "x floor" in out and "floor 3.25 us a record" in out
    per_record = next(line for line in out.splitlines() if line.startswith("build, per record"))
    assert per_record.split()[6] == "x"  # "build, per record  N us  R x  <= T us  ok"


def test_without_floor_it_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALC_FLOOR", str(tmp_path / "absent.py"))
    assert cli.main([*ARGV, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert figures["floor_us"] is None and figures["store_us"] is None
    assert cli.main(ARGV) == 0
    out = capsys.readouterr().out
    assert "floor.py not found" in out and "x floor" not in out
