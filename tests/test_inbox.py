"""The loop's inbox (`firmware.runtime.inbox`): its three lanes and their order,
the bound the outside lanes share, the decoder's wait for room, `wake`, and the
count of members waiting that background threads step aside for.

Where a thread must be waiting (a `deliver` for room, a `take` for anything),
the test waits until it is parked on the inbox's condition before acting, so
that "it waited" is shown, not hoped for. A `take` or `deliver` that should
return at once is given a timeout far longer than the test's own wait, so one
that waited out its timeout fails the test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from firmware.runtime.inbox import Inbox, Taken
from firmware.runtime.priorities import MembersFirst
from tests.waiting import WAIT_S, wait_for

FOREVER_S = 3600.0  # a timeout nothing in these tests may wait out

Box = Inbox[str, str]


def parked(inbox: Box, threads: int = 1) -> bool:
    """True when `threads` threads wait on the inbox's condition (CPython's
    `threading.Condition` keeps its waiters in `_waiters`)."""
    waiters: Any = inbox._ready._waiters  # type: ignore[attr-defined]
    return len(waiters) == threads


def stepping_aside(members: MembersFirst) -> bool:
    """True when a thread waits in `members.step_aside` (on its event's condition)."""
    waiters: Any = members._clear._cond._waiters  # type: ignore[attr-defined]
    return len(waiters) == 1


class Call:
    """`fn()` on a thread of its own; `result` once it returned."""

    def __init__(self, fn: Callable[[], object], name: str) -> None:
        self.result: object = None
        self.done = threading.Event()
        self._fn = fn
        self.thread = threading.Thread(target=self._run, name=name)
        self.thread.start()

    def _run(self) -> None:
        self.result = self._fn()
        self.done.set()

    def join(self) -> object:
        """Wait for the call to return (failing the test if it does not) and give
        its result."""
        if not self.done.wait(WAIT_S):
            raise AssertionError(f"{self.thread.name} did not return")
        self.thread.join(WAIT_S)
        return self.result


def items(taken: Taken[str, str]) -> tuple[list[str], list[str], str | None]:
    """What one step took, without the queued times."""
    routine = taken.routine[0] if taken.routine is not None else None
    return taken.internal, [item for item, _ in taken.members], routine


def test_internal_first_then_members_then_one_routine_item_in_arrival_order() -> None:
    inbox: Box = Inbox()
    inbox.post("hub-1")
    inbox.post("tag-1", member=True)
    inbox.tell("written-1")
    inbox.post("hub-2")
    inbox.post("tag-2", member=True)
    inbox.post("tag-3", member=True)
    inbox.tell("written-2")

    # Every internal item at once, then members (up to `most`) ahead of the
    # routine items that came before them; a routine item only in a step
    # without members.
    assert items(inbox.take(0, most=2)) == (["written-1", "written-2"], ["tag-1", "tag-2"], None)
    inbox.tell("asked")
    assert items(inbox.take(0, most=2)) == (["asked"], ["tag-3"], None)
    assert items(inbox.take(0, most=2)) == ([], [], "hub-1")
    assert items(inbox.take(0, most=2)) == ([], [], "hub-2")
    assert not inbox.take(0, most=2)
    assert inbox.depth() == 0


def test_each_outside_item_keeps_the_time_it_was_queued() -> None:
    inbox: Box = Inbox()
    for name in ("a", "b", "c"):
        inbox.post(name, member=True)
    taken = inbox.take(0, most=10)
    times = [queued for _, queued in taken.members]
    assert [item for item, _ in taken.members] == ["a", "b", "c"]
    assert times == sorted(times)


def test_the_outside_lanes_share_one_bound_and_drops_are_counted() -> None:
    inbox: Box = Inbox(bound=3)
    assert inbox.post("hub-1") and inbox.post("tag-1", member=True) and inbox.post("hub-2")
    assert inbox.dropped == 0
    assert not inbox.post("tag-2", member=True)  # a presentation is dropped too
    assert not inbox.post("hub-3")
    assert inbox.dropped == 2
    assert inbox.depth() == 3
    assert inbox.members_first.waiting()  # the member queued before the drops

    # Internal items are never dropped, however full the outside lanes are.
    for i in range(10):
        inbox.tell(f"written-{i}")
    taken = inbox.take(0, most=10)
    assert taken.internal == [f"written-{i}" for i in range(10)]
    assert [item for item, _ in taken.members] == ["tag-1"]

    # Room again: accepted, and the count stays what it was.
    assert inbox.post("hub-4")
    assert inbox.dropped == 2
    assert [items(inbox.take(0, most=10))[2] for _ in range(3)] == ["hub-1", "hub-2", "hub-4"]


def test_deliver_waits_for_room_instead_of_dropping() -> None:
    inbox: Box = Inbox(bound=2)
    inbox.post("hub-1")
    inbox.post("hub-2")
    call = Call(lambda: inbox.deliver("page", timeout=0.01), "test-deliver")
    wait_for(lambda: parked(inbox), "deliver to wait for room")
    assert inbox.depth() == 2 and inbox.dropped == 0  # not queued past the bound, not dropped

    assert items(inbox.take(0, most=10)) == ([], [], "hub-1")  # room for one
    assert call.join() is True
    assert inbox.depth() == 2
    assert [items(inbox.take(0, most=10))[2] for _ in range(2)] == ["hub-2", "page"]


def test_deliver_gives_up_once_the_inbox_is_closed() -> None:
    inbox: Box = Inbox(bound=1)
    inbox.post("hub-1")
    call = Call(lambda: inbox.deliver("page", timeout=FOREVER_S), "test-deliver")
    wait_for(lambda: parked(inbox), "deliver to wait for room")
    inbox.close()
    assert call.join() is False
    assert inbox.depth() == 1
    # Closed and full: refused at once.
    assert inbox.deliver("page-2", timeout=FOREVER_S) is False
    assert [items(inbox.take(0, most=10))[2] for _ in range(2)] == ["hub-1", None]


def test_take_returns_at_once_after_wake() -> None:
    inbox: Box = Inbox()
    # Woken before it waits: the next take does not wait.
    inbox.wake()
    assert not Call(lambda: inbox.take(FOREVER_S, most=10), "test-take").join()
    # Woken while it waits.
    call = Call(lambda: inbox.take(FOREVER_S, most=10), "test-take")
    wait_for(lambda: parked(inbox), "take to wait")
    inbox.wake()
    assert not call.join()
    # The wake is used up: a later take waits again, until something comes.
    call = Call(lambda: inbox.take(FOREVER_S, most=10), "test-take")
    wait_for(lambda: parked(inbox), "take to wait")
    inbox.tell("written")
    taken = call.join()
    assert isinstance(taken, Taken) and taken.internal == ["written"]


def test_a_waiting_take_returns_with_what_is_posted() -> None:
    inbox: Box = Inbox()
    call = Call(lambda: inbox.take(FOREVER_S, most=10), "test-take")
    wait_for(lambda: parked(inbox), "take to wait")
    inbox.post("tag", member=True)
    taken = call.join()
    assert isinstance(taken, Taken) and [item for item, _ in taken.members] == ["tag"]


def test_members_first_counts_members_until_the_loop_served_them() -> None:
    inbox: Box = Inbox()
    members = inbox.members_first
    assert not members.waiting()
    members.step_aside(FOREVER_S)  # no member waits: returns at once
    inbox.post("hub")
    assert not members.waiting()  # only presentations count
    for tag in ("tag-1", "tag-2", "tag-3"):
        inbox.post(tag, member=True)
    assert members.waiting()

    # A background thread steps aside until the loop has served every member.
    aside = Call(lambda: members.step_aside(FOREVER_S), "test-step-aside")
    taken = inbox.take(0, most=2)
    inbox.served(len(taken.members))
    assert members.waiting()  # one still queued
    taken = inbox.take(0, most=2)
    assert len(taken.members) == 1
    wait_for(lambda: stepping_aside(members), "the background thread to step aside")
    inbox.served(len(taken.members))
    aside.join()
    assert not members.waiting()
    assert items(inbox.take(0, most=2)) == ([], [], "hub")


def test_the_loop_reads_internal_items_alone_between_slices_of_work() -> None:
    inbox: Box = Inbox()
    assert not inbox.has_internal()
    inbox.post("tag", member=True)
    inbox.tell("written")
    assert inbox.has_internal()
    assert inbox.take_internal() == ["written"]
    assert not inbox.has_internal()
    assert items(inbox.take(0, most=10)) == ([], ["tag"], None)


def test_a_batch_from_the_decoder_goes_in_whole_and_in_order() -> None:
    inbox: Box = Inbox(bound=2)
    inbox.post("hub-1")
    inbox.post("hub-2")
    call = Call(lambda: inbox.deliver_all(["a", "b", "c"], timeout=0.01), "test-deliver")
    wait_for(lambda: parked(inbox), "the batch to wait for room")
    assert inbox.depth() == 2  # none of it went in while full

    assert items(inbox.take(0, most=10))[2] == "hub-1"  # room for one: the batch goes in whole
    assert call.join() is True
    assert inbox.depth() == 4  # past the bound by the batch, never by more
    assert [items(inbox.take(0, most=10))[2] for _ in range(4)] == ["hub-2", "a", "b", "c"]
