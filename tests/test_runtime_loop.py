"""The runtime's loop (`firmware.runtime.loop`) against a running `Runtime` on the
simulator backend (tests/loop_rig.py): what it contains, what it never waits
for, what it drops and says, thread deaths, timers during background work, and
`Runtime.ask`.

Inputs go in through `runtime.submit` (as the HAL and the link hand them over)
or the simulated hardware; the core is read only through `runtime.ask`. The
card is made to hang by holding up the event writer's `append` on an event
(`CardGate`), never by sleeping. No assertion is about time: where something
must not have happened yet, the test holds the thing that would make it
happen (the card, the clock) until it has looked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cbor2
import pytest

from firmware.config import Config
from firmware.core.actions import Action
from firmware.core.controller import Controller
from firmware.core.inputs import (
    Connected,
    Disconnected,
    Input,
    PayloadReceived,
    Presented,
    RexPressed,
)
from firmware.core.outbox import LoggedEvent
from firmware.core.reception import Unsealed
from firmware.core.sync import SaveSnapshot, SyncAction
from firmware.runtime import Runtime, app
from firmware.runtime.inbox import Inbox
from firmware.runtime.messages import Internal
from hal.sim import SimBackend
from tests.harness import logged_events
from tests.loop_rig import (
    ANN,
    BASE,
    CAT,
    DOOR,
    EPOCH,
    MASTER,
    READER,
    VERSION,
    CardGate,
    FrozenClock,
    Outputs,
    Running,
    digest_of,
    make_config,
    records,
    running,
    sealed,
    stored_events,
)
from tests.waiting import WAIT_S, wait_for

UNKNOWN = "0e0e0e0e0e"  # a tag nobody holds

# Active-low relay board: a released (locked) strike reads high.
LOCKED, UNLOCKED = True, False


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, time.time())


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The log at INFO: `alc.events` logs every event once it is on the card."""
    caplog.set_level(logging.INFO)
    return caplog


def failures(runtime: Runtime) -> int:
    return runtime.ask(lambda _: runtime.loop.failures)


def sim(runtime: Runtime) -> SimBackend:
    assert isinstance(runtime.hardware, SimBackend)
    return runtime.hardware


