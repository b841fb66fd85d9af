"""systemd's watchdog (`firmware.runtime.watchdog`): a part idle however long is
never stale, a part busy with one piece of work past `STALE_S` is, and no ping
goes out while one is; then the real `Runtime` against a datagram socket
standing in for systemd's: `READY=1`, pings while idle, none while the event
writer hangs in a write (a hung fsync), pings again once it is through.

The end-to-end tests make `STALE_S` and `PING_EVERY_S` small so they are quick;
they never assert a time. That pings stopped is shown with markers: the test
sends its own datagram to the socket when it knows the writer is stuck and
another once the watchdog has held back many checks; no ping may arrive
between the two (one socket, one queue: a ping sent before the first marker
arrives before it).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from firmware.core.inputs import Presented
from firmware.core.outbox import LoggedEvent
from firmware.runtime import Runtime, watchdog
from firmware.runtime.inbox import Taken
from firmware.runtime.watchdog import PING_EVERY_S, STALE_S, Pulse, Watchdog
from firmware.sdnotify import Notifier
from tests.loop_rig import ANN, READER, CardGate, make_config, running
from tests.waiting import WAIT_S, wait_for

QUICK_STALE_S = 0.3
QUICK_PING_S = 0.05
STOP = b"test: stop reading"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pinger(clock: Clock, pulses: Sequence[Pulse]) -> tuple[Watchdog, list[float]]:
    pings: list[float] = []
    return Watchdog(pulses, lambda: pings.append(clock.now), clock), pings


# --- the units ---------------------------------------------------------------------


def test_a_part_waiting_for_work_is_never_stale() -> None:
    clock = Clock()
    pulse = Pulse("decoder", clock)
    assert pulse.stale() == 0.0  # a new part waits for its first piece of work
    clock.now += 100 * STALE_S
    assert pulse.stale() == 0.0
    pulse.beat()
    pulse.idle()  # done, waiting again
    clock.now += 100 * STALE_S
    assert pulse.stale() == 0.0


def test_a_part_busy_with_one_piece_is_stale_by_the_time_since_it_progressed() -> None:
    clock = Clock()
    pulse = Pulse("events", clock)
    pulse.beat()
    clock.now += 3.0
    assert pulse.stale() == 3.0
    assert pulse.stale(now=clock.now + 1.0) == 4.0
    pulse.beat()  # the next piece: progress
    assert pulse.stale() == 0.0


def test_pings_every_ping_period_while_every_part_moves() -> None:
    clock = Clock()
    loop, events = Pulse("loop", clock), Pulse("events", clock)
    dog, pings = pinger(clock, [loop, events])
    assert dog.check()  # the first check pings at once
    assert dog.due() == clock.now + PING_EVERY_S
    clock.now += PING_EVERY_S / 2
    loop.beat()  # a step, then waiting again
    loop.idle()
    assert not dog.check()  # not due yet
    clock.now += PING_EVERY_S / 2
    assert dog.check()
    # Busy, but within STALE_S of its last progress: still moving.
    events.beat()
    clock.now += STALE_S
    assert dog.check() and dog.stuck is None
    assert pings == [1000.0, 1000.0 + PING_EVERY_S, 1000.0 + PING_EVERY_S + STALE_S]


def test_no_ping_while_a_part_is_stuck_and_pings_again_when_it_moves() -> None:
    clock = Clock()
    loop, events, decoder = Pulse("loop", clock), Pulse("events", clock), Pulse("decoder", clock)
    dog, pings = pinger(clock, [loop, events, decoder])
    assert dog.check()
    events.beat()  # a write starts, and hangs
    decoder.beat()  # a page starts, and hangs
    for _ in range(5):
        clock.now += STALE_S
        loop.beat()  # the loop itself goes on
        dog.check()
    assert pings == [1000.0, 1000.0 + STALE_S]  # the last one while still within STALE_S
    assert dog.stuck == "events, decoder"
    decoder.idle()
    clock.now += PING_EVERY_S
    assert not dog.check() and dog.stuck == "events"
    events.beat()  # the write finished
    clock.now += PING_EVERY_S
    assert dog.check() and dog.stuck is None
    assert len(pings) == 3


# --- end to end: a socket in systemd's place -----------------------------------------


class Systemd:
    """A bound datagram socket in systemd's place, read on a thread (systemd
    reads at once; an unread socket would fill and drop pings)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._lock = threading.Lock()
        self._messages: list[str] = []
        self._thread = threading.Thread(target=self._read, name="test-systemd")
        self._thread.start()

    def _read(self) -> None:
        while True:
            data = self._sock.recv(4096)
            if data == STOP:
                return
            with self._lock:
                self._messages.append(data.decode())

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return list(self._messages)

    def send(self, text: str) -> None:
        """A datagram of the test's own, queued behind what was sent before."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(text.encode(), self.path)

    def mark(self, name: str) -> None:
        """Queue a marker and wait until the reader has got it."""
        self.send(name)
        wait_for(lambda: name in self.messages, f"the marker {name}")

    def between(self, first: str, last: str | None = None) -> list[str]:
        """Messages after marker `first` (and before `last`)."""
        got = self.messages
        start = got.index(first) + 1
        return got[start : got.index(last)] if last is not None else got[start:]

    def close(self) -> None:
        self.send(STOP.decode())
        self._thread.join(WAIT_S)
        self._sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[Systemd]:
    sd = Systemd(tmp_path / "notify")
    try:
        yield sd
    finally:
        sd.close()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watchdog, "STALE_S", QUICK_STALE_S)
    monkeypatch.setattr(watchdog, "PING_EVERY_S", QUICK_PING_S)


def access_written(events: Sequence[LoggedEvent]) -> bool:
    return any(e.type == "access" for e in events)


def watched_runtime(
    tmp_path: Path, systemd: Systemd, monkeypatch: pytest.MonkeyPatch
) -> tuple[Runtime, CardGate]:
    """A runtime that notifies `systemd`, whose writes of access events hang
    until the gate is released."""
    notifier = Notifier({"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "10000000"})
    runtime = Runtime(make_config(tmp_path, time.time()), notifier=notifier)
    gate = CardGate(runtime, access_written)
    monkeypatch.setattr(runtime.events, "append", gate.append)
    return runtime, gate


def count_checks(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the watchdog checks the loop makes that hold a ping back."""
    check = runtime.watchdog.check
    held: list[int] = []

    def counting() -> bool:
        pinged = check()
        if not pinged and runtime.watchdog.stuck is not None:
            held.append(1)
        return pinged

    monkeypatch.setattr(runtime.watchdog, "check", counting)
    return lambda: len(held)


