"""Rigs for the conformance suite: one reader on one backend, and hands to feed it.

Each rig presents credentials the way its hardware sends them (Wiegand pulses on
mock pins, bytes into a loop:// port or a pseudo-terminal), so the suite checks
the same promises of every backend: a credential is reported once with its
normalised value, a bad frame is a fault and never a guess, a held tag is one
read, and close() stops everything.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

from gpiozero.pins.mock import MockFactory

from hal import rdm6300, wiegand
from hal.gpio import GpioWiegandReader
from hal.reader import Reader
from hal.serialport import SerialReader, serial_reader
from hal.ticker import Ticker
from hal.wiring import ReaderSpec
from tests.hal.conftest import WAIT_S, Events, FakeClock, wait_until

READER = "front-in"
REPEAT_S = 1.0
PIN_TIMEOUT_S = 10.0


class Rig(ABC):
    """A started reader named `READER`, reporting to `events`."""

    credkind: str
    # (what is presented, what must be reported)
    samples: tuple[tuple[str, str], tuple[str, str]]

    def __init__(self, events: Events, clock: FakeClock) -> None:
        self.events = events
        self.clock = clock

    @property
    @abstractmethod
    def reader(self) -> Reader: ...

    @abstractmethod
    def present(self, value: str) -> None:
        """Present one credential (a PIN with its `#`)."""

    @abstractmethod
    def garble(self) -> None:
        """Send one bad frame."""

    def keys(self, keys: str) -> None:
        """Press keypad keys (keypad rigs only)."""
        raise NotImplementedError

    def close(self) -> None:
        self.reader.close()


class WiegandRig(Rig):
    """A Wiegand reader on MockFactory pins, its quiet gaps run by a `Ticker`
    thread on the test's clock."""

    credkind = "card"
    samples = (("33:00119", "33:00119"), ("33011:00042", "33011:00042"))

    def __init__(self, events: Events, clock: FakeClock, factory: MockFactory, width: int = 0):
        super().__init__(events, clock)
        self.factory = factory
        self.width = width
        spec = ReaderSpec(
            READER,
            "wiegand",
            d0=23,
            d1=24,
            repeat_s=REPEAT_S,
            pin_timeout_s=PIN_TIMEOUT_S,
            gap_s=0.025,
        )
        self._reader = GpioWiegandReader(spec, events, clock=clock, pin_factory=factory)
        self.ticker = Ticker([self._reader], clock=clock)
        self._reader.start()
        self.ticker.start()
        if width:
            self.credkind = "pin"
            self.samples = (("4711", "4711"), ("0815", "0815"))

    @property
    def reader(self) -> Reader:
        return self._reader

    def pulses(self, frame: tuple[int, ...]) -> None:
        for bit in frame:
            pin = self.factory.pin(24 if bit else 23)
            pin.drive_low()
            pin.drive_high()
            self.clock.advance(0.002)
        self.clock.advance(0.1)  # past the quiet gap: the ticker ends the frame

    def present(self, value: str) -> None:
        if self.width:
            self.keys(value + "#")
        else:
            self.pulses(wiegand.encode_card(value))

    def keys(self, keys: str) -> None:
        for key in keys:
            self.pulses(wiegand.encode_key(key, self.width))

    def garble(self) -> None:
        frame = list(wiegand.encode_26(1, 2) if not self.width else wiegand.encode_key("1", 8))
        frame[3] ^= 1
        self.pulses(tuple(frame))

    def close(self) -> None:
        self.ticker.stop()
        self._reader.close()


class SerialRig(Rig):
    """A serial reader (`kind`) on `loop://` or a pseudo-terminal."""

    def __init__(
        self, events: Events, clock: FakeClock, kind: str, pty: tuple[str, int] | None
    ) -> None:
        super().__init__(events, clock)
        self.kind = kind
        self.master = pty[1] if pty else None
        self.sent = 0
        port = pty[0] if pty else "loop://"
        spec = ReaderSpec(
            READER,
            kind,
            port=port,
            repeat_s=REPEAT_S if kind != "keypad" else 0,
            pin_timeout_s=PIN_TIMEOUT_S,
            gap_s=0.2,
            credkind={"rdm6300": "tag", "line": "tag", "keypad": "pin"}[kind],
        )
        self._reader: SerialReader = serial_reader(spec, events, clock=clock)
        self._reader.start()
        assert self._reader.opened.wait(WAIT_S)
        self.credkind = spec.credkind
        self.samples = {
            "rdm6300": (("0a1b2c3d4e", "0a1b2c3d4e"), ("62e3086ced", "62e3086ced")),
            "line": (("04A1B2C3D4E5F6", "04a1b2c3d4e5f6"), ("0012345678", "0012345678")),
            "keypad": (("4711", "4711"), ("0815", "0815")),
        }[kind]

    @property
    def reader(self) -> Reader:
        return self._reader

    def write(self, data: bytes) -> None:
        """Send `data` and wait until the reader has decoded all of it, so the
        test's clock moves only between what the reader saw."""
        self.sent += len(data)
        if self.master is None:
            self._reader.connection.write(data)
        else:
            os.write(self.master, data)
        wait_until(lambda: self._reader.bytes_read >= self.sent, "the reader read what was sent")

    def present(self, value: str) -> None:
        if self.kind == "rdm6300":
            self.write(rdm6300.encode(value))
        elif self.kind == "line":
            self.write(value.encode() + b"\r\n")
        else:
            self.write(value.encode() + b"#")

    def keys(self, keys: str) -> None:
        self.write(keys.encode())

    def garble(self) -> None:
        self.write(
            {"rdm6300": b"\x020A1B2C3D4E4F\x03", "line": b"0A\x01B\r\n", "keypad": b"x"}[self.kind]
        )
