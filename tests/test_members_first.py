"""Members first: the count of waiting presentations, background threads stepping
aside, and the kernel priorities of the loop and of background threads."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from firmware.runtime.priorities import (
    HIGH_NICE,
    MembersFirst,
    member_thread,
)

CAP_SYS_NICE = 23  # linux/capability.h
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def in_thread(work: Callable[[], Any]) -> Any:
    """`work()` in a fresh thread (priorities are per thread); its result, or
    what it raised (a skip included), raised here."""
    result: list[Any] = []
    raised: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the test's thread
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    if raised:
        raise raised[0]
    return result[0]


@contextlib.contextmanager
def watching_waits(entered: threading.Event) -> Iterator[None]:
    """Set `entered` when this thread calls a `threading` wait (Event, Condition):
    a test can then know another thread is blocked rather than sleep and hope."""

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        code = frame.f_code
        if event == "call" and code.co_name == "wait" and code.co_filename == threading.__file__:
            entered.set()

    sys.setprofile(profile)  # this thread only
    try:
        yield
    finally:
        sys.setprofile(None)


def sys_nice_capable() -> bool | None:
    """Whether this thread holds CAP_SYS_NICE (None: no /proc to tell)."""
    try:
        status = Path("/proc/thread-self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    return None


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_sys_nice() -> bool:
    """Drop CAP_SYS_NICE from the calling thread's effective set (capset(2) acts
    on one thread), as a controller run without the capability has it. False
    where that cannot be done."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "capset"):
        return False
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        return False
    data[0].effective &= ~(1 << CAP_SYS_NICE)
    return bool(libc.capset(ctypes.byref(header), data) == 0)


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
    waiting_inside = threading.Event()
    waited_for: list[bool] = []

    def background() -> None:
        with watching_waits(waiting_inside):
            members.step_aside(timeout=30)
        waited_for.append(members.waiting())  # still a member waiting when it returned?
        stepped.set()

    thread = threading.Thread(target=background)
    thread.start()
    # Blocked, not sleeping and hoping: the thread is inside a wait.
    assert waiting_inside.wait(10)
    assert not stepped.is_set()  # still waiting for the member
    members.served()
    assert stepped.wait(10)
    thread.join(10)
    assert waited_for == [False]  # it went on only once the member was served
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


def test_with_cap_sys_nice_the_loop_gets_the_priority_it_asks_for() -> None:
    if not sys_nice_capable():
        pytest.skip(
            "no CAP_SYS_NICE here, so no raise can be seen: run as root to check it "
            "(the fallback without it is checked on its own)"
        )

    def raised() -> tuple[str, int, int]:
        before = own_nice()
        return member_thread("high"), before, own_nice()

    got, before, after = in_thread(raised)
    assert (got, after) == ("high", before - HIGH_NICE)

    def realtime() -> tuple[str, int]:
        return member_thread("realtime"), os.sched_getscheduler(0)

    assert in_thread(realtime) == ("realtime", os.SCHED_FIFO)
    assert in_thread(lambda: os.sched_getscheduler(0)) == os.SCHED_OTHER  # per thread
    assert in_thread(lambda: member_thread("normal")) == "normal"
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the test's own thread untouched


def test_without_cap_sys_nice_the_loop_stays_at_normal_priority() -> None:
    if resource.getrlimit(resource.RLIMIT_NICE)[0] or resource.getrlimit(resource.RLIMIT_RTPRIO)[0]:
        pytest.skip("RLIMIT_NICE or RLIMIT_RTPRIO let this user raise priorities anyway")

    def asked(priority: str) -> Callable[[], tuple[str, int, int, int]]:
        def work() -> tuple[str, int, int, int]:
            if sys_nice_capable() and not drop_sys_nice():
                pytest.skip("cannot drop CAP_SYS_NICE from a thread here (no capset)")
            assert sys_nice_capable() is False
            before = own_nice()
            got = member_thread(priority)
            return got, before, own_nice(), os.sched_getscheduler(0)

        return work

    for priority in ("realtime", "high", "normal"):
        got, before, after, policy = in_thread(asked(priority))
        assert (got, after, policy) == ("normal", before, os.SCHED_OTHER), priority
