"""`boot_s`: a fresh process boots a controller's data, to its first decision.

`measure_boot(data_dir, ...)` starts a new Python process that does what a
controller's boot does with its data (`firmware.runtime.app` imported, then
`firmware.data_files.open_data`: the card's checks, the store read back from
the decision image or rebuilt from SQLite) and then decides one presentation;
`boot_s` is the time from just before the process is started to that decision.

`boot_seconds(records, store)` seeds a temporary data directory as a controller
leaves it after a full sync (the SQLite file and the decision image, see
`prepare`) and measures it: `alc bench decide` calls it with the club it built.
Run as `python -m tools.bench_boot DATA_DIR KIND VALUE DOOR`, this module is the
child process (it prints one JSON line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from firmware.core.store import Store
from firmware.image import Tag, write_image
from firmware.storage import DB_FILE, Storage

EPOCH = "bench-boot"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Boot:
    """One measured boot."""

    seconds: float
    """From just before the process was started to its first decision."""
    from_image: bool
    """The store was read back from the decision image (else rebuilt from SQLite)."""
    reason: str
    """The first decision's outcome."""
    records: int
    """Records in the store it booted with."""


def prepare(data_dir: Path, records: Iterable[tuple[str, str, bytes]], store: Store) -> None:
    """Leave `data_dir` as a controller does after a full sync to `store`, built
    from `records`: the records in the SQLite file at `(EPOCH, 1)`, and the image."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with Storage.open(data_dir / DB_FILE) as storage:
        storage.save_snapshot(EPOCH, 1, records, store.digest, time.time())
    write_image(data_dir, Tag(EPOCH, 1, store.digest), store)


def measure_boot(data_dir: Path, kind: str, value: str, door: str) -> Boot:
    """Boot `data_dir` in a fresh process and decide `kind`/`value` at `door`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "tools.bench_boot", str(data_dir), kind, value, door],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=REPO,
    )
    found = json.loads(done.stdout.splitlines()[-1])
    return Boot(
        float(found["decided_at"]) - started,
        bool(found["from_image"]),
        str(found["reason"]),
        int(found["records"]),
    )


def boot_seconds(records: Iterable[tuple[str, str, bytes]], store: Store) -> Boot:
    """`prepare` a temporary data directory with `records` and `store`, then
    `measure_boot` it with a tag of one of its members at one of its doors."""
    member = next(iter(store.members.values()))
    kind, value = member.creds[0], member.creds[1]
    door = min(store.doors) if store.doors else "door"
    with tempfile.TemporaryDirectory(prefix="alc-boot-") as tmp:
        data_dir = Path(tmp) / "data"
        prepare(data_dir, records, store)
        return measure_boot(data_dir, kind, value, door)


def child(argv: Sequence[str]) -> None:
    """The booting process: the controller's imports, `open_data`, one decision."""
    import gc

    import firmware.runtime.app  # noqa: F401  # what a controller imports before its boot
    from firmware.core.decide import Target, decide
    from firmware.data_files import open_data

    data_dir, kind, value, door = argv
    files, boot = open_data(Path(data_dir), time.time())
    gc.freeze()  # as `Runtime._boot` does
    store = boot.loaded.store
    decision = decide(store, Target.door(door), kind, value, time.time())
    decided_at = time.time()
    files.close()
    print(
        json.dumps(
            {
                "decided_at": decided_at,
                "from_image": boot.loaded.from_image,
                "reason": decision.reason,
                "records": len(store),
            }
        )
    )


if __name__ == "__main__":
    child(sys.argv[1:])
