"""`Backend`: builds every relay, input and reader of a `Wiring`, runs their timers,
and shuts them down in a safe order.

A backend adds only how to make each device (`_make_output`, `_make_input`,
`_make_reader`); the order is here:

1. relays first, each created in its safe state (their constructors do this,
   so the relays are safe before the runtime starts anything else);
2. then inputs and readers, which report nothing until `start()`;
3. `close()` stops readers and timers, releases inputs, and returns every output
   to its safe state before releasing its pin.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import ClassVar

from firmware.core.errors import LocalError
from firmware.core.wiring import ReaderSpec, Wiring
from hal.device import Clock, Device, log
from hal.events import ContactSensed, ExitPressed, HalEvent, Sink
from hal.input import Input, Report
from hal.reader import Reader
from hal.relay import Relay
from hal.ticker import Ticker
from hal.wiring import InputSpec, OutputSpec, device_specs


class UnknownOutput(LocalError):
    """The core named an output that is not wired."""


def input_report(spec: InputSpec) -> Report:
    """What a settled input reports: a contact its state, an exit button a press."""
    door = spec.door_id
    if spec.role == "contact":
        return lambda active: ContactSensed(door, open=active)

    def rex(active: bool) -> HalEvent | None:
        return ExitPressed(door) if active else None

    return rex


class Backend(ABC):
    """Every device of one controller, by name: `outputs` (`door:<id>`,
    `light:<id>`, `warn:<id>`), `inputs` (`contact:<door>`, `rex:<door>`) and
    `readers` (by reader id). Events go to `sink`, from HAL threads.

    `wiring` must be complete (every relay and reader kind given): `NotWired`
    otherwise."""

    name: ClassVar[str] = "backend"

    def __init__(self, wiring: Wiring, sink: Sink, *, clock: Clock = time.monotonic) -> None:
        self.wiring = wiring
        self.specs = device_specs(wiring)
        self._sink = sink
        self._clock = clock
        self.outputs: dict[str, Relay] = {}
        self.inputs: dict[str, Input] = {}
        self.readers: dict[str, Reader] = {}
        self._ticker: Ticker | None = None
        self._started = False
        self._closed = False
        try:
            for output in self.specs.outputs:
                self.outputs[output.name] = self._make_output(output)
            for spec in self.specs.inputs:
                self.inputs[spec.name] = self._make_input(spec, input_report(spec))
            for reader in self.specs.readers:
                self.readers[reader.id] = self._make_reader(reader)
        except BaseException:
            self.close()
            raise
        self._ticker = Ticker(self.devices(), clock=clock)
        self.indicating = frozenset(name for name, r in self.readers.items() if r.indicates)
        """The readers that show decisions (`indicate`)."""

    def devices(self) -> list[Device]:
        """Every device, outputs first."""
        return [*self.outputs.values(), *self.inputs.values(), *self.readers.values()]

    def start(self) -> None:
        """Start timers, inputs (door contacts report their state) and readers."""
        if self._started or self._closed:
            return
        self._started = True
        assert self._ticker is not None
        self._ticker.start()
        for device in [*self.inputs.values(), *self.readers.values()]:
            device.start()

    def set_output(self, name: str, on: bool, *, held: bool = False) -> None:
        """Switch output `name` as the core's output action says. `held`: the core
        holds it on (a door open by schedule or mode), so no `max_open_s` applies."""
        output = self.outputs.get(name)
        if output is None:
            raise UnknownOutput(f"no output {name!r}; wired: {', '.join(self.outputs) or 'none'}")
        output.set(on, held=held)

    def indicate(self, reader_id: str, granted: bool) -> None:
        """Show a decision on reader `reader_id`, if it can (the loop's thread).
        A reader that fails to is logged; the decision stands."""
        if reader_id not in self.indicating:
            return
        try:
            self.readers[reader_id].indicate(granted)
        except Exception:
            log.exception("%s: showing the decision failed", reader_id)

    def poll(self) -> None:
        """Run every timer that is due now. The timer thread does this by itself;
        tests and a simulator on virtual time may call it after moving the clock."""
        if self._ticker is not None:
            self._ticker.poll()

    def close(self) -> None:
        """Stop every thread, return outputs to their safe states, release pins
        and ports. Idempotent."""
        if self._closed:
            return
        self._closed = True
        stopping: list[Device] = [*self.readers.values()]
        for device in stopping:
            _close_quietly(device)
        if self._ticker is not None:
            self._ticker.stop()
        releasing: list[Device] = [*self.inputs.values(), *self.outputs.values()]
        for device in releasing:
            _close_quietly(device)

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abstractmethod
    def _make_output(self, spec: OutputSpec) -> Relay:
        """Build one relay, already in its safe state, reporting cuts to the sink."""

    @abstractmethod
    def _make_input(self, spec: InputSpec, report: Report) -> Input:
        """Build one input reporting through `report` to the sink."""

    @abstractmethod
    def _make_reader(self, spec: ReaderSpec) -> Reader:
        """Build one reader reporting to the sink."""


def _close_quietly(device: Device) -> None:
    # Shutting down goes on past one broken device: the others' outputs must
    # still return to their safe states.
    try:
        device.close()
    except Exception:
        log.exception("%s: close failed", device.name)
