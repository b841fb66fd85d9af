"""Issue 12 s5, end to end: the card may fail; the door may not.

The real `Runtime` on the simulator's hardware (a door relay on a mock pin, an
RDM6300 reader on a loopback port), the reference hub and a real mosquitto
(tests/harness.py), on real failing disks (tests/disks.py: a tmpfs that fills
up or is remounted read-only, an ext4 image that is frozen or turns read-only
on an error). The SQLite files are damaged for real, between two runs.

What must hold, in the issue's words: the master opens within 5 s of start, the
data heals by a full sync, and the hub receives every event that was ever
written.

- "Opens" is the door relay switching on: an edge (`Switches`) hears every
  output the loop switches, with the time. "Within 5 s of start" counts from
  before the `Runtime` is built, so the boot's check and repair of the file are
  in it. No time is asserted (machines are noisy): the figures are printed
  beside the issue's bounds, and what is asserted is order (the door opened
  while the hung card had not written the member's event).
- "Heals": the controller ends up holding the hub's `(epoch, v, digest)`, and a
  member's tag opens.
- "Every event": every seq from 1 to the controller's last is stored at the hub
  or named in a `dropped` range the controller declared; every event the
  controller logged as written (`alc.events`) is stored at the hub as logged,
  unless the file that held it was destroyed (then it is named dropped); and no
  seq is ever given to two events.

The core is read through `Runtime.ask`; the hub's database through a read-only
connection of the test's own. tests/test_storage_repair.py and
tests/test_storage_disk_faults.py test the same faults one layer down.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest

from firmware.core.controller import Controller
from firmware.core.inputs import Presented
from firmware.outbox_store import OutboxStore
from firmware.runtime import Runtime
from firmware.runtime import loop as runtime_loop
from firmware.runtime.edge import EdgeContext
from firmware.runtime.held import PATIENCE_S
from firmware.runtime.messages import DiskChanged
from firmware.salvage import ASIDE_KEPT, aside_copies
from firmware.storage import DB_FILE, Storage
from hal.sim import SimBackend
from tests import disks
from tests.broker import Broker
from tests.harness import CONTROLLER, Rig, club, write_atomically
from tests.test_integration import gate_data
from tests.test_storage_repair import overwrite, page_size, scribble_on_the_records
from tests.waiting import WAIT_S, wait_for

MASTER = "0000c0ffee"  # in controller.toml: opens with no data at all
ADA = "00000000a1"  # member m1 (tests/harness.py's CLUB)
BO = "00000000b2"  # member m2
DOOR = "door:front"
READER = "front-in"
UNLOCK_S = 2  # the hub's door record
OPEN_WITHIN_S = 5.0  # issue 12 s5: the master opens within 5 s of start (printed beside)
MEMBERS = 400  # enough records for the file to span many pages
RECORDS = MEMBERS + 5  # with the site, a door, a group and two members
CARD_MB = 32  # a tmpfs card: the data, and the 16 MB a full sync's save leaves free
REATTACH_S = 0.2  # REATTACH_EVERY_S (60 s) in these tests

WIRING = f"""
[[doors]]
id = "front"
relay = 17
fail = "secure"

[[readers]]
id = "{READER}"
kind = "rdm6300"
port = "/dev/serial0"
door = "front"

