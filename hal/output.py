"""`Output`: a relay (door lock, court lights, warning lamp) switched on and off.

`on` is what the output means to the core: for `door:<id>` the door is released
(unlocked), for `light:<id>` the lights are on, for `warn:<id>` the warning is on.
How that maps to the relay coil is wiring, settled here and in the backend:

- `inverted` (fail-safe doors): the relay holds the lock powered, so releasing the
  door de-energises it. See docs/hardware.md, "Fail-secure and fail-safe locks".
- `active_high` (the relay board's input polarity) is the backend's business.

Every output is created in its `safe` state and returns to it on `close()`.
The pulse policy (on now, off after N seconds) lives here; backends only drive
the coil.
"""

from __future__ import annotations

import time
from abc import abstractmethod

from hal.device import Clock, Device, log


class Output(Device):
    """A named on/off output. Thread-safe.

    Subclasses implement `_drive(energised)` and `_release()`, and must put the
    hardware in `self.energised` when they set it up (before anything else runs).
    """

    def __init__(
        self, name: str, *, safe: bool, inverted: bool = False, clock: Clock = time.monotonic
    ) -> None:
        super().__init__(name, clock=clock)
        self.safe = safe
        self.inverted = inverted
        self._on = safe
        self._pulse_end: float | None = None

    @property
    def value(self) -> bool:
        """The logical state: True = released / lights on / warning on."""
        return self._on

    @property
    def energised(self) -> bool:
        """Whether the relay coil is (to be) energised."""
        return self._on != self.inverted

    def set(self, on: bool) -> None:
        """Switch on or off now; cancels a pulse in progress. Ignored once closed."""
        with self._lock:
            if self._closed:
                log.warning("%s: set(%s) after close ignored", self.name, on)
                return
            self._pulse_end = None
            self._apply(on)

    def pulse(self, seconds: float) -> None:
        """On now, off after `seconds` (unless `set()` is called first)."""
        if not seconds > 0:
            raise ValueError(f"pulse length must be positive, got {seconds!r}")
        with self._lock:
            if self._closed:
                log.warning("%s: pulse after close ignored", self.name)
                return
            self._apply(True)
            self._pulse_end = self._clock() + seconds
        self._wake()

    def deadline(self) -> float | None:
        return self._pulse_end

    def poll(self) -> None:
        with self._lock:
            if self._pulse_end is not None and self._clock() >= self._pulse_end:
                self._pulse_end = None
                self._apply(False)

    def close(self) -> None:
        """Return to the safe state, then release the pin. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._pulse_end = None
            try:
                self._apply(self.safe)
            finally:
                self._closed = True
                self._release()

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
