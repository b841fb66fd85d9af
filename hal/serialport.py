"""pyserial backend for stream readers: RDM6300, line-per-scan and keypad readers.

Only the raw hooks live here; framing, timeouts and repeat suppression are in
`hal.reader.StreamReader` and the decoders. Ports are opened with
`serial.serial_for_url`, so `port` may be a device (`/dev/serial0`,
`/dev/serial/by-id/...`) or a pyserial URL (`loop://` in the simulator and tests).
"""

from __future__ import annotations

import time
from typing import Any

import serial

from firmware.core.wiring import ReaderSpec
from hal.device import Clock
from hal.events import Sink
from hal.frames import StreamDecoder
from hal.keypad import DEFAULT_TIMEOUT_S
from hal.lines import KeypadDecoder, LineDecoder
from hal.rdm6300 import Rdm6300Decoder
from hal.reader import DEFAULT_REPEAT_S, StreamReader

READ_TIMEOUT_S = 0.25  # how long a read waits for a first byte: bounds close() and timeouts


class SerialReader(StreamReader):
    """A `StreamReader` on a pyserial port."""

    def __init__(
        self,
        reader_id: str,
        sink: Sink,
        decoder: StreamDecoder,
        *,
        kind: str,
        port: str,
        baud: int,
        gap_s: float,
        repeat_s: float = DEFAULT_REPEAT_S,
        pin_timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            reader_id,
            sink,
            decoder,
            kind=kind,
            gap_s=gap_s,
            repeat_s=repeat_s,
            pin_timeout_s=pin_timeout_s,
            clock=clock,
        )
        self.port = port
        self.baud = baud
        self._serial: Any = None

    @property
    def connection(self) -> Any:
        """The open `serial.Serial` (the simulator writes its frames into a
        `loop://` one). Raises if the port is not open."""
        if self._serial is None:
            raise RuntimeError(f"{self.reader_id}: the port is not open")
        return self._serial

    def _open(self) -> None:
        self._serial = serial.serial_for_url(self.port, baudrate=self.baud, timeout=READ_TIMEOUT_S)

    def _read(self, limit: int) -> bytes:
        port = self._serial
        first: bytes = port.read(1)
        if not first:
            return b""
        waiting = min(port.in_waiting, limit - 1)
        return first + port.read(waiting) if waiting > 0 else first

    def _cancel_read(self) -> None:
        port = self._serial
        if port is not None:
            port.cancel_read()

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            port.close()


def serial_reader(spec: ReaderSpec, sink: Sink, *, clock: Clock = time.monotonic) -> SerialReader:
    """The `SerialReader` for an rdm6300, line or keypad reader spec."""
    decoder: StreamDecoder
    if spec.kind == "rdm6300":
        decoder = Rdm6300Decoder()
    elif spec.kind == "line":
        decoder = LineDecoder(spec.credkind)
    elif spec.kind == "keypad":
        decoder = KeypadDecoder()
    else:
        raise ValueError(f"{spec.id}: {spec.kind} is not a serial reader")
    assert spec.port is not None
    return SerialReader(
        spec.id,
        sink,
        decoder,
        kind=spec.kind,
        port=spec.port,
        baud=spec.baud,
        gap_s=spec.gap_s,
        repeat_s=spec.repeat_s,
        pin_timeout_s=spec.pin_timeout_s,
        clock=clock,
    )
