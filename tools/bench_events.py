"""`alc bench events`: durable event logging, and the upload after an outage.

    alc bench events [--events 100000] [--members 1000] [--seed S] [--json]

Everything runs in this one process, each part in its own threads; the upload goes
through a throwaway mosquitto (`tools.broker`) on a free loopback port. The hub's
database and the controller's file start with the same synthetic club
(`tools.gen`), so the controller decides on real data and needs no full sync.

1. `log_per_s`: the controller `Runtime` (simulator backend, one reader at a door)
   runs with its broker down: an outage. `--events` presentations at the reader
   (90% member tags, 10% unknown tags) are handed to its queue as fast as it takes
   them (`Runtime.submit`, as the reader's thread or the simulator's bench edge
   would); each is decided and logged as one `access` event. Measured from the
   first input until the outbox on disk (read by a separate connection) holds
   them all: durable events per second, decisions included.
2. `upload_per_s`: that controller stops; the broker and the reference hub start
   (`Hub` in a `HubLoop`), then a controller starts again on the same file with the
   queued events (plus its boot event) in its outbox. Measured from its MQTT
   connection coming up until its outbox on disk is empty: every event uploaded,
   stored by the hub and acknowledged, and the acknowledged rows deleted.
   `timer_late_upload_p99_ms`, `timer_late_upload_max_ms`: all along the upload,
   `MAX_RELOCK_DOORS` relock probes (`tools.bench_rig`) unlock their doors,
   `unlock_s = 1`, and take how late each relay went off; their own events join
   the upload, which is done once everything up to the boot event is acknowledged.

The hub, the controller and the bench share one interpreter (and its GIL), which a
real installation never does; the CPU time of this process and of mosquitto is
printed for each phase. A benchmark, not a test: it prints what it measured and
exits 0 whether the targets are met or not (1 if a step did not finish at all).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from firmware.core.errors import LocalError
from firmware.core.inputs import Presented
from firmware.mqtt import BrokerSettings
from firmware.runtime import Runtime
from firmware.storage import DB_FILE, Storage
from sim.bench import BenchEdge
from tools.bench import Figure, format_table, percentile, positive
from tools.bench_rig import (
    CONTROLLER,
    KNOWN_SHARE,
    MAX_RELOCK_DOORS,
    READER,
    RELOCK_ANSWER_S,
    RELOCK_UNLOCK_S,
    SITE,
    BenchError,
    RelockProbe,
    controller_config,
    cpu_of,
    in_thread,
    relock_door,
    relock_reader,
    relock_records,
    relock_relay,
    relock_tag,
    wait_for,
)
from tools.broker import Broker
from tools.gen import Club, generate
from tools.hub.changes import WireOp
from tools.hub.db import HubDB
from tools.hub.keys import write_new_key
from tools.hub.loop import HubLoop
from tools.hub.server import Hub

DISTINCT_INPUTS = 1000  # made once, then cycled: making them is the bench's cost, not ours
PACE_DEPTH = 5000  # inputs queued at most while feeding: half the inbox, so none drops
WAIT_S = 600.0  # for any one step: generous, the bench reports how long it took
JOIN_S = 60.0


@dataclass
class Results:
    """Everything one run measured."""

    events: int
    log_s: float
    log_cpu_s: float
    dropped: int
    decision_ms: list[float]
    queued: int
    upload_s: float
    upload_cpu_s: float
    broker_cpu_s: float
    connect_s: float
    hub_events: int
    hub_acked: int
    timer_late_ms: list[float]  # the relock probes' during the upload, sorted

    def figures(self) -> list[Figure]:
        return [
            Figure(
                "log_per_s",
                "durable events logged, deciding",
                (self.events - self.dropped) / self.log_s,
                "/s",
                2000,
                at_least=True,
            ),
            Figure(
                "upload_per_s",
                "events uploaded and acknowledged",
                self.queued / self.upload_s,
                "/s",
                10000,
                at_least=True,
            ),
            Figure(
                "timer_late_upload_p99_ms",
                "relock lateness p99 during upload",
                _p(self.timer_late_ms, 0.99),
                "ms",
                20,
            ),
            Figure(
                "timer_late_upload_max_ms",
                "relock lateness max during upload",
                _p(self.timer_late_ms, 1.0),
                "ms",
                None,
            ),
        ]


def _p(sorted_ms: Sequence[float], fraction: float) -> float:
    return percentile(sorted_ms, fraction) if sorted_ms else math.nan


class _Outbox:
    """The controller's outbox as the disk holds it, through its own read-only
    connection (the runtime's connections are the loop's)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def last_seq(self) -> int:
        (last,) = self._conn.execute("SELECT last_seq FROM outbox_meta").fetchone()
        return int(last)

    def oldest(self) -> float:
        """The oldest seq still in the outbox; infinity when it is empty."""
        (seq,) = self._conn.execute("SELECT min(seq) FROM outbox").fetchone()
        return math.inf if seq is None else int(seq)

    def accesses(self) -> int:
        """Access events in the outbox. Counted, not read off `last_seq`: a boot
        numbers its events on from the clock, far past the file's last seq."""
        (n,) = self._conn.execute("SELECT count(*) FROM outbox WHERE type = 'access'").fetchone()
        return int(n)

    def count(self) -> int:
        (n,) = self._conn.execute("SELECT count(*) FROM outbox").fetchone()
        return int(n)

    def close(self) -> None:
        self._conn.close()


