"""Sync v2 end to end (PROTOCOL.md s3, s4, s6): a real controller `Runtime` and
the real hub loop through mosquitto, with a recorder on the controller's `data`
topic that keeps every payload the hub sent, the way someone with broker access
and no key could, and plays them back.

- a recorded snapshot replayed after a controller restart, and after an epoch
  change, changes nothing;
- replayed old-epoch deltas ask for at most one full sync a minute (the
  controller runs on a clock the test moves by hand);
- `current` ends the twice-daily sync and nothing is written to the card;
- the hub resyncs a controller that disagrees through the `sync` command, never
  by pushing a snapshot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from firmware.core.controller import Controller
from firmware.core.decide import Target
from firmware.core.inputs import Tick
from firmware.core.wire import unseal
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from firmware.runtime import Runtime
from tests.broker import Broker
from tests.harness import (
    BASE,
    CLUB,
    CONTROLLER,
    Rig,
    logged_events,
    member_toml,
    write_atomically,
)
from tests.loop_rig import FrozenClock
from tests.waiting import wait_for
from tools.hub.server import Hub

M2_TAG = "00000000b2"
M2_TABLE = (
    '\n[[member]]\nid = "m2"\nname = "Bo"\ngroups = ["adults"]\ncreds = [["tag", "00000000b2"]]\n'
)
FULL_SYNC_DUE_S = 43200 + 1800 + 1  # 12 h and the whole jitter: the schedule is due


class Recorder:
    """Keeps every payload published on the controller's `data` topic, sealed as
    it travelled. It opens them only to tell the test what they are."""

    def __init__(self, broker: Broker, key: bytes) -> None:
        self._key = key
        self._lock = threading.Lock()
        self._payloads: list[bytes] = []
        self.link = Link(
            "test-recorder",
            BrokerSettings(broker.host, broker.port),
            self._deliver,
            subscriptions=[f"{BASE}/data"],
            persistent=False,
        )
        self.link.start()
        if not self.link.wait_connected(10.0):
            self.link.stop()
            pytest.fail("the recorder could not connect to the broker")

    def _deliver(self, event: LinkEvent) -> None:
        if isinstance(event, Received):
            with self._lock:
                self._payloads.append(event.payload)

    def recorded(self, t: str | None = None, **match: Any) -> list[bytes]:
        """The payloads so far whose message is of type `t` with every `match` field."""
        with self._lock:
            payloads = list(self._payloads)
        return [p for p in payloads if _matches(self.open(p), t, match)]

    def messages(self, t: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """The opened messages of `recorded(t, **match)`."""
        return [self.open(p) for p in self.recorded(t, **match)]

    def open(self, payload: bytes) -> dict[str, Any]:
        return unseal({CONTROLLER.encode(): self._key}, f"{BASE}/data", payload).body

    def close(self) -> None:
        self.link.stop()


def _matches(body: dict[str, Any], t: str | None, match: dict[str, Any]) -> bool:
    return (t is None or body.get("t") == t) and all(body.get(k) == v for k, v in match.items())


class Writes:
    """Counts every dataset write the controller's storage thread makes."""

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self._lock = threading.Lock()
        self.count = 0
        storage = runtime.storage
        for name in ("save_snapshot", "save_delta", "save_deltas"):
            monkeypatch.setattr(storage, name, self._counting(getattr(storage, name)))

    def _counting(self, write: Callable[..., None]) -> Callable[..., None]:
        def counted(*args: Any, **kwargs: Any) -> None:
            with self._lock:
                self.count += 1
            write(*args, **kwargs)

        return counted

    def __call__(self) -> int:
        with self._lock:
            return self.count


@pytest.fixture
def recorder(broker: Broker, rig: Rig) -> Iterator[Recorder]:
    r = Recorder(broker, rig.key)
    try:
        yield r
    finally:
        r.close()


def grants(rig: Rig, value: str) -> str:
    def reason(controller: Controller) -> str:
        decision = controller.decide(Target.door("front"), "tag", value, time.time())
        return decision.reason if not decision.granted else f"granted:{decision.member}"

    return rig.core(reason)


def ignored(rig: Rig) -> int:
    return rig.core(lambda c: c.session.ignored)


def sync_events(caplog: pytest.LogCaptureFixture, **match: Any) -> list[dict[str, Any]]:
    return [
        body
        for t, body in logged_events(caplog)
        if t == "sync" and all(body.get(k) == v for k, v in match.items())
    ]


