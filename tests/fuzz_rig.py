"""A controller under fuzzing, and what the campaign counts (issue 12 s7).

`FuzzRig` runs the real `Runtime` on the simulator backend with wiring and the
simulator's bench edge (bench inputs go through the simulated hardware, as in
tests/test_sim_bench.py, or are refused by the edge), its loop
on a thread, booted from a stored dataset in a fresh data directory, connected to
the test's real mosquitto. No hub runs: nothing but the fuzzer talks to it, so
nothing may change its data or acknowledge its events.

`run_campaign` feeds it `Fuzzer` messages in batches. After each batch a marker
(a `status` command, answered only after everything queued before it on the
loop) keeps the fuzzer from running far ahead of the controller, and checks the
loop is alive; a probe then times a round trip through the loop. At the end a
last marker goes down the `data` path too (which runs through the decoder
thread, not in order with commands), and the data directory is read with a
fresh SQLite connection and compared with what it held before. `Counts` says
what happened.
"""

from __future__ import annotations

import collections
import hashlib
import resource
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from firmware.core.model import digest_bytes, digest_part
from firmware.core.wire import unseal
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from firmware.runtime import Runtime
from firmware.runtime.loop import STALL_S as LOOP_STALL_S
from firmware.storage import DB_FILE, Storage
from tests.broker import Broker
from tests.fuzz import Fuzzed, Fuzzer
from tests.fuzz_fields import Club
from tests.harness import BASE, CONTROLLER, Rig
from tests.sealing import seal
from tests.waiting import WAIT_S, wait_for

EPOCH, VERSION = "fuzz-epoch", 7
STALL_S = 0.1  # a probe round trip longer than this is counted as slow
MAX_REPORTED = 400  # messages named in a report of changes

WIRING = """
[[doors]]
id = "front"
relay = 17
fail = "secure"
contact = 27
rex = 22

[[doors]]
id = "back"
relay = 16
fail = "secure"

[[lights]]
id = "court1"
relay = 5
warn = 6

[[readers]]
id = "front-in"
kind = "rdm6300"
port = "/dev/ttyAMA0"
door = "front"

[[readers]]
id = "front-keys"
kind = "wiegand"
d0 = 23
d1 = 24
door = "front"

[[readers]]
id = "front-pad"
kind = "keypad"
port = "/dev/ttyUSB1"
door = "front"

[[readers]]
id = "court1-in"
kind = "line"
port = "/dev/ttyUSB2"
light = "court1"
"""
READERS = {"front-in": "rdm6300", "front-keys": "wiegand", "front-pad": "keypad"}
READERS |= {"court1-in": "line"}


def seed_dataset(db: Path, now: float) -> None:
    """The data the controller boots with, as a finished full sync left it."""
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        ("site", "site", {"tz": "UTC", "name": "Fuzz club"}),
        ("door", "front", {"unlock_s": 2}),
        ("door", "back", {"unlock_s": 2}),
        ("light", "court1", {"lead_s": 0, "lag_s": 0, "warn_s": 0, "price": 0}),
        ("group", "g1", {"doors": ["front", "back"], "lights": ["court1"]}),
        ("member", "m1", {"groups": ["g1"], "creds": [["tag", "0a1b2c3d4e"], ["pin", "4711"]]}),
    ]
    records = [(kind, id, cbor2.dumps(body)) for kind, id, body in bodies]
    digest = digest_bytes(sum(digest_part(*r) for r in records))
    with Storage.open(db) as storage:
        storage.save_snapshot(EPOCH, VERSION, records, digest, now)


