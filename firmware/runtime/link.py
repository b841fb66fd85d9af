"""The controller's side of MQTT: what it subscribes, seals, publishes and routes.

`firmware.mqtt.Link` is the paho adapter; this module knows the controller's
topics (PROTOCOL.md s1). What arrives on paho's network thread goes:

- on `data` (snapshot pages, deltas): to the decoder thread, which verifies
  and decodes off the loop;
- on a topic an edge claims (the simulator's `bench/in`): to that edge;
- everything else (commands, acknowledgements): to the loop's inbox, opened
  on the loop (they are small).

Connection changes become the core's `Connected`/`Disconnected` inputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from firmware.core import wire
from firmware.core.errors import LocalError
from firmware.core.inputs import Connected, Disconnected, Input, PayloadReceived
from firmware.core.outbox import SendEvents
from firmware.core.reception import SUFFIXES
from firmware.mqtt import BrokerSettings, Link, LinkDown, LinkEvent, LinkUp, Received, Will
from firmware.outbox_store import OutboxStore
from firmware.runtime.edge import Edge

log = logging.getLogger("alc.controller")


class ControllerLink:
    """The MQTT link of one controller, with its key and base topic."""

    def __init__(
        self,
        *,
        client_id: str,
        settings: BrokerSettings,
        base: str,
        key: bytes,
        kid: bytes,
        to_loop: Callable[[Input], object],
        to_decoder: Callable[[PayloadReceived], None],
    ) -> None:
        self.base = base
        self._key = key
        self._kid = kid
        self._to_loop = to_loop
        self._to_decoder = to_decoder
        self._data_topic = f"{base}/data"
        self._edges: dict[str, tuple[Edge, str]] = {}  # topic -> (edge, suffix)
        self._client_id = client_id
        self._settings = settings
        self._link: Link | None = None

    def claim(self, edge: Edge) -> None:
        """Route the edge's topics to it (before `start`)."""
        for suffix in edge.topics:
            self._edges[f"{self.base}/{suffix}"] = (edge, suffix)

    @property
    def link(self) -> Link:
        """The paho adapter (after `start`)."""
        assert self._link is not None, "start the link first"
        return self._link

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""
        return self._link is not None and self._link.connected

    def start(self) -> None:
        """Connect (in the background: paho reconnects on its own)."""
        topics = [f"{self.base}/{s}" for s in SUFFIXES] + sorted(self._edges)
        offline = self.seal("state", {"t": "state", "online": False})
        self._link = Link(
            self._client_id,
            self._settings,
            self._received,
            subscriptions=topics,
            will=Will(f"{self.base}/state", offline),
        )
        self._link.start()

    def alive(self) -> bool:
        """False once paho's network thread has died."""
        return self._link is None or self._link.alive()

    def restart(self) -> None:
        """Start paho's network thread again (the supervisor's call)."""
        self.link.restart()

    def stop(self) -> None:
        """Disconnect and stop paho's thread."""
        if self._link is not None:
            self._link.stop()

    def seal(self, suffix: str, message: Mapping[str, Any]) -> bytes:
        """`message` sealed for `<base>/<suffix>`."""
        topic = f"{self.base}/{suffix}"
        return wire.seal(self._key, self._kid, topic, message, iv=os.urandom(wire.IV_BYTES))

    def publish(self, suffix: str, message: Mapping[str, Any], *, retain: bool = False) -> None:
        """Seal and publish on `<base>/<suffix>` (any thread; queued by paho
        while disconnected)."""
        if self._link is not None:
            self._link.publish(f"{self.base}/{suffix}", self.seal(suffix, message), retain=retain)

    def send_events(self, action: SendEvents, store: OutboxStore) -> None:
        """Publish events `after < seq <= upto` (on the event thread), split so
        no message passes the size cap."""
        rows = store.batch(action.after, action.upto)
        start = 0
        while start < len(rows):
            end = len(rows)
            while True:
                try:
                    payload = self.seal("events", {"t": "events", "batch": rows[start:end]})
                    break
                except LocalError:
                    if end - start == 1:
                        # One event too big to ever send: its body is ours, so log
                        # and skip it rather than block the outbox forever.
                        log.error("event %s is too large to upload; skipped", rows[start][0])
                        payload = b""
                        break
                    end = start + (end - start) // 2
            if payload:
                self.link.publish(f"{self.base}/events", payload)
            start = end

    def _received(self, event: LinkEvent) -> None:
        """paho's network thread: route what arrived (see the module docstring)."""
        if isinstance(event, LinkUp):
            self._to_loop(Connected())
        elif isinstance(event, LinkDown):
            self._to_loop(Disconnected())
        elif isinstance(event, Received):
            claimed = self._edges.get(event.topic)
            if claimed is not None:
                if not event.retained:  # a retained input would act again at each start
                    edge, suffix = claimed
                    edge.received(suffix, event.payload)
                return
            received = PayloadReceived(event.topic, event.payload, event.retained)
            if event.topic == self._data_topic:
                self._to_decoder(received)
            else:
                self._to_loop(received)
