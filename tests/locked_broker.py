"""The `locked` fixture: a real mosquitto running exactly the config `alc broker
init` writes, on 127.0.0.1 and a free port, its certificate for "localhost", with
the accounts `alc broker add` made: controllers `c1` and `c2` of site `demo`, the
hub (`hub`) and a second hub-side account for `alc ctl` (`ctl`).

As root (the CI container), mosquitto would switch to the `mosquitto` user, which
cannot enter pytest's private temporary directories: the config then says `user
root` (`alc broker init --user root`), mosquitto's own way of staying root.
"""

from __future__ import annotations

import os
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware.mqtt import BrokerSettings
from tests.waiting import WAIT_S, wait_for
from tools.broker import Broker, BrokerError, free_port
from tools.broker_setup.layout import Layout
from tools.broker_setup.main import main as broker_main

SITE = "demo"
HOST = "localhost"
CONTROLLERS = ("c1", "c2")
HUB = "hub"
CTL = "ctl"


def init_args(dir: Path, port: int) -> list[str]:
    """`alc broker init` for a test broker of `dir` on 127.0.0.1:`port`."""
    args = ["init", str(dir), "--host", HOST, "--port", str(port), "--bind", "127.0.0.1"]
    return args + (["--user", "root"] if os.geteuid() == 0 else [])


@dataclass
class Locked:
    """A running locked-down broker and its directory."""

    layout: Layout
    broker: Broker

    @property
    def port(self) -> int:
        return self.broker.port

    def username(self, who: str) -> str:
        """The account of controller `who` (`c1`, `c2`) or hub-side `who`."""
        return f"{SITE}.{who}" if who in CONTROLLERS else who

    def password_file(self, who: str) -> Path:
        return self.layout.account_password(self.username(who))

    def password(self, who: str) -> str:
        return self.password_file(who).read_text().strip()

    def settings(
        self,
        who: str | None,
        *,
        host: str = HOST,
        password: str | None = None,
        protocol: int = 5,
        ca_file: Path | None = None,
    ) -> BrokerSettings:
        """How `who` (None: anonymous) connects over TLS."""
        return BrokerSettings(
            host=host,
            port=self.port,
            username=self.username(who) if who is not None else None,
            password=password if password is not None else self.password(who) if who else None,
            tls=True,
            ca_file=str(ca_file or self.layout.ca_cert),
            keepalive_s=5,
            protocol=protocol,
        )

    def controller_mqtt(self, who: str, *, protocol: int = 5) -> str:
        """The `[mqtt]` lines of controller `who`'s controller.toml."""
        return (
            f'host = "{HOST}"\nport = {self.port}\ntls = true\n'
            f'ca_file = "{self.layout.ca_cert}"\n'
            f'username = "{self.username(who)}"\n'
            f'password_file = "{self.password_file(who)}"\n'
            f"protocol = {protocol}\n"
        )


def make_locked(dir: Path, port: int) -> Layout:
    """Init `dir` and add the test accounts, through `alc broker`'s command line."""
    assert broker_main(init_args(dir, port)) == 0
    for controller in CONTROLLERS:
        assert broker_main(["add", str(dir), "--site", SITE, "--controller", controller]) == 0
    for hub in (HUB, CTL):
        assert broker_main(["add", str(dir), "--site", SITE, "--hub", hub]) == 0
    return Layout.at(dir)


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Locked]:
    """A running locked-down broker, stopped after the test."""
    with running_locked(tmp_path) as running:
        yield running


@contextmanager
def running_locked(tmp_path: Path, *accounts: list[str]) -> Iterator[Locked]:
    """The test accounts and `accounts` (each the arguments of one `alc broker
    add` after `--site`) on a running locked-down broker, stopped on leaving."""
    port = free_port()
    dir = tmp_path / "broker-dir"
    layout = make_locked(dir, port)
    for account in accounts:
        assert broker_main(["add", str(dir), "--site", SITE, *account]) == 0
    broker = Broker(tmp_path / "broker-run", port=port, conf_file=layout.conf)
    try:
        broker.start()
    except BrokerError as exc:
        pytest.fail(str(exc))
    try:
        yield Locked(layout, broker)
    finally:
        broker.stop()


def _close_sockets(tb: TracebackType | None) -> None:
    """Close the sockets a failed connect left in its frames: paho does not close
    the socket of a TLS handshake that failed (it would warn when collected)."""
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, socket.socket):
                value.close()
        tb = tb.tb_next


class Probe:
    """A bare paho client on the locked broker that records everything it is told,
    reason codes included: what a refusal looks like from the client's side.

    Its events (`connack`, `disconnect`, `suback`, `puback`, `message`) arrive in
    order on one queue; `received` keeps every message. `close()` stops paho's
    thread."""

    def __init__(self, settings: BrokerSettings, client_id: str = "probe") -> None:
        self.settings = settings
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.received: list[tuple[str, bytes]] = []
        self.disconnects: list[int] = []  # reason codes, in order
        self._lock = threading.Lock()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if settings.protocol == 5 else paho.MQTTv311,
        )
        if settings.tls:
            client.tls_set(ca_certs=settings.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client
        self._started = False

    def connect(self) -> int:
        """Connect; the CONNACK's reason code (0: accepted), or -1 when the broker
        hung up without one. TLS failures raise (`ssl.SSLError`) from here."""
        try:
            self.client.connect(self.settings.host, self.settings.port, keepalive=30)
        except ssl.SSLError as exc:
            _close_sockets(exc.__traceback__)
            raise
        self.client.loop_start()
        self._started = True
        kind, value = self.next_of(("connack", "disconnect"))
        return int(value) if kind == "connack" else -1

    def next_of(self, kinds: tuple[str, ...], timeout: float = WAIT_S) -> tuple[str, Any]:
        """The next event of one of `kinds` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {' or '.join(kinds)} within {timeout:g} s")
            try:
                kind, value = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if kind in kinds:
                return kind, value

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the broker's answer."""
        self.client.subscribe(topic, qos=1)
        self.next_of(("suback",))

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Publish at QoS 1; the PUBACK's reason code (MQTT 5: 135, not authorised)."""
        self.client.publish(topic, payload, qos=1, retain=retain)
        _kind, value = self.next_of(("puback",))
        return int(value)

    def wait_message(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Every message received up to and including (`topic`, `payload`)."""
        wait_for(lambda: (topic, payload) in self.messages(), f"{payload!r} on {topic}")
        got = self.messages()
        return got[: got.index((topic, payload)) + 1]

    def messages(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False
        self.client._reset_sockets()  # paho closes them only when collected

    # paho's thread
    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self.events.put(("connack", getattr(reason, "value", reason)))

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        code = getattr(reason, "value", reason)
        with self._lock:
            self.disconnects.append(code)
        self.events.put(("disconnect", code))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        self.events.put(("suback", [getattr(r, "value", r) for r in reasons]))

    def _on_publish(self, _c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        self.events.put(("puback", getattr(reason, "value", reason)))

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        with self._lock:
            self.received.append((str(message.topic), bytes(message.payload)))
        self.events.put(("message", str(message.topic)))
