"""`[mqtt]`: the controller refuses an unsafe link (issue 11 s3). TLS with a
checked CA, an account whose password file only its owner may read, MQTT 5 by
default; to a broker on another machine, no start without TLS and an account
unless `insecure = true`, which is then said at every start. And the MQTT 5
session itself: kept while the controller is away, no packet over 300 KiB."""

from __future__ import annotations

import logging
import queue
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware.config import ConfigError, load_config
from firmware.mqtt import MAX_PACKET_BYTES, BrokerSettings, Link, LinkEvent, LinkUp, Received
from tests.broker import Broker
from tests.waiting import WAIT_S, wait_for
from tools.broker_setup.certs import make_ca

MINIMAL = """
[controller]
site = "demo"
id = "ctl1"
data_dir = "data"
key_file = "ctl1.key"
"""


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "mqtt.password"
    path.write_text("s3cret-password\n")
    path.chmod(0o600)
    return path


def refused(tmp_path: Path, mqtt: str) -> str:
    """The one-line error of a config with these `[mqtt]` lines."""
    path = tmp_path / "controller.toml"
    path.write_text(MINIMAL + "[mqtt]\n" + mqtt)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_the_defaults_are_loopback_plaintext_on_mqtt_5(tmp_path: Path) -> None:
    path = tmp_path / "controller.toml"
    path.write_text(MINIMAL)
    mqtt = load_config(path).mqtt
    assert (mqtt.host, mqtt.port, mqtt.tls, mqtt.protocol, mqtt.insecure) == (
        "127.0.0.1",
        1883,
        False,
        5,
        False,
    )


def test_a_full_tls_account_config_loads_its_password(tmp_path: Path, secret: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(make_ca("test", datetime.now(UTC)).cert_pem)
    mqtt = load_config(
        _write(
            tmp_path,
            'host = "broker.club.lan"\ntls = true\nca_file = "ca.crt"\n'
            f'username = "demo.ctl1"\npassword_file = "{secret.name}"\nprotocol = 3\n',
        )
    ).mqtt
    assert mqtt.port == 8883  # TLS's port unless told
    assert mqtt.password == "s3cret-password"
    assert mqtt.password_file == secret  # relative to controller.toml
    assert mqtt.protocol == 3
    assert "s3cret" not in repr(mqtt)  # never in a log line
    settings = BrokerSettings.of(mqtt)
    assert (settings.tls, settings.username, settings.protocol) == (True, "demo.ctl1", 3)


def _write(tmp_path: Path, mqtt: str) -> Path:
    path = tmp_path / "controller.toml"
    path.write_text(MINIMAL + "[mqtt]\n" + mqtt)
    return path


@pytest.mark.parametrize(
    ("mqtt", "says"),
    [
        ('host = "broker.club.lan"\n', "mqtt.tls: is required for a broker on another machine"),
        ('host = "10.0.0.5"\ntls = true\n', "mqtt.username: is required for a broker on another"),
        ('host = "0.0.0.0"\n', "mqtt.tls: is required"),
        ('password = "x"\n', "mqtt.password: is no longer read"),
        ('username = "u"\n', "mqtt.username: needs password_file"),
        ('password_file = "p"\n', "mqtt.password_file: has no effect without username"),
        ('ca_file = "ca.crt"\n', "mqtt.ca_file: has no effect without tls = true"),
        ("protocol = 4\n", "mqtt.protocol: must be 5 (MQTT 5) or 3 (MQTT 3.1.1), got 4"),
        ("protocol = 311\n", "mqtt.protocol: must be an integer from 3 to 5"),
        ('tls = "yes"\n', "mqtt.tls: must be true or false"),
        ('host = ""\n', "mqtt.host: must be a non-empty string"),
        ("insecure = 1\n", "mqtt.insecure: must be true or false"),
        ("port = 0\n", "mqtt.port: must be an integer from 1 to 65535"),
        ('tls = true\nca_file = "missing.crt"\n', "mqtt.ca_file: cannot load"),
        ('tls = true\ncert_file = "c.pem"\nkey_file = "k.pem"\n', "mqtt.key_file: cannot read"),
        ('tls = true\nkey_file = "k.pem"\n', "mqtt.key_file: has no effect without cert_file"),
        ('username = "u"\npassword_file = "missing"\n', "mqtt.password_file: cannot read"),
        ("colour = 3\n", "mqtt.colour: is not a known setting"),
    ],
)
def test_a_wrong_mqtt_setting_is_one_line_naming_the_key(
    tmp_path: Path, mqtt: str, says: str
) -> None:
    assert says in refused(tmp_path, mqtt)


def test_a_ca_file_that_is_not_a_certificate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    says = refused(tmp_path, 'tls = true\nca_file = "ca.crt"\n')
    assert "mqtt.ca_file: cannot load" in says


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o660])
def test_a_password_file_others_can_read_is_refused_with_the_chmod(
    tmp_path: Path, secret: Path, mode: int
) -> None:
    secret.chmod(mode)
    says = refused(tmp_path, f'username = "u"\npassword_file = "{secret}"\n')
    assert f"mqtt.password_file: {secret} can be read by other users (mode {mode:04o})" in says
    assert says.endswith(f"run `chmod 600 {secret}`")


