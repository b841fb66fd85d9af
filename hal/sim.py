"""The `sim` backend: the gpio backend on gpiozero's `MockFactory` pins, with every
serial reader on its own pyserial `loop://` port and every OSDP reader played by
libosdp's own peripheral device on a loopback, plus the hands of a person at
the door: open it, press the exit button, present a tag, card or PIN.

The simulator drives the real controller through these; tests use them too.
What the hands do goes through the same pins and ports as real hardware would
(mock pin levels, frame bytes), so the whole HAL policy runs.
"""

from __future__ import annotations

import time
from dataclasses import replace

from gpiozero.pins.mock import MockFactory

from firmware.core.wiring import ReaderSpec, Wiring
from hal import rdm6300, wiegand
from hal.device import Clock
from hal.errors import missing_package
from hal.events import Sink
from hal.gpio import GpioBackend, GpioInput, GpioRelay, GpioWiegandReader
from hal.reader import Reader, StreamReader

OPEN_WAIT_S = 5.0


class SimBackend(GpioBackend):
    """Mock pins and loopback ports; see the module docstring."""

    name = "sim"

    def __init__(self, wiring: Wiring, sink: Sink, *, clock: Clock = time.monotonic) -> None:
        super().__init__(on_loopback(wiring), sink, clock=clock, pin_factory=MockFactory())
        # Mock pins idle at their pull-up, where an NC contact reads "open".
        # A simulated club starts with its doors shut and no button pressed.
        for spec in self.specs.inputs:
            self._drive(spec.pin, high=not spec.active_when_high)

    def level(self, output: str) -> bool:
        """The electrical level of an output's pin (True = high)."""
        device = self.outputs[output]
        assert isinstance(device, GpioRelay)
        return bool(self.pin_factory.pin(device.pin).state)

    def set_contact(self, door_id: str, open: bool) -> None:
        """Open or close a door (its contact's pin level), settled at once."""
        self._set_input(f"contact:{door_id}", open)

    def press_rex(self, door_id: str) -> None:
        """Press and release a door's exit button."""
        self._set_input(f"rex:{door_id}", True)
        self._set_input(f"rex:{door_id}", False)

    def _set_input(self, name: str, active: bool) -> None:
        # Settle at once: simulated switches do not bounce, and the simulator's
        # clock may stand still while a debounce window would wait for it.
        device = self.inputs[name]
        assert isinstance(device, GpioInput)
        self._drive(device.pin, high=active == device.active_when_high)
        device.settle()

    def _make_reader(self, spec: ReaderSpec) -> Reader:
        if spec.kind != "osdp":
            return super()._make_reader(spec)
        # The reader is libosdp's own peripheral device, on a loopback.
        try:
            from hal.osdp_peer import SimulatedOsdpReader
        except ModuleNotFoundError as exc:
            if exc.name not in ("osdp", "osdp_sys"):
                raise
            raise missing_package(f"reader {spec.id!r} (osdp)", self.name, "osdp") from None
        return SimulatedOsdpReader(spec, self._sink, clock=self._clock)

    def present(self, reader_id: str, credkind: str, value: str) -> None:
        """Present a credential at a reader the way that reader's hardware would
        send it: a Wiegand frame (or one 4-bit burst per key and `#`), an RDM6300
        frame, a line, keys and `#`, or an OSDP card read or key presses."""
        reader = self.readers[reader_id]
        if reader.kind == "osdp":
            from hal.osdp_peer import SimulatedOsdpReader

            assert isinstance(reader, SimulatedOsdpReader)
            reader.present(credkind, value, wait_s=OPEN_WAIT_S)
            return
        if isinstance(reader, GpioWiegandReader):
            if credkind == "pin":
                for key in (*value, "#"):
                    self._wiegand(reader, wiegand.encode_key(key))
            else:
                self._wiegand(reader, wiegand.encode_card(value))
            return
        assert isinstance(reader, StreamReader)
        if reader.kind == "rdm6300":
            data = rdm6300.encode(value)
        elif reader.kind == "keypad":
            data = f"{value}#".encode()
        else:
            data = f"{value}\r\n".encode()
        self.write(reader_id, data)

    def press_keys(self, reader_id: str, keys: str) -> None:
        """Press keys (`0`-`9`, `*`, `#`) on an OSDP reader's keypad."""
        from hal.osdp_peer import SimulatedOsdpReader

        reader = self.readers[reader_id]
        assert isinstance(reader, SimulatedOsdpReader)
        reader.press(keys, wait_s=OPEN_WAIT_S)

    def write(self, reader_id: str, data: bytes) -> None:
        """Put raw bytes on a serial reader's loopback port (noise, bad frames)."""
        from hal.serialport import SerialReader  # pyserial only when serial readers exist

        reader = self.readers[reader_id]
        assert isinstance(reader, SerialReader)
        if not reader.opened.wait(OPEN_WAIT_S):
            raise RuntimeError(f"{reader_id}: the loopback port did not open")
        reader.connection.write(data)

    def pulses(self, reader_id: str, bits: tuple[int, ...]) -> None:
        """Raw Wiegand pulses on a reader's D0/D1, then the end of the frame."""
        reader = self.readers[reader_id]
        assert isinstance(reader, GpioWiegandReader)
        self._wiegand(reader, bits)

    def _wiegand(self, reader: GpioWiegandReader, bits: tuple[int, ...]) -> None:
        for bit in bits:
            pin = reader.d1 if bit else reader.d0
            assert pin is not None
            self._drive(pin, high=False)
            self._drive(pin, high=True)
        # The mock clock may stand still; the simulator knows where frames end.
        reader.end_frame()

    def _drive(self, pin: int, *, high: bool) -> None:
        mock = self.pin_factory.pin(pin)
        if high:
            mock.drive_high()
        else:
            mock.drive_low()


def on_loopback(wiring: Wiring) -> Wiring:
    """The same wiring with every serial reader on its own `loop://` port."""
    readers = tuple(replace(r, port="loop://") if r.port is not None else r for r in wiring.readers)
    return replace(wiring, readers=readers)
