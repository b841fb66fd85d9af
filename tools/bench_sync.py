"""`alc bench sync`: the sync path end to end, through a real mosquitto on loopback.

    alc bench sync [--members 100000 | --credentials N] [--deltas 10000] [--rate 100]
                   [--syncs 20] [--seed S] [--json]

Three parts talk through a throwaway mosquitto (`tools.broker`) on a free port:

- the reference hub (`Hub` in a `HubLoop`), in a child process of its own (started
  with "spawn": this process has threads), as on a real site where the hub is
  another machine. Its `HubDB` is loaded directly with the synthetic club of
  `tools.gen` as one change set (no data file). It takes orders on a pipe
  (`HubProcess`): commit the deltas, stop;
- in this process, a controller `Runtime` with the simulator backend and one
  reader at a door, plus the relock probe's door and reader (`tools.bench_rig`);
- and a bench client that sends commands and bench inputs, as `alc ctl` and the
  simulator would. All timing is taken here.

What it measures, in order:

1. `cold_sync_s`: the controller starts with no data; from `run()` until it holds
   the hub's dataset (the new dataset swapped in). The record-by-record build.
2. `sync_s`: a `sync` command, from publishing it until the `done` reply arrives
   (the median of `--syncs` commands, 20 by default; latencies pooled over all).
   The dataset is unchanged since the cold sync, so the controller re-fetches and
   re-hashes every record but reuses each one it already holds
   (`StoreBuilder(previous=...)`), as in the twice-daily full sync.
   `p50_during_sync_ms`, `p99_during_sync_ms`: while it runs, presentations arrive
   on the bench topic at `--rate` per second (90% member tags, 10% unknown tags);
   the runtime's own decision latency (`Runtime.decision_latency_s`: from the event
   being queued to the decision) of those presentations. `p99_idle_ms` is the same
   for one second of presentations before the command, with nothing else going on.
   `timer_late_p99_ms`, `timer_late_max_ms`: all along the sync commands (from the
   first one's publish until the last one's snapshot is on disk) the relock probe
   (`RelockProbe`) unlocks its door, `unlock_s = 1`, about once every 1.1 s, and
   takes how long after its relock deadline the relay went off.
3. `deltas_per_s`: the hub commits `--deltas` single-op change sets (an updated
   member each) as fast as it can, `HUB_BATCH` change sets per database
   transaction (one flush each), and publishes each as its own `delta`; from the
   first publish until the controller's durable stored version (its SQLite file)
   reaches the last one.
4. `nochange_sync_ms`: before the deltas, `NOCHANGE_SYNCS` twice-daily full
   syncs with nothing changed since (brought forward to now on the loop): from
   due until the hub's `current` ends each (median); nothing is rewritten.
5. `big_delta_ms`: then `--big-deltas` change sets of `BIG_DELTA_OPS` updated
   members each, one delta each; the phase's wall time over their number.
   `timer_late_deltas_p99_ms`, `timer_late_deltas_max_ms`: the relock probe runs
   all along parts 3 and 5, which repeat (unmeasured) until it has timed
   `--delta-relocks` relocks.

Before the run, `tools.floor_ref` measures the floor of this machine
(`../shared/floor.py`) in this process; `sync_ratio` and `cold_ratio` are the
two full syncs over records x (`floor_us` + `store_us`), and `--json` adds
`floor_us` and `store_us`. Without floor.py the bench says so and prints
absolute figures only.

Every generated member holds two credentials (a tag and a PIN): `--credentials N`
is `--members N/2`.

The controller and the bench clients share one interpreter (and its GIL); the hub
has its own, so building and sealing snapshot pages does not hold up the
controller's loop. The CPU time of this process, of the hub's and of mosquitto is
printed for each phase (all on one machine), and the peak memory of this process
and of the hub's. A benchmark, not a test: it prints what it measured and exits 0
whether the targets are met or not (1 if a step did not finish at all).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import queue
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cbor2

from firmware.core.controller import Controller
from firmware.core.errors import LocalError, RemoteError
from firmware.core.wire import IV_BYTES, seal, unseal
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from firmware.runtime import Runtime
from sim.bench import BenchEdge
from tools.bench import Figure, format_table, peak_rss_mb, percentile, positive
from tools.bench_rig import (
    BASE,
    CONTROLLER,
    KNOWN_SHARE,
    POLL_S,
    READER,
    RELOCK_ANSWER_S,
    RELOCK_DOOR,
    RELOCK_READER,
    RELOCK_RELAY,
    RELOCK_UNLOCK_S,
    SITE,
    BenchError,
    RelockProbe,
    controller_config,
    cpu_of,
    in_thread,
    peak_rss_mb_of,
    relock_records,
    relock_tag,
    wait_for,
)
from tools.broker import Broker
from tools.ctl import build_command
from tools.floor_ref import Floor, measure_floor
from tools.gen import Club, generate
from tools.hub.changes import WireOp
from tools.hub.db import HubDB
from tools.hub.keys import read_controller_key, write_new_key
from tools.hub.loop import HubLoop
from tools.hub.server import Hub, Outgoing

HUB_BATCH = 250  # single-op change sets per hub transaction while sending deltas
BIG_DELTA_OPS = 1000  # ops of each large delta (an updated member each)
DELTA_POLL_S = 0.02  # how often the deltas' progress is asked of the loop
NOCHANGE_SYNCS = 5  # twice-daily syncs of an unchanged club timed
IDLE_S = 3.0
WAIT_S = 300.0  # for any one step: generous, the bench reports how long it took
JOIN_S = 30.0
KILL_S = 5.0  # after terminate(), before kill()


@dataclass
class Phase:
    """Wall and CPU time of one phase: this process (every thread), the hub's
    process and mosquitto."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    hub_cpu_s: float = 0.0

    def describe(self) -> str:
        return (
            f"CPU {self.cpu_s:.2f} s here + {self.hub_cpu_s:.2f} s hub "
            f"+ {self.broker_cpu_s:.2f} s mosquitto"
        )


