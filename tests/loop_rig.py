"""A controller for the loop tests: the real `Runtime` on the simulator backend,
booted from a stored dataset, its loop on a thread, no broker (its port is
closed: paho keeps trying, which is not fatal), no hub.

One door, `front` (relay, contact, exit button), with an RDM6300 reader,
`front-in`; members `ann` and `cat`, and a master tag in the config. What a
test needs to watch or hold up is here too: `Outputs` (an edge that records
every output the loop switches, in order, on the loop's thread), `CardGate`
(the event writer's `append` held up as by a hung fsync), `FrozenClock` (a
wall clock that moves only when told) and `Running` (the loop on a thread,
stopped and joined however the test ends).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cbor2

from firmware.config import Config, parse_config
from firmware.core.model import digest_bytes, digest_part
from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.outbox_store import OutboxStore
from firmware.runtime import Runtime
from firmware.runtime.edge import EdgeContext
from firmware.storage import DB_FILE, Storage
from tests.broker import free_port
from tests.sealing import seal
from tests.waiting import WAIT_S, wait_for

SITE, CONTROLLER = "demo", "ctl1"
BASE = f"alc/{SITE}/{CONTROLLER}"
KEY = bytes(range(32))
EPOCH, VERSION = "e1", 7
DOOR = "door:front"
READER = "front-in"
ANN = "0a1b2c3d4e"  # tags as the RDM6300 reader reports them
CAT = "0a0a0a0a0a"
MASTER = "0f0f0f0f0f"  # in the config's [[masters]]: opens with no data at all
JOIN_S = 30.0

Record = tuple[str, str, bytes]


def records(unlock_s: int = 1) -> list[Record]:
    """The club: door `front`, a group for it, members `ann` and `cat`."""
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        ("door", "front", {"unlock_s": unlock_s, "extended_s": 120, "held_s": 600}),
        ("group", "players", {"doors": ["front"]}),
        ("member", "ann", {"groups": ["players"], "creds": [["tag", ANN]]}),
        ("member", "cat", {"groups": ["players"], "creds": [["tag", CAT]]}),
    ]
    return [(kind, id, cbor2.dumps(body)) for kind, id, body in bodies]


def digest_of(recs: Sequence[Record]) -> bytes:
    return digest_bytes(sum(digest_part(*r) for r in recs))


def make_config(tmp: Path, now: float, *, unlock_s: int = 1, inputs: bool = True) -> Config:
    """The controller's config, its key file and its stored dataset (as a
    finished full sync at `now` left it) under `tmp`. Without `inputs`, the
    door has no contact and no exit button: then nothing but the test puts
    anything in the loop's inbox (the broker's port is closed)."""
    data = tmp / "data"
    data.mkdir()
    recs = records(unlock_s)
    with Storage.open(data / DB_FILE) as storage:
        storage.save_snapshot(EPOCH, VERSION, recs, digest_of(recs), now)
    door: dict[str, Any] = {"id": "front", "relay": 17, "fail": "secure"}
    if inputs:
        door |= {"contact": 27, "rex": 22}
    key = tmp / f"{CONTROLLER}.key"
    key.write_text(KEY.hex() + "\n")
    key.chmod(0o600)
    return parse_config(
        tmp / "controller.toml",
        {
            "controller": {
                "site": SITE,
                "id": CONTROLLER,
                "data_dir": str(data),
                "key_file": str(key),
            },
            "mqtt": {"host": "127.0.0.1", "port": free_port()},
            "hal": {"backend": "sim"},
            "doors": [door],
            "readers": [{"id": READER, "kind": "rdm6300", "port": "/dev/serial0", "door": "front"}],
            "masters": [{"credkind": "tag", "value": MASTER}],
        },
    )


def sealed(suffix: str, body: dict[str, Any]) -> bytes:
    """`body` sealed for `<BASE>/<suffix>` with the controller's key, as the hub would."""
    return seal(KEY, CONTROLLER.encode(), f"{BASE}/{suffix}", body)