@dataclass(frozen=True)
class Snapshot:
    """What the data directory holds, read with a connection of its own."""

    dataset: tuple[Any, ...]  # epoch, v, digest, and a hash of every record
    events: dict[int, tuple[str, str]]  # seq -> (type, `what`, or the body for others)
    commands: int
    debits: int

    @classmethod
    def read(cls, db: Path) -> Snapshot:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=WAIT_S)
        try:
            meta = conn.execute("SELECT epoch, v, digest FROM meta").fetchone()
            records = hashlib.sha256()
            for kind, id, rec in conn.execute("SELECT kind, id, rec FROM records ORDER BY 1, 2"):
                records.update(cbor2.dumps([kind, id, rec]))
            events = {
                seq: (type, _what(cbor2.loads(body)))
                for seq, type, body in conn.execute("SELECT seq, type, body FROM outbox")
            }
            (commands,) = conn.execute("SELECT count(*) FROM commands").fetchone()
            (debits,) = conn.execute("SELECT count(*) FROM debits").fetchone()
        finally:
            conn.close()
        return cls((*meta, records.hexdigest()), events, commands, debits)


def _what(body: dict[str, Any]) -> str:
    """An event body in short: what happened, or the whole of an access event."""
    if "what" in body and "door" not in body:
        return str(body["what"])
    return ", ".join(f"{k} {v}" for k, v in body.items() if v is not None)


@dataclass
class Counts:
    """What a campaign saw. `crashes`, `dataset_changes` and `outbox_changes` must
    be 0; `system_events` are the controller's own reports of what it refused
    (rate-limited), expected, and `bench_refused` the bench inputs its bench edge
    refused (logged there, rate-limited, never reaching the core); the rest are
    figures."""

    sent: int = 0
    by_how: collections.Counter[str] = field(default_factory=collections.Counter)
    crashes: int = 0
    dataset_changes: int = 0
    outbox_changes: int = 0  # events of other types logged, or events gone
    changes: list[str] = field(default_factory=list)  # those events
    system_events: collections.Counter[str] = field(default_factory=collections.Counter)
    bench_refused: int = 0
    # What was sent in the batches after which something changed, for the report.
    changed_by: list[str] = field(default_factory=list)
    commands_remembered: int = 0
    probes: int = 0
    stalls: int = 0  # probe round trips over STALL_S (broker, decoder and loop)
    probe_max_s: float = 0.0
    loop_stalls: int = 0  # loop steps over the loop's own STALL_S, during the campaign
    loop_longest_s: float = 0.0  # the longest loop step since the controller started
    rss_start_kib: int = 0
    rss_end_kib: int = 0
    seconds: float = 0.0

    def report(self) -> str:
        """The counts, one per line, for the test's output."""
        kinds = ", ".join(f"{how} {n}" for how, n in sorted(self.by_how.items()))
        system = ", ".join(f"{what} {n}" for what, n in sorted(self.system_events.items()))
        rate = self.sent / self.seconds if self.seconds else 0.0
        return "\n".join(
            [
                f"messages: {self.sent} in {self.seconds:.1f} s ({rate:.0f}/s): {kinds}",
                f"crashes: {self.crashes}",
                f"dataset changes: {self.dataset_changes}",
                f"outbox changes: {self.outbox_changes}",
                *(f"  {change}" for change in self.changes[:20]),
                f"system events (expected, rate-limited): {system or 'none'}",
                f"bench inputs refused by the bench edge (expected): {self.bench_refused}",
                f"command ids remembered (expected): {self.commands_remembered}",
                f"loop steps over {LOOP_STALL_S * 1000:.0f} ms: {self.loop_stalls}"
                f" (longest step {self.loop_longest_s * 1000:.1f} ms)",
                f"marker round trips over {STALL_S * 1000:.0f} ms: {self.stalls} of"
                f" {self.probes} (longest {self.probe_max_s * 1000:.1f} ms)",
                f"memory (resident, the test process): {self.rss_start_kib} KiB"
                f" -> {self.rss_end_kib} KiB",
            ]
        )


