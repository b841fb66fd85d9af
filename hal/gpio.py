"""The `gpio` backend: relays, door contacts, exit buttons and Wiegand readers on
gpiozero pins; serial readers on pyserial ports; OSDP readers through libosdp
on an RS-485 port.

gpiozero is imported here, at the top, so that a missing gpiozero fails only this
backend (the registry turns the ImportError into an install hint). pyserial and
libosdp are imported only when a reader needs them, for the same reason.

Only raw hooks live here: drive a relay coil, read a pin, pass on an edge.
`pin_factory` is gpiozero's: None picks the Pi's default driver (lgpio on current
Raspberry Pi OS); tests and the simulator pass a `MockFactory`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import gpiozero

from firmware.core.wiring import ReaderSpec, Wiring
from hal.backend import Backend
from hal.device import Clock
from hal.errors import HardwareError, missing_package
from hal.events import Sink
from hal.input import Input, Report
from hal.reader import Reader, WiegandReader
from hal.relay import Relay
from hal.wiring import InputSpec, OutputSpec

if TYPE_CHECKING:
    from hal.osdp_bus import OsdpBus

T = TypeVar("T")


class GpioRelay(Relay):
    """A relay on a GPIO through `gpiozero.DigitalOutputDevice`."""

    def __init__(self, spec: OutputSpec, sink: Sink, *, clock: Clock, pin_factory: Any) -> None:
        super().__init__(
            spec.name,
            safe=spec.safe,
            inverted=spec.inverted,
            max_on_s=spec.max_on_s,
            sink=sink,
            clock=clock,
        )
        self.pin = spec.pin
        self.active_high = spec.active_high
        # initial_value makes gpiozero set the level as it turns the pin into an
        # output, so the relay never sees a glitch towards the unsafe state.
        self._device = gpiozero.DigitalOutputDevice(
            spec.pin,
            active_high=spec.active_high,
            initial_value=self.energised,
            pin_factory=pin_factory,
        )

    def _drive(self, energised: bool) -> None:
        if energised:
            self._device.on()
        else:
            self._device.off()

    def _release(self) -> None:
        self._device.close()


class GpioInput(Input):
    """A contact or button from a GPIO to GND, with the pin's pull-up."""

    def __init__(
        self, spec: InputSpec, sink: Sink, report: Report, *, clock: Clock, pin_factory: Any
    ) -> None:
        super().__init__(
            spec.name,
            sink,
            report,
            active_when_high=spec.active_when_high,
            debounce_s=spec.debounce_s,
            report_start=spec.role == "contact",
            clock=clock,
        )
        self.pin = spec.pin
        # No gpiozero bounce_time: debouncing is the base class's, the same on
        # every backend; gpiozero only tells us that the pin moved.
        self._device = gpiozero.DigitalInputDevice(spec.pin, pull_up=True, pin_factory=pin_factory)
        self._device.when_activated = self._edge
        self._device.when_deactivated = self._edge

    def _read_high(self) -> bool:
        return bool(self._device.pin.state)

    def _release(self) -> None:
        self._device.close()


class GpioWiegandReader(WiegandReader):
    """A Wiegand reader on two GPIOs: a falling edge on D0 is a 0, on D1 a 1."""

    def __init__(self, spec: ReaderSpec, sink: Sink, *, clock: Clock, pin_factory: Any) -> None:
        super().__init__(
            spec.id,
            sink,
            gap_s=spec.gap_s,
            repeat_s=spec.repeat_s,
            pin_timeout_s=spec.pin_timeout_s,
            clock=clock,
        )
        self.d0, self.d1 = spec.d0, spec.d1
        # The lines idle high and pulse low; with pull_up=True gpiozero calls a
        # low line "active", so when_activated is the falling edge.
        self._d0 = gpiozero.DigitalInputDevice(spec.d0, pull_up=True, pin_factory=pin_factory)
        try:
            self._d1 = gpiozero.DigitalInputDevice(spec.d1, pull_up=True, pin_factory=pin_factory)
        except BaseException:
            self._d0.close()
            raise
        self._d0.when_activated = self._zero
        self._d1.when_activated = self._one

    def _zero(self) -> None:
        self._pulse(0)

    def _one(self) -> None:
        self._pulse(1)

    def _release(self) -> None:
        self._d0.close()
        self._d1.close()


class GpioBackend(Backend):
    """gpiozero pins and pyserial ports: the backend of a real controller."""

    name = "gpio"

    def __init__(
        self,
        wiring: Wiring,
        sink: Sink,
        *,
        clock: Clock = time.monotonic,
        pin_factory: Any = None,
    ) -> None:
        self.pin_factory = pin_factory
        self._osdp_buses: dict[str, OsdpBus] = {}  # by port: the readers on it share it
        super().__init__(wiring, sink, clock=clock)

    def _make_output(self, spec: OutputSpec) -> Relay:
        return _gpio(
            f"{spec.name} (GPIO {spec.pin})",
            lambda: GpioRelay(spec, self._sink, clock=self._clock, pin_factory=self.pin_factory),
        )

    def _make_input(self, spec: InputSpec, report: Report) -> Input:
        return _gpio(
            f"{spec.name} (GPIO {spec.pin})",
            lambda: GpioInput(
                spec, self._sink, report, clock=self._clock, pin_factory=self.pin_factory
            ),
        )

    def _make_reader(self, spec: ReaderSpec) -> Reader:
        if spec.kind == "osdp":
            return self._osdp_reader(spec)
        if spec.kind == "wiegand":
            return _gpio(
                f"reader {spec.id} (GPIO {spec.d0}, {spec.d1})",
                lambda: GpioWiegandReader(
                    spec, self._sink, clock=self._clock, pin_factory=self.pin_factory
                ),
            )
        try:
            from hal.serialport import serial_reader
        except ModuleNotFoundError as exc:
            if exc.name != "serial":
                raise
            where = f"reader {spec.id!r} ({spec.kind})"
            raise missing_package(where, self.name, "serial") from None
        return serial_reader(spec, self._sink, clock=self._clock)

    def _osdp_reader(self, spec: ReaderSpec) -> Reader:
        """An OSDP reader on its RS-485 port (libosdp and pyserial, imported now).
        The readers on one port share one bus, built with the first of them."""
        try:
            import serial  # noqa: F401  (the channel opens its port later)

            from hal.osdp_reader import osdp_bus, osdp_reader
        except ModuleNotFoundError as exc:
            if exc.name not in ("serial", "osdp", "osdp_sys"):
                raise
            module = "serial" if exc.name == "serial" else "osdp"
            raise missing_package(f"reader {spec.id!r} (osdp)", self.name, module) from None
        from hal.osdp_channel import SerialChannel

        assert spec.port is not None
        bus = self._osdp_buses.get(spec.port)
        if bus is None:
            specs = [r for r in self.specs.readers if r.kind == "osdp" and r.port == spec.port]
            channel = SerialChannel(spec.port, spec.baud, clock=self._clock)
            bus = self._osdp_buses[spec.port] = osdp_bus(spec.port, specs, channel)
        return osdp_reader(spec, self._sink, bus, clock=self._clock)


def _gpio(what: str, build: Callable[[], T]) -> T:
    try:
        return build()
    except gpiozero.BadPinFactory as exc:
        raise HardwareError(
            f"{what}: no GPIO driver works on this machine ({exc}). On a Raspberry Pi "
            'install lgpio (docs/hardware.md); elsewhere use [hal] backend = "sim".'
        ) from exc
    except gpiozero.GPIOZeroError as exc:
        raise HardwareError(f"{what}: cannot set up the pin: {exc}") from exc