class _Meter:
    """Measures one `Phase` from construction to `stop()`."""

    def __init__(self, broker: Broker, hub: HubProcess) -> None:
        self._pid = broker.process.pid if broker.process else None
        self._hub_pid = hub.pid
        self._t0 = time.monotonic()
        self._c0 = time.process_time()
        self._b0 = cpu_of(self._pid)
        self._h0 = cpu_of(self._hub_pid)

    def stop(self, end: float | None = None) -> Phase:
        return Phase(
            (end if end is not None else time.monotonic()) - self._t0,
            time.process_time() - self._c0,
            cpu_of(self._pid) - self._b0,
            cpu_of(self._hub_pid) - self._h0,
        )


@dataclass(frozen=True)
class HubSpec:
    """What the hub process needs to set itself up (picklable, for "spawn")."""

    db_path: str
    keys_dir: str
    host: str
    port: int
    members: int
    seed: int


@dataclass(frozen=True)
class HubReady:
    """The hub process's first message: its dataset is loaded and it is connected."""

    version: tuple[str, int, bytes]  # (epoch, v, digest)
    records: int
    page_size: int


def _hub_child(conn: Connection, spec: HubSpec) -> None:
    """Entry point of the hub process. Loads the club, serves it in a `HubLoop`,
    sends `HubReady`, then obeys the parent: `("deltas", count, ops)` commits `count`
    change sets of `ops` updated members each and answers `("deltas", first, last)` (monotonic times
    of the first publish and of the last commit; the clock is system-wide);
    `("stop",)` or the parent's end of the pipe closing stops it. A failure is
    answered `("error", text)`."""
    # Ctrl-C reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with ExitStack() as stack:
            db = HubDB(spec.db_path)
            stack.callback(db.close)
            club = Club(spec.members, spec.seed)
            load: list[WireOp] = [
                ["put", kind, id, rec] for kind, id, rec in generate(spec.members, spec.seed)
            ]
            load += (["put", kind, id, rec] for kind, id, rec in relock_records(club))
            db.commit(load, replayable=False, now=int(time.time()))
            records = len(load)
            del load
            hub = Hub(db, site=SITE, keys={})
            hub_loop = HubLoop(
                hub,
                data_file=None,
                keys_dir=Path(spec.keys_dir),
                settings=BrokerSettings(spec.host, spec.port),
                client_id="alc-bench-hub",
            )
            in_thread(stack, hub_loop.run, hub_loop.stop, "alc-bench-hub")
            if not hub_loop.wait_connected(WAIT_S):
                raise BenchError(f"the hub could not connect to mosquitto on port {spec.port}")
            conn.send(HubReady((db.epoch, db.v, db.digest), records, hub.page_size))
            while True:
                try:
                    order = conn.recv()
                except EOFError:
                    return  # the parent is gone
                if order[0] == "deltas":
                    first, last = _commit_deltas(hub_loop, club, order[1], order[2], spec.seed)
                    conn.send(("deltas", first, last))
                else:
                    return
    except Exception as exc:
        with suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