def new_epoch(rig: Rig) -> None:
    """The hub resets its history (a restore from a backup, `--new-epoch`)."""
    assert rig.hub_loop is not None
    done = threading.Event()

    def job(hub: Hub, _now: float) -> list[tuple[str, bytes]]:
        hub.new_epoch()
        done.set()
        return []

    rig.hub_loop.submit(job)
    wait_for(done.is_set, "the hub's new epoch")


def start(rig: Rig, text: str = CLUB, clock: FrozenClock | None = None) -> Runtime:
    write_atomically(rig.data_file, text)
    rig.start_hub()
    if clock is not None:
        rig.runtime = Runtime(rig.config(), clock=clock)
    runtime = rig.run_controller()
    rig.wait_converged()
    rig.settle()
    return runtime


def state_told(rig: Rig, clock: FrozenClock) -> None:
    """On a clock the test moves, the controller sends its state at most once a
    (virtual) second: move it on and wait until the latest state reached the
    broker, so the hub does not act on an old one."""
    assert rig.runtime is not None
    clock.advance(2.0)
    rig.runtime.submit(Tick())
    triple = rig.triple()

    def told() -> bool:
        states = rig.observer.of("state")
        last = states[-1] if states else {}
        return (last.get("epoch"), last.get("v"), last.get("digest")) == triple

    wait_for(told, "the controller's state")


def settle(rig: Rig) -> None:
    """`Rig.settle` with a command that outlives the hours the test moves the
    controller's clock on: the loop has acted on all it received before."""
    id = rig.observer.command("status", ttl=86_400)["id"]
    assert [r["status"] for r in rig.observer.wait_final(id)] == ["done"]


def replay(rig: Rig, payloads: list[bytes]) -> None:
    for payload in payloads:
        rig.observer.publish_raw(f"{BASE}/data", payload)


# --- replays ------------------------------------------------------------------------------


def test_a_recorded_snapshot_replayed_after_a_restart_and_an_epoch_change_changes_nothing(
    rig: Rig, recorder: Recorder
) -> None:
    start(rig)
    old_pages = recorder.recorded("snap")
    assert old_pages and grants(rig, M2_TAG) == "granted:m2"
    first = rig.triple()

    # The club takes Bo's tag away; the controller follows. Then it restarts,
    # and the recorded snapshot, which still has Bo, is played back at once.
    write_atomically(rig.data_file, CLUB.replace(M2_TABLE, ""))
    wait_for(lambda: grants(rig, M2_TAG) == "unknown_credential", "bo's tag revoked")
    rig.wait_converged()
    rig.stop_controller()
    rig.run_controller()
    replay(rig, old_pages)
    wait_for(lambda: ignored(rig) >= len(old_pages), "the replayed pages to be ignored")
    rig.wait_converged()
    assert grants(rig, M2_TAG) == "unknown_credential"
    assert rig.triple()[0] == first[0] and rig.triple() != first

    # A new epoch (a restore from a backup); the next edit takes the controller there.
    new_epoch(rig)
    write_atomically(rig.data_file, CLUB.replace(M2_TABLE, "") + member_toml("m3", "00000000c3"))
    wait_for(lambda: grants(rig, "00000000c3") == "granted:m3", "the new epoch's data")
    rig.wait_converged()
    moved = rig.triple()
    assert moved[0] != first[0]
    before = ignored(rig)
    replay(rig, old_pages)
    wait_for(lambda: ignored(rig) >= before + len(old_pages), "the replayed pages to be ignored")
    rig.settle()
    assert rig.triple() == moved == rig.hub_triple()
    assert grants(rig, M2_TAG) == "unknown_credential"
    assert grants(rig, "00000000c3") == "granted:m3"


