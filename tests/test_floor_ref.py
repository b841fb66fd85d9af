"""tools/floor_ref.py: floor.py found, run in this process, its figures read back.

No test here looks at a time: a stand-in floor.py prints fixed figures.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from tools import floor_ref

FAKE = """
import argparse, gc, json
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    gc.disable()
    gc.enable()
    print(json.dumps({"records": a.records, "decode_us": 2.0, "hash_us": 0.5,
                      "index_us": 0.75, "store_us": 2.5, "floor_us": 3.25}))
"""


def test_missing_floor_is_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALC_FLOOR", str(tmp_path / "absent.py"))
    assert floor_ref.find_floor() is None
    assert floor_ref.measure_floor(10) is None


def test_floor_figures_read_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "floor.py"
    fake.write_text(FAKE)
    monkeypatch.setenv("ALC_FLOOR", str(fake))
    gc.disable()
    try:
        floor = floor_ref.measure_floor(1234)
        assert not gc.isenabled()  # the caller's setting is put back
    finally:
        gc.enable()
    assert floor is not None
    assert (floor.records, floor.floor_us, floor.store_us) == (1234, 3.25, 2.5)
    assert floor.ratio(6.5) == 2.0
    both = floor_ref.mean_floor(floor, floor)
    assert both.floor_us == floor.floor_us
    assert "3.25" in floor.describe()