class HubProcess:
    """The reference hub in a child process (`_hub_child`), driven over a pipe.
    `stop()` always leaves the process joined: asked, then terminated, then killed."""

    def __init__(self, spec: HubSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(
            target=_hub_child, args=(child_conn, spec), name="alc-bench-hub", daemon=True
        )
        try:
            self._process.start()
        finally:
            child_conn.close()  # the child holds its own copy
        self.pid = self._process.pid

    def send(self, *order: object) -> None:
        self._conn.send(order)

    def receive(self, what: str, timeout: float = WAIT_S) -> Any:
        """The hub's next message; `BenchError` if it reports an error, exits or
        says nothing for `timeout` seconds."""
        if not self._conn.poll(timeout):
            raise BenchError(f"timed out after {timeout:g} s waiting for the hub: {what}")
        try:
            message = self._conn.recv()
        except EOFError:
            self._process.join(JOIN_S)
            raise BenchError(
                f"the hub process exited (code {self._process.exitcode}) before {what}"
            ) from None
        if isinstance(message, tuple) and message[0] == "error":
            raise BenchError(f"the hub failed before {what}: {message[1]}")
        return message

    def stop(self) -> None:
        with suppress(OSError, ValueError):  # it is gone already
            self._conn.send(("stop",))
        self._process.join(JOIN_S)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(KILL_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


class BenchClient:
    """Sends sealed commands and bench inputs to the controller; collects replies."""

    def __init__(self, settings: BrokerSettings, key: bytes) -> None:
        self.key = key
        self.replies: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.link = Link(
            "alc-bench-client",
            settings,
            self._deliver,
            subscriptions=[f"{BASE}/reply"],
            persistent=False,
        )

    def _deliver(self, event: LinkEvent) -> None:
        if not isinstance(event, Received):
            return
        at = time.monotonic()
        try:
            body = unseal({CONTROLLER.encode(): self.key}, event.topic, event.payload).body
        except RemoteError:
            return
        self.replies.put((at, body))

    def publish(self, leaf: str, body: dict[str, Any]) -> None:
        """Seal `body` for `{base}/{leaf}` and publish it."""
        topic = f"{BASE}/{leaf}"
        iv = os.urandom(IV_BYTES)
        self.link.publish(topic, seal(self.key, CONTROLLER.encode(), topic, body, iv=iv))

    def final_reply(self, id: str, timeout: float) -> tuple[float, dict[str, Any]]:
        """The first `done`/`failed`/`rejected` reply to command `id`, with its
        arrival time (monotonic)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, body = self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"no final reply to command {id} in {timeout:g} s") from None
            if body.get("id") == id and body.get("status") in ("done", "failed", "rejected"):
                return at, body


class Presenter:
    """A thread presenting credentials at the reader at `rate` per second. When this
    thread wakes late, the schedule moves on rather than sending the missed ones
    back to back: members arrive one by one, not in bursts of the bench's making."""

    def __init__(self, client: BenchClient, club: Club, rate: float, seed: int) -> None:
        self._client = client
        self._club = club
        self._rate = rate
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._last: str | None = None
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="alc-bench-presenter")

    def __enter__(self) -> Presenter:
        # The first one at once, so even a very short phase has a sample.
        self._present()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(JOIN_S)

    def _run(self) -> None:
        due = time.monotonic() + 1 / self._rate
        while not self._stop.is_set():
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            due = max(due, time.monotonic()) + 1 / self._rate
            self._present()

    def _present(self) -> None:
        rng, club = self._rng, self._club
        value = self._last
        # Never the same tag twice in a row: the reader takes a tag held to it
        # as one read (`repeat_ms`), so no decision would come for the second,
        # and the bench would wait for it (likely in a small club).
        while value == self._last:
            if rng.random() < KNOWN_SHARE:
                value = club.tag(rng.randrange(club.members))
            else:
                value = club.unknown_tag(rng.randrange(1 << 20))
        self._last = value
        body = {"t": "present", "reader": READER, "credkind": "tag", "value": value}
        self._client.publish("bench/in", body)
        self.sent += 1


def _latencies_ms(runtime: Runtime, first: int, count: int) -> list[float]:
    """The decision latencies of the `count` presentations after sample `first`,
    in ms, sorted; waits until the loop has decided them all."""
    samples = runtime.decision_latency_s
    wait_for(lambda: len(samples) >= first + count, f"{count} decisions")
    # Copied on the loop, which appends to it (the relock probe's presentations
    # go on): once a phase, after its measurement.
    taken = runtime.ask(lambda _: list(samples)[first : first + count])
    return sorted(s * 1000 for s in taken)


def _present_idle(
    runtime: Runtime, client: BenchClient, club: Club, rate: float, seed: int
) -> list[float]:
    """Decision latencies (ms, sorted) of `IDLE_S` seconds of presentations with
    nothing else going on."""
    first = len(runtime.decision_latency_s)
    with Presenter(client, club, rate, seed) as presenter:
        time.sleep(IDLE_S)
    return _latencies_ms(runtime, first, presenter.sent)


@dataclass
class Results:
    """Everything one run measured."""

    records: int
    pages: int
    cold: Phase
    cold_durable_s: float
    command: Phase
    command_ms: int
    idle_ms: list[float]
    during_ms: list[float]
    deltas: int
    delta_phase: Phase
    hub_commit_s: float
    memory_s: float
    big_deltas: int  # deltas of BIG_DELTA_OPS ops each, after the single-op ones
    big_phase: Phase
    deltas_late_ms: list[float]  # the relock probe's during both delta phases, sorted
    sync_longest_ms: float  # the loop's longest step during the sync commands
    nochange_ms: list[float]  # twice-daily syncs of an unchanged club, request to current
    deltas_longest_ms: float  # and during the delta phases
    loop_priority: str  # what the controller's loop ran at (`members_first`)
    timer_late_ms: list[float]  # the relock probe's, sorted
    unlock_ms: list[float]  # the relock probe's, decision to relay on, sorted
    peak_mb: float  # this process: the controller and the bench clients
    hub_peak_mb: float

    def figures(self) -> list[Figure]:
        during, idle = self.during_ms, self.idle_ms
        return [
            Figure("sync_s", "full sync, command to done", self.command.wall_s, "s", 5),
            Figure("cold_sync_s", "full sync, cold (boot, empty)", self.cold.wall_s, "s", None),
            Figure(
                "deltas_per_s",
                "single-op deltas applied, durable",
                self.deltas / self.delta_phase.wall_s,
                "/s",
                5000,
                at_least=True,
            ),
            Figure("p50_during_sync_ms", "decision p50 during sync", _p(during, 0.5), "ms", None),
            Figure("p99_during_sync_ms", "decision p99 during sync", _p(during, 0.99), "ms", 2),
            Figure("p99_idle_ms", "decision p99, idle", _p(idle, 0.99), "ms", 0.5),
            Figure(
                "timer_late_p99_ms",
                "relock lateness p99 during sync",
                _p(self.timer_late_ms, 0.99),
                "ms",
                20,
            ),
            Figure(
                "timer_late_max_ms",
                "relock lateness max during sync",
                _p(self.timer_late_ms, 1.0),
                "ms",
                None,
            ),
            Figure(
                "nochange_sync_ms",
                "twice-daily sync, nothing changed (median)",
                _p(sorted(self.nochange_ms), 0.5),
                "ms",
                None,
            ),
            Figure(
                "big_delta_ms",
                f"{BIG_DELTA_OPS:,}-op delta, durable (mean)",
                self.big_phase.wall_s / self.big_deltas * 1000,
                "ms",
                None,
            ),
            Figure(
                "timer_late_deltas_p99_ms",
                "relock lateness p99 during deltas",
                _p(self.deltas_late_ms, 0.99),
                "ms",
                20,
            ),
            Figure(
                "timer_late_deltas_max_ms",
                "relock lateness max during deltas",
                _p(self.deltas_late_ms, 1.0),
                "ms",
                None,
            ),
        ]


def floor_figures(r: Results, floor: Floor | None) -> list[Figure]:
    """The full syncs against the floor of the same run: what any Python
    controller must spend per record to decode, hash and index it, plus one
    SQLite insert (`tools.floor_ref`), times the records. None without floor.py."""
    if floor is None:
        return []
    least_s = r.records * (floor.floor_us + floor.store_us) / 1e6
    return [
        Figure(
            "sync_ratio", "full sync, command to done / floor", r.command.wall_s / least_s, "x", 1.5
        ),
        Figure("cold_ratio", "full sync, cold / floor", r.cold.wall_s / least_s, "x", 2),
    ]


def _p(sorted_ms: Sequence[float], fraction: float) -> float:
    return percentile(sorted_ms, fraction) if sorted_ms else math.nan


def run(
    tmp: Path,
    members: int,
    deltas: int,
    rate: float,
    seed: int,
    syncs: int = 1,
    big_deltas: int = 1,
    delta_relocks: int = 1,
) -> Results:
    """Set everything up in `tmp`, measure, and stop everything again."""
    with ExitStack() as stack:
        broker = Broker(tmp / "broker", persistence=False)
        broker.start()
        stack.callback(broker.stop)
        settings = BrokerSettings(broker.host, broker.port)
        keys_dir = tmp / "keys"
        write_new_key(keys_dir, CONTROLLER)
        key = read_controller_key(keys_dir, CONTROLLER)

        spec = HubSpec(
            str(tmp / "hub.sqlite3"), str(keys_dir), broker.host, broker.port, members, seed
        )
        hub = HubProcess(spec)
        stack.callback(hub.stop)
        client = BenchClient(settings, key)
        client.link.start()
        stack.callback(client.link.stop)
        ready: HubReady = hub.receive("its dataset was loaded and it connected")
        if not client.link.wait_connected(WAIT_S):
            raise BenchError(f"could not connect to mosquitto on port {broker.port}")
        records = ready.records

        # The cold sync: until the controller holds the hub's dataset.
        config = controller_config(tmp, keys_dir, broker, relock=1)
        runtime = Runtime(config, edges=[BenchEdge])  # presentations come on the bench
        meter = _Meter(broker, hub)
        in_thread(stack, runtime.run, runtime.stop, "alc-bench-controller")
        want = ready.version
        # The core is the loop's alone, so each poll asks the loop (`Runtime.ask`)
        # rather than reading it while it changes. A question ends a slice of the
        # build early, once a poll (2 ms); against reading the core directly,
        # 5 runs each (100,000 members) showed no difference beyond run-to-run
        # noise in this figure, the deltas' or the latencies during the sync.
        at = wait_for(
            lambda: runtime.ask(_dataset, WAIT_S) == want, "the controller's boot full sync"
        )
        cold = meter.stop(at)
        wait_for(lambda: runtime.storage.state()[:3] == want, "the snapshot on disk")
        cold_durable_s = time.monotonic() - at + cold.wall_s
        pages = math.ceil(records / ready.page_size)

        club = Club(members, seed)
        idle_ms = _present_idle(runtime, client, club, rate, seed)

        # The command sync, `syncs` times, with presentations all along: a p99 of
        # one sync's ~80 presentations would only be its single worst one.
        # The relock probe runs all along, also while each snapshot is saved.
        during_ms: list[float] = []
        phases: list[tuple[Phase, dict[str, Any]]] = []
        _take_longest_step(runtime)
        with _relock_probe(runtime, client, club, seed) as probe:
            for run_no in range(syncs):
                command = build_command("sync", now=time.time(), ttl=int(WAIT_S))
                first = len(runtime.decision_latency_s)
                meter = _Meter(broker, hub)
                client.publish("cmd", command)
                with Presenter(client, club, rate, seed + 1 + run_no) as presenter:
                    at, reply = client.final_reply(command["id"], WAIT_S)
                phases.append((meter.stop(at), reply))
                if reply["status"] != "done":
                    detail = reply.get("detail")
                    raise BenchError(f"the sync command ended {reply['status']}: {detail}")
                during_ms += _latencies_ms(runtime, first, presenter.sent)
                runtime.writer.flush()
        during_ms.sort()
        sync_longest_ms = _take_longest_step(runtime) * 1000
        # The median run stands for the sync time (and its CPU figures).
        command_phase, reply = sorted(phases, key=lambda p: p[0].wall_s)[len(phases) // 2]

        nochange_ms = _nochange_syncs(runtime, NOCHANGE_SYNCS)
        # Relocks are probed again while deltas pour in: single-op ones as fast
        # as the hub commits them, then large ones, each applied in one step.
        # The first round gives the throughput figures; more rounds run until the
        # probe has timed `delta_relocks` relocks (a round lasts a few seconds).
        _take_longest_step(runtime)
        with _relock_probe(runtime, client, club, seed + 7) as delta_probe:
            delta_phase, hub_commit_s, memory_s = _deltas(broker, hub, runtime, deltas)
            big_phase, _, _ = _deltas(broker, hub, runtime, big_deltas, BIG_DELTA_OPS)
            while len(delta_probe.relocks) < delta_relocks:
                _deltas(broker, hub, runtime, deltas)
                _deltas(broker, hub, runtime, big_deltas, BIG_DELTA_OPS)
        deltas_longest_ms = _take_longest_step(runtime) * 1000
        return Results(
            records=records,
            pages=pages,
            cold=cold,
            cold_durable_s=cold_durable_s,
            command=command_phase,
            command_ms=int(reply.get("ms", 0)),
            idle_ms=idle_ms,
            during_ms=during_ms,
            deltas=deltas,
            delta_phase=delta_phase,
            hub_commit_s=hub_commit_s,
            memory_s=memory_s,
            big_deltas=big_deltas,
            big_phase=big_phase,
            deltas_late_ms=delta_probe.late_ms(),
            sync_longest_ms=sync_longest_ms,
            nochange_ms=nochange_ms,
            deltas_longest_ms=deltas_longest_ms,
            loop_priority=runtime.loop_priority or "normal",
            timer_late_ms=probe.late_ms(),
            unlock_ms=probe.unlock_ms(),
            peak_mb=peak_rss_mb(),
            hub_peak_mb=peak_rss_mb_of(hub.pid),
        )


def _relock_probe(runtime: Runtime, client: BenchClient, club: Club, seed: int) -> RelockProbe:
    """The probe on the benched controller's relock door (`tools.bench_rig`)."""
    from hal.sim import SimBackend  # gpiozero: only once the bench runs, as the runtime does

    hardware = runtime.hardware
    if not isinstance(hardware, SimBackend):
        raise BenchError("the benched controller has no simulated hardware")
    body = {"t": "present", "reader": RELOCK_READER, "credkind": "tag", "value": relock_tag(club)}
    pin = hardware.pin_factory.pin(RELOCK_RELAY)

    def deadline() -> float | None:
        # Asked of the loop, once an unlock: the door's state is the loop's own,
        # changing while we read. The ask takes no part in the timing (the
        # relay's pin timestamps its switches, the deadline is a value the core
        # set at the decision), and it cannot make the relock late: the loop
        # answers questions first in a step, then the due timer, so an ask
        # costs the relock at most its own few microseconds.
        try:
            return runtime.ask(_relock_deadline, timeout=RELOCK_ANSWER_S)
        except TimeoutError as exc:
            raise BenchError(f"{RELOCK_DOOR}: no relock deadline from the loop") from exc

    return RelockProbe(
        pin, lambda: client.publish("bench/in", body), deadline, seed, clock=runtime.clock
    )


def _nochange_syncs(runtime: Runtime, count: int) -> list[float]:
    """Time `count` twice-daily full syncs of a club that has not changed since
    the last one: from the sync being due (brought forward on the loop) until
    the hub's `current` ended it (`last_full` moved, no request open), in ms.
    Nothing is rewritten on the card for them."""

    def last_full(controller: Controller) -> float | None:
        return controller.session.last_full

    def due_now(controller: Controller) -> None:
        controller.session.schedule_now(runtime.clock())

    times = []
    for _ in range(count):
        before = runtime.ask(last_full)

        def ended(controller: Controller, before: float | None = before) -> bool:
            session = controller.session
            return session.last_full != before and session.waiting_for is None

        started = time.monotonic()
        runtime.ask(due_now)
        done = wait_for(lambda: runtime.ask(ended), "the twice-daily sync to end")
        times.append((done - started) * 1000)
    return times


def _take_longest_step(runtime: Runtime) -> float:
    """The loop's longest step so far, seconds; its count starts again from 0.
    Asked of the loop, whose figure it is."""

    def take(_controller: Controller) -> float:
        longest = runtime.loop.longest_step_s
        runtime.loop.longest_step_s = 0.0
        return longest

    return runtime.ask(take)


def _relock_deadline(controller: Controller) -> float | None:
    return controller.facility.doors.status(RELOCK_DOOR).unlock_until


def _dataset(controller: Controller) -> tuple[str | None, int, bytes]:
    """The dataset the controller decides on: (epoch, v, digest)."""
    session = controller.session
    return (session.epoch, session.v, session.digest)


def _version(controller: Controller) -> int:
    return controller.session.v


def _deltas(
    broker: Broker, hub: HubProcess, runtime: Runtime, count: int, ops: int = 1
) -> tuple[Phase, float, float]:
    """Have the hub process send `count` deltas of `ops` ops. Returns the phase from
    the first publish until the controller's file holds the last one, and when
    (seconds after the first publish) the hub had committed them all and the
    controller had applied them all in memory."""
    storage = runtime.storage
    target = runtime.ask(_version) + count  # asked of the loop, as in `run`
    meter = _Meter(broker, hub)
    hub.send("deltas", count, ops)
    # Polled every DELTA_POLL_S, not every 2 ms: each poll is a question to the
    # loop (or a read of the file) that takes its share of the process's one
    # interpreter from the deltas being measured.
    in_memory = wait_for(
        lambda: runtime.ask(_version, WAIT_S) >= target,
        f"the controller to apply v{target}",
        poll=DELTA_POLL_S,
    )
    durable = wait_for(
        lambda: storage.state().v >= target, f"the controller to store v{target}", poll=POLL_S
    )
    phase = meter.stop(durable)
    _, first, last = hub.receive(f"it committed {count} deltas")
    # Measured from the first publish, not from the first commit.
    phase.wall_s = durable - first
    return phase, last - first, in_memory - first


def _commit_deltas(
    hub_loop: HubLoop, club: Club, count: int, ops: int, seed: int
) -> tuple[float, float]:
    """In the hub process: commit `count` change sets of `ops` updated members each
    (distinct within a set), `HUB_BATCH` single-op sets per transaction (a larger
    set is a transaction of its own), through the hub loop, which publishes each
    as a delta. Returns the monotonic times of the first publish and of the last
    commit."""
    rng = random.Random(seed + 2 + ops)
    change_sets: list[list[WireOp]] = []
    for _ in range(count):
        change_set: list[WireOp] = []
        for i in rng.sample(range(club.members), min(ops, club.members)):
            rec = cbor2.dumps(club.member_body(i, rng))
            change_set.append(["put", "member", club.member_id(i), rec])
        change_sets.append(change_set)
    batch = HUB_BATCH if ops == 1 else 1
    marks: dict[str, float] = {}
    done = threading.Event()

    def job(sets: list[list[WireOp]], last: bool) -> Callable[[Hub, float], list[Outgoing]]:
        def commit(hub: Hub, now: float) -> list[Outgoing]:
            out = hub.commit_many(sets, now)
            # Taken just before the hub loop publishes what this returns.
            marks.setdefault("first", time.monotonic())
            if last:
                marks["hub"] = time.monotonic()
                done.set()
            return out

        return commit

    for start in range(0, count, batch):
        hub_loop.submit(job(change_sets[start : start + batch], start + batch >= count))
    if not done.wait(WAIT_S):
        raise BenchError(f"the hub did not commit {count} deltas in {WAIT_S:g} s")
    return marks["first"], marks["hub"]


def bench_sync(argv: Sequence[str]) -> int:
    """`alc bench sync`: full sync time, delta throughput, decision latency during sync."""
    parser = argparse.ArgumentParser(
        prog="alc bench sync",
        description="full sync, deltas and decision latency end to end through mosquitto",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--members", type=positive, default=100_000, help="default 100000")
    size.add_argument(
        "--credentials",
        type=positive,
        help="the club's size in credentials instead: two per member (a tag and a PIN)",
    )
    parser.add_argument("--deltas", type=positive, default=10_000, help="default 10000")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="presentations per second (default 100)"
    )
    parser.add_argument(
        "--syncs", type=positive, default=20, help="sync commands to time (default 20)"
    )
    parser.add_argument(
        "--big-deltas",
        type=positive,
        default=20,
        help=f"deltas of {BIG_DELTA_OPS:,} ops after the single-op ones (default 20)",
    )
    parser.add_argument(
        "--delta-relocks",
        type=positive,
        default=20,
        help="relocks to time while deltas arrive; more rounds of deltas until then (default 20)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(list(argv))
    if not args.rate > 0:
        parser.error("--rate must be positive")
    if args.credentials is not None:
        args.members = max(1, args.credentials // 2)
    floor = measure_floor()  # in this process, before the run: the same machine, now
    try:
        with tempfile.TemporaryDirectory(prefix="alc-bench-sync-") as tmp:
            results = run(
                Path(tmp),
                args.members,
                args.deltas,
                args.rate,
                args.seed,
                args.syncs,
                args.big_deltas,
                args.delta_relocks,
            )
    except LocalError as exc:
        print(f"alc bench sync: {exc}", file=sys.stderr)
        return 1
    figures = results.figures() + floor_figures(results, floor)
    if args.json:
        out = {f.key: round(f.value, 3) for f in figures}
        if floor is not None:
            out |= {"floor_us": floor.floor_us, "store_us": floor.store_us}
        print(json.dumps(out))
        return 0
    _report(results, args.members, args.rate, args.seed)
    print(
        floor.describe()
        if floor is not None
        else "floor.py not found (see tools/floor_ref.py): absolute figures only"
    )
    print()
    print(format_table(figures))
    if args.members != 100_000 or args.deltas != 10_000 or args.rate != 100:
        print("(the targets are for --members 100000 --deltas 10000 --rate 100)")
    return 0


def _report(r: Results, members: int, rate: float, seed: int) -> None:
    print(
        f"alc bench sync: {members:,} members, {r.records:,} records in {r.pages} snapshot "
        f"pages, seed {seed}; hub (own process), controller and mosquitto on one machine; "
        f"controller loop at {r.loop_priority} priority"
    )
    print(
        f"cold full sync (empty controller, boot to done): {r.cold.wall_s:.2f} s, "
        f"on disk after {r.cold_durable_s:.2f} s; "
        f"{r.cold.describe()}"
    )
    print(
        f"sync command, publish to done: {r.command.wall_s:.2f} s "
        f"(controller's own count {r.command_ms} ms); {r.command.describe()}"
    )
    for what, ms in (("idle", r.idle_ms), ("during the sync command", r.during_ms)):
        if ms:
            print(
                f"decisions {what}: {len(ms)} at {rate:g}/s, p50 {_p(ms, 0.5):.2f} ms, "
                f"p99 {_p(ms, 0.99):.2f} ms, max {ms[-1]:.2f} ms"
            )
    late, unlock = r.timer_late_ms, r.unlock_ms
    print(
        f"relocks during the sync commands: {len(late)} unlocks of a door with unlock_s "
        f"{RELOCK_UNLOCK_S} s; relay off after its deadline by p50 {_p(late, 0.5):.2f} ms, "
        f"p99 {_p(late, 0.99):.2f} ms, max {_p(late, 1.0):.2f} ms; relay on after the "
        f"decision by p50 {_p(unlock, 0.5):.2f} ms, p99 {_p(unlock, 0.99):.2f} ms"
    )
    print(
        f"{r.deltas:,} deltas ({HUB_BATCH} per hub transaction): hub committed the last "
        f"{r.hub_commit_s:.2f} s after the first publish, controller applied it in memory "
        f"at {r.memory_s:.2f} s, on disk at {r.delta_phase.wall_s:.2f} s; "
        f"{r.delta_phase.describe()}"
    )
    print(
        f"the loop's longest step: {r.sync_longest_ms:.2f} ms during the sync commands, "
        f"{r.deltas_longest_ms:.2f} ms during the deltas"
    )
    late = r.deltas_late_ms
    print(
        f"{r.big_deltas} deltas of {BIG_DELTA_OPS:,} ops: on disk after "
        f"{r.big_phase.wall_s:.2f} s; {r.big_phase.describe()}; relocks during both delta "
        f"phases: {len(late)}, late by p50 {_p(late, 0.5):.2f} ms, p99 {_p(late, 0.99):.2f} ms, "
        f"max {_p(late, 1.0):.2f} ms"
    )
    print(
        f"peak memory: {r.peak_mb:.0f} MiB here (controller and bench clients), "
        f"{r.hub_peak_mb:.0f} MiB hub"
    )
