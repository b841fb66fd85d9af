"""One thread that runs every device's timers: debounce windows, Wiegand quiet
gaps, pulse ends.

It sleeps until the earliest deadline, or until a device announces a new one.
The wait is capped while something is pending because the clock may not be the
wall clock (tests, the simulator's virtual time): a jump of such a clock is
noticed within `PENDING_WAIT_S`. With nothing pending it wakes once a second,
only as a safety net; it never spins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from hal.device import Clock, Device

PENDING_WAIT_S = 0.05
IDLE_WAIT_S = 1.0
MIN_WAIT_S = 0.001  # a deadline that is already due still yields the CPU
JOIN_S = 5.0

log = logging.getLogger("alc.hal")


class Ticker:
    """Polls `devices` when their deadlines come due, on one daemon thread."""

    def __init__(self, devices: Sequence[Device], *, clock: Clock = time.monotonic) -> None:
        self._devices = tuple(devices)
        self._clock = clock
        self._nudge = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        for device in self._devices:
            device.bind_wake(self._nudge.set)

    def wake(self) -> None:
        """Re-read the deadlines now (a device gained an earlier one)."""
        self._nudge.set()

    def poll(self) -> float | None:
        """Poll every device once; return the earliest remaining deadline."""
        earliest: float | None = None
        for device in self._devices:
            try:
                device.poll()
                due = device.deadline()
            except Exception:
                # One broken device must not stop the timers of the others.
                log.exception("%s: poll failed", device.name)
                continue
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        return earliest

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="alc-hal-ticker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it. Idempotent."""
        self._stopping.set()
        self._nudge.set()
        if self._thread is not None:
            self._thread.join(JOIN_S)
            if self._thread.is_alive():
                log.error("the HAL timer thread did not stop within %.0f s", JOIN_S)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._nudge.clear()
            due = self.poll()
            if due is None:
                wait = IDLE_WAIT_S
            else:
                wait = min(max(due - self._clock(), MIN_WAIT_S), PENDING_WAIT_S)
            self._nudge.wait(wait)