def _inputs(club: Club, rng: random.Random, n: int) -> list[Presented]:
    """`n` presentations at the reader, as its thread would hand them over."""
    out = []
    for _ in range(n):
        if club.members and rng.random() < KNOWN_SHARE:
            value = club.tag(rng.randrange(club.members))
        else:
            value = club.unknown_tag(rng.randrange(1 << 20))
        out.append(Presented(READER, "tag", value))
    return out


def run(tmp: Path, events: int, members: int, seed: int) -> Results:
    """Set everything up in `tmp`, measure, and stop everything again."""
    with ExitStack() as stack:
        broker = Broker(tmp / "broker", persistence=False)  # started for phase 2
        stack.callback(broker.stop)
        keys_dir = tmp / "keys"
        write_new_key(keys_dir, CONTROLLER)
        config = controller_config(tmp, keys_dir, broker, relock=MAX_RELOCK_DOORS)
        club = Club(members, seed)

        # The same dataset on both sides: the controller is in sync from the start.
        db = HubDB(tmp / "hub.sqlite3")
        stack.callback(db.close)
        load: list[WireOp] = [["put", kind, id, rec] for kind, id, rec in generate(members, seed)]
        load += (["put", kind, id, rec] for kind, id, rec in relock_records(club))
        db.commit(load, replayable=False, now=int(time.time()))
        data_dir = config.controller.data_dir
        data_dir.mkdir(parents=True)
        with Storage.open(data_dir / DB_FILE) as storage:
            records = [(str(op[1]), str(op[2]), bytes(op[3])) for op in load]
            storage.save_snapshot(db.epoch, db.v, records, db.digest, time.time())
        del load, records
        disk = _Outbox(data_dir / DB_FILE)
        stack.callback(disk.close)

        # 1. Logging while the broker is down.
        inputs = _inputs(club, random.Random(seed), DISTINCT_INPUTS)
        runtime = Runtime(config, edges=[BenchEdge])
        stop_offline = in_thread(stack, runtime.run, runtime.stop, "alc-bench-offline")
        c0 = time.process_time()
        t0 = time.monotonic()
        for i in range(events):
            # The inbox drops what comes from outside when full (a flood); the
            # bench feeds as fast as the loop takes, not faster.
            while runtime.inbox.depth() >= PACE_DEPTH:
                time.sleep(0.001)
            runtime.submit(inputs[i % DISTINCT_INPUTS])
        dropped = runtime.inbox.dropped
        logged_at = wait_for(
            lambda: disk.accesses() >= events - dropped, f"{events} durable events"
        )
        log_s = logged_at - t0
        log_cpu_s = time.process_time() - c0
        # The loop appends to its samples while it runs: copy them on the loop.
        samples = runtime.ask(lambda _core: list(runtime.decision_latency_s))
        decision_ms = sorted(s * 1000 for s in samples)
        stop_offline()

        # 2. The hub comes back; a controller with the queued events reconnects.
        broker.start()
        settings = BrokerSettings(broker.host, broker.port)
        hub = Hub(db, site=SITE, keys={})
        hub_loop = HubLoop(
            hub, data_file=None, keys_dir=keys_dir, settings=settings, client_id="alc-bench-hub"
        )
        stop_hub = in_thread(stack, hub_loop.run, hub_loop.stop, "alc-bench-hub")
        if not hub_loop.wait_connected(WAIT_S):
            raise BenchError(f"the hub could not connect to mosquitto on port {broker.port}")
        runtime = Runtime(config, edges=[BenchEdge])
        queued = disk.count() + 1  # and the boot event
        pid = broker.process.pid if broker.process else None
        b0 = cpu_of(pid)
        c0 = time.process_time()
        started = time.monotonic()
        offline_last = disk.last_seq()
        stop_online = in_thread(stack, runtime.run, runtime.stop, "alc-bench-online")
        up = wait_for(lambda: runtime.link.connected, "the controller to connect")
        # The relock probes log events of their own while the backlog goes up:
        # the upload is done when everything up to the boot event is acknowledged.
        wait_for(lambda: disk.last_seq() > offline_last, "the boot event on disk")
        backlog_last = disk.last_seq()
        with ExitStack() as probes:
            relocks = [
                probes.enter_context(_relock_probe(runtime, club, k, seed))
                for k in range(MAX_RELOCK_DOORS)
            ]
            emptied = wait_for(
                lambda: disk.oldest() > backlog_last, f"the hub to acknowledge {queued} events"
            )
        upload_cpu_s = time.process_time() - c0
        broker_cpu_s = cpu_of(pid) - b0
        stop_online()
        stop_hub()
        return Results(
            events=events,
            log_s=log_s,
            log_cpu_s=log_cpu_s,
            dropped=dropped,
            decision_ms=decision_ms,
            queued=queued,
            upload_s=emptied - up,
            upload_cpu_s=upload_cpu_s,
            broker_cpu_s=broker_cpu_s,
            connect_s=up - started,
            hub_events=len(db.events(CONTROLLER)),
            hub_acked=db.acked(CONTROLLER),
            timer_late_ms=sorted(ms for probe in relocks for ms in probe.late_ms()),
        )