def test_replayed_old_epoch_deltas_ask_at_most_once_a_minute(
    rig: Rig, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FrozenClock(time.time())
    start(rig, clock=clock)
    write_atomically(rig.data_file, CLUB.replace(M2_TABLE, ""))
    wait_for(lambda: grants(rig, M2_TAG) == "unknown_credential", "the edit")
    old_deltas = recorder.recorded("delta")
    assert old_deltas
    new_epoch(rig)
    write_atomically(rig.data_file, CLUB)
    wait_for(lambda: grants(rig, M2_TAG) == "granted:m2", "the new epoch's data")
    rig.wait_converged()
    rig.settle()
    state_told(rig, clock)
    clock.advance(61.0)  # the epoch change's own request is a minute old
    asked = len(rig.observer.of("sync"))
    marker = recorder.recorded("snap")[:1]  # a page that answers nothing now

    def replay_and_wait(times: int) -> None:
        # The marker goes last, from the same client on the same topic: once it
        # is counted as ignored, every delta before it has been handled too.
        seen = ignored(rig)
        replay(rig, old_deltas * times + marker)
        wait_for(lambda: ignored(rig) > seen, "the replay to be handled")
        settle(rig)  # and what the controller published meanwhile has arrived

    replay_and_wait(5)
    epoch_requests = [s for s in rig.observer.of("sync")[asked:] if s["reason"] == "epoch"]
    assert len(epoch_requests) == 1
    clock.advance(30.0)
    replay_and_wait(5)
    assert [s for s in rig.observer.of("sync")[asked:] if s["reason"] == "epoch"] == epoch_requests
    clock.advance(31.0)  # a minute after the first request
    replay_and_wait(5)
    requests = [s for s in rig.observer.of("sync")[asked:] if s["reason"] == "epoch"]
    assert len(requests) == 2
    # The controller is on the hub's epoch: the hub answered both with `current`,
    # and sent no snapshot.
    wait_for(lambda: len(recorder.messages("current")) == 2, "the hub's answers")
    assert {m["req"] for m in recorder.messages("current")} == {r["req"] for r in requests}
    assert all(recorder.recorded("snap", sync=r["req"]) == [] for r in requests)
    assert rig.triple() == rig.hub_triple()


# --- current ------------------------------------------------------------------------------


def test_current_ends_the_twice_daily_sync_and_nothing_is_written(
    rig: Rig, recorder: Recorder, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FrozenClock(time.time())
    write_atomically(rig.data_file, CLUB)
    rig.start_hub()
    runtime = rig.runtime = Runtime(rig.config(), clock=clock)
    writes = Writes(runtime, monkeypatch)
    rig.run_controller()
    rig.wait_converged()
    rig.settle()
    state_told(rig, clock)
    assert writes() >= 1  # the boot's full sync was saved
    written, triple = writes(), rig.triple()
    last_full = rig.core(lambda c: c.session.last_full)
    snaps = len(recorder.recorded("snap"))

    clock.advance(FULL_SYNC_DUE_S)
    runtime.submit(Tick())
    wait_for(lambda: sync_events(caplog, what="done", reason="schedule"), "the schedule's sync")
    settle(rig)
    (request,) = [s for s in rig.observer.of("sync") if s["reason"] == "schedule"]
    assert request["digest"] == triple[2] and request["full"] is True
    (current,) = recorder.messages("current")
    assert current["req"] == request["req"]
    assert (current["epoch"], current["v"], current["digest"]) == triple
    assert len(recorder.recorded("snap")) == snaps  # no snapshot sent
    assert writes() == written  # and nothing written to the card
    assert rig.triple() == triple
    assert rig.core(lambda c: c.session.progress()) == ("idle", 0, 0)
    # It counts as the full sync: the next one is 12 h on from here.
    later = rig.core(lambda c: c.session.last_full)
    assert last_full is not None and later is not None and later > last_full


# --- the hub's resync -----------------------------------------------------------------------


def test_the_hub_resyncs_a_controller_that_disagrees_through_the_sync_command(
    rig: Rig, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    observer = rig.observer  # listening from the start: every request is seen
    start(rig)
    hub = rig.hub
    assert hub is not None
    # A delta takes far less than a second here, and the test has no 30 s to
    # spare after the boot's snapshot (which counts as a push).
    hub.settle_s = hub.push_every_s = 1.0
    first = rig.triple()
    # The hub's history is reset and nothing else happens: no delta tells the
    # controller; only its state shows the difference.
    new_epoch(rig)
    wait_for(lambda: [c for c in observer.of("cmd") if c.get("cmd") == "sync"], "the command")
    (command,) = [c for c in observer.of("cmd") if c.get("cmd") == "sync"]
    assert observer.wait_final(command["id"])[-1]["status"] == "done"
    rig.wait_converged()
    assert rig.triple()[0] != first[0] and rig.triple()[1:] == (0, first[2])
    assert [e["reason"] for e in sync_events(caplog, what="done")][-1] == "command"
    # Every snapshot the hub sent answered a request the controller made.
    asked = {s["req"] for s in observer.of("sync")}
    assert {m["sync"] for m in recorder.messages("snap")} <= asked