[[masters]]
credkind = "tag"
value = "{MASTER}"
"""

DATA = club(members=MEMBERS).replace("unlock_s = 4", f"unlock_s = {UNLOCK_S}")
assert f"unlock_s = {UNLOCK_S}" in DATA


# --- the pieces ------------------------------------------------------------------------


class Switches:
    """An edge that hears every output the loop switches, with the time."""

    topics: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[tuple[float, str, bool]] = []

    def __call__(self, _context: EdgeContext) -> Switches:
        return self  # `Runtime(edges=[...])` calls its factories once: one per runtime

    def received(self, suffix: str, payload: bytes) -> None:
        pass  # never called: no topic is claimed

    def output_switched(self, name: str, on: bool) -> None:
        with self._lock:
            self._seen.append((time.monotonic(), name, on))

    def observed(self, note: object) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def first(self, name: str, on: bool, after: float) -> float | None:
        """When `name` was first switched `on` (or off) at or after `after`."""
        with self._lock:
            return next((t for t, n, o in self._seen if n == name and o == on and t >= after), None)


class HubFile:
    """The hub's database, read beside the running hub through a read-only
    connection of its own (a `HubDB` belongs to the hub's thread)."""

    def __init__(self, rig: Rig) -> None:
        self.path = rig.tmp / "hub.sqlite3"

    def _rows(self, sql: str, *args: Any) -> list[Any]:
        if not self.path.exists():
            return []
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as conn:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError:  # the hub is making its tables
                return []

    def events(self) -> dict[int, tuple[str, Any]]:
        rows = self._rows(
            "SELECT seq, type, body FROM events WHERE controller = ? ORDER BY seq", CONTROLLER
        )
        return {seq: (type_, cbor2.loads(body)) for seq, type_, body in rows}

    def acked(self) -> int:
        rows = self._rows("SELECT upto FROM acked WHERE controller = ?", CONTROLLER)
        return int(rows[0][0]) if rows else 0

    def of(self, type_: str, **match: Any) -> list[dict[str, Any]]:
        """Stored events of `type_` whose body has every `match` field, by seq."""
        return [
            body
            for t, body in self.events().values()
            if t == type_ and all(body.get(k) == v for k, v in match.items())
        ]

    def accesses(self, tag: str) -> list[dict[str, Any]]:
        """Access events of a tag (the hub sees its last 4 characters)."""
        return self.of("access", value=tag[-4:])


@dataclass
class Boot:
    """One start of the controller."""

    runtime: Runtime
    switches: Switches
    started: float  # monotonic, before the runtime was built
    built_s: float  # building it: opening (checking, repairing) the data
    records: int  # records in the live store when the loop started


def boot(rig: Rig, before_run: Callable[[Runtime], None] | None = None) -> Boot:
    """Build the controller (its data opened from the card), then run its loop
    (`before_run` may wrap parts of the runtime in between)."""
    switches = Switches()
    started = time.monotonic()
    runtime = Runtime(rig.config(), edges=[switches])
    built_s = time.monotonic() - started
    records = runtime.ask(lambda c: len(c.store))  # at once: the loop is not running yet
    if before_run is not None:
        before_run(runtime)
    rig.runtime = runtime
    rig.run_controller()
    return Boot(runtime, switches, started, built_s, records)


def sim(runtime: Runtime) -> SimBackend:
    assert isinstance(runtime.hardware, SimBackend)
    return runtime.hardware


def locked(run: Boot) -> bool:
    return not sim(run.runtime).outputs[DOOR].value


def opens(run: Boot, tag: str, timeout: float = WAIT_S) -> tuple[float, float]:
    """Present `tag` at the door's reader once the door is locked; wait (up to
    `timeout`) until the door relay switches on. Returns when the tag was
    presented and when the door opened (monotonic)."""
    wait_for(lambda: locked(run), "the door to be locked")
    presented = time.monotonic()
    sim(run.runtime).present(READER, "tag", tag)
    wait_for(
        lambda: run.switches.first(DOOR, True, presented), f"the door to open for {tag}", timeout
    )
    opened = run.switches.first(DOOR, True, presented)
    assert opened is not None
    return presented, opened


def let_in(rig: Rig, tag: str) -> dict[str, Any]:
    """Present `tag` at the door's reader; the decision, as its access event at
    the hub tells it (the door may still be open for someone else)."""
    assert rig.runtime is not None
    hub = HubFile(rig)
    before = len(hub.accesses(tag))
    sim(rig.runtime).present(READER, "tag", tag)
    wait_for(lambda: len(hub.accesses(tag)) > before, f"the access event of {tag} at the hub")
    event = hub.accesses(tag)[before]
    return {k: event[k] for k in ("member", "granted", "reason")}


GRANTED = {"granted": True, "reason": "granted"}


def opens_and_told(rig: Rig, run: Boot, tag: str) -> dict[str, Any]:
    """`opens`, then the decision as its access event at the hub tells it."""
    hub = HubFile(rig)
    before = len(hub.accesses(tag))
    opens(run, tag)
    wait_for(lambda: len(hub.accesses(tag)) > before, f"the access event of {tag} at the hub")
    event = hub.accesses(tag)[before]
    return {k: event[k] for k in ("member", "granted", "reason")}


def master_opens_in_time(run: Boot) -> float:
    """The master tag, presented as soon as the loop runs, opens the door. The
    seconds from the start (before the runtime was built) are printed beside
    the issue's bound, never asserted (tests assert no time); returned."""
    _, opened = opens(run, MASTER)
    since_start = opened - run.started
    print(
        f"\nthe master opens {since_start:.3f} s after the start (issue 12: within "
        f"{OPEN_WITHIN_S:g} s; the runtime built, its data opened, in {run.built_s:.3f} s)"
    )
    return since_start


def triple(rig: Rig) -> tuple[str | None, int, bytes]:
    assert rig.runtime is not None
    return rig.runtime.ask(lambda c: (c.session.epoch, c.session.v, c.session.digest))


def healed(rig: Rig) -> None:
    """Wait until the controller holds exactly the hub's dataset, and is idle."""

    def held(c: Controller) -> tuple[str, tuple[str | None, int, bytes]]:
        s = c.session
        return s.progress()[0], (s.epoch, s.v, s.digest)

    def converged() -> bool:
        assert rig.runtime is not None
        phase, dataset = rig.runtime.ask(held)
        return phase == "idle" and dataset == rig.hub_triple()

    wait_for(converged, "the controller to hold the hub's dataset")


def hub_state(rig: Rig) -> dict[str, Any]:
    """The controller's last `state` as the hub has it."""
    assert rig.hub is not None
    view = rig.hub.controllers.get(CONTROLLER)
    return (view.state if view is not None else None) or {}


def disk_ok_at_the_hub(rig: Rig, ok: bool) -> None:
    wait_for(lambda: hub_state(rig).get("disk_ok") is ok, f"disk_ok: {str(ok).lower()} at the hub")


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, Any]]:
    """Every `(seq, type, body)` the runtime logged as written (`alc.events`)."""
    out = []
    for record in caplog.records:
        if record.name == "alc.events":
            seq, type_, body = record.args  # type: ignore[misc]
            out.append((int(str(seq)), str(type_), json.loads(str(body))))
    return out


