"""The floor of the machine, measured in this process, for the benchmarks to compare to.

`../shared/floor.py` (beside the checkout) says what any Python controller must spend
per member record on this machine, now: decode + hash + index (`floor_us`), and one
SQLite insert (`store_us`). The machines that run the benchmarks are shared, so an
absolute time moves from run to run; a ratio to the floor taken in the same run
does not. `measure_floor` runs floor.py's own measurement (its `main`, with
`--json`) and hands back its figures, or None when floor.py is not there.

floor.py is looked for at `$ALC_FLOOR` if set, else as `shared/floor.py` beside the
repository or beside one of its parent directories (a git worktree of the
repository sits deeper than the checkout it belongs to).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECORDS = 100_000  # floor.py's own default, the size issue 13's figures use


@dataclass(frozen=True, slots=True)
class Floor:
    """floor.py's figures, in microseconds per record of `records` measured."""

    path: Path
    records: int
    decode_us: float
    hash_us: float
    index_us: float
    store_us: float
    floor_us: float

    def ratio(self, per_record_us: float) -> float:
        """`per_record_us` as a multiple of `floor_us`."""
        return per_record_us / self.floor_us

    def describe(self) -> str:
        """One line for a benchmark's text output."""
        return (
            f"floor {self.floor_us:.2f} us a record (decode {self.decode_us:.2f} + hash "
            f"{self.hash_us:.2f} + index {self.index_us:.2f}; store {self.store_us:.2f}), "
            f"{self.records:,} records, {self.path}"
        )


def find_floor() -> Path | None:
    """Where floor.py is, or None."""
    explicit = os.environ.get("ALC_FLOOR")
    if explicit:
        path = Path(explicit)
        return path if path.is_file() else None
    for parent in (REPO, *REPO.parents):
        candidate = parent.parent / "shared" / "floor.py"
        if candidate.is_file():
            return candidate
    return None


def measure_floor(records: int = DEFAULT_RECORDS) -> Floor | None:
    """Run floor.py's measurement over `records` records in this process; None
    when floor.py cannot be found. Takes a few seconds at the default size.

    floor.py switches the garbage collector off while it measures and back on at
    its end: the caller's setting is put back either way.
    """
    path = find_floor()
    if path is None:
        return None
    spec = importlib.util.spec_from_file_location("alc_shared_floor", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = io.StringIO()
    argv, was_enabled = sys.argv, gc.isenabled()
    # floor.py reads its options from sys.argv and prints its figures.
    sys.argv = [str(path), "--json", "--records", str(records)]
    try:
        with contextlib.redirect_stdout(out):
            module.main()
    finally:
        sys.argv = argv
        if was_enabled:
            gc.enable()
        else:
            gc.disable()
    figures = json.loads(out.getvalue())
    return Floor(
        path,
        int(figures["records"]),
        float(figures["decode_us"]),
        float(figures["hash_us"]),
        float(figures["index_us"]),
        float(figures["store_us"]),
        float(figures["floor_us"]),
    )


def mean_floor(first: Floor, second: Floor) -> Floor:
    """The mean of two floor measurements (taken before and after a benchmark's
    own measurement, so a machine that got busier or quieter meanwhile shows)."""

    def mid(a: float, b: float) -> float:
        return round((a + b) / 2, 3)

    return Floor(
        first.path,
        first.records,
        mid(first.decode_us, second.decode_us),
        mid(first.hash_us, second.hash_us),
        mid(first.index_us, second.index_us),
        mid(first.store_us, second.store_us),
        mid(first.floor_us, second.floor_us),
    )
