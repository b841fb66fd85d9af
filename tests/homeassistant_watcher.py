"""A stand-in for Home Assistant's MQTT integration, for the tests: it follows
Home Assistant's discovery rules and nothing alc-specific.

It subscribes to `{prefix}/#`, takes `{prefix}/<component>/[<node_id>/]<object_id>/config`
messages as discovery (a JSON object; `~` expanded as Home Assistant does; an
empty payload removes the entity), checks the keys Home Assistant requires of
each platform, subscribes to the state and availability topics each config
names, and keeps the latest payload of each. Like Home Assistant it publishes
`online` on `{prefix}/status` (`birth`) and sends commands on the topics the
configs name. Every payload it ever received is kept (`payloads`) for the
tests' "no credential anywhere" checks.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from firmware.mqtt import BrokerSettings

# Home Assistant's required keys per platform (its MQTT schemas), beyond state_topic.
REQUIRED = {
    "lock": ("command_topic",),
    "light": ("command_topic",),
    "event": ("state_topic", "event_types"),
    "sensor": ("state_topic",),
    "binary_sensor": ("state_topic",),
}


@dataclass(frozen=True)
class Discovered:
    """One entity as Home Assistant would set it up."""

    component: str
    node_id: str | None
    object_id: str
    config: dict[str, Any]

    @property
    def state_topic(self) -> str:
        return str(self.config["state_topic"])

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(self.config.get("device", {}).get("identifiers", ()))

    def availability_topics(self) -> list[tuple[str, str, str]]:
        """(topic, payload_available, payload_not_available) of each availability."""
        items = self.config.get("availability") or []
        if "availability_topic" in self.config:
            items = [{"topic": self.config["availability_topic"]}]
        return [
            (
                str(a["topic"]),
                str(a.get("payload_available", "online")),
                str(a.get("payload_not_available", "offline")),
            )
            for a in items
        ]


def _expand(config: dict[str, Any]) -> dict[str, Any]:
    """Home Assistant's `~`: a value starting or ending with it gets the base."""
    base = config.get("~")
    if not isinstance(base, str):
        return config
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, str) and value.startswith("~"):
            value = base + value[1:]
        elif isinstance(value, str) and value.endswith("~"):
            value = value[:-1] + base
        out[key] = value
    return out


class Watcher:
    """Home Assistant's side of MQTT discovery, on one paho client."""

    def __init__(self, settings: BrokerSettings, prefix: str = "homeassistant") -> None:
        self.prefix = prefix
        self._pattern = re.compile(
            rf"^{re.escape(prefix)}/(?P<component>[^/]+)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?"
            r"(?P<object>[a-zA-Z0-9_-]+)/config$"
        )
        self._lock = threading.Lock()
        self.entities: dict[tuple[str, str | None, str], Discovered] = {}
        self.states: dict[str, str] = {}  # topic -> latest payload
        self.history: list[tuple[str, str, bool]] = []  # (topic, payload, retained)
        self.errors: list[str] = []
        self._subscribed: set[str] = set()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id="test-homeassistant",
            protocol=paho.MQTTv5 if settings.protocol == 5 else paho.MQTTv311,
        )
        if settings.tls:
            client.tls_set(ca_certs=settings.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._client = client
        client.connect(settings.host, settings.port, keepalive=30)
        client.loop_start()

    # --- what the tests read ---------------------------------------------------------

    def entity(self, component: str, object_id: str) -> Discovered | None:
        with self._lock:
            for (c, _node, o), found in self.entities.items():
                if c == component and o == object_id:
                    return found
            return None

    def all(self) -> list[Discovered]:
        with self._lock:
            return list(self.entities.values())

    def state(self, entity: Discovered) -> str | None:
        with self._lock:
            return self.states.get(entity.state_topic)

    def available(self, entity: Discovered) -> bool | None:
        """True/False as Home Assistant shows it; None before any availability."""
        with self._lock:
            seen = []
            for topic, yes, no in entity.availability_topics():
                got = self.states.get(topic)
                seen.append(None if got is None else got == yes if got in (yes, no) else None)
        if not seen:
            return True  # no availability: always available
        return None if None in seen else all(seen)

    def payloads(self) -> list[str]:
        with self._lock:
            return [payload for _topic, payload, _retained in self.history]

    def received_on(self, topic: str) -> list[tuple[str, bool]]:
        with self._lock:
            return [(p, r) for t, p, r in self.history if t == topic]

    # --- what Home Assistant sends ---------------------------------------------------

    def birth(self) -> None:
        """Home Assistant (re)started: `online` on its status topic."""
        self._client.publish(f"{self.prefix}/status", b"online", qos=1)

    def command(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets()  # paho closes them only when collected

    # --- paho's thread ---------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        client.subscribe(f"{self.prefix}/#", qos=1)
        with self._lock:
            topics = sorted(self._subscribed)
        for topic in topics:
            client.subscribe(topic, qos=1)

    def _on_message(self, client: paho.Client, _u: Any, message: Any) -> None:
        topic, raw = str(message.topic), bytes(message.payload)
        text = raw.decode("utf-8", errors="replace")
        with self._lock:
            self.history.append((topic, text, bool(message.retain)))
            self.states[topic] = text
        found = self._pattern.match(topic)
        if found is None:
            return
        key = (found["component"], found["node"], found["object"])
        if not raw:
            with self._lock:
                self.entities.pop(key, None)
            return
        try:
            config = json.loads(raw)
        except ValueError:
            self._error(f"{topic}: not JSON")
            return
        if not isinstance(config, dict):
            self._error(f"{topic}: not a JSON object")
            return
        config = _expand(config)
        missing = [k for k in REQUIRED.get(key[0], ()) if k not in config]
        if missing or "unique_id" not in config:
            self._error(f"{topic}: lacks {missing or ['unique_id']}")
            return
        entity = Discovered(key[0], key[1], key[2], config)
        new = [entity.state_topic] + [t for t, _y, _n in entity.availability_topics()]
        with self._lock:
            self.entities[key] = entity
            new = [t for t in new if t not in self._subscribed]
            self._subscribed.update(new)
        for t in new:
            client.subscribe(t, qos=1)

    def _error(self, what: str) -> None:
        with self._lock:
            self.errors.append(what)
