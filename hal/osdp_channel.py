"""The byte channels libosdp talks over: a serial port (an RS-485 adapter or HAT)
for real readers, and an in-memory loopback pair for the simulator and tests.

libosdp calls `read(max_bytes)`, `write(data)` and `flush()` from its refresh
thread, every 20 ms, and must never wait there: reads return at once with what
is there (maybe nothing), writes return how much they took. They must never
raise either: an exception left inside libosdp's C callback would surface later
as an unrelated error. A failure is kept in `problem`, and the channel reads
nothing and takes nothing until it works again, which libosdp sees as a reader
that stopped answering.

These classes do not subclass `osdp.Channel` (whose only content is the three
method names): libosdp calls the methods by name, and this module stays
importable without libosdp.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from hal.device import Clock, log

LOOPBACK_CAPACITY = 4096  # bytes waiting in one direction: several OSDP packets
REOPEN_S = 2.0  # between attempts to reopen a serial port that failed
WRITE_TIMEOUT_S = 0.1  # a write stuck this long is a failed write, not a wait


class LoopbackEnd:
    """One end of a `Loopback`: reads what the other side wrote."""

    def __init__(self, link: Loopback, side: int) -> None:
        self._link = link
        self._side = side
        self.received = 0
        """Bytes read so far: a reader that sent anything is there."""

    @property
    def problem(self) -> str | None:
        """Why the channel carries nothing, or None."""
        return "the loopback is closed (reader unplugged)" if self._link.closed else None

    def read(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` waiting bytes, at once (b"" when none or closed)."""
        data = self._link.take(self._side, max_bytes)
        self.received += len(data)
        return data

    def write(self, data: bytes) -> int:
        """Queue `data` for the other side; how many bytes it took (0 when closed
        or full: libosdp then counts the send as failed)."""
        return self._link.send(self._side, data)

    def flush(self) -> None:
        """Drop what waits to be read here (libosdp does this between packets)."""
        self._link.drop(self._side)

    def close(self) -> None:
        """Close the whole loopback (either end's owner is done with it)."""
        self._link.close()


class Loopback:
    """An RS-485 bus in memory: the control panel's end, `ends[0]`, and one end
    per reader, `ends[1:]` (`readers`, default 1). What the panel writes reaches
    every reader, as on the wire (each answers only to its address); what a
    reader writes reaches the panel only. Each end's buffer is bounded to
    `capacity` bytes. `close()` cuts it for good: the readers unplugged."""

    def __init__(self, capacity: int = LOOPBACK_CAPACITY, *, readers: int = 1) -> None:
        self.capacity = capacity
        self._buffers = tuple(bytearray() for _ in range(readers + 1))
        self._lock = threading.Lock()
        self.closed = False
        self.ends = tuple(LoopbackEnd(self, side) for side in range(readers + 1))
        """(control panel's end, each reader's end...)."""

    def take(self, side: int, limit: int) -> bytes:
        """Up to `limit` bytes waiting for `side`."""
        with self._lock:
            if self.closed:
                return b""
            buffer = self._buffers[side]
            data = bytes(buffer[:limit])
            del buffer[:limit]
            return data

    def send(self, side: int, data: bytes) -> int:
        """`data` written by `side`, queued for the other side; the bytes taken.
        A reader's answer is taken whole or not at all (0: the panel's buffer is
        full); the panel's bytes are lost for a reader with no room, as on a
        wire a reader that does not listen misses them."""
        with self._lock:
            if self.closed:
                return 0
            if side != 0:
                panel = self._buffers[0]
                if len(panel) + len(data) > self.capacity:
                    return 0
                panel += data
                return len(data)
            for buffer in self._buffers[1:]:
                if len(buffer) + len(data) <= self.capacity:
                    buffer += data
            return len(data)

    def drop(self, side: int) -> None:
        """Forget what waits for `side`."""
        with self._lock:
            self._buffers[side].clear()

    def close(self) -> None:
        """Cut the link: nothing more passes either way."""
        with self._lock:
            self.closed = True
            for buffer in self._buffers:
                buffer.clear()


class SerialChannel:
    """A pyserial port, opened on first use and reopened every `reopen_s` after
    it failed (a USB adapter unplugged and plugged in again)."""

    def __init__(
        self,
        port: str,
        baud: int,
        *,
        reopen_s: float = REOPEN_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.port = port
        self.baud = baud
        self.reopen_s = reopen_s
        self._clock = clock
        self._serial: Any = None
        self._retry_at = 0.0
        self._lock = threading.Lock()  # libosdp's thread uses it; close() comes from another
        self._closed = False
        self.problem: str | None = None
        """Why the port carries nothing now (cannot open, failed), or None."""
        self.received = 0
        """Bytes read so far: a reader that sent anything is there."""

    def read(self, max_bytes: int) -> bytes:
        """What the port has waiting, up to `max_bytes`, without waiting."""
        with self._lock:
            port = self._port()
            if port is None:
                return b""
            try:
                data: bytes = port.read(max_bytes)
            except Exception as exc:
                self._failed(f"port failed: {exc}")
                return b""
            self.received += len(data)
            return data

    def write(self, data: bytes) -> int:
        """Send `data`; the bytes sent (0 when the port is not working)."""
        with self._lock:
            port = self._port()
            if port is None:
                return 0
            try:
                written = port.write(data)
            except Exception as exc:
                self._failed(f"port failed: {exc}")
                return 0
            return int(written or 0)

    def flush(self) -> None:
        """Drop unread input."""
        with self._lock:
            port = self._serial
            if port is None:
                return
            try:
                port.reset_input_buffer()
            except Exception as exc:
                self._failed(f"port failed: {exc}")

    def close(self) -> None:
        """Close the port for good."""
        with self._lock:
            self._closed = True
            self._shut()

    def _port(self) -> Any:
        if self._serial is not None or self._closed:
            return self._serial
        now = self._clock()
        if now < self._retry_at:
            return None
        self._retry_at = now + self.reopen_s
        try:
            import serial  # pyserial: only when an OSDP reader is on a real port

            # timeout=0: reads return at once; libosdp polls every 20 ms. Exclusive:
            # alc and `alc ctl osdp-keyset` must never both talk on one bus.
            self._serial = serial.serial_for_url(
                self.port,
                baudrate=self.baud,
                timeout=0,
                write_timeout=WRITE_TIMEOUT_S,
                exclusive=True,
            )
        except Exception as exc:
            if self.problem is None:
                log.warning("%s: cannot open the port: %s", self.port, exc)
            self.problem = f"cannot open {self.port}: {exc}"
            return None
        if self.problem is not None:
            log.info("%s: the port works again", self.port)
        self.problem = None
        return self._serial

    def _failed(self, problem: str) -> None:
        if self.problem is None:
            log.warning("%s: %s", self.port, problem)
        self.problem = problem
        self._retry_at = self._clock() + self.reopen_s
        self._shut()

    def _shut(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except Exception:
                log.debug("%s: closing the port failed", self.port, exc_info=True)