def as_logged(body: Any) -> Any:
    """A body as the controller's log shows it (JSON, bytes as hex)."""
    return json.loads(json.dumps(body, default=lambda b: b.hex()))


def gaps(seqs: set[int], ranges: list[tuple[int, int]], last: int) -> list[tuple[int, int]]:
    """The seqs of 1..`last` that are neither in `seqs` nor in any of `ranges`."""
    found, upto = [], 0
    for first, end in sorted([(s, s) for s in seqs] + ranges):
        if first > upto + 1:
            found.append((upto + 1, min(first - 1, last)))
        upto = max(upto, end)
    if upto < last:
        found.append((upto + 1, last))
    return [g for g in found if g[0] <= g[1]]


def test_gaps_are_what_neither_the_seqs_nor_the_ranges_cover() -> None:
    assert gaps(set(), [], 0) == []
    assert gaps({1, 2, 3}, [], 3) == []
    assert gaps({1, 5}, [(2, 3)], 7) == [(4, 4), (6, 7)]
    assert gaps({9}, [(1, 3), (2, 6)], 9) == [(7, 8)]
    assert gaps(set(), [(1, 10**13)], 42) == []


def all_acked(rig: Rig) -> int:
    """Wait until the hub acknowledges every seq the controller gave out; returns
    the last. Also a marker: the loop carries out an upload only after every
    step before it was written and carried out (held.py), so by then each
    dataset save of those steps is with the storage thread, which a stop lets
    finish."""
    hub = HubFile(rig)
    runtime = rig.runtime
    assert runtime is not None

    def last_seq() -> int:
        return runtime.ask(lambda c: c.outbox.last_seq)

    wait_for(lambda: hub.acked() >= last_seq(), "the hub to acknowledge every event")
    return last_seq()