def stored_events(config: Config) -> list[tuple[int, str, dict[str, Any]]]:
    """Every event in the outbox on disk, `(seq, type, body)` in seq order, read
    with a connection of its own (after the runtime stopped)."""
    with Storage.open(config.controller.data_dir / DB_FILE) as storage:
        rows = OutboxStore(storage).batch(0, 1 << 62)
    return [(seq, type, body) for seq, _time, type, body in rows]


class Outputs:
    """An edge that records every output the loop switches, `(name, on)`, in the
    order it switched them (it is told on the loop's thread, after the HAL)."""

    topics: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._switched: list[tuple[str, bool]] = []
        self.notes: deque[object] = deque(maxlen=10_000)
        """The loop's latest notes (`firmware.runtime.notes`)."""
        self.on_switch: Callable[[str, bool], None] = lambda name, on: None
        """Called on the loop's thread at each switch, before it is recorded."""

    def __call__(self, _context: EdgeContext) -> Outputs:
        return self  # the edge factory: the runtime gets this very recorder

    def received(self, suffix: str, payload: bytes) -> None:
        pass

    def output_switched(self, name: str, on: bool) -> None:
        self.on_switch(name, on)
        with self._lock:
            self._switched.append((name, on))

    def observed(self, note: object) -> None:
        self.notes.append(note)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    @property
    def switched(self) -> list[tuple[str, bool]]:
        with self._lock:
            return list(self._switched)

    def count(self, name: str, on: bool) -> int:
        return self.switched.count((name, on))


class CardGate:
    """Holds up the event writer's `append` (a hung fsync) for the writes that
    `hold` picks, until `release()`. The writes it lets through and the one it
    holds are recorded (event seqs), so a test can tell what was durable when."""

    def __init__(self, runtime: Runtime, hold: Callable[[Sequence[LoggedEvent]], bool]) -> None:
        self._append = runtime.events.append
        self._hold = hold
        self._lock = threading.Lock()
        self._written: list[int] = []
        self.holding = threading.Event()
        """Set once a write is held (the writer thread is stuck in it)."""
        self.held: list[LoggedEvent] = []
        self._released = threading.Event()
        self.releases = 0

    def append(
        self,
        events: Sequence[LoggedEvent],
        debits: Sequence[DebitEntry],
        *,
        commands: Sequence[tuple[str, int]] = (),
    ) -> None:
        if not self._released.is_set() and self._hold(events):
            self.held = list(events)
            self.holding.set()
            # The test releases the gate; the bound only keeps a failing test
            # from leaving the writer thread behind.
            self._released.wait(WAIT_S * 3)
        self._append(events, debits, commands=commands)
        with self._lock:
            self._written += [e.seq for e in events]

    def release(self) -> None:
        self._released.set()

    @property
    def written(self) -> list[int]:
        """Seqs of the events written so far, in order."""
        with self._lock:
            return list(self._written)


class FrozenClock:
    """A wall clock that stands still until `advance`d (any thread)."""

    def __init__(self, now: float) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class Running:
    """`runtime.run()` on a thread of its own; `exit_code` once it returned.
    Returns once the loop runs (`loop_priority` set: from then on `ask` goes
    through the loop), or once `run` has already returned."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-loop")
        self.thread.start()
        wait_for(
            lambda: runtime.loop_priority is not None or not self.thread.is_alive(),
            "the loop to run",
        )

    def _run(self) -> None:
        try:
            self.exit_code = self.runtime.run()
        except BaseException as exc:  # handed to the test by `stop`
            self.error = exc

    def stop(self) -> int | None:
        """Stop the runtime, join its loop; re-raise what ended it abnormally."""
        self.runtime.stop()
        self.thread.join(JOIN_S)
        assert not self.thread.is_alive(), "the loop did not stop"
        if self.error is not None:
            raise self.error
        return self.exit_code


@contextmanager
def running(runtime: Runtime) -> Iterator[Running]:
    """The runtime's loop on a thread for the block, then stopped and joined."""
    run = Running(runtime)
    try:
        yield run
    finally:
        run.stop()
