"""`Reader`: a credential reader, and the policy every reader shares.

- Repeat suppression: a tag or card read again within `repeat_s` of its last read
  is the same presentation (125 kHz readers repeat the frame while a tag is held)
  and is not reported again. PINs are never suppressed.
- PIN entry (`hal.keypad.PinEntry`): keys become one completed PIN.
- Faults are rate-limited to one per `FAULT_INTERVAL_S`, with a count of those
  held back, so a reader spewing noise cannot flood the event queue.
- Frame timeout: a serial frame or line left half-received for `gap_s` is dropped
  and reported (`StreamReader`); a Wiegand frame ends after a quiet gap of `gap_s`
  (`WiegandReader`).

Backends implement only raw hooks: `StreamReader` subclasses open, read and close
a port; `WiegandReader` subclasses call `_pulse(bit)` from their D0/D1 edges.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod

from hal.device import Clock, Device, log
from hal.events import CredentialRead, ReaderTrouble, Sink
from hal.frames import Credential, Decoded, Fault, Key, StreamDecoder
from hal.keypad import DEFAULT_TIMEOUT_S, PinEntry
from hal.wiegand import DEFAULT_GAP_S, FrameAssembler

DEFAULT_REPEAT_S = 1.0
FAULT_INTERVAL_S = 1.0
READ_CHUNK = 256  # bytes per read: bounds what one read can cost
RETRY_S = 5.0  # between attempts to (re)open a port that failed
JOIN_S = 5.0


class Reader(Device):
    """A credential reader named `reader_id`, reporting to `sink`."""

    kind = "reader"

    def __init__(
        self,
        reader_id: str,
        sink: Sink,
        *,
        repeat_s: float = DEFAULT_REPEAT_S,
        pin_timeout_s: float = DEFAULT_TIMEOUT_S,
        fault_interval_s: float = FAULT_INTERVAL_S,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(reader_id, clock=clock)
        self.reader_id = reader_id
        self._sink = sink
        self.repeat_s = repeat_s
        self._fault_interval_s = fault_interval_s
        self._pins = PinEntry(timeout_s=pin_timeout_s)
        self._started = False
        self._last_read: tuple[str, str] | None = None
        self._last_read_at = 0.0
        self._last_fault_at: float | None = None
        self._faults_held = 0

    def start(self) -> None:
        with self._lock:
            self._started = True

    def _handle(self, item: Decoded, at: float | None = None) -> None:
        """Apply the shared policy to one decoded item, received `at` (clock time,
        default now), and report the outcome."""
        with self._lock:
            if not self._started or self._closed:
                return
            now = self._clock() if at is None else at
            if isinstance(item, Fault):
                # A key lost in a bad frame would make a different, shorter PIN:
                # start the entry again rather than guess.
                self._pins.clear()
            if isinstance(item, Key):
                outcome = self._pins.key(item.key, now)
                if outcome is not None:
                    self._handle_locked(outcome, now)
            else:
                self._handle_locked(item, now)

    def _handle_locked(self, item: Credential | Fault, now: float) -> None:
        if isinstance(item, Fault):
            self._fault(item.detail, now)
            return
        if item.credkind != "pin":
            held = (item.credkind, item.value) == self._last_read
            if held and now - self._last_read_at < self.repeat_s:
                self._last_read_at = now  # still held: the window runs from the last frame
                return
            self._last_read, self._last_read_at = (item.credkind, item.value), now
        self._deliver(self._sink, CredentialRead(self.reader_id, item.credkind, item.value))

    def _fault(self, detail: str, now: float | None = None) -> None:
        with self._lock:
            now = self._clock() if now is None else now
            last = self._last_fault_at
            if last is not None and now - last < self._fault_interval_s:
                self._faults_held += 1
                return
            if self._faults_held:
                detail = f"{detail} (and {self._faults_held} earlier faults not reported)"
            self._last_fault_at, self._faults_held = now, 0
            self._deliver(self._sink, ReaderTrouble(self.reader_id, detail[:200]))


class WiegandReader(Reader):
    """Wiegand policy: pulses into frames ending after a quiet gap, cards and
    keypad bursts decoded (`hal.wiegand`). Backends call `_pulse(0|1)` from the
    falling edges of D0 and D1."""

    kind = "wiegand"

    def __init__(
        self,
        reader_id: str,
        sink: Sink,
        *,
        gap_s: float = DEFAULT_GAP_S,
        repeat_s: float = DEFAULT_REPEAT_S,
        pin_timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            reader_id, sink, repeat_s=repeat_s, pin_timeout_s=pin_timeout_s, clock=clock
        )
        self._frame = FrameAssembler(gap_s=gap_s)

    def deadline(self) -> float | None:
        with self._lock:
            return self._frame.deadline()

    def poll(self) -> None:
        with self._lock:
            # A frame counts from its last pulse, not from when the timer saw it
            # end: the keypad timeout and repeat window must not depend on a late timer.
            at = self._frame.last
            item = self._frame.take(self._clock())
            if item is not None:
                self._handle(item, at)

    def end_frame(self) -> None:
        """End the frame in progress now, as a quiet gap would. For the simulator,
        which knows where its frames end and may run on a clock that stands still."""
        with self._lock:
            at = self._frame.last
            item = self._frame.end()
            if item is not None:
                self._handle(item, at)

    def _pulse(self, bit: int) -> None:
        """Raw hook: a pulse on D0 (`bit` 0) or D1 (`bit` 1), just now."""
        with self._lock:
            if not self._started or self._closed:
                return
            at = self._frame.last
            previous = self._frame.bit(bit, self._clock())
            if previous is not None:
                self._handle(previous, at)
        self._wake()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    @abstractmethod
    def _release(self) -> None:
        """Give D0 and D1 back to the system."""


class StreamReader(Reader):
    """A reader on a byte stream (a serial port), with its own thread.

    The thread blocks in `_read()` (which returns within about a quarter second,
    with or without data), feeds the decoder, and drops a frame left half-received
    for `gap_s`. A port that fails or is missing is reported (once, until it works
    again) and retried every `retry_s`, so an unplugged USB reader comes back when
    plugged in again.
    """

    def __init__(
        self,
        reader_id: str,
        sink: Sink,
        decoder: StreamDecoder,
        *,
        kind: str,
        gap_s: float,
        repeat_s: float = DEFAULT_REPEAT_S,
        pin_timeout_s: float = DEFAULT_TIMEOUT_S,
        retry_s: float = RETRY_S,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            reader_id, sink, repeat_s=repeat_s, pin_timeout_s=pin_timeout_s, clock=clock
        )
        self.kind = kind
        self.retry_s = retry_s
        self.gap_s = gap_s
        self._decoder = decoder
        self._last_byte_at = 0.0
        self.bytes_read = 0
        """Bytes received and decoded so far (diagnostics; tests wait on it)."""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._port_problem: str | None = None
        self.opened = threading.Event()
        """Set while the port is open (tests and the simulator wait on it)."""

    def start(self) -> None:
        """Open the port (a failure is reported and retried) and start the thread."""
        super().start()
        if self._thread is not None or self._closed:
            return
        self._try_open()
        self._thread = threading.Thread(
            target=self._run, name=f"alc-hal-reader-{self.reader_id}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the thread, then close the port. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stopping.set()
        if self._thread is not None:
            try:
                self._cancel_read()
            except Exception:
                log.debug("%s: cancel_read failed", self.reader_id, exc_info=True)
            self._thread.join(JOIN_S)
            if self._thread.is_alive():
                log.error("%s: reader thread did not stop within %.0f s", self.reader_id, JOIN_S)
        self._shut()

    def _feed(self, data: bytes) -> None:
        """Decode `data` (read just now) and report what it completed."""
        with self._lock:
            self._last_byte_at = self._clock()
            for item in self._decoder.feed(data):
                self._handle(item)
            self.bytes_read += len(data)

    def poll(self) -> None:
        """Drop a frame that stayed half-received for `gap_s`. Called by the thread."""
        with self._lock:
            if self._decoder.pending() and self._clock() - self._last_byte_at >= self.gap_s:
                self._decoder.reset()
                self._fault("incomplete frame dropped (timed out)")

    def _try_open(self) -> bool:
        try:
            self._open()
        except Exception as exc:
            self._port_trouble(f"cannot open the port: {exc}")
            return False
        self._decoder.reset()
        self.opened.set()
        if self._port_problem is not None:
            log.info("%s: the port works again", self.reader_id)
            self._port_problem = None
        return True

    def _port_trouble(self, detail: str) -> None:
        # A reader unplugged for a month must not log a fault every retry:
        # report a port problem once, until the port has worked again.
        if detail != self._port_problem:
            self._port_problem = detail
            self._fault(detail)
        else:
            log.debug("%s: %s", self.reader_id, detail)

    def _shut(self) -> None:
        self.opened.clear()
        try:
            self._close_port()
        except Exception:
            log.debug("%s: closing the port failed", self.reader_id, exc_info=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self.opened.is_set() and not self._try_open():
                self._stopping.wait(self.retry_s)
                continue
            started = time.monotonic()
            try:
                data = self._read(READ_CHUNK)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                self._port_trouble(f"port failed: {exc}")
                self._shut()
                self._stopping.wait(self.retry_s)
                continue
            try:
                if data:
                    self._feed(data)
                self.poll()
            except Exception:
                # A decoder bug must not silence the reader for good.
                log.exception("%s: decoding failed", self.reader_id)
            if not data and time.monotonic() - started < 0.01:
                # A port that returns at once with nothing must not make us spin.
                self._stopping.wait(0.05)

    @abstractmethod
    def _open(self) -> None:
        """Raw hook: open the port (raise on failure)."""

    @abstractmethod
    def _read(self, limit: int) -> bytes:
        """Raw hook: up to `limit` bytes; wait at most a short timeout for the first."""

    @abstractmethod
    def _cancel_read(self) -> None:
        """Raw hook: make a `_read()` blocked in another thread return now."""

    @abstractmethod
    def _close_port(self) -> None:
        """Raw hook: close the port (it may be open or not)."""
