"""A thin adapter over paho-mqtt 2.x: nothing past this module sees a paho type.

paho's network thread only turns what happens into plain events (`LinkUp`,
`LinkDown`, `Received`) and hands them to the caller's `deliver` function, which
for the controller puts them on the event loop's queue. No exception ever escapes
into paho's thread: a crashed network thread would leave a door controller deaf.

Used by the controller (persistent session, QoS 1, a will) and by the reference
hub and `alc ctl`. MQTT 5 by default (MQTT 3.1.1 with `protocol=3`); a persistent
session asks the broker to keep it `SESSION_EXPIRY_S`.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

if TYPE_CHECKING:
    from firmware.config import MqttSection

log = logging.getLogger(__name__)

MAX_PACKET_BYTES = 300 * 1024
"""The largest MQTT packet either side takes (PROTOCOL.md s9): a sealed message of
the largest payload (256 KiB) fits with room for its topic and headers. The
broker's config (`alc broker init`) refuses anything larger with the same figure."""

SESSION_EXPIRY_S = 7 * 86400
"""How long the broker keeps a persistent MQTT 5 session (and its queued messages)
while we are away. PROTOCOL.md s1 asks at least a day; a week covers a long
weekend's outage, and a longer one ends in a full sync anyway."""

PROTOCOLS = {5: paho.MQTTv5, 3: paho.MQTTv311}


@dataclass(frozen=True, slots=True)
class LinkUp:
    """Connected (again) to the broker; `resumed` when the broker kept our session."""

    resumed: bool


@dataclass(frozen=True, slots=True)
class LinkDown:
    """Lost the broker; paho reconnects on its own with backoff."""

    reason: str


@dataclass(frozen=True, slots=True)
class Received:
    """A message arrived. `retained` ones are stale by definition for commands."""

    topic: str
    payload: bytes
    retained: bool


LinkEvent = LinkUp | LinkDown | Received


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes for us if we vanish."""

    topic: str
    payload: bytes
    retain: bool = True


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how to reach the broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    protocol: int = 5  # 3: MQTT 3.1.1
    # Set by `[mqtt] insecure = true`: said loudly at every start.
    insecure: bool = False

    def unprotected(self) -> list[str]:
        """What this link goes without, of what a production broker needs."""
        missing = [] if self.tls else ["no TLS: the network sees the password and topics"]
        if self.username is None:
            missing.append("no account: any client may take this session's topics")
        return missing

    @classmethod
    def of(cls, section: MqttSection) -> BrokerSettings:
        """The settings of controller.toml's `[mqtt]` section."""
        return cls(
            section.host,
            section.port,
            section.username,
            section.password,
            section.tls,
            str(section.ca_file) if section.ca_file else None,
            str(section.cert_file) if section.cert_file else None,
            str(section.key_file) if section.key_file else None,
            section.keepalive_s,
            section.protocol,
            section.insecure,
        )


class Link:
    """One MQTT client connection with automatic reconnect (1 s doubling to 60 s).

    `subscriptions` are (re)subscribed at QoS 1 on every connect. With
    `persistent=True` the broker keeps our session and queued QoS 1 messages
    across disconnects (clean_session false; on MQTT 5 clean_start false and a
    session expiry of `SESSION_EXPIRY_S`), as PROTOCOL.md s1 asks.
    """

    def __init__(
        self,
        client_id: str,
        settings: BrokerSettings,
        deliver: Callable[[LinkEvent], None],
        *,
        subscriptions: Sequence[str] = (),
        will: Will | None = None,
        persistent: bool = True,
    ) -> None:
        self._deliver = deliver
        self._subscriptions = list(subscriptions)
        self._settings = settings
        self._persistent = persistent
        self._connected = threading.Event()
        if settings.protocol not in PROTOCOLS:
            raise ValueError(f"MQTT protocol must be 5 or 3, got {settings.protocol}")
        v5 = settings.protocol == 5
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            # MQTT 5 has no clean session flag: clean_start goes with connect.
            clean_session=None if v5 else not persistent,
            protocol=PROTOCOLS[settings.protocol],
        )
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        # Bounded: a long outage must not grow our memory without limit.
        client.max_queued_messages_set(10_000)
        client.max_inflight_messages_set(100)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            client.tls_set(
                ca_certs=settings.ca_file,
                certfile=settings.cert_file,
                keyfile=settings.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if will is not None:
            client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    @property
    def connected(self) -> bool:
        """True while the broker session is up."""
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; a broker that is down is retried, not fatal.
        A link set `insecure` says what it goes without, as a warning, every time."""
        settings = self._settings
        if settings.insecure:
            log.warning(
                "INSECURE broker link to %s:%d ([mqtt] insecure = true): %s",
                settings.host,
                settings.port,
                "; ".join(settings.unprotected()) or "nothing is missing now: remove it",
            )
        if settings.protocol == 5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.MaximumPacketSize = MAX_PACKET_BYTES
            if self._persistent:
                properties.SessionExpiryInterval = SESSION_EXPIRY_S
            self._client.connect_async(
                settings.host,
                settings.port,
                keepalive=settings.keepalive_s,
                clean_start=not self._persistent,
                properties=properties,
            )
        else:
            self._client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        self._client.loop_start()

    def alive(self) -> bool:
        """False once paho's network thread has died (it catches what our callbacks
        raise, so only a bug in paho or the interpreter ends it)."""
        thread = getattr(self._client, "_thread", None)  # paho keeps no public handle
        return thread is None or thread.is_alive()

    def restart(self) -> None:
        """Start paho's network thread again after it died."""
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for the first connection."""
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queue a QoS 1 message; paho sends it now or after the next reconnect."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.warning("publish on %s not queued: %s", topic, paho.error_string(info.rc))

    def stop(self) -> None:
        """Disconnect cleanly (no will), stop paho's thread and close its sockets."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._connected.clear()
            # paho closes its sockets only when the client is garbage collected,
            # and our callbacks put the client in a reference cycle, so that waits
            # for the cyclic collector (paho issue #627): one leaked socket pair
            # per stopped link, and a ResourceWarning. The thread is joined, so
            # nothing else uses them now.
            self._client._reset_sockets()

    # --- paho's thread --------------------------------------------------------------

    def _safely(self, event: LinkEvent) -> None:
        try:
            self._deliver(event)
        except Exception:  # never let one bad event kill paho's network thread
            log.exception("delivering %s failed", type(event).__name__)

    def _on_connect(
        self, client: paho.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker refused the connection: %s", reason)
            return
        try:
            for topic in self._subscriptions:
                client.subscribe(topic, qos=1)
        except Exception:
            log.exception("subscribing failed")
        self._connected.set()
        self._safely(LinkUp(resumed=bool(getattr(flags, "session_present", False))))

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            self._safely(LinkDown(str(reason)))

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: Any) -> None:
        self._safely(Received(str(msg.topic), bytes(msg.payload), bool(msg.retain)))
