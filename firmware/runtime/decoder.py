"""The decoder thread: hub data is verified and decoded here, not on the loop.

A full sync arrives as pages of up to a thousand records each. Opening a page's
envelope (AES-GCM) and decoding its CBOR takes about half a millisecond, several
under load; on the loop, a member presenting a tag would wait behind it. So the network thread
hands every payload on `data` to this thread, which opens it with the core's pure
`Reception.unseal` and queues the parsed message for the loop. The network thread
itself stays free to take the next message (a bench presentation, a command).

Payloads keep their order (one thread, one FIFO). The queue is bounded: when the
loop and this thread fall far behind, the network thread waits, and the broker
holds the rest (MQTT flow control), rather than memory growing without end.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable

from firmware.core.inputs import PayloadReceived
from firmware.core.reception import Unsealed
from firmware.runtime.watchdog import Pulse

log = logging.getLogger("alc.controller")

MAX_QUEUED_PAYLOADS = 64  # x 256 KiB cap per payload (PROTOCOL.md s2) = 16 MiB at most
MAX_BATCH = 16  # payloads opened and handed to the loop together, at most


class Decoder:
    """One thread that opens payloads in arrival order and hands them on."""

    def __init__(
        self,
        open: Callable[[PayloadReceived], Unsealed | None],
        deliver: Callable[[list[Unsealed]], object],
        pulse: Pulse,
        step_aside: Callable[[], None] = lambda: None,
    ) -> None:
        """`deliver` queues opened messages for the loop, in order (it may wait:
        flow control); `pulse` is beaten per payload, for the watchdog; `step_aside`
        is called before each payload: it may wait while a member waits for the
        loop (see `priorities`)."""
        self._open = open
        self._deliver = deliver
        self.pulse = pulse
        self._step_aside = step_aside
        self._payloads: queue.Queue[PayloadReceived | None] = queue.Queue(MAX_QUEUED_PAYLOADS)
        self.thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="alc-decoder", daemon=True)
        thread.start()
        return thread

    def restart(self) -> None:
        """Start the thread again after it died (the supervisor's call)."""
        self.thread = self._start()

    def put(self, payload: PayloadReceived) -> None:
        """Queue a payload (network thread); waits while the queue is full."""
        self._payloads.put(payload)

    def stop(self, timeout: float = 10.0) -> None:
        """Open what is queued, then end the thread."""
        with contextlib.suppress(queue.Full):
            self._payloads.put(None, timeout=timeout)
        self.thread.join(timeout)

    def _run(self) -> None:
        while True:
            self.pulse.idle()
            batch = [self._payloads.get()]
            # What else is queued already goes with it: one hand-over to the
            # loop (one lock, one wake-up) for a burst of small deltas.
            with contextlib.suppress(queue.Empty):
                while len(batch) < MAX_BATCH and batch[-1] is not None:
                    batch.append(self._payloads.get_nowait())
            stop = batch[-1] is None
            self.pulse.beat()
            self._step_aside()
            opened: list[Unsealed] = []
            for payload in batch:
                if payload is None:
                    break
                try:
                    message = self._open(payload)
                except Exception:
                    # `open` reports bad input as a problem; an exception is our
                    # bug. Log it and go on: one payload must not stop the others.
                    log.exception("could not open a payload on %s", payload.topic)
                    continue
                if message is not None:
                    opened.append(message)
            if opened:
                self._deliver(opened)
            if stop:
                return
