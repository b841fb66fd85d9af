"""The event thread: steps are written in order and said written through the
inbox; events a refused write left over are written with the next step, the
disk's state is told when it changes, and past the memory bound the oldest
access events are folded (counted, their seqs named), never debits."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from firmware.core.inputs import EventsRemoved
from firmware.core.outbox import DebitEntry, LoggedEvent
from firmware.runtime import disk
from firmware.runtime.disk import DurableStep, DurableWriter
from firmware.runtime.inbox import Inbox
from firmware.runtime.messages import DiskChanged, ForCore, Internal, Written
from firmware.runtime.watchdog import Pulse
from tests.waiting import WAIT_S, wait_for


class FlakyStore:
    """Refuses its first `refusals` writes, as a full card would, then accepts."""

    def __init__(self, refusals: int = 1) -> None:
        self.refusals = refusals
        self.calls = 0
        self.written: list[int] = []
        self.debits: list[int] = []

    def append(
        self,
        events: Sequence[LoggedEvent],
        debits: Sequence[DebitEntry],
        *,
        commands: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.calls += 1
        if self.calls <= self.refusals:
            raise OSError("disk full")
        self.written += [e.seq for e in events]
        self.debits += [d.seq for d in debits]


def told(inbox: Inbox[object, Internal]) -> list[Internal]:
    return inbox.take_internal()


def event(seq: int, type: str = "access") -> LoggedEvent:
    return LoggedEvent(seq, 0, type, {})


def test_refused_events_are_written_with_the_next_step_and_the_disk_is_told() -> None:
    store = FlakyStore()
    inbox: Inbox[object, Internal] = Inbox()
    writer = DurableWriter(store, inbox.tell, Pulse("events"))  # type: ignore[arg-type]
    messages: list[Internal] = []
    try:
        writer.submit(DurableStep(1, [event(1)], [], []))
        wait_for(lambda: messages.extend(told(inbox)) or Written(1) in messages, "step 1")
        assert DiskChanged("events", False, "events cannot be written: disk full") in messages
        assert writer.unwritten() == 1
        writer.submit(DurableStep(2, [event(2)], [], []))
        wait_for(lambda: messages.extend(told(inbox)) or Written(2) in messages, "step 2")
    finally:
        writer.stop()
    assert store.written == [1, 2]
    assert DiskChanged("events", True, "events are written again") in messages
    assert writer.unwritten() == 0


def test_a_refusing_card_is_tried_again_without_new_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(disk, "RETRY_S", (0.01,))
    store = FlakyStore(refusals=3)
    inbox: Inbox[object, Internal] = Inbox()
    writer = DurableWriter(store, inbox.tell, Pulse("events"))  # type: ignore[arg-type]
    try:
        writer.submit(DurableStep(1, [event(1)], [], []))
        wait_for(lambda: store.written == [1], "the retry to write the event")
    finally:
        writer.stop()


def test_past_the_bound_old_access_events_fold_and_debits_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(disk, "MAX_UNWRITTEN", 3)
    store = FlakyStore(refusals=2)
    inbox: Inbox[object, Internal] = Inbox()
    writer = DurableWriter(store, inbox.tell, Pulse("events"))  # type: ignore[arg-type]
    messages: list[Internal] = []
    debit = DebitEntry(2, "m1", 50)
    try:
        writer.submit(DurableStep(1, [event(1), event(2, "debit"), event(3)], [debit], []))
        wait_for(lambda: messages.extend(told(inbox)) or Written(1) in messages, "step 1")
        writer.submit(DurableStep(2, [event(4), event(5)], [], []))
        wait_for(lambda: messages.extend(told(inbox)) or Written(2) in messages, "step 2")
        writer.submit(DurableStep(3, [event(6)], [], []))
        wait_for(lambda: messages.extend(told(inbox)) or Written(3) in messages, "step 3")
    finally:
        writer.stop()
    folded = [m.input for m in messages if isinstance(m, ForCore)]
    assert folded == [EventsRemoved("folded", [(1, 1), (3, 3)])]
    assert store.written == [2, 4, 5, 6]  # the debit's event kept, the newest access events kept
    assert store.debits == [2]


class HungStore(FlakyStore):
    """Hangs in its first write until `release` is set, as a card stuck in fsync."""

    def __init__(self) -> None:
        super().__init__(refusals=0)
        self.release = threading.Event()
        self.entered = threading.Event()

    def append(
        self,
        events: Sequence[LoggedEvent],
        debits: Sequence[DebitEntry],
        *,
        commands: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.entered.set()
        self.release.wait(WAIT_S)
        super().append(events, debits, commands=commands)


def test_steps_past_the_queue_bound_merge_and_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(disk, "MAX_QUEUED_STEPS", 2)
    store = HungStore()
    inbox: Inbox[object, Internal] = Inbox()
    writer = DurableWriter(store, inbox.tell, Pulse("events"))  # type: ignore[arg-type]
    messages: list[Internal] = []
    try:
        writer.submit(DurableStep(1, [event(1)], [], []))
        assert store.entered.wait(WAIT_S)  # the thread hangs in the first write
        for n in range(2, 8):  # two queue, the other four merge into one
            writer.submit(DurableStep(n, [event(n)], [], []))
        store.release.set()
        wait_for(lambda: messages.extend(told(inbox)) or Written(7) in messages, "step 7")
    finally:
        writer.stop()
    assert store.written == [1, 2, 3, 4, 5, 6, 7]
    assert [m.upto for m in messages if isinstance(m, Written)] == sorted(
        m.upto for m in messages if isinstance(m, Written)
    )


class CountingStore(FlakyStore):
    """Records each transaction's events and debits (seqs), as the card takes them."""

    def __init__(self) -> None:
        super().__init__(refusals=0)
        self.transactions: list[tuple[list[int], list[int]]] = []

    def append(
        self,
        events: Sequence[LoggedEvent],
        debits: Sequence[DebitEntry],
        *,
        commands: Sequence[tuple[str, int]] = (),
    ) -> None:
        super().append(events, debits, commands=commands)
        self.transactions.append(([e.seq for e in events], [d.seq for d in debits]))


def test_a_large_merged_step_is_written_in_slices_with_word_of_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Steps merged while the card was busy can hold tens of thousands of events:
    # one transaction would let no word of progress reach the loop for seconds,
    # and a busy card would pass for a hung one (held steps released early).
    monkeypatch.setattr(disk, "MAX_EVENTS_PER_COMMIT", 3)
    store = CountingStore()
    inbox: Inbox[object, Internal] = Inbox()
    writer = DurableWriter(store, inbox.tell, Pulse("events"))  # type: ignore[arg-type]
    messages: list[Internal] = []
    debit = DebitEntry(5, "m1", 10)
    try:
        writer.submit(DurableStep(1, [event(n) for n in range(1, 8)], [debit], []))
        wait_for(lambda: messages.extend(told(inbox)) or Written(1) in messages, "step 1")
    finally:
        writer.stop()
    # Three transactions, each debit with its own event; two words of progress
    # (nothing written whole yet: step 0) before the step itself.
    assert store.transactions == [([1, 2, 3], []), ([4, 5, 6], [5]), ([7], [])]
    assert [m.upto for m in messages if isinstance(m, Written)] == [0, 0, 1]