def every_event_reaches_the_hub(
    rig: Rig, caplog: pytest.LogCaptureFixture, *, destroyed: bool = False
) -> int:
    """Wait until the hub acknowledges every seq the controller gave out, then
    check the module docstring's "every event". `destroyed`: a file that held
    logged events was lost whole, so a logged event may be named dropped
    instead. Returns the last seq."""
    last = all_acked(rig)
    written = logged(caplog)
    twice = sorted(seq for seq, n in Counter(seq for seq, _, _ in written).items() if n > 1)
    assert twice == [], f"seqs given to two events: {twice}"
    stored = HubFile(rig).events()
    dropped = [
        (int(first), int(end))
        for t, body in stored.values()
        if t == "system"
        for first, end in body.get("dropped", [])
    ]
    assert gaps(set(stored), dropped, last) == [], "seqs neither stored nor declared dropped"
    for seq, type_, body in written:
        if seq in stored:
            assert (stored[seq][0], as_logged(stored[seq][1])) == (type_, body), seq
        else:
            assert destroyed, f"event {seq} was written, and never reached the hub"
            assert any(first <= seq <= end for first, end in dropped), seq
    return last


@contextmanager
def running(broker: Broker, tmp: Path) -> Iterator[Rig]:
    """A rig whose controller has `WIRING`; closed (controller, hub) on the way
    out, so before any disk under it is unmounted."""
    rig = Rig(broker, tmp, extra=WIRING)
    try:
        yield rig
    finally:
        rig.close()


def start_synced(rig: Rig) -> Boot:
    """Hub, controller, the data synced; Ada let in and her event at the hub."""
    write_atomically(rig.data_file, DATA)
    rig.start_hub()
    run = boot(rig)
    healed(rig)
    opens(run, ADA)
    wait_for(lambda: HubFile(rig).accesses(ADA), "Ada's access event at the hub")
    return run


