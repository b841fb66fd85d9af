"""Liveness for systemd's watchdog: ping only while every part that matters moves.

systemd restarts the controller when `WATCHDOG=1` stops coming
(`WatchdogSec=10` in deploy/alc-controller.service). A ping must therefore mean
more than "the process exists": the loop sends one only while the loop, the
event writer and the decoder have each made progress within `STALE_S`. A part
with nothing to do counts as moving (`Pulse.idle`); a part stuck in one piece
of work (a hung fsync, a decoder wedged on a page) does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

STALE_S = 5.0
"""A part busy with one piece of work longer than this is stuck."""
PING_EVERY_S = 2.0
"""Pings at most this often (systemd wants at least two per `WatchdogSec`)."""
RECHECK_S = 0.5
"""While a part holds the pings back, look again this often, not at every loop
step: the loop sleeps until `due`, and a `due` in the past would make it spin."""


class Pulse:
    """One part's heartbeat. `beat` when it starts or finishes a piece of work,
    `idle` when it is about to wait for more. Any thread."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._since = clock()
        self._idle = True

    def beat(self) -> None:
        """Working, and progressing: a new piece started or one finished."""
        with self._lock:
            self._since = self._clock()
            self._idle = False

    def idle(self) -> None:
        """Waiting for work: not stuck, however long it waits."""
        with self._lock:
            self._since = self._clock()
            self._idle = True

    def stale(self, now: float | None = None) -> float:
        """Seconds since the last progress while busy; 0.0 when idle."""
        with self._lock:
            if self._idle:
                return 0.0
            return (self._clock() if now is None else now) - self._since


class Watchdog:
    """Decides when to ping: every `PING_EVERY_S`, if no pulse is stale."""

    def __init__(
        self,
        pulses: Sequence[Pulse],
        ping: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pulses = list(pulses)
        self._ping = ping
        self._clock = clock
        self._next = -1e18
        self.stuck: str | None = None
        """The part that held the last ping back, or None."""

    def due(self) -> float:
        """Monotonic time of the next check: the next ping, or the next look at
        the part that held the last one back."""
        return self._next

    def check(self) -> bool:
        """Ping if due and every part moves; True if it pinged."""
        now = self._clock()
        if now < self.due():
            return False
        stuck = [p.name for p in self.pulses if p.stale(now) > STALE_S]
        self.stuck = ", ".join(stuck) or None
        if stuck:
            self._next = now + min(RECHECK_S, PING_EVERY_S)
            return False
        self._next = now + PING_EVERY_S
        self._ping()
        return True
