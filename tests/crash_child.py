"""A deterministic hub, and a child process that writes its data through `Storage`
as fast as it can until it is killed (tests/test_storage_crash.py).

The hub's dataset is a pure function of `(seed, epoch, v)`: an epoch starts from
a base set of records, and change set `v` is drawn from a generator seeded with
`(seed, epoch, v)`. Whatever path the child took to a version (deltas of one or
several change sets, a full snapshot, a new epoch, a purge), the parent can
recompute that version's records on its own.

Run as `python -m tests.crash_child DB SEED CYCLE JOURNAL`. The child prints `ready`
once the file is open, then loops. Around each save it appends to JOURNAL:
`try <what>` before and `done` after, so the parent knows which save, if any,
was in flight when the kill came.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterator

import cbor2

from firmware.core.model import digest_bytes, digest_part
from firmware.core.store import Delete, Op, Put
from firmware.storage import EMPTY_DIGEST, Storage

Dataset = dict[tuple[str, str], bytes]

MAX_RUN_S = 60.0  # a child the parent forgot about still ends on its own
MEMBERS = 3000


def _body(rng: random.Random, kind: str, id: str, tag: str) -> bytes:
    if kind == "member":
        body: dict[str, object] = {
            "name": f"Member {id} {tag}",
            "groups": [f"g{rng.randrange(8)}"],
            "creds": [["tag", f"{id}-{tag}"]],
            "credit": rng.randrange(10_000),
        }
    elif kind == "group":
        body = {"doors": [f"d{rng.randrange(3)}"], "note": tag}
    elif kind == "door":
        body = {"name": f"Door {id} {tag}", "unlock_s": rng.randrange(1, 30)}
    else:
        body = {"text": tag, "pad": "x" * rng.randrange(200)}  # an unknown kind
    return cbor2.dumps(body)


def _key(rng: random.Random) -> tuple[str, str]:
    roll = rng.random()
    if roll < 0.8:
        return "member", f"m{rng.randrange(MEMBERS)}"
    if roll < 0.9:
        return "group", f"g{rng.randrange(8)}"
    if roll < 0.95:
        return "door", f"d{rng.randrange(3)}"
    return "note", f"n{rng.randrange(20)}"


def base(seed: int, epoch: str) -> Dataset:
    """The dataset of `epoch` at v = 0: up to a few thousand records, so that a
    snapshot takes long enough to be killed halfway now and then."""
    rng = random.Random(f"{seed}/{epoch}/base")
    data: Dataset = {}
    for _ in range(rng.randrange(200, 3000)):
        kind, id = _key(rng)
        data[(kind, id)] = _body(rng, kind, id, f"{epoch}/0")
    return data


def change_set(seed: int, epoch: str, v: int) -> list[Op]:
    """The ops that take `epoch` from `v - 1` to `v`."""
    rng = random.Random(f"{seed}/{epoch}/{v}")
    ops: list[Op] = []
    for _ in range(rng.randrange(1, 5)):
        kind, id = _key(rng)
        if rng.random() < 0.25:
            ops.append(Delete(kind, id))
        else:
            ops.append(Put(kind, id, _body(rng, kind, id, f"{epoch}/{v}")))
    return ops


def apply(data: Dataset, ops: list[Op]) -> None:
    """Apply ops in order to a dataset held as a plain dict."""
    for op in ops:
        if isinstance(op, Put):
            data[(op.kind, op.id)] = op.rec
        else:
            data.pop((op.kind, op.id), None)


def dataset(seed: int, epoch: str | None, v: int) -> Dataset:
    """The hub's records at `(epoch, v)`; no epoch is the empty (purged) dataset."""
    if epoch is None:
        return {}
    data = base(seed, epoch)
    for step in range(1, v + 1):
        apply(data, change_set(seed, epoch, step))
    return data


class Child:
    """Plays the hub into one `Storage`, keeping the dataset and its digest in step."""

    def __init__(self, storage: Storage, seed: int, cycle: int, journal: int) -> None:
        self.storage = storage
        self.seed = seed
        self.rng = random.Random(f"{seed}/child/{cycle}")
        self.cycle = cycle
        self.journal = journal
        self.epoch, self.v, digest, _ = storage.state()
        self.data = dataset(seed, self.epoch, self.v)
        self.total = sum(digest_part(k, i, r) for (k, i), r in self.data.items())
        if digest_bytes(self.total) != digest:
            raise SystemExit(f"stored digest is not the hub's at ({self.epoch}, {self.v})")
        self.commands = 0

    def note(self, line: str) -> None:
        # os.write: straight to the kernel, so it survives the process's SIGKILL.
        os.write(self.journal, (line + "\n").encode())

    def step(self) -> None:
        roll = self.rng.random()
        if self.epoch is None or roll < 0.02:
            self.new_epoch()
        elif roll < 0.03:
            self.note("try snap - 0")
            self.storage.save_snapshot(None, 0, [], EMPTY_DIGEST, time.time())
            self.epoch, self.v, self.data, self.total = None, 0, {}, 0
        elif roll < 0.07:
            self.snapshot(self.epoch, self.v + self.rng.randrange(0, 4))
        elif roll < 0.12:
            id = f"c{self.cycle}-{self.commands}"
            self.commands += 1
            exp = self.rng.randrange(1000)
            self.note(f"try remember {id} {exp}")
            self.storage.remember_command(id, exp)
        elif roll < 0.14:
            now = self.rng.randrange(1000)
            self.note(f"try forget {now}")
            self.storage.forget_expired(now)
        else:
            self.delta(self.rng.choice((1, 1, 1, 2, 5)))
        self.note("done")

    def new_epoch(self) -> None:
        self.snapshot(f"e{self.rng.getrandbits(32):08x}", self.rng.randrange(0, 200))

    def snapshot(self, epoch: str, v: int) -> None:
        data = dataset(self.seed, epoch, v)
        total = sum(digest_part(k, i, r) for (k, i), r in data.items())
        records = [(k, i, r) for (k, i), r in data.items()]
        self.note(f"try snap {epoch} {v}")
        self.storage.save_snapshot(epoch, v, records, digest_bytes(total), time.time())
        self.epoch, self.v, self.data, self.total = epoch, v, data, total

    def delta(self, versions: int) -> None:
        assert self.epoch is not None
        ops: list[Op] = []
        for v in range(self.v + 1, self.v + versions + 1):
            ops += change_set(self.seed, self.epoch, v)
        total = self.total
        for op in ops:  # the live store's incremental digest
            old = self.data.pop((op.kind, op.id), None)
            if old is not None:
                total -= digest_part(op.kind, op.id, old)
            if isinstance(op, Put):
                self.data[(op.kind, op.id)] = op.rec
                total += digest_part(op.kind, op.id, op.rec)
        self.note(f"try delta {self.epoch} {self.v + versions}")
        self.storage.save_delta(self.epoch, self.v + versions, ops, digest_bytes(total))
        self.v += versions
        self.total = total


def run(db: str, seed: int, cycle: int, journal_path: str) -> None:
    """Open the file, say `ready`, and write until killed (or MAX_RUN_S)."""
    journal = os.open(journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    storage = Storage.open(db)
    child = Child(storage, seed, cycle, journal)
    print("ready", flush=True)
    started = time.monotonic()
    while time.monotonic() - started < MAX_RUN_S:
        child.step()
    storage.close()


def journal_entries(text: str) -> Iterator[tuple[list[str], bool]]:
    """Each save the journal names, with whether it finished (`done` followed)."""
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("try "):
            finished = n + 1 < len(lines) and lines[n + 1] == "done"
            yield line.split()[1:], finished


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