@pytest.fixture(autouse=True)
def _events_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.fixture
def reattach_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the data is in memory the runtime tries the card every
    `REATTACH_S`, not every minute (read when the runtime is built)."""
    monkeypatch.setattr(runtime_loop, "REATTACH_EVERY_S", REATTACH_S)


@contextmanager
def card(kind: str, tmp: Path) -> Iterator[Path]:
    """The controller's data directory (the rig's `data`) on a file system of
    its own: a tmpfs, or an ext4 image on a loop device."""
    if kind == "tmpfs":
        with disks.tmpfs(tmp / "data", f"{CARD_MB}m") as mounted:
            yield mounted
    else:
        assert kind == "ext4"
        with disks.ext4(tmp / "card.img", tmp / "data") as mounted:
            yield mounted


# --- 1. a damaged file at boot ------------------------------------------------------------


def not_a_database(path: Path) -> None:
    path.write_bytes(random.Random(3).randbytes(path.stat().st_size))


def truncated_mid_page(path: Path) -> None:
    size = page_size(path)
    pages = path.stat().st_size // size
    assert pages > 8
    os.truncate(path, (pages // 2) * size + size // 3)


def a_page_overwritten(path: Path) -> None:
    scribble_on_the_records(path)  # random bytes over the middle of a records page


def a_damaged_wal_header(path: Path) -> None:
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 32, "the power cut left a log with frames in it"
    overwrite(wal, 0, random.Random(9).randbytes(32))


def a_directory_in_its_place(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "something").write_text("not ours")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "not a database": not_a_database,
    "truncated mid-page": truncated_mid_page,
    "a page overwritten": a_page_overwritten,
    "a damaged wal header": a_damaged_wal_header,
    "a directory in its place": a_directory_in_its_place,
}
OUTBOX_SPARED = {"a page overwritten"}  # a records page: every event is salvaged


def power_cut(data_dir: Path, into: Path) -> None:
    """Copy the files as a power cut would leave them (the controller runs)."""
    into.mkdir()
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(data_dir / f"{DB_FILE}{suffix}", into / f"{DB_FILE}{suffix}")


def put_back(copy: Path, data_dir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(copy / f"{DB_FILE}{suffix}", data_dir / f"{DB_FILE}{suffix}")


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_file_at_boot_opens_for_the_master_and_heals(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    data_dir = tmp_path / "data"
    with running(broker, tmp_path) as rig:
        start_synced(rig)
        # Bo comes in while the hub is away: his events wait in the outbox.
        rig.stop_hub()
        runtime = rig.runtime
        assert runtime is not None
        before = runtime.ask(lambda c: c.outbox.last_seq)
        sim(runtime).present(READER, "tag", BO)
        wait_for(
            lambda: any(s > before and t == "access" for s, t, _ in logged(caplog)),
            "Bo's access event to be written",
        )
        if damage == "a damaged wal header":
            power_cut(data_dir, tmp_path / "cut")
        rig.stop_controller()
        if damage == "a damaged wal header":
            put_back(tmp_path / "cut", data_dir)
        DAMAGE[damage](data_dir / DB_FILE)

        rig.start_hub()
        hub = HubFile(rig)
        told = len(hub.of("system", what="storage"))
        run = boot(rig)
        master_opens_in_time(run)
        if damage != "a damaged wal header":
            assert run.records == 0, "no dataset from a damaged file"
        # The damaged file is kept aside, for support.
        copies = aside_copies(data_dir)
        assert len(copies) == 1, copies
        (kept,) = copies.values()
        assert all(p.name.startswith(f"{DB_FILE}.damaged-") for p in kept), kept
        # The hub hears what happened; the card itself takes writes.
        wait_for(lambda: len(hub.of("system", what="storage")) > told, "the storage event")
        assert "moved aside" in hub.of("system", what="storage")[told]["detail"]
        # A full sync heals the data: a member opens again.
        healed(rig)
        wait_for(lambda: hub.of("sync", what="done", reason="digest"), "the full sync's event")
        assert let_in(rig, ADA) == {"member": "m1", **GRANTED}
        assert hub_state(rig).get("disk_ok") is True
        every_event_reaches_the_hub(rig, caplog, destroyed=damage not in OUTBOX_SPARED)


def test_three_damaged_boots_keep_the_two_newest_copies(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    with running(broker, tmp_path) as rig:
        start_synced(rig)
        kept: list[set[str]] = []
        for n, damage in enumerate(
            ["not a database", "a page overwritten", "a directory in its place"]
        ):
            rig.stop_controller()
            DAMAGE[damage](data_dir / DB_FILE)
            run = boot(rig)
            master_opens_in_time(run)
            healed(rig)
            all_acked(rig)  # the sync's save is on its way to the card (see there)
            copies = aside_copies(data_dir)
            assert len(copies) == min(n + 1, ASIDE_KEPT), copies
            kept.append({p.name for paths in copies.values() for p in paths})
        assert kept[0] <= kept[1], "the second repair keeps the first copy"
        assert not kept[0] & kept[2], "the third removes the oldest"
        assert (data_dir / DB_FILE).is_file()
        every_event_reaches_the_hub(rig, caplog, destroyed=True)


# --- 2. a card that cannot be written at boot -------------------------------------------


@contextmanager
def unwritable(how: str, data_dir: Path) -> Iterator[Callable[[], None]]:
    """Make the card refuse writes; yields what makes it take them again (also
    done on the way out)."""
    with ExitStack() as stack:
        if how == "read-only":
            disks.remount(data_dir, read_only=True)
            stack.callback(disks.remount, data_dir, read_only=False)
        elif how == "full":
            stack.enter_context(disks.full(data_dir))
        else:
            assert how == "hung"
            stack.enter_context(disks.frozen(data_dir))
        yield stack.close


AT_BOOT = {
    # name: (file system, what is wrong with it, damage to the file)
    "read-only tmpfs": ("tmpfs", "read-only", None),
    "read-only ext4": ("ext4", "read-only", None),
    "full tmpfs": ("tmpfs", "full", None),
    "hung ext4": ("ext4", "hung", None),
    "damaged on a read-only tmpfs": ("tmpfs", "read-only", "not a database"),
}


@pytest.mark.usefixtures("reattach_soon")
@pytest.mark.parametrize("case", AT_BOOT)
def test_an_unwritable_card_at_boot_runs_from_memory_and_moves_back(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    kind, how, damage = AT_BOOT[case]
    with card(kind, tmp_path) as data_dir, running(broker, tmp_path) as rig:
        start_synced(rig)
        rig.stop_controller()
        if damage is not None:
            DAMAGE[damage](data_dir / DB_FILE)
        hub = HubFile(rig)
        told = len(hub.of("system", what="storage"))
        with unwritable(how, data_dir) as writable:
            run = boot(rig)
            master_opens_in_time(run)
            disk_ok_at_the_hub(rig, False)
            wait_for(lambda: len(hub.of("system", what="storage")) > told, "the storage event")
            if damage is None:
                # What the file held came into memory, the dataset with it.
                assert run.records == RECORDS
            else:
                assert run.records == 0
                healed(rig)  # into memory
            assert let_in(rig, BO) == {"member": "m2", **GRANTED}
            assert aside_copies(data_dir) == {}, "nothing is written, not even a move"
            writable()
            disk_ok_at_the_hub(rig, True)
        assert len(aside_copies(data_dir)) == (0 if damage is None else 1)
        healed(rig)
        last = every_event_reaches_the_hub(rig, caplog, destroyed=damage is not None)
        expected = rig.hub_triple()
        rig.stop_controller()
        # Everything moved back to the card.
        with Storage.open(data_dir / DB_FILE) as storage:
            assert storage.state()[:3] == expected
            assert OutboxStore(storage).stats().last_seq == last


def test_an_unwritable_card_at_boot_is_told_once(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with card("tmpfs", tmp_path) as data_dir, running(broker, tmp_path) as rig:
        start_synced(rig)
        rig.stop_controller()
        hub = HubFile(rig)
        told = len(hub.of("system", what="storage"))
        with unwritable("read-only", data_dir):
            run = boot(rig)

            def all_acked() -> bool:
                return hub.acked() >= run.runtime.ask(lambda c: c.outbox.last_seq)

            wait_for(all_acked, "the boot's events at the hub")
            at_boot = hub.of("system", what="storage")[told:]
            rig.stop_controller()
    assert len(at_boot) == 1, at_boot


# --- 3. a card that fills up, or turns read-only, while running -------------------------

WHILE_RUNNING = {
    # name: (file system, what goes wrong)
    "full tmpfs": ("tmpfs", "full"),
    "ext4 turned read-only": ("ext4", "read-only"),
}


@pytest.mark.usefixtures("reattach_soon")
@pytest.mark.parametrize("case", WHILE_RUNNING)
def test_a_card_that_refuses_writes_while_running_refuses_no_member(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    kind, how = WHILE_RUNNING[case]
    with card(kind, tmp_path) as data_dir, running(broker, tmp_path) as rig:
        run = start_synced(rig)
        runtime = run.runtime
        with ExitStack() as stack:
            if how == "full":
                filler = stack.enter_context(disks.full(data_dir))
            else:
                # errors=remount-ro: read-only under the open file, until a restart.
                disks.fail(data_dir)
            # A full card: SQLite first reuses the room its files already have.
            # Members come in (decided, logged, let in) until a write needs more.
            presented = 0
            while hub_state(rig).get("disk_ok") is not False:
                assert presented < 5000, "the card never refused a write"
                before = runtime.ask(lambda c: c.outbox.last_seq)
                runtime.submit(Presented(READER, "tag", ADA))
                presented += 1
                wait_for(
                    lambda: runtime.ask(lambda c: c.outbox.last_seq) > before,  # noqa: B023
                    "Ada's presentation to be decided",
                )
            print(f"\n{case}: {presented} presentation(s) until disk_ok: false reached the hub")
            # Decisions go on: the door opens for Bo, and the hub hears of it.
            assert opens_and_told(rig, run, BO) == {"member": "m2", **GRANTED}
            storage = [b["detail"] for b in HubFile(rig).of("system", what="storage")]
            assert any("cannot be written" in d for d in storage), storage
            if how == "read-only":
                # Until a restart: everything is in memory, and at the hub.
                every_event_reaches_the_hub(rig, caplog)
                return
            filler.unlink()
            disk_ok_at_the_hub(rig, True)
        healed(rig)
        last = every_event_reaches_the_hub(rig, caplog)
        expected = rig.hub_triple()
        rig.stop_controller()
        # Everything went back to the card.
        with Storage.open(data_dir / DB_FILE) as stored:
            assert stored.state()[:3] == expected
            assert OutboxStore(stored).stats().last_seq == last


class _Written(logging.Handler):
    """Sets `event` whenever the runtime logs an event as written."""

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()


def test_a_card_that_refuses_writes_is_not_called_fine_while_the_data_is_in_memory(
    broker: Broker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The storage thread is descheduled right after it moved the data into
    memory, before it tells the loop (the wrapped `inbox.tell` holds that one
    message until the event thread has written into memory): the card still
    refuses every write, so the hub must hear nothing but that."""
    written = _Written()
    events_log = logging.getLogger("alc.events")
    events_log.addHandler(written)

    def late_move(runtime: Runtime) -> None:
        tell = runtime.inbox.tell

        def tell_late(message: Any) -> None:
            if isinstance(message, DiskChanged) and message.where == "files" and not message.ok:
                written.event.clear()
                written.event.wait(WAIT_S)  # the event thread retries within RETRY_S
            tell(message)

        monkeypatch.setattr(runtime.inbox, "tell", tell_late)

    try:
        with card("tmpfs", tmp_path) as data_dir, running(broker, tmp_path) as rig:
            write_atomically(rig.data_file, DATA)
            rig.start_hub()
            boot(rig, late_move)
            healed(rig)
            hub = HubFile(rig)
            told = len(hub.of("system", what="storage"))
            with disks.full(data_dir):
                assert let_in(rig, ADA)["granted"]
                disk_ok_at_the_hub(rig, False)
                assert let_in(rig, BO)["granted"]  # a marker: what came before is at the hub
                all_acked(rig)
                while_refused = [b["detail"] for b in hub.of("system", what="storage")][told:]
                rig.stop_controller()
    finally:
        events_log.removeHandler(written)
    assert len(while_refused) == 1 and "cannot be written" in while_refused[0], while_refused