def test_an_empty_password_file_is_refused(tmp_path: Path, secret: Path) -> None:
    secret.write_text("")
    says = refused(tmp_path, f'username = "u"\npassword_file = "{secret}"\n')
    assert "mqtt.password_file" in says and "is empty" in says


def test_a_client_key_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("key\n")
    key.chmod(0o644)
    says = refused(tmp_path, 'tls = true\ncert_file = "client.crt"\nkey_file = "client.key"\n')
    assert f"mqtt.key_file: {key} can be read by other users" in says


def test_insecure_runs_to_another_machine_and_says_so_at_every_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 0.0.0.0 is not loopback, yet nothing listens there: no traffic leaves.
    path = _write(tmp_path, 'host = "0.0.0.0"\nport = 1\ninsecure = true\n')
    settings = BrokerSettings.of(load_config(path).mqtt)
    caplog.set_level(logging.WARNING, logger="firmware.mqtt")
    for _start in range(2):
        link = Link("insecure", settings, lambda _event: None)
        link.start()
        link.stop()
    warnings = [r.getMessage() for r in caplog.records if "INSECURE" in r.getMessage()]
    assert len(warnings) == 2
    assert "[mqtt] insecure = true" in warnings[0]
    assert "no TLS" in warnings[0] and "no account" in warnings[0]


# --- the MQTT 5 session ----------------------------------------------------------------


def test_an_mqtt_5_session_is_kept_while_the_controller_is_away(broker: Broker) -> None:
    """Without a session expiry an MQTT 5 session ends at the disconnect, and what
    the hub sent meanwhile would be lost."""
    settings = BrokerSettings(broker.host, broker.port)
    got: queue.Queue[LinkEvent] = queue.Queue()
    away = Link("ctl", settings, got.put, subscriptions=["alc/demo/ctl/data"])
    away.start()
    assert away.wait_connected(WAIT_S)
    away.stop()
    hub = Link("hub", settings, lambda _event: None, persistent=False)
    hub.start()
    try:
        assert hub.wait_connected(WAIT_S)
        hub.publish("alc/demo/ctl/data", b"while you were away")
    finally:
        hub.stop()  # a clean stop sends what is queued first
    back = Link("ctl", settings, got.put, subscriptions=["alc/demo/ctl/data"])
    back.start()
    try:
        events = _until(got, lambda e: isinstance(e, Received))
    finally:
        back.stop()
    ups = [e for e in events if isinstance(e, LinkUp)]
    assert ups[-1].resumed
    assert events[-1] == Received("alc/demo/ctl/data", b"while you were away", False)


def test_the_controller_takes_no_packet_over_300_kib(broker: Broker) -> None:
    """The broker (the test one, with no limit of its own) never sends a client
    a packet over the maximum that client asked for at connect."""
    settings = BrokerSettings(broker.host, broker.port)
    got: queue.Queue[LinkEvent] = queue.Queue()
    ctl = Link("ctl", settings, got.put, subscriptions=["alc/demo/ctl/data"])
    ctl.start()
    try:
        assert ctl.wait_connected(WAIT_S)
        hub = Link("hub", BrokerSettings(broker.host, broker.port), lambda _e: None)
        hub.start()
        try:
            assert hub.wait_connected(WAIT_S)
            hub.publish("alc/demo/ctl/data", b"x" * (MAX_PACKET_BYTES + 1))
            hub.publish("alc/demo/ctl/data", b"small")
        finally:
            hub.stop()
        events = _until(got, lambda e: isinstance(e, Received))
    finally:
        ctl.stop()
    assert [e for e in events if isinstance(e, Received)] == [
        Received("alc/demo/ctl/data", b"small", False)
    ]


def _until(events: queue.Queue[LinkEvent], done: object) -> list[LinkEvent]:
    """Events up to and including the first for which `done(event)` holds."""
    seen: list[LinkEvent] = []

    def arrived() -> bool:
        try:
            seen.append(events.get_nowait())
        except queue.Empty:
            return False
        return bool(done(seen[-1]))  # type: ignore[operator]

    wait_for(arrived, "the event")
    return seen
