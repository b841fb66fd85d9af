"""What every HAL device shares: a name, an injectable clock, a lock, timers.

Time always comes from the device's `clock` (a monotonic seconds function), never
from `time` directly, so tests and the simulator can drive debounce, quiet gaps,
pulses and timeouts deterministically.

A device with something due later (a debounce window, a Wiegand quiet gap, the end
of a pulse) reports it from `deadline()`; the backend's `Ticker` calls `poll()`
when it is due. Tests may call `poll()` themselves after moving their clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from hal.events import HalEvent, Sink

Clock = Callable[[], float]
"""Monotonic seconds. `time.monotonic` in production."""

log = logging.getLogger("alc.hal")


def _nothing() -> None:
    pass


class Device:
    """Base of outputs, inputs and readers."""

    def __init__(self, name: str, *, clock: Clock = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        # Re-entrant: a sink or a subclass hook may call back into the device.
        self._lock = threading.RLock()
        self._wake: Callable[[], None] = _nothing
        self._closed = False

    def bind_wake(self, wake: Callable[[], None]) -> None:
        """Tell the device whom to nudge when it gains an earlier deadline."""
        self._wake = wake

    def deadline(self) -> float | None:
        """When `poll()` next has work to do (clock time), or None."""
        return None

    def poll(self) -> None:
        """Do whatever is due by now. Safe to call at any time, from any thread."""

    def start(self) -> None:
        """Begin reporting. Nothing is reported before `start()`."""

    # Readers that can show a decision (an OSDP reader's LED and buzzer) say so
    # and override `indicate`; the runtime looks for access events only then.
    indicates: bool = False

    def indicate(self, granted: bool) -> None:
        """Show an access decision made at this reader (any thread; never blocks)."""

    def close(self) -> None:
        """Stop and release the hardware. Idempotent."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed

    def _deliver(self, sink: Sink, event: HalEvent | None) -> None:
        # A failing sink must not kill gpiozero's callback thread, the timer
        # thread or a serial thread: those keep every other door working.
        if event is None:
            return
        try:
            sink(event)
        except Exception:
            log.exception("%s: the event sink failed on %r", self.name, event)