# --- 4. a card that hangs while running ------------------------------------------------


def test_a_card_that_hangs_while_running_keeps_the_door_on_time(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with card("ext4", tmp_path) as data_dir, running(broker, tmp_path) as rig:
        run = start_synced(rig)
        # The door relocks after Ada, and that is on the card, before it hangs.
        wait_for(lambda: locked(run), "the door to relock after Ada")
        wait_for(
            lambda: any(t == "door" and b["what"] == "locked" for _, t, b in logged(caplog)),
            "the relock event to be written",
        )
        with disks.frozen(data_dir):
            presented, opened = opens(run, BO)
            wait_for(lambda: locked(run), "the door to relock")
            relocked = run.switches.first(DOOR, False, opened)
            assert relocked is not None
            written = [b for _, t, b in logged(caplog) if t == "access" and b["member"] == "m2"]
            assert written == [], "the card hung: Bo's event cannot have been written yet"
        print(
            f"\nhung card: Bo's door opens {opened - presented:.3f} s after his tag "
            f"(patience {PATIENCE_S:g} s), relocks {relocked - presented:.3f} s after it "
            f"(unlock_s {UNLOCK_S})"
        )
        # The door opened while Bo's event could not be written (asserted above):
        # the patience, not the card, let him in; the figures are printed.
        every_event_reaches_the_hub(rig, caplog)
        assert let_in(rig, ADA) == {"member": "m1", **GRANTED}


# --- running from memory, then a restart ------------------------------------------------

RESTARTS = {
    # name: (file system, how the data went to memory)
    "read-only at boot, restarted still read-only": ("tmpfs", "read-only at boot"),
    "failed while running, restarted after a check": ("ext4", "failed while running"),
}


@pytest.mark.parametrize("case", RESTARTS)
def test_a_restart_while_the_data_is_in_memory_gives_no_seq_twice(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    """docs/operations.md: a card the kernel turned read-only "stays so until the
    controller is restarted"; a power cut loses the events that were only in
    memory. Neither may cost the events logged after the restart."""
    kind, how = RESTARTS[case]
    with card(kind, tmp_path) as data_dir, running(broker, tmp_path) as rig:
        start_synced(rig)
        if how == "read-only at boot":
            rig.stop_controller()
            disks.remount(data_dir, read_only=True)
            boot(rig)
        else:
            # errors=remount-ro: the card turns read-only under the open file.
            disks.fail(data_dir)
        # Bo's events are written in memory, and reach the hub.
        assert let_in(rig, BO)["granted"]
        disk_ok_at_the_hub(rig, False)
        every_event_reaches_the_hub(rig, caplog)
        rig.stop_controller()
        if how == "failed while running":
            disks.reboot(tmp_path / "card.img", data_dir)
        run = boot(rig)
        ada = len([b for _, t, b in logged(caplog) if t == "access" and b["member"] == "m1"])
        sim(run.runtime).present(READER, "tag", ADA)

        def written() -> bool:
            found = [b for _, t, b in logged(caplog) if t == "access" and b["member"] == "m1"]
            return len(found) > ada

        wait_for(written, "Ada's access event to be written")
        every_event_reaches_the_hub(rig, caplog)


# --- stopping ------------------------------------------------------------------------------


def test_a_stop_right_after_a_full_sync_leaves_the_sync_on_the_card(
    broker: Broker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The card is slow (frozen here) just as the last page of a full sync comes
    in: the sync's events wait for it, and its save waits behind them. A stop
    then (systemd, a technician) must still leave the new dataset on the card
    once the card has written the events: a controller that boots offline
    decides on what its file holds."""
    page = threading.Event()
    go = threading.Event()

    def gated(runtime: Runtime) -> None:
        def hold_the_page(body: dict[str, Any]) -> bool:
            if body.get("t") == "snap":
                page.set()
                go.wait(WAIT_S)
            return True

        gate_data(runtime, monkeypatch, hold_the_page)

    with card("ext4", tmp_path) as data_dir, running(broker, tmp_path) as rig:
        write_atomically(rig.data_file, DATA)
        rig.start_hub()
        run = boot(rig, gated)
        runtime = run.runtime
        try:
            wait_for(page.is_set, "the full sync's page")
            with disks.frozen(data_dir):
                go.set()
                healed(rig)  # live: the controller decides on the new data
                # Its `done` event waits for the card, and the save behind it.
                assert runtime.ask(lambda _c: len(runtime.loop.held)) > 0
                runtime.stop()
                wait_for(lambda: len(runtime.loop.held) == 0, "the loop to stop")
        finally:
            go.set()
        expected = rig.hub_triple()
        rig.stop_controller()
        done = [b for _, t, b in logged(caplog) if t == "sync" and b["what"] == "done"]
        assert done, "the sync's `done` event was written"
        with Storage.open(data_dir / DB_FILE) as storage:
            assert storage.state()[:3] == expected, "the file holds the synced dataset"
