"""What the loop tells the edges (`firmware.runtime.notes`) and the readers that
show decisions (`Backend.indicate`), on a running `Runtime` (tests/loop_rig.py).

Watching adapters (Home Assistant, metrics) are built on these notes; a broken
watcher must never cost a door its relock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from firmware.config import Config
from firmware.config.homeassistant import HomeAssistantSection
from firmware.core.inputs import Disconnected, Presented
from firmware.homeassistant.edge import HomeAssistantEdge
from firmware.homeassistant.mailbox import Batch
from firmware.runtime import Runtime
from firmware.runtime.edge import EdgeContext
from firmware.runtime.notes import Decided, Logged, TimerRan
from tests.loop_rig import ANN, CAT, DOOR, READER, Outputs, make_config, running
from tests.waiting import WAIT_S, wait_for

UNKNOWN = "0e0e0e0e0e"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, time.time())


def access_notes(outputs: Outputs) -> list[dict[str, object]]:
    return [
        e.body
        for n in list(outputs.notes)
        if isinstance(n, Logged)
        for e in n.events
        if e.type == "access"
    ]


def test_a_grant_is_told_as_logged_and_decided_and_its_relock_as_a_timer(config: Config) -> None:
    outputs = Outputs()
    runtime = Runtime(config, edges=[outputs])
    with running(runtime):
        runtime.submit(Presented(READER, "tag", ANN))
        wait_for(lambda: outputs.count(DOOR, False) >= 2, "the relock after ann's grant")
        notes = list(outputs.notes)
    granted = [b for b in access_notes(outputs) if b["member"] == "ann"]
    assert granted and granted[0]["granted"] is True and granted[0]["reader"] == READER
    # One decision, told once; the relock ran as a due timer.
    assert sum(isinstance(n, Decided) for n in notes) == 1
    assert any(isinstance(n, TimerRan) for n in notes)
    doors = [
        e.body["what"] for n in notes if isinstance(n, Logged) for e in n.events if e.type == "door"
    ]
    assert "unlocked" in doors and "locked" in doors


class Broken(Outputs):
    """An edge whose `observed` raises on every note."""

    def observed(self, note: object) -> None:
        raise RuntimeError("a broken watcher")


def test_a_watcher_that_raises_never_keeps_a_door_from_relocking(config: Config) -> None:
    broken = Broken()
    runtime = Runtime(config, edges=[broken])
    with running(runtime):
        runtime.submit(Presented(READER, "tag", ANN))
        wait_for(lambda: broken.count(DOOR, False) >= 2, "the relock despite the watcher")
        assert runtime.ask(lambda _: runtime.loop.failures) >= 1
        runtime.submit(Presented(READER, "tag", CAT))
        wait_for(lambda: broken.count(DOOR, True) >= 2, "cat let in after it")


def test_an_edge_reads_the_core_through_ask_and_sees_the_link(config: Config) -> None:
    contexts: list[EdgeContext] = []
    outputs = Outputs()

    def factory(context: EdgeContext) -> Outputs:
        contexts.append(context)
        return outputs

    runtime = Runtime(config, edges=[factory])
    with running(runtime):
        context = contexts[0]
        assert context.ask(lambda c: c.state()["v"]) == runtime.ask(lambda c: c.session.v)
        assert context.link_up() is False  # no broker in the rig


def test_a_reader_that_shows_decisions_is_told_each_one_made_at_it(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = Runtime(config, edges=[Outputs()])
    hardware = runtime.hardware
    assert hardware is not None
    shown: list[bool] = []
    reader = hardware.readers[READER]
    monkeypatch.setattr(reader, "indicates", True, raising=False)
    monkeypatch.setattr(reader, "indicate", shown.append, raising=False)
    # What a backend with an indicating reader has from its start (`Backend.indicating`).
    hardware.indicating = frozenset({READER})
    runtime.loop._indicating = True
    with running(runtime):
        runtime.submit(Presented(READER, "tag", ANN))
        runtime.submit(Presented(READER, "tag", UNKNOWN))
        runtime.submit(Presented("elsewhere", "tag", CAT))
        wait_for(lambda: len(shown) >= 2, "both decisions at the reader shown")
        runtime.ask(lambda _: None)
    assert shown[:2] == [True, False]


def adapter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "alc-homeassistant" and t.is_alive()]


def test_an_adapter_starts_its_thread_when_the_loop_runs_and_stops_it_with_the_loop(
    config: Config,
) -> None:
    runtime = Runtime(replace(config, homeassistant=HomeAssistantSection()))
    assert not adapter_threads(), "the adapter started before the loop"
    with running(runtime):
        wait_for(lambda: len(adapter_threads()) == 1, "the adapter's thread")
    assert not adapter_threads()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_adapter_thread_is_restarted_by_the_supervisor(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = Runtime(replace(config, homeassistant=HomeAssistantSection()))
    edge = runtime.edges[0]
    assert isinstance(edge, HomeAssistantEdge)
    with running(runtime):
        wait_for(lambda: len(adapter_threads()) == 1, "the adapter's thread")
        first = adapter_threads()[0]
        take = edge._mailbox.take

        def die_once(timeout: float) -> Batch:
            monkeypatch.setattr(edge._mailbox, "take", take)
            raise SystemExit  # ends the thread, as a bug past its guard would

        monkeypatch.setattr(edge._mailbox, "take", die_once)
        edge._mailbox.resend()  # wakes the thread into the dying take
        first.join(WAIT_S)
        assert not first.is_alive()
        runtime.submit(Disconnected())  # a step: the supervisor looks after each one
        wait_for(lambda: len(adapter_threads()) == 1, "the adapter's restart")
        assert adapter_threads()[0] is not first
        assert runtime.ask(lambda _: runtime.supervisor.failed) is None
