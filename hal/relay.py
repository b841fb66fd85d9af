"""`Relay`: an output (door lock, court lights, warning lamp) switched on and off.

`on` is what the output means to the core: for `door:<id>` the door is released
(unlocked), for `light:<id>` the lights are on, for `warn:<id>` the warning is on.
How that maps to the relay coil is wiring, settled here and in the backend:

- `inverted` (fail-safe doors): the relay holds the lock powered, so releasing the
  door de-energises it. See docs/hardware.md, "Fail-secure and fail-safe locks".
- `active_high` (the relay board's input polarity) is the backend's business.

Every relay is created in its `safe` state and returns to it on `close()`.
The pulse policy (on now, off after N seconds) lives here; backends only drive
the coil.

A relay with `max_on_s` (door locks) is switched off by the HAL itself
`max_on_s` after the core last switched it on, whatever the core says since,
unless the core switched it on `held` (a door held open by its schedule or its
mode): a bug or a stuck loop cannot leave a door released for good. The cut is
reported (`OutputCut`).
"""

from __future__ import annotations

import time
from abc import abstractmethod

from hal.device import Clock, Device, log
from hal.events import OutputCut, Sink


def _ignore(_event: object) -> None:
    pass


class Relay(Device):
    """A named on/off output. Thread-safe.

    Subclasses implement `_drive(energised)` and `_release()`, and must put the
    hardware in `self.energised` when they set it up (before anything else runs).
    """

    def __init__(
        self,
        name: str,
        *,
        safe: bool,
        inverted: bool = False,
        max_on_s: float | None = None,
        sink: Sink = _ignore,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(name, clock=clock)
        if max_on_s is not None and not max_on_s > 0:
            raise ValueError(f"max_on_s must be positive, got {max_on_s!r}")
        self.safe = safe
        self.inverted = inverted
        self.max_on_s = max_on_s
        self._sink = sink
        self._on = safe
        self._pulse_end: float | None = None
        self._cut_at: float | None = None  # when the HAL switches it off by itself

    @property
    def value(self) -> bool:
        """The logical state: True = released / lights on / warning on."""
        return self._on

    @property
    def energised(self) -> bool:
        """Whether the relay coil is (to be) energised."""
        return self._on != self.inverted

    def set(self, on: bool, *, held: bool = False) -> None:
        """Switch on or off now; cancels a pulse in progress. `held`: on for as
        long as the core says (no `max_on_s`). Ignored once closed."""
        with self._lock:
            if self._closed:
                log.warning("%s: set(%s) after close ignored", self.name, on)
                return
            self._pulse_end = None
            self._switch(on, held=held)
        self._wake()

    def pulse(self, seconds: float) -> None:
        """On now, off after `seconds` (unless `set()` is called first)."""
        if not seconds > 0:
            raise ValueError(f"pulse length must be positive, got {seconds!r}")
        with self._lock:
            if self._closed:
                log.warning("%s: pulse after close ignored", self.name)
                return
            self._switch(True, held=False)
            self._pulse_end = self._clock() + seconds
        self._wake()

    def deadline(self) -> float | None:
        times = [t for t in (self._pulse_end, self._cut_at) if t is not None]
        return min(times) if times else None

    def poll(self) -> None:
        cut = False
        with self._lock:
            now = self._clock()
            if self._pulse_end is not None and now >= self._pulse_end:
                self._pulse_end = None
                self._switch(False, held=False)
            if self._cut_at is not None and now >= self._cut_at:
                self._pulse_end = None
                self._switch(False, held=False)
                cut = True
        if cut:
            log.error(
                "%s: on for %g s, the longest allowed: switched off", self.name, self.max_on_s
            )
            self._deliver(self._sink, OutputCut(self.name))

    def close(self) -> None:
        """Return to the safe state, then release the pin. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._pulse_end = None
            self._cut_at = None
            try:
                self._apply(self.safe)
            finally:
                self._closed = True
                self._release()

    def _switch(self, on: bool, *, held: bool) -> None:
        # The limit runs from the core's last unheld "on".
        if on and not held and self.max_on_s is not None:
            self._cut_at = self._clock() + self.max_on_s
        else:
            self._cut_at = None
        self._apply(on)

    def _apply(self, on: bool) -> None:
        # Always write, even when unchanged: cheap, and it heals a pin that
        # something else disturbed.
        self._drive(on != self.inverted)
        self._on = on

    @abstractmethod
    def _drive(self, energised: bool) -> None:
        """Energise or de-energise the relay coil (the backend applies active_high)."""

    @abstractmethod
    def _release(self) -> None:
        """Give the pin back to the system."""
