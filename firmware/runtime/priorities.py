"""Members first: background threads step aside while a member waits at a door.

Python runs one thread at a time. While the decoder thread opens snapshot pages
back to back, or the storage thread saves a full sync, the loop deciding for a
member has to win the interpreter from them, and on a small board that costs
milliseconds. So the loop says when presentations are queued, and the background
threads wait between two pieces of their work (a page, a chunk of records) until
the loop has served them. The wait is bounded: a reader that floods the loop
slows a full sync down, but never stops it.

Only the loop's kernel priority is raised (`member_thread`). Background threads
keep the process's own: they once ran at nice +10, and on a machine busy with
other programs (the kiosk's browser on a Pi, other processes on a bench) the
kernel then left such a thread off the CPU for tens of milliseconds while it
held the interpreter lock, and the loop, waiting for that lock, was held up as
long: relocks 27-31 ms late during a burst of deltas at a load of 5 on 2 cores,
2-9 ms at nice 0 (`alc bench sync`, the same machine and load). A FIFO or
raised loop gets a core before them all the same.
"""

from __future__ import annotations

import os
import threading

STEP_ASIDE_MAX_S = 0.05
BACKGROUND_NICE = 0
HIGH_NICE = 10
REALTIME_PRIORITY = 10  # SCHED_FIFO 1-99: low among real-time threads, above all others


class MembersFirst:
    """A count of presentations queued for the loop, and a way to wait for none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting = 0
        self._clear = threading.Event()
        self._clear.set()

    def queued(self) -> None:
        """A presentation was queued for the loop (any thread)."""
        with self._lock:
            self._waiting += 1
            self._clear.clear()

    def served(self, count: int = 1) -> None:
        """The loop took `count` queued presentations off its queue and decided."""
        with self._lock:
            self._waiting = max(0, self._waiting - count)
            if self._waiting == 0:
                self._clear.set()

    def waiting(self) -> bool:
        """True while a queued presentation waits for the loop. A plain read of
        one int: cheap enough to ask between every few records of a build."""
        return self._waiting > 0

    def step_aside(self, timeout: float = STEP_ASIDE_MAX_S) -> None:
        """Background thread: wait (at most `timeout`) until no member waits."""
        self._clear.wait(timeout)


def member_thread(priority: str) -> str:
    """Call first thing in the loop's thread: raise its kernel priority, so that
    when a member presents a tag the loop gets a core at once rather than
    queueing behind busy threads and processes (on a two-core board that wait
    is milliseconds). `priority`: "realtime" (SCHED_FIFO at `REALTIME_PRIORITY`:
    it runs as soon as it wakes; the kernel still keeps 5% of each second for
    everything else), "high" (nice -`HIGH_NICE`) or "normal". Both raises need
    CAP_SYS_NICE (root, or the unit's `AmbientCapabilities=CAP_SYS_NICE`);
    without it the next lower one is tried. Returns what the loop runs at."""
    if priority == "realtime":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
            return "realtime"
        except (AttributeError, OSError):
            priority = "high"
    if priority == "high":
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) - HIGH_NICE)
            return "high"
        except (AttributeError, OSError):
            pass
    return "normal"
