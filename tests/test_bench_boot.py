"""tools/bench_boot.py: `boot_s` boots fresh processes, the first rebuilding from
SQLite (and writing the image), the second reading the image back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import cli
from tools.bench_boot import boot_seconds
from tools.gen import Club, write_records


def test_boot_seconds_boots_once_rebuilding_then_from_the_image(tmp_path: Path) -> None:
    club = tmp_path / "club.cbor"
    records = write_records(Club(300, 2).records(), club)
    boots = boot_seconds(club)
    assert not boots.rebuilt.from_image
    assert boots.from_image.from_image
    assert boots.rebuilt.records == boots.from_image.records == records
    assert boots.rebuilt.reason == boots.from_image.reason
    assert boots.from_image.seconds > 0


def test_bench_decide_prints_boot_s(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "decide", "--members", "500", "--presentations", "500", "--json"]
    assert cli.main(argv) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert figures["boot_s"] > 0
    assert figures["boot_rebuild_s"] > 0
