"""Members first: the count of waiting presentations, background threads stepping
aside, and the kernel priorities of the loop and of background threads."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from firmware.members_first import (
    BACKGROUND_NICE,
    HIGH_NICE,
    MembersFirst,
    background_thread,
    member_thread,
)


def in_thread(work: Callable[[], Any]) -> Any:
    """`work()` in a fresh thread (priorities are per thread); its result."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return result[0]


def own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_step_aside_waits_while_a_member_waits_and_not_after() -> None:
    members = MembersFirst()
    assert not members.waiting()
    members.queued()
    members.queued()
    assert members.waiting()
    members.served()
    assert members.waiting()  # one still waits
    stepped = threading.Event()

    def background() -> None:
        members.step_aside(timeout=30)
        stepped.set()

    thread = threading.Thread(target=background)
    thread.start()
    assert not stepped.wait(0.2)  # still waiting for the member
    members.served()
    assert stepped.wait(10)
    thread.join(10)
    assert not members.waiting()
    members.served(5)  # more served than queued never goes below zero
    assert not members.waiting()
    members.queued()
    assert members.waiting()


def test_step_aside_is_bounded() -> None:
    members = MembersFirst()
    members.queued()  # never served: a flooding reader
    done = threading.Event()

    def background() -> None:
        members.step_aside(timeout=0.01)  # returns all the same
        done.set()

    thread = threading.Thread(target=background)
    thread.start()
    thread.join(10)
    assert done.is_set() and members.waiting()


def test_a_background_thread_runs_at_a_lower_priority() -> None:
    def lowered() -> tuple[int, int]:
        before = own_nice()
        background_thread()
        return before, own_nice()

    before, after = in_thread(lowered)
    assert after == min(before + BACKGROUND_NICE, 19)
    assert own_nice() == before  # the calling thread is untouched


def test_the_loop_thread_gets_the_priority_it_may() -> None:
    def raised(priority: str) -> Callable[[], tuple[str, int, int]]:
        def work() -> tuple[str, int, int]:
            before = own_nice()
            got = member_thread(priority)
            return got, before, own_nice()

        return work

    got, before, after = in_thread(raised("high"))
    if got == "high":
        assert after == before - HIGH_NICE
    else:  # no CAP_SYS_NICE: nothing changed
        assert (got, after) == ("normal", before)

    def realtime() -> tuple[str, int]:
        return member_thread("realtime"), os.sched_getscheduler(0)

    got, policy = in_thread(realtime)
    assert got in ("realtime", "high", "normal")
    assert (policy == os.SCHED_FIFO) == (got == "realtime")
    assert in_thread(lambda: os.sched_getscheduler(0)) == os.SCHED_OTHER  # per thread
    assert in_thread(raised("normal"))[0] == "normal"
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the test's own thread untouched
