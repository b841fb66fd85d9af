"""`Input`: a door contact or an exit button, debounced.

The backend only says "the pin changed" (`_edge()`) and "the pin is high now"
(`_read_high()`). The debounce policy is here: after the last edge the pin must
stay quiet for `debounce_s`; then the level is read once and, if it differs from
the last settled one, one event is reported. Bounces inside the window give one
event; a glitch shorter than the window gives none. Reading the level at the end
(rather than trusting the edges) also heals an edge the driver missed.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable

from hal.device import Clock, Device
from hal.events import HalEvent, Sink

DEFAULT_DEBOUNCE_S = 0.05

Report = Callable[[bool], HalEvent | None]
"""Turns a settled state (True = door open / button pressed) into an event."""


class Input(Device):
    """A debounced two-state input. `active` is True for an open door or a pressed
    button; `active_when_high` says which pin level that is (it depends on the
    switch: NC or NO, wired to GND with the pull-up)."""

    def __init__(
        self,
        name: str,
        sink: Sink,
        report: Report,
        *,
        active_when_high: bool,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        report_start: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(name, clock=clock)
        if debounce_s < 0:
            raise ValueError(f"debounce must not be negative, got {debounce_s!r}")
        self._sink = sink
        self._report = report
        self.active_when_high = active_when_high
        self.debounce_s = debounce_s
        self._report_start = report_start
        self._started = False
        self._active: bool | None = None
        self._last_edge: float | None = None  # set while a window is open

    @property
    def active(self) -> bool | None:
        """The settled state, or None before `start()`."""
        return self._active

    def start(self) -> None:
        """Take the current level as settled; report it if this input reports its
        state at start (door contacts do, exit buttons do not)."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            self._active = self._read_high() == self.active_when_high
            if self._report_start:
                self._deliver(self._sink, self._report(self._active))

    def deadline(self) -> float | None:
        edge = self._last_edge
        return None if edge is None else edge + self.debounce_s

    def poll(self) -> None:
        with self._lock:
            if self._last_edge is None or self._clock() < self._last_edge + self.debounce_s:
                return
            self._settle()

    def settle(self) -> None:
        """End the debounce window now, as if it had passed. For the simulator,
        whose pins do not bounce and whose clock may stand still."""
        with self._lock:
            if self._last_edge is not None:
                self._settle()

    def _settle(self) -> None:
        with self._lock:
            self._last_edge = None
            if self._closed:
                return
            active = self._read_high() == self.active_when_high
            if active != self._active:
                self._active = active
                self._deliver(self._sink, self._report(active))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._last_edge = None
            self._release()

    def _edge(self) -> None:
        """Raw hook: the backend saw the pin change. Opens (or reopens) the window."""
        with self._lock:
            if not self._started or self._closed:
                return
            self._last_edge = self._clock()
        self._wake()

    @abstractmethod
    def _read_high(self) -> bool:
        """Raw hook: the pin's electrical level now."""

    @abstractmethod
    def _release(self) -> None:
        """Give the pin back to the system."""
