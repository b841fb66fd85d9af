"""The one thread that owns a `Hub`: MQTT in, file and keys watched, messages out.

paho's network thread only puts `LinkEvent`s on a queue (as in the controller);
this loop pops them, runs the `Hub`, publishes what it returns, and every
`poll_s` looks at the data file and the keys directory (mtime and size: no extra
dependency, and an editor's save is seen within half a second). Other threads hand
the hub work through `submit` (the loop thread is the only one that touches the
`Hub` and its database).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from tools.hub.datafile import DataFileError, load_datafile
from tools.hub.keys import load_keys
from tools.hub.server import Hub, Outgoing, subscriptions

log = logging.getLogger(__name__)

POLL_S = 0.5

Signature = tuple[int, int, int] | None
Job = Callable[[Hub, float], list[Outgoing]]
"""Work for the loop thread: called with the hub and the time; returns what to publish."""
_UNSEEN: Signature = (-1, -1, -1)  # differs from every real signature, and from "missing"


def signature(path: Path) -> Signature:
    """What tells us a file or directory changed: (inode, size, mtime in ns)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class HubLoop:
    """Runs a `Hub` against a broker until `stop()`."""

    def __init__(
        self,
        hub: Hub,
        *,
        data_file: Path | None,
        keys_dir: Path,
        settings: BrokerSettings,
        client_id: str | None = None,
        poll_s: float = POLL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`data_file` None: the dataset is changed only through `submit` (a
        benchmark or an embedding program), no file is watched."""
        self.hub = hub
        self.data_file = data_file
        self.keys_dir = keys_dir
        self.poll_s = poll_s
        self._clock = clock
        self._queue: queue.Queue[LinkEvent | Job | None] = queue.Queue()
        self._stop = threading.Event()
        self._data_sig: Signature = _UNSEEN
        self._keys_sig: Signature = _UNSEEN
        self.link = Link(
            client_id or f"alc-hub-{hub.site}",
            settings,
            self._queue.put,
            subscriptions=subscriptions(hub.root, hub.site),
            # A persistent session: the broker keeps events and sync requests
            # for us while the hub restarts.
            persistent=True,
        )

    def check_files(self) -> None:
        """Reload keys and the data file if they changed; publish what follows."""
        now = self._clock()
        sig = signature(self.keys_dir)
        if sig != self._keys_sig:
            self._keys_sig = sig
            self.hub.set_keys(load_keys(self.keys_dir))
            log.info(
                "serving %d controller(s): %s",
                len(self.hub.controllers),
                ", ".join(self.hub.controllers) or "none",
            )
        if self.data_file is None:
            return
        sig = signature(self.data_file)
        if sig == self._data_sig:
            return
        self._data_sig = sig
        try:
            records = load_datafile(self.data_file)
        except DataFileError as exc:
            # Keep serving the last good version; the next save is tried again.
            log.error("%s (still serving v%d)", exc, self.hub.v)
            return
        self._publish(self.hub.update(records, now))

    def run(self) -> None:
        """Serve until `stop()`; the link is always stopped on the way out."""
        self._guarded(self._poll, None)
        self.link.start()
        next_poll = time.monotonic() + self.poll_s
        try:
            while not self._stop.is_set():
                try:
                    event = self._queue.get(timeout=max(0.0, next_poll - time.monotonic()))
                except queue.Empty:
                    event = None
                if isinstance(event, Received):
                    self._guarded(self._received, event)
                elif callable(event):
                    self._guarded(partial(self._job, event), None)
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.poll_s
                    self._guarded(self._poll, None)
        finally:
            self.link.stop()

    def stop(self) -> None:
        """Ask `run` to return (from any thread)."""
        self._stop.set()
        self._queue.put(None)  # wake the loop now rather than at the next poll

    def submit(self, job: Job) -> None:
        """Run `job(hub, now)` on the loop thread (from any thread) and publish what
        it returns, in order with the messages the loop handles."""
        self._queue.put(job)

    def wait_connected(self, timeout: float) -> bool:
        """Block until the broker connection is up (for tests and startup logs)."""
        return self.link.wait_connected(timeout)

    def _received(self, event: Received | None) -> None:
        assert event is not None
        now = self._clock()
        self._publish(self.hub.handle(event.topic, event.payload, now, retained=event.retained))

    def _job(self, job: Job, _event: Received | None) -> None:
        self._publish(job(self.hub, self._clock()))

    def _poll(self, _event: Received | None) -> None:
        self.check_files()
        self._publish(self.hub.tick(self._clock()))

    def _guarded(self, step: Callable[[Received | None], None], event: Received | None) -> None:
        try:
            step(event)
        except Exception:
            # One bad message or a full disk must not end the service for every
            # controller; the error is logged and the next event is served.
            log.exception("hub step failed")

    def _publish(self, out: list[Outgoing]) -> None:
        for topic, payload in out:
            self.link.publish(topic, payload)
