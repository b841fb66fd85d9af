"""`alc ctl`: keys, command messages, and the round trip through a real mosquitto."""

from __future__ import annotations

import queue
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.core.messages import parse_command
from firmware.core.wire import unseal
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from tests.broker import Broker
from tests.sealing import seal
from tools import ctl
from tools.hub.keys import read_controller_key

SITE = "demo"
Script = Callable[[dict[str, Any]], list[dict[str, Any]]]


def base(controller: str = "c1") -> str:
    return f"alc/{SITE}/{controller}"


# --- keygen, messages ---------------------------------------------------------------------


def test_keygen_writes_a_private_key_and_never_overwrites(tmp_path: Path, capsys: Any) -> None:
    keys = tmp_path / "keys"
    assert ctl.main(["keygen", "--controller", "c1", "--keys", str(keys)]) == 0
    path = keys / "c1.key"
    text = path.read_text().strip()
    assert len(text) == 64 and bytes.fromhex(text)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_controller_key(keys, "c1") == bytes.fromhex(text)
    assert ctl.main(["keygen", "--controller", "c1", "--keys", str(keys)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert path.read_text().strip() == text
    assert ctl.main(["keygen", "--controller", "../c2", "--keys", str(keys)]) == 2


def test_build_command_is_what_a_controller_accepts() -> None:
    body = ctl.build_command("purge", {"events": True}, now=1000.7, ttl=60)
    command = parse_command(body)
    assert (command.cmd, command.args, command.iat, command.exp) == (
        "purge",
        {"events": True},
        1000,
        1060,
    )
    assert len(command.id) == 32
    assert ctl.build_command("sync", now=0)["id"] != command.id
    assert ctl.build_command("sync", now=0, id="x")["id"] == "x"


def test_progress_bar() -> None:
    assert ctl.progress_bar(0, 4, width=4) == "[....]   0%  0/4"
    assert ctl.progress_bar(2, 4, width=4) == "[##..]  50%  2/4"
    assert ctl.progress_bar(4, 4, width=4) == "[####] 100%  4/4"
    assert ctl.progress_bar(1, 0, width=4) == "[....]   0%  1/0"


# --- against a real broker ----------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    assert ctl.main(["keygen", "--controller", "c1", "--keys", str(directory)]) == 0
    return directory


def argv(command: str, broker: Broker, keys: Path, *extra: str) -> list[str]:
    return [
        command,
        *("--site", SITE, "--controller", "c1", "--keys", str(keys)),
        *("--host", broker.host, "--port", str(broker.port), "--timeout", "30"),
        *extra,
    ]


class FakeController:
    """Publishes a state and answers each command with what `script` returns."""

    def __init__(self, broker: Broker, key: bytes, script: Script, *, online: bool = True) -> None:
        self.key = key
        self.script = script
        self.commands: list[dict[str, Any]] = []
        self.link = Link(
            "fake-c1",
            BrokerSettings(broker.host, broker.port),
            self._deliver,
            subscriptions=[f"{base()}/cmd"],
            persistent=False,
        )
        self.link.start()
        assert self.link.wait_connected(10)
        self.send("state", {"t": "state", "online": online, "v": 3}, retain=True)

    def send(self, leaf: str, body: dict[str, Any], *, retain: bool = False) -> None:
        topic = f"{base()}/{leaf}"
        self.link.publish(topic, seal(self.key, b"c1", topic, body), retain=retain)

    def _deliver(self, event: LinkEvent) -> None:
        if isinstance(event, Received) and not event.retained:
            body = unseal({b"c1": self.key}, event.topic, event.payload).body
            self.commands.append(body)
            for reply in self.script(body):
                self.send("reply", {"t": "reply", "id": body["id"]} | reply)


@pytest.fixture
def listener(broker: Broker) -> Iterator[Callable[[], list[bytes]]]:
    """Everything published on c1's `cmd` topic, up to a marker sent at the end."""
    inbox: queue.Queue[LinkEvent] = queue.Queue()
    link = Link(
        "listener",
        BrokerSettings(broker.host, broker.port),
        inbox.put,
        subscriptions=[f"{base()}/cmd"],
        persistent=False,
    )
    link.start()
    assert link.wait_connected(10)

    def collected() -> list[bytes]:
        # The broker delivers in the order it received; anything ctl sent before
        # it stopped arrives before this marker.
        link.publish(f"{base()}/cmd", b"marker")
        got: list[bytes] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            event = inbox.get(timeout=30)
            if isinstance(event, Received):
                if event.payload == b"marker":
                    return got
                got.append(event.payload)
        raise AssertionError("marker never arrived")

    try:
        # Make sure our subscription is live before anyone relies on it.
        assert collected() == []
        yield collected
    finally:
        link.stop()


def test_offline_without_state_sends_nothing(
    broker: Broker, keys: Path, listener: Callable[[], list[bytes]], capsys: Any
) -> None:
    assert ctl.main(argv("status", broker, keys)) == 2
    assert "controller c1 is offline" in capsys.readouterr().out
    assert listener() == []


def test_offline_by_its_will_sends_nothing(
    broker: Broker, keys: Path, listener: Callable[[], list[bytes]], capsys: Any
) -> None:
    fake = FakeController(broker, read_controller_key(keys, "c1"), lambda c: [], online=False)
    try:
        assert ctl.main(argv("sync", broker, keys)) == 2
    finally:
        fake.link.stop()
    assert "controller c1 is offline" in capsys.readouterr().out
    assert listener() == [] and fake.commands == []


def test_sync_shows_progress_and_done(broker: Broker, keys: Path, capsys: Any) -> None:
    def script(command: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"status": "accepted"},
            {"status": "progress", "got": 1, "of": 2},
            {"status": "progress", "got": 2, "of": 2},
            {"status": "done", "detail": "1234 records", "ms": 850},
        ]

    fake = FakeController(broker, read_controller_key(keys, "c1"), script)
    try:
        assert ctl.main(argv("sync", broker, keys)) == 0
    finally:
        fake.link.stop()
    out = capsys.readouterr().out
    assert "sent sync to demo/c1" in out
    assert " 50%  1/2" in out and "100%  2/2" in out
    assert "done: 1234 records (850 ms)" in out
    (command,) = fake.commands
    assert command["cmd"] == "sync" and command["exp"] == command["iat"] + 60


def test_purge_events_and_a_rejection(broker: Broker, keys: Path, capsys: Any) -> None:
    fake = FakeController(
        broker,
        read_controller_key(keys, "c1"),
        lambda c: [{"status": "rejected", "detail": "expired"}],
    )
    try:
        assert ctl.main(argv("purge", broker, keys, "--events", "--ttl", "5")) == 1
    finally:
        fake.link.stop()
    assert "rejected: expired" in capsys.readouterr().out
    (command,) = fake.commands
    assert command["args"] == {"events": True}
    assert command["exp"] == command["iat"] + 5


def test_status_prints_the_state_map(broker: Broker, keys: Path, capsys: Any) -> None:
    detail = {"online": True, "v": 3, "digest": bytes(16), "sync": {"state": "idle"}}
    fake = FakeController(
        broker, read_controller_key(keys, "c1"), lambda c: [{"status": "done", "detail": detail}]
    )
    try:
        assert ctl.main(argv("status", broker, keys)) == 0
    finally:
        fake.link.stop()
    out = capsys.readouterr().out
    assert "  v: 3" in out and "  digest: " + "00" * 16 in out and "state: idle" in out