class Sender:
    """The fuzzer's MQTT client: publishes anything anywhere, and watches the
    controller's replies to its own markers and its `state`."""

    def __init__(self, broker: Broker, key: bytes) -> None:
        self.key = key
        self._cond = threading.Condition()
        self._answered: set[str] = set()
        self.clock_ok: bool | None = None
        self.link = Link(
            "fuzzer",
            BrokerSettings(broker.host, broker.port),
            self._deliver,
            subscriptions=[f"{BASE}/reply", f"{BASE}/state"],
            persistent=False,
        )
        self.link.start()
        if not self.link.wait_connected(WAIT_S):
            self.link.stop()
            raise AssertionError("the fuzzer could not connect to the broker")

    def _deliver(self, event: LinkEvent) -> None:
        if not isinstance(event, Received):
            return
        body = unseal({CONTROLLER.encode(): self.key}, event.topic, event.payload).body
        with self._cond:
            if body["t"] == "reply" and str(body.get("id", "")).startswith("marker-"):
                self._answered.add(body["id"])
            elif body["t"] == "state" and body.get("online"):
                self.clock_ok = body["clock_ok"]  # None until the controller is online
            self._cond.notify_all()

    def publish(self, leaf: str, payload: bytes) -> None:
        self.link.publish(f"{BASE}/{leaf}", payload)

    def sealed(self, leaf: str, body: dict[str, Any]) -> None:
        self.publish(leaf, seal(self.key, CONTROLLER.encode(), f"{BASE}/{leaf}", body))

    def wait(self, done: Callable[[], bool], what: str, alive: Callable[[], bool]) -> None:
        """Wait until `done()`; fail at once if the controller's loop died."""
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while not done():
                if not alive():
                    raise AssertionError(f"the controller's loop died waiting for {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self._cond.wait(min(left, 0.5))

    def answered(self, id: str) -> bool:
        return id in self._answered

    def close(self) -> None:
        self.link.stop()


class FuzzRig:
    """The controller under fuzzing; `close()` stops everything it started."""

    def __init__(self, broker: Broker, tmp: Path, *, run: bool = True) -> None:
        """`run=False`: the controller is booted, its loop never run (a test then
        drives its core alone, on its own thread)."""
        self.rig = Rig(broker, tmp, extra=WIRING)
        self.db = tmp / "data" / DB_FILE
        self.db.parent.mkdir(parents=True)
        seed_dataset(self.db, time.time())
        self.sender: Sender | None = None
        self._markers = 0
        try:
            if not run:
                self.runtime: Runtime = self.rig.boot()
            else:
                self.runtime = self.rig.run_controller()
                sender = self.sender = Sender(broker, self.rig.key)
                # Its `state` follows its subscriptions on the same connection: once
                # the state is here, so are they. The door's first contact report
                # (its initial state) comes through the hardware: wait for it too,
                # so what the boot logs is in before the first snapshot.
                sender.wait(lambda: sender.clock_ok is not None, "its state", self.alive)
                self.marker()
                boot = ("door", "door front, what closed")
                wait_for(lambda: boot in self.snapshot().events.values(), "the boot's events")
        except BaseException:
            self.close()
            raise
        self.club = Club(
            base=BASE,
            key=self.rig.key,
            kid=CONTROLLER.encode(),
            epoch=EPOCH,
            v=VERSION,
            doors=("front",),
            lights=("court1",),
            readers=dict(READERS),
            bare_doors=("back",),
        )

    def alive(self) -> bool:
        return self.rig.loop_alive()

    def send(self, message: Fuzzed) -> None:
        self.publish(message.leaf, message.payload)

    def publish(self, leaf: str, payload: bytes) -> None:
        assert self.sender is not None
        self.sender.publish(leaf, payload)

    def marker(self) -> None:
        """A `status` command, waited for: what went on the loop before it is done."""
        assert self.sender is not None
        sender = self.sender
        self._markers += 1
        id = f"marker-{self._markers}"
        now = int(time.time())
        body = {"t": "cmd", "id": id, "cmd": "status", "args": {}, "iat": now, "exp": now + 60}
        sender.sealed("cmd", body)
        sender.wait(lambda: sender.answered(id), f"the reply to {id}", self.alive)

    def drain(self) -> None:
        """Wait until everything sent so far is done, on every path: a marker for
        commands and bench inputs, then two on `data` (through the decoder) that
        turn the controller's clock check wrong and right again, which its
        `state` shows. Each leaves one `system`/`clock` event."""
        assert self.sender is not None
        sender = self.sender
        self.marker()
        for skew, ok in ((-86400, False), (0, True)):
            body = {"t": "delta", "epoch": EPOCH, "from": 0, "to": 1, "ops": []}
            sender.sealed("data", body | {"now": int(time.time()) + skew})
            sender.wait(lambda ok=ok: sender.clock_ok is ok, f"clock_ok {ok}", self.alive)

    def probe(self) -> float:
        """Seconds for a round trip through the loop (it waits its turn behind
        whatever is queued: a loop stuck in one step shows here)."""
        start = time.monotonic()
        self.marker()
        return time.monotonic() - start

    def snapshot(self) -> Snapshot:
        return Snapshot.read(self.db)

    def bench_refused(self) -> int:
        """Bench inputs the bench edge refused so far (paho's thread counts them:
        read after a marker sent behind them)."""
        assert self.rig.bench is not None
        return self.rig.bench.refused

    def glance(self) -> tuple[Any, ...]:
        """A cheap look at the data directory: the data version and the events
        that are not `system` ones (compared batch by batch, to say which batch
        changed something)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=WAIT_S)
        try:
            meta = conn.execute("SELECT epoch, v, digest FROM meta").fetchone()
            query = "SELECT count(*), min(seq) FROM outbox WHERE type != 'system'"
            return (*meta, *conn.execute(query).fetchone())
        finally:
            conn.close()

    def close(self) -> None:
        try:
            if self.sender is not None:
                self.sender.close()
        finally:
            self.rig.close()


def rss_kib() -> int:
    """The test process's resident memory now (the controller runs in it)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() // 1024


def run_campaign(rig: FuzzRig, count: int, *, seed: int, batch: int = 100) -> Counts:
    """Send `count` fuzzed messages to `rig` and count what they did."""
    counts = Counts()
    fuzzer = Fuzzer(rig.club, seed, now=int(time.time()))
    before, refused = rig.snapshot(), rig.bench_refused()
    start = time.monotonic()
    counts.rss_start_kib = rss_kib()
    loop = rig.runtime.loop
    stalls_before = loop.stalls
    sent: list[str] = []
    last_batch: list[str] = []  # data goes through the decoder, a batch late at most
    seen = rig.glance()
    try:
        for message in fuzzer.messages(count):
            rig.send(message)
            counts.sent += 1
            counts.by_how[message.how] += 1
            sent.append(f"{message.how}: {message.what}")
            if len(sent) < batch and counts.sent < count:
                continue
            rig.marker()
            seconds = rig.probe()
            counts.probes += 1
            counts.stalls += seconds > STALL_S
            counts.probe_max_s = max(counts.probe_max_s, seconds)
            if (now := rig.glance()) != seen and len(counts.changed_by) < MAX_REPORTED:
                counts.changed_by += [*last_batch, *sent][: MAX_REPORTED - len(counts.changed_by)]
            seen, last_batch, sent = now, sent, []
            fuzzer.now = int(time.time())
        rig.drain()
    except AssertionError:
        if rig.alive():
            raise
        counts.crashes = 1
        counts.changed_by += [*last_batch, *sent][:MAX_REPORTED]
    counts.seconds = time.monotonic() - start
    counts.rss_end_kib = rss_kib()
    counts.loop_stalls = loop.stalls - stalls_before  # an int the loop updates whole
    counts.loop_longest_s = loop.longest_step_s
    counts.bench_refused = rig.bench_refused() - refused
    compare(before, rig.snapshot(), counts)
    return counts


def compare(before: Snapshot, after: Snapshot, counts: Counts) -> None:
    """What changed in the data directory, into `counts`."""
    debits = abs(after.debits - before.debits)
    counts.dataset_changes = int(before.dataset != after.dataset) + debits
    gone = [seq for seq in before.events if seq not in after.events]
    new = [after.events[seq] for seq in after.events if seq not in before.events]
    others = [event for event in new if event[0] != "system"]
    counts.outbox_changes = len(gone) + len(others)
    counts.changes = [f"gone: {before.events[seq]}" for seq in gone]
    counts.changes += [f"logged: {type}: {what}" for type, what in others]
    counts.system_events = collections.Counter(what for type, what in new if type == "system")
    counts.commands_remembered = after.commands - before.commands