def _relock_probe(runtime: Runtime, club: Club, k: int, seed: int) -> RelockProbe:
    """A probe on relock door `k` of the benched controller (`tools.bench_rig`);
    its member's tag is handed to the loop as that door's reader would."""
    from hal.sim import SimBackend  # gpiozero: only once the bench runs, as the runtime does

    hardware = runtime.hardware
    if not isinstance(hardware, SimBackend):
        raise BenchError("the benched controller has no simulated hardware")
    door = relock_door(k)
    tag = Presented(relock_reader(k), "tag", relock_tag(club))

    def present() -> None:
        runtime.submit(tag)

    def deadline() -> float | None:
        try:
            return runtime.ask(
                lambda core: core.facility.doors.status(door).unlock_until,
                timeout=RELOCK_ANSWER_S,
            )
        except TimeoutError as exc:
            raise BenchError(f"{door}: no relock deadline from the loop") from exc

    return RelockProbe(
        hardware.pin_factory.pin(relock_relay(k)),
        present,
        deadline,
        seed + k,
        clock=runtime.clock,
        door=door,
    )


def bench_events(argv: Sequence[str]) -> int:
    """`alc bench events`: durable logging rate, upload rate after an outage."""
    parser = argparse.ArgumentParser(
        prog="alc bench events",
        description="durable event logging while deciding, and the upload after an outage",
    )
    parser.add_argument("--events", type=positive, default=100_000, help="default 100000")
    parser.add_argument("--members", type=positive, default=1000, help="default 1000")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(list(argv))
    try:
        with tempfile.TemporaryDirectory(prefix="alc-bench-events-") as tmp:
            results = run(Path(tmp), args.events, args.members, args.seed)
    except LocalError as exc:
        print(f"alc bench events: {exc}", file=sys.stderr)
        return 1
    figures = results.figures()
    if args.json:
        print(json.dumps({f.key: round(f.value, 3) for f in figures}))
        return 0
    _report(results, args.members, args.seed)
    print()
    print(format_table(figures))
    if args.events != 100_000:
        print("(the targets are for --events 100000)")
    return 0


def _report(r: Results, members: int, seed: int) -> None:
    ms = r.decision_ms
    p50 = percentile(ms, 0.5) if ms else math.nan
    p99 = percentile(ms, 0.99) if ms else math.nan
    print(f"alc bench events: {r.events:,} presentations, {members:,} members, seed {seed}")
    print(
        f"offline: {r.events:,} access events durable in {r.log_s:.2f} s "
        f"(CPU {r.log_cpu_s:.2f} s), {r.dropped} inputs dropped; queued to decided "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (the queue is kept full on purpose)"
    )
    print(
        f"reconnect: connected {r.connect_s:.2f} s after start; {r.queued:,} events "
        f"uploaded and acknowledged in {r.upload_s:.2f} s (CPU {r.upload_cpu_s:.2f} s "
        f"here + {r.broker_cpu_s:.2f} s mosquitto); the hub holds {r.hub_events:,}, "
        f"acknowledged up to seq {r.hub_acked:,}"
    )
    late = r.timer_late_ms
    print(
        f"relocks during the upload: {len(late)} on {MAX_RELOCK_DOORS} doors with unlock_s "
        f"{RELOCK_UNLOCK_S} s (their events go up too); late by p50 {_p(late, 0.5):.2f} ms, "
        f"p99 {_p(late, 0.99):.2f} ms, max {_p(late, 1.0):.2f} ms"
    )