def test_pings_stop_while_the_event_writer_hangs_and_resume_after(
    tmp_path: Path, systemd: Systemd, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, gate = watched_runtime(tmp_path, systemd, monkeypatch)
    held_back = count_checks(runtime, monkeypatch)
    with running(runtime):
        wait_for(lambda: systemd.messages.count("WATCHDOG=1") >= 3, "pings while idle")
        assert systemd.messages[0] == "READY=1"

        runtime.submit(Presented(READER, "tag", ANN))  # its access event's write hangs
        assert gate.holding.wait(WAIT_S)
        wait_for(
            lambda: runtime.ask(lambda _: runtime.watchdog.stuck) == "events",
            "the watchdog to see the event writer stuck",
        )
        systemd.mark("stuck")
        held = held_back()
        wait_for(lambda: held_back() >= held + 10, "the watchdog to hold back ten checks")
        systemd.mark("still stuck")
        assert systemd.between("stuck", "still stuck") == []
        assert gate.held[0].seq not in gate.written  # still hanging

        gate.release()
        wait_for(lambda: "WATCHDOG=1" in systemd.between("still stuck"), "pings to resume")
        assert runtime.ask(lambda _: runtime.watchdog.stuck) is None
    assert systemd.messages[-1] == "STOPPING=1"
    assert gate.held[0].seq in gate.written  # the write went through in the end


def test_the_loop_does_not_spin_while_the_watchdog_holds_pings_back(
    tmp_path: Path, systemd: Systemd, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a part is stuck the loop has nothing to do but look again now and
    then: it must sleep between looks, not take a step after step (a hung card
    would have it burn a core of the Pi that the kiosk, the network and the
    writers need). Counted over a stretch of twenty ping periods: a loop that
    sleeps takes a step or two per period, whatever the machine's load; one
    that spins takes thousands."""
    runtime, gate = watched_runtime(tmp_path, systemd, monkeypatch)
    steps: list[float] = []
    take = runtime.inbox.take

    def counting(timeout: float, most: int) -> Taken[Any, Any]:
        steps.append(timeout)
        return take(timeout, most)

    monkeypatch.setattr(runtime.inbox, "take", counting)
    with running(runtime):
        runtime.submit(Presented(READER, "tag", ANN))
        assert gate.holding.wait(WAIT_S)
        wait_for(lambda: runtime.watchdog.stuck == "events", "the watchdog to hold pings back")
        before = len(steps)
        # Twenty ping periods pass (the writer is still stuck, so no ping either).
        stuck_for = runtime.durable.pulse.stale()
        wait_for(
            lambda: runtime.durable.pulse.stale() >= stuck_for + 20 * QUICK_PING_S,
            "twenty ping periods",
        )
        during = len(steps) - before
        gate.release()
    assert during < 200, f"{during} loop steps in twenty ping periods"
