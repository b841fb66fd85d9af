"""The event thread: a step's actions come back after its events are written, in
order; events a refused write left over are written with the next step."""

from __future__ import annotations

import queue
from collections.abc import Sequence
from typing import Any

from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.runtime.disk import DurableStep, DurableWriter


class FlakyStore:
    """Refuses its first write, as a full card would, then accepts."""

    def __init__(self) -> None:
        self.calls = 0
        self.written: list[int] = []

    def append(
        self,
        events: Sequence[LoggedEvent],
        debits: Sequence[DebitEntry],
        *,
        commands: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.calls += 1
        if self.calls == 1:
            raise OSError("disk full")
        self.written += [e.seq for e in events]


def test_refused_events_are_written_with_the_next_step_and_actions_keep_order() -> None:
    store = FlakyStore()
    back: queue.Queue[list[Any]] = queue.Queue()
    writer = DurableWriter(store, back.put)  # type: ignore[arg-type]
    try:
        writer.submit(DurableStep([LoggedEvent(1, 0, "access", {})], [], [], ["first"]))
        assert back.get(timeout=10) == ["first"]  # the door still opens
        writer.submit(DurableStep([LoggedEvent(2, 0, "access", {})], [], [], ["second"]))
        assert back.get(timeout=10) == ["second"]
    finally:
        writer.stop()
    assert store.written == [1, 2]
    assert not writer.busy()
