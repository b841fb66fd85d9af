"""`boot_s`: a fresh process boots a controller's data, to its first decision.

`measure_boot(data_dir, ...)` starts a new Python process that does what a
controller's boot does with its data (`firmware.runtime.app` imported, then
`firmware.data_files.open_data`: the card's checks, the store read back from
the decision image or rebuilt from SQLite) and then decides one presentation;
`boot_s` is the time from just before the process is started to that decision.

`boot_seconds(club_file)` seeds a temporary data directory as a full sync of the
club leaves a controller's SQLite file, boots it once with no image (that child
rebuilds the store, then writes the image, as the runtime does after a quiet
spell), then boots it again from the image: `alc bench decide` calls it with the
club file it generated. Run as `python -m tools.bench_boot DATA_DIR [--write]`,
this module is the child process (it prints one JSON line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from firmware.core.model import digest_bytes, digest_part
from firmware.image import Tag, write_image
from firmware.storage import DB_FILE, Storage
from tools.gen import read_records

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


def seed(data_dir: Path, club_file: Path) -> None:
    """Leave `data_dir` as a full sync of the club in `club_file` (`alc gen`'s
    format) leaves a controller's SQLite file, at `(EPOCH, 1)`; no image yet.
    The records are streamed (read twice: the digest, then the save)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    digest = digest_bytes(sum(digest_part(*record) for record in read_records(club_file)))
    with Storage.open(data_dir / DB_FILE) as storage:
        storage.save_snapshot(EPOCH, 1, read_records(club_file), digest, time.time())


def measure_boot(data_dir: Path, *, write: bool = False) -> Boot:
    """Boot `data_dir` in a fresh process and decide once; with `write`, the
    child then writes the decision image, as a controller that had to rebuild
    does after a quiet spell (`firmware.runtime.imaging`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "tools.bench_boot", str(data_dir)]
    started = time.time()
    done = subprocess.run(
        [*argv, "--write"] if write else argv,
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


@dataclass(frozen=True, slots=True)
class Boots:
    """A boot that rebuilt from SQLite (and wrote the image), then one from it."""

    rebuilt: Boot
    from_image: Boot


def boot_seconds(club_file: Path) -> Boots:
    """`seed` a temporary data directory with `club_file`, boot it once with no
    image (the child writes one), then again: `from_image.seconds` is `boot_s`.
    Everything big happens in the children: this process's memory stays as it is."""
    with tempfile.TemporaryDirectory(prefix="alc-boot-") as tmp:
        data_dir = Path(tmp) / "data"
        seed(data_dir, club_file)
        rebuilt = measure_boot(data_dir, write=True)
        return Boots(rebuilt, measure_boot(data_dir))


def child(argv: Sequence[str]) -> None:
    """The booting process: the controller's imports, `open_data`, one decision
    (a tag of the first member, at the first door), then with `--write` the image."""
    import gc

    import firmware.runtime.app  # noqa: F401  # what a controller imports before its boot
    from firmware.core.decide import Target, decide
    from firmware.data_files import open_data

    data_dir = Path(argv[0])
    files, boot = open_data(data_dir, time.time())
    gc.freeze()  # as `Runtime._boot` does
    store = boot.loaded.store
    member = next(iter(store.members.values()))
    door = Target.door(next(iter(store.doors), "door"))
    decision = decide(store, door, member.creds[0], member.creds[1], time.time())
    decided_at = time.time()
    state = boot.loaded.state
    if "--write" in argv[1:] and state.epoch is not None:
        write_image(data_dir, Tag(state.epoch, state.v, state.digest), store)
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