def system_events(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    """Details of the `system` events of kind `what` on the card so far."""
    return [
        str(body["detail"])
        for type_, body in logged_events(caplog)
        if type_ == "system" and body["what"] == what
    ]


def contained(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The loop's log lines with a traceback: one per contained failure logged."""
    return [r.getMessage() for r in caplog.records if r.name == "alc.controller" and r.exc_info]


def of(events: Sequence[tuple[int, str, dict[str, Any]]], type_: str, **match: Any) -> list[int]:
    """Seqs of stored events of `type_` whose body has every `match` field."""
    return [
        seq
        for seq, t, body in events
        if t == type_ and all(body.get(k) == v for k, v in match.items())
    ]


def access_logged(caplog: pytest.LogCaptureFixture, tag: str) -> bool:
    """True once an access event for `tag` is on the card."""
    return any(t == "access" and b["value"] == tag[-4:] for t, b in logged_events(caplog))


def settle(runtime: Runtime, caplog: pytest.LogCaptureFixture, tag: str) -> None:
    """Wait until the step that decided for `tag` has carried out its actions.
    They wait for its events to be written; the event writer then says so
    (`Written`) before it takes the next step's events. So: its access event
    on the card, then another step's (an unknown tag), then a question through
    the loop, which the loop takes after that `Written`."""
    wait_for(lambda: access_logged(caplog, tag), f"the access event of {tag}")
    runtime.submit(Presented(READER, "tag", UNKNOWN))
    wait_for(lambda: access_logged(caplog, UNKNOWN), "the marker's access event")
    runtime.ask(lambda _: None)


def fail_on(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, kind: type[Input], error: Exception
) -> None:
    """Make the core raise `error` on every input of `kind` (a bug on its path)."""
    handle = runtime.controller.handle

    def buggy(event: Input | Unsealed, now: float) -> list[Action]:
        if isinstance(event, kind):
            raise error
        return handle(event, now)

    monkeypatch.setattr(runtime.controller, "handle", buggy)


# --- containment -------------------------------------------------------------------------


def test_an_input_the_core_fails_on_is_dropped_reported_once_and_the_loop_goes_on(
    config: Config, caplog_info: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = Outputs()
    runtime = Runtime(config, edges=[outputs])
    fail_on(runtime, monkeypatch, RexPressed, RuntimeError("a bug on the exit button's path"))
    with running(runtime):
        for _ in range(3):
            runtime.submit(RexPressed("front"))
        wait_for(lambda: failures(runtime) == 3, "three failed steps")
        # A later presentation still decides, and its door opens.
        sim(runtime).present(READER, "tag", ANN)
        wait_for(lambda: outputs.count(DOOR, True) == 1, "ann's unlock")
        wait_for(lambda: system_events(caplog_info, "error"), "the error event on the card")

    # One traceback and one `system`/`error` event for the three (within the minute).
    assert contained(caplog_info) == ["handling RexPressed failed; the loop goes on"]
    assert system_events(caplog_info, "error") == [
        "handling RexPressed: RuntimeError: a bug on the exit button's path"
    ]
    events = [(t, body.get("what"), body.get("by")) for t, body in logged_events(caplog_info)]
    assert ("door", "unlocked", "rex") not in events  # the failed input did nothing at all
    assert ("door", "unlocked", "ann") in events
    assert [b["granted"] for t, b in logged_events(caplog_info) if t == "access"] == [True]


def break_the_relay_once(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> SimBackend:
    """The next switch-on of the door's relay raises (a bug in a driver)."""
    hardware = sim(runtime)
    set_output = hardware.set_output
    broken = [True]

    def relay(name: str, on: bool, *, held: bool = False) -> None:
        if name == DOOR and on and broken:
            broken.clear()
            raise RuntimeError("relay driver bug")
        set_output(name, on, held=held)

    monkeypatch.setattr(hardware, "set_output", relay)
    return hardware


def test_an_action_that_raises_is_contained_and_later_ones_are_carried_out(
    config: Config, caplog_info: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = Outputs()
    runtime = Runtime(config, edges=[outputs])
    hardware = break_the_relay_once(runtime, monkeypatch)
    levels: list[bool] = []  # the relay's pin as each switch of the door left it
    outputs.on_switch = lambda name, on: levels.append(hardware.level(name))
    with running(runtime):
        runtime.submit(Presented(READER, "tag", ANN))
        wait_for(lambda: failures(runtime) == 1, "the unlock to fail")
        assert hardware.level(DOOR) is LOCKED
        # The core takes the door as locked again (logged so, by `fault`): no
        # relock is needed, and the next unlock switches the relay.
        wait_for(
            lambda: (
                ("door", {"door": "front", "what": "locked", "by": "fault"})
                in logged_events(caplog_info)
            ),
            "the door logged locked by fault",
        )
        runtime.submit(Presented(READER, "tag", CAT))
        wait_for(lambda: outputs.count(DOOR, True) == 1, "cat's unlock")
    assert outputs.switched[:2] == [(DOOR, False), (DOOR, True)]
    assert levels[:2] == [LOCKED, UNLOCKED]
    assert contained(caplog_info) == ["carrying out Output failed; the loop goes on"]
    assert system_events(caplog_info, "error") == [
        "carrying out Output: RuntimeError: relay driver bug"
    ]


def test_a_member_granted_after_a_failed_unlock_is_let_in(
    config: Config, caplog_info: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FrozenClock(time.time())  # ann's relock never falls due
    outputs = Outputs()
    runtime = Runtime(config, clock=clock, edges=[outputs])
    hardware = break_the_relay_once(runtime, monkeypatch)
    with running(runtime):
        runtime.submit(Presented(READER, "tag", ANN))
        wait_for(lambda: failures(runtime) == 1, "the unlock to fail")
        runtime.submit(Presented(READER, "tag", CAT))
        settle(runtime, caplog_info, CAT)
        assert outputs.count(DOOR, True) == 1, "cat was granted, but the door stayed locked"
        assert hardware.level(DOOR) is UNLOCKED


# --- outputs in the safe direction, and the card's patience --------------------------------


def door_event(what: str) -> Callable[[Sequence[LoggedEvent]], bool]:
    def has(events: Sequence[LoggedEvent]) -> bool:
        return any(e.type == "door" and e.body.get("what") == what for e in events)

    return has


def test_a_hung_card_never_keeps_a_door_unlocked_nor_the_master_out(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FrozenClock(time.time())  # relocks fall due when the test moves it
    outputs = Outputs()
    runtime = Runtime(config, clock=clock, edges=[outputs])
    hardware = sim(runtime)
    # The card hangs on the write of the `opened` event (a member walks in).
    gate = CardGate(runtime, door_event("opened"))
    monkeypatch.setattr(runtime.events, "append", gate.append)
    # At each switch of the door: which way, what was on the card, whether it hung.
    seen: list[tuple[bool, list[int], bool]] = []

    def switched(name: str, on: bool) -> None:
        if name == DOOR:
            seen.append((on, gate.written, gate.holding.is_set()))

    outputs.on_switch = switched
    with running(runtime):
        runtime.submit(Presented(READER, "tag", ANN))
        wait_for(lambda: outputs.count(DOOR, True) == 1, "ann's unlock")
        hardware.set_contact("front", True)  # ann opens the door: the card hangs
        assert gate.holding.wait(WAIT_S)
        # The relock (unlock_s = 1) is not held up behind the hung write.
        clock.advance(2.0)
        wait_for(lambda: outputs.count(DOOR, False) == 2, "the relock")  # after boot's
        assert hardware.level(DOOR) is LOCKED
        # The master's unlock waits for its access event at most the patience,
        # then goes ahead with the card still hung.
        runtime.submit(Presented(READER, "tag", MASTER))
        wait_for(lambda: outputs.count(DOOR, True) == 2, "the master's unlock")
        clock.advance(2.0)
        wait_for(lambda: outputs.count(DOOR, False) == 3, "the master's relock")
        assert gate.held[0].seq not in gate.written  # the card still hangs
        logged = runtime.ask(lambda c: c.outbox.last_seq)
        gate.release()  # stopping writes what waited

    stored = stored_events(config)
    seqs = [seq for seq, _, _ in stored]  # the boot numbers on from the clock
    assert seqs == list(range(seqs[0], seqs[0] + len(stored)))  # none lost
    assert seqs[-1] >= logged  # every seq logged is on the card
    [ann] = of(stored, "access", member="ann")
    [master] = of(stored, "access", reason="master")
    [opened] = of(stored, "door", what="opened")
    first_relock, second_relock = of(stored, "door", what="locked", by="timer")
    boot, unlock, relock, master_unlock, master_relock = seen
    assert boot == (False, [], False)  # the safe state, before anything is written
    assert unlock[0] and ann in unlock[1] and not unlock[2]  # ann's unlock waited for the card
    assert not relock[0] and relock[2]  # the relock, the card hung...
    assert opened not in relock[1] and first_relock not in relock[1]  # ...its event not on it
    assert master_unlock[0] and master_unlock[2] and master not in master_unlock[1]
    assert not master_relock[0] and second_relock not in master_relock[1]
    assert hardware.level(DOOR) is LOCKED


# --- inputs dropped when the inbox is full ------------------------------------------------


def test_inputs_past_the_bound_are_dropped_counted_in_state_and_reported(
    tmp_path: Path, caplog_info: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No door contact: its first report would be one more input dropped.
    config = make_config(tmp_path, time.time(), inputs=False)
    # `Inbox()`'s bound is a default argument: the app's inbox is made small here.
    small: Callable[[], Inbox[Input | Unsealed, Internal]] = partial(Inbox, bound=4)
    monkeypatch.setattr(app, "Inbox", small)
    outputs = Outputs()
    runtime = Runtime(config, edges=[outputs])
    # Queued before the loop runs: the loop is that far behind.
    assert all(runtime.submit(Disconnected()) for _ in range(4))
    assert not any(runtime.submit(Presented(READER, "tag", f"{i:010x}")) for i in range(3))
    assert not any(runtime.submit(Disconnected()) for _ in range(2))
    with running(runtime):
        wait_for(lambda: runtime.ask(lambda c: c.state()["dropped"]) == 5, "dropped in state")
        # Room again: a presentation is taken and decided.
        assert runtime.submit(Presented(READER, "tag", ANN))
        wait_for(lambda: outputs.count(DOOR, True) == 1, "ann's unlock")
    assert system_events(caplog_info, "overload") == [
        "5 inputs dropped since the last report: the queue was full"
    ]
    assert [b["member"] for t, b in logged_events(caplog_info) if t == "access"] == ["ann"]


# --- thread deaths ------------------------------------------------------------------------


def delta(to: int, member: str, tag: str) -> bytes:
    """A sealed delta from `to - 1` to `to` that adds a member."""
    body = {"groups": ["players"], "creds": [["tag", tag]]}
    ops = [["put", "member", member, cbor2.dumps(body)]]
    message = {"t": "delta", "epoch": EPOCH, "from": to - 1, "to": to, "ops": ops}
    return sealed("data", message | {"now": int(time.time())})


class Killer:
    """Makes the decoder's `open` end its thread (a `SystemExit` from deep in a
    library: not an `Exception`, so nothing on the way catches it) for every
    payload whose topic says so."""

    DEATH = f"{BASE}/data/die"

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self._open = runtime.decoder._open
        monkeypatch.setattr(runtime.decoder, "_open", self.open)

    def open(self, payload: PayloadReceived) -> Unsealed | None:
        if payload.topic == self.DEATH:
            raise SystemExit("the decoder thread ends")
        return self._open(payload)


def kill_decoder(runtime: Runtime) -> None:
    """End the decoder thread; return once it has ended."""
    thread = runtime.decoder.thread
    runtime.decoder.put(PayloadReceived(Killer.DEATH, b""))
    thread.join(WAIT_S)
    assert not thread.is_alive()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_decoder_is_restarted_once_and_a_second_death_ends_run_with_1(
    config: Config, caplog_info: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = Runtime(config)
    Killer(runtime, monkeypatch)
    run = Running(runtime)
    try:
        first = runtime.decoder.thread
        kill_decoder(runtime)
        runtime.submit(Disconnected())  # a step: the supervisor looks after each one
        wait_for(lambda: runtime.decoder.thread is not first, "the decoder's restart")
        for _ in range(2):  # two more steps: the restarted thread counts as alive
            try:
                runtime.ask(lambda _: None)
            except TimeoutError:
                pytest.fail("the loop ended after the decoder's first death")
        # Hub data still decodes, on the new thread.
        runtime.decoder.put(
            PayloadReceived(f"{BASE}/data", delta(VERSION + 1, "dan", "0d0d0d0d0d"))
        )
        wait_for(lambda: runtime.ask(lambda c: c.session.v) == VERSION + 1, "the delta applied")
        assert run.thread.is_alive()

        kill_decoder(runtime)
        runtime.submit(Disconnected())
        run.thread.join(WAIT_S)
        assert not run.thread.is_alive(), "run() did not return after the second death"
    finally:
        code = run.stop()
    assert code == 1
    messages = [r.getMessage() for r in caplog_info.records if r.name == "alc.controller"]
    assert "thread alc-decoder died: restarting it once" in messages
    assert (
        "thread alc-decoder died twice: exiting for systemd to restart the controller" in messages
    )


# --- timers and members during background work ---------------------------------------------


BULK = 3000  # records of the snapshot besides the club's: 300 pieces to build
PAGE = 1000


def asked_for(runtime: Runtime) -> str:
    """The link comes up (there is no broker here: what the controller publishes
    goes nowhere); the `req` of the boot request it then sends, which the hub
    answers with a snapshot (PROTOCOL.md s3)."""
    runtime.submit(Connected())
    wait_for(lambda: runtime.ask(lambda c: c.session.waiting_for) is not None, "a sync request")
    req = runtime.ask(lambda c: c.session.waiting_for)
    assert req is not None
    return req


def snapshot_pages(now: float, sync: str) -> list[bytes]:
    """A full sync of a new epoch in answer to request `sync`: the club and
    `BULK` members."""
    recs = records()
    for i in range(BULK):
        body = {"groups": ["players"], "creds": [["tag", f"9{i:09x}"]]}
        recs.append(("member", f"g{i}", cbor2.dumps(body)))
    pages = [recs[i : i + PAGE] for i in range(0, len(recs), PAGE)]
    digest = digest_of(recs)
    return [
        sealed(
            "data",
            {
                "t": "snap",
                "sync": sync,
                "epoch": "e2",
                "v": 1,
                "page": n,
                "pages": len(pages),
                "recs": [list(r) for r in page],
                "digest": digest,
                "now": int(now),
            },
        )
        for n, page in enumerate(pages)
    ]


@pytest.mark.parametrize("what", ["relock", "member"])
def test_a_slice_of_a_full_sync_build_gives_way(config: Config, what: str) -> None:
    """A full sync's build runs in slices between steps. Here a slice has no
    record budget at all (the build would otherwise end a slice every 100
    records anyway): only the loop's `yield_now` can end it before the build is
    done. A third of the way through the first slice, the relock falls due (the
    clock jumps past it) or a member presents a tag; the relock, or the
    member's decision, then comes before the build is done."""
    clock = FrozenClock(time.time())
    outputs = Outputs()
    runtime = Runtime(config, clock=clock, edges=[outputs])
    controller = runtime.controller
    order: list[str] = []  # on the loop's thread only
    work = controller.session.work
    asked = 0  # pieces of the build so far, in all slices

    def unbudgeted(
        now: float, budget: int = 0, *, yield_now: Callable[[], bool] | None = None
    ) -> list[SyncAction]:
        assert yield_now is not None

        def interrupt() -> bool:
            nonlocal asked
            asked += 1
            if asked == BULK // 30:
                if what == "relock":
                    clock.advance(10.0)
                else:
                    runtime.submit(Presented(READER, "tag", CAT))
            return yield_now()

        actions = work(now, 1 << 60, yield_now=interrupt)
        order.append("built" if any(isinstance(a, SaveSnapshot) for a in actions) else "slice")
        return actions

    handle = controller.handle

    def deciding(event: Input | Unsealed, now: float) -> list[Action]:
        if isinstance(event, Presented):
            order.append(f"decided {event.value}")
        return handle(event, now)

    controller.session.work = unbudgeted  # type: ignore[method-assign]
    controller.handle = deciding  # type: ignore[method-assign]
    outputs.on_switch = lambda name, on: order.append(f"{name} {'on' if on else 'off'}")
    with running(runtime):
        runtime.submit(Presented(READER, "tag", ANN))
        wait_for(lambda: outputs.count(DOOR, True) == 1, "ann's unlock")
        for page in snapshot_pages(clock(), asked_for(runtime)):
            runtime.submit(PayloadReceived(f"{BASE}/data", page))
        wait_for(lambda: runtime.ask(lambda c: c.session.epoch) == "e2", "the new dataset")

    # After ann's unlock: slices (the build yields to the runtime's own messages
    # too), the one that ended at the interruption, the relock or the decision,
    # and only then the end of the build.
    start = order.index(f"{DOOR} on") + 1
    first = f"{DOOR} off" if what == "relock" else f"decided {CAT}"
    assert first in order[start:], order
    stop = order.index(first, start)
    assert stop > start and set(order[start:stop]) == {"slice"}, order
    assert stop < order.index("built"), order
    assert asked > BULK // 30  # the build went on after the interruption


def test_background_work_that_raises_is_contained(
    config: Config, caplog_info: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = Outputs()
    runtime = Runtime(config, edges=[outputs])

    def broken(
        now: float, budget: int = 0, *, yield_now: Callable[[], bool] | None = None
    ) -> list[SyncAction]:
        raise RuntimeError("a bug in the build")

    monkeypatch.setattr(runtime.controller.session, "work", broken)
    with running(runtime):
        for page in snapshot_pages(time.time(), asked_for(runtime)):
            runtime.submit(PayloadReceived(f"{BASE}/data", page))
        wait_for(lambda: failures(runtime) >= 1, "the build to fail")
        runtime.submit(Presented(READER, "tag", ANN))
        wait_for(lambda: outputs.count(DOOR, True) == 1, "ann's unlock")
        wait_for(lambda: system_events(caplog_info, "error"), "the error event on the card")
    assert contained(caplog_info) == ["background work failed; the loop goes on"]
    assert system_events(caplog_info, "error") == [
        "background work: RuntimeError: a bug in the build"
    ]


def test_a_core_call_outside_an_input_that_raises_never_ends_the_loop(
    config: Config, caplog_info: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop asks the core for its next deadline outside any input's handling,
    both to plan its wait and to find the due timers: a bug there is contained
    too, and the member taken in that step is still decided."""
    outputs = Outputs()
    runtime = Runtime(config, edges=[outputs])
    next_deadline = runtime.controller.next_deadline
    calls: list[int] = []

    def broken() -> float | None:
        calls.append(1)
        if len(calls) <= 4:  # the wait's plan and the step, twice over
            raise RuntimeError("a bug in a deadline")
        return next_deadline()

    monkeypatch.setattr(runtime.controller, "next_deadline", broken)
    with running(runtime):
        runtime.submit(Presented(READER, "tag", ANN))
        wait_for(lambda: outputs.count(DOOR, True) == 1, "ann's unlock")
    failed = set(contained(caplog_info))
    assert "planning the next wait failed; the loop goes on" in failed
    assert "finding the due timers failed; the loop goes on" in failed


# --- ask ----------------------------------------------------------------------------------


def test_ask_runs_on_the_loop_returns_its_value_and_raises_what_it_raised(
    config: Config,
) -> None:
    runtime = Runtime(config)
    caller = threading.current_thread()
    # Not running yet: at once, on the caller's thread.
    assert runtime.ask(lambda c: (c.id, threading.current_thread() is caller)) == ("ctl1", True)
    with running(runtime) as run:
        assert runtime.ask(lambda _: threading.current_thread()) is run.thread
        assert runtime.ask(lambda c: c.session.v) == VERSION

        def wrong(_: Controller) -> None:
            raise KeyError("no such member")

        with pytest.raises(KeyError, match="no such member"):
            runtime.ask(wrong)
        # On the loop's own thread (a function asked that asks again): at once.
        assert runtime.ask(lambda _: runtime.ask(lambda c: c.session.epoch)) == EPOCH
        assert runtime.ask(lambda _: runtime.loop.failures) == 0  # nothing failed on the loop


def test_ask_times_out_while_the_loop_is_busy_and_the_question_is_dropped(
    config: Config,
) -> None:
    runtime = Runtime(config)
    busy, free = threading.Event(), threading.Event()
    late: list[str] = []

    def hold(_: Controller) -> str:
        busy.set()
        free.wait(WAIT_S * 3)
        return "held"

    with running(runtime):
        holder: list[str] = []
        thread = threading.Thread(target=lambda: holder.append(runtime.ask(hold, WAIT_S * 3)))
        thread.start()
        try:
            assert busy.wait(WAIT_S)  # the loop is in `hold` until `free`
            with pytest.raises(TimeoutError):
                runtime.ask(lambda _: late.append("ran"), timeout=0.05)
        finally:
            free.set()
            thread.join(WAIT_S)
        assert holder == ["held"]
        assert runtime.ask(lambda _: "marker") == "marker"  # the loop took the late one before
    assert late == []


def test_a_question_asked_while_the_loop_starts_is_answered_by_the_loop(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = Runtime(config)
    starting, go = threading.Event(), threading.Event()
    start = runtime.link.start

    def held_start() -> None:  # run() is under way: boot actions carried out, HAL started
        starting.set()
        go.wait(WAIT_S * 3)
        start()

    monkeypatch.setattr(runtime.link, "start", held_start)
    ran_on: list[threading.Thread] = []
    loop = threading.Thread(target=runtime.run, name="test-loop")
    loop.start()
    asker = threading.Thread(
        target=lambda: runtime.ask(lambda _: ran_on.append(threading.current_thread()), WAIT_S),
        name="test-asker",
    )
    try:
        assert starting.wait(WAIT_S)
        asker.start()
        wait_for(lambda: ran_on or runtime.inbox.has_internal(), "the question to be asked")
        go.set()
        asker.join(WAIT_S)
    finally:
        go.set()
        runtime.stop()
        loop.join(WAIT_S)
        if asker.ident is not None:
            asker.join(WAIT_S)
    # On the loop's thread, once it ran: never beside the loop while it started.
    assert ran_on == [loop], [t.name for t in ran_on]


def test_a_question_asked_after_the_loop_stopped_is_answered_at_once(config: Config) -> None:
    runtime = Runtime(config)
    with running(runtime):
        assert runtime.ask(lambda c: c.session.v) == VERSION
    # The loop has returned: nothing runs on the core any more, so at once.
    assert runtime.ask(lambda c: c.session.v, timeout=0.5) == VERSION
