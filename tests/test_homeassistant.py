"""Home Assistant MQTT discovery end to end: a real mosquitto, the reference hub,
the real `Runtime` on the simulator with wiring, and `Watcher`, which does what
Home Assistant's MQTT integration does (tests/homeassistant_watcher.py).

What the bench does at the door (a tag, a PIN, the contact) must show in Home
Assistant's entities; Home Assistant's commands open the door only when
`commands = true`; no credential or PIN is ever published. Waits are generous;
nothing asserts a time.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.homeassistant.edge import HomeAssistantEdge
from firmware.mqtt import BrokerSettings
from tests.broker import Broker
from tests.harness import Rig, club, logged_events, wait_for
from tests.homeassistant_watcher import Discovered, Watcher
from tests.test_sim_bench import ADA_PIN, ADA_TAG, WIRING, Bench

REPO = Path(__file__).resolve().parent.parent
NODE = "alc_demo_c1"
HA_BASE = "alc/demo/c1/ha"


def make_rig(broker: Broker, tmp: Path, section: str, *, wiring: str = WIRING) -> Rig:
    rig = Rig(broker, tmp, extra=wiring + "\n[homeassistant]\n" + section)
    rig.data_file.write_text(club())
    rig.start_hub()
    return rig


@pytest.fixture
def watcher(broker: Broker) -> Iterator[Watcher]:
    w = Watcher(BrokerSettings(broker.host, broker.port))
    try:
        yield w
    finally:
        w.close()


def found(watcher: Watcher, component: str, object_id: str) -> Discovered:
    wait_for(lambda: watcher.entity(component, object_id), f"{component} {object_id}")
    entity = watcher.entity(component, object_id)
    assert entity is not None
    return entity


def shows(watcher: Watcher, entity: Discovered, state: str) -> None:
    wait_for(lambda: watcher.state(entity) == state, f"{entity.object_id} to show {state}")


def edge_of(rig: Rig) -> HomeAssistantEdge:
    assert rig.runtime is not None
    edges = [e for e in rig.runtime.edges if isinstance(e, HomeAssistantEdge)]
    assert len(edges) == 1
    return edges[0]


def no_secret_in(watcher: Watcher) -> None:
    """Neither the tag, nor its masked form in the events, nor the PIN, anywhere."""
    for payload in watcher.payloads():
        for secret in (ADA_TAG, ADA_TAG[-4:], ADA_PIN):
            assert secret not in payload, payload


def test_home_assistant_finds_the_device_and_follows_the_door(
    broker: Broker, tmp_path: Path, watcher: Watcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rig = make_rig(broker, tmp_path, "")  # the defaults: no commands, no names
    # A door that has gone from controller.toml left its document retained.
    gone = f"homeassistant/lock/{NODE}/door-gone/config"
    watcher.command(
        gone, b'{"unique_id": "x", "command_topic": "t", "state_topic": "s"}', retain=True
    )
    wait_for(lambda: watcher.entity("lock", "door-gone"), "the stale entity")
    try:
        rig.run_controller()
        lock = found(watcher, "lock", "door-front")
        contact = found(watcher, "binary_sensor", "contact-front")
        light = found(watcher, "light", "light-court1")
        sensors = {o: found(watcher, "sensor", o) for o in ("outbox", "data_version")}
        last_full = found(watcher, "sensor", "last_full_sync")
        decisions = found(watcher, "sensor", "decisions_today")
        access = found(watcher, "event", "access")
        # The stale document is removed: Home Assistant forgets the entity.
        wait_for(lambda: watcher.entity("lock", "door-gone") is None, "the stale entity removed")
        assert watcher.received_on(gone)[-1] == ("", False)
        entities = watcher.all()
        assert len(entities) == 8 and not watcher.errors
        # One device, with its identity; every entity available through one topic.
        assert {e.device_ids for e in entities} == {(NODE,)}
        device = lock.config["device"]
        assert device["name"] == "alc demo c1" and device["sw_version"] and device["model"]
        assert len({e.config["unique_id"] for e in entities}) == 8
        assert {tuple(e.availability_topics()) for e in entities} == {
            ((f"{HA_BASE}/availability", "online", "offline"),)
        }
        assert contact.config["device_class"] == "door"
        assert last_full.config["device_class"] == "timestamp"
        assert access.config["event_types"] == ["granted", "denied"]
        wait_for(lambda: watcher.available(lock), "the device to be available")
        # The states, retained: the door locked, its contact shut, the court dark.
        shows(watcher, lock, "LOCKED")
        shows(watcher, contact, "OFF")
        shows(watcher, decisions, "0")
        rig.wait_converged()
        v = rig.core(lambda c: c.session.v)
        shows(watcher, sensors["data_version"], str(v))
        wait_for(lambda: watcher.state(last_full), "the last full sync's time")
        assert watcher.state(light) in (None, "OFF")

        # A member's tag at the door: unlocked, and the decision is an event.
        bench = Bench(broker, rig.key)
        try:
            bench.send({"t": "present", "reader": "front-in", "credkind": "tag", "value": ADA_TAG})
            shows(watcher, lock, "UNLOCKED")
            bench.send({"t": "contact", "door": "front", "open": True})
            shows(watcher, contact, "ON")
            bench.send({"t": "contact", "door": "front", "open": False})
            shows(watcher, lock, "LOCKED")  # relocked on close
            shows(watcher, contact, "OFF")
            events = [p for p, _retained in watcher.received_on(access.state_topic)]
            assert events and '"event_type":"granted"' in events[0]
            assert '"reason":"granted"' in events[0] and "name" not in events[0]
            # A PIN at the keypad, then a court lit by the master tag.
            bench.send({"t": "keys", "reader": "front-pad", "keys": "4711#"})
            shows(watcher, decisions, "2")
            bench.send(
                {"t": "present", "reader": "court1-in", "credkind": "tag", "value": "c0ffee"}
            )
            shows(watcher, light, "ON")
        finally:
            bench.close()
        assert all(not retained for _p, retained in watcher.received_on(access.state_topic))

        # Commands are off: Home Assistant's UNLOCK reaches nobody. Its birth
        # message after it, from the same client, makes the controller send
        # everything again; the loop then answers a status command after any
        # input the adapter could have given it.
        before = len(watcher.received_on(_config(lock)))
        watcher.command(lock.config["command_topic"], b"UNLOCK")
        watcher.birth()
        wait_for(lambda: len(watcher.received_on(_config(lock))) > before, "discovery again")
        rig.settle()
        by = [b.get("by") for t, b in logged_events(caplog) if t == "door"]
        assert "homeassistant" not in by
        assert edge_of(rig).ignored == 0
        no_secret_in(watcher)

        # A clean stop says offline before it goes.
        rig.stop_controller()
        wait_for(lambda: watcher.available(lock) is False, "availability offline")
    finally:
        rig.close()


def _config(entity: Discovered) -> str:
    node = f"{entity.node_id}/" if entity.node_id else ""
    return f"homeassistant/{entity.component}/{node}{entity.object_id}/config"


def test_commands_open_the_door_and_switch_the_light_only_as_home_assistant_may(
    broker: Broker, tmp_path: Path, watcher: Watcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rig = make_rig(broker, tmp_path, "commands = true\nnames = true\n")
    door_set = f"{HA_BASE}/door-front/set"
    try:
        # A retained UNLOCK left on the broker would open the door at every
        # reconnect: the controller finds it when it subscribes, and ignores it.
        watcher.command(door_set, b"UNLOCK", retain=True)
        rig.run_controller()
        rig.wait_converged()
        lock = found(watcher, "lock", "door-front")
        light = found(watcher, "light", "light-court1")
        access = found(watcher, "event", "access")
        shows(watcher, lock, "LOCKED")
        edge = edge_of(rig)

        wait_for(lambda: edge.ignored == 1, "the retained UNLOCK ignored")
        watcher.command(door_set, b"", retain=True)  # clears it (an empty payload: ignored)
        # What else Home Assistant may not do is ignored and counted, and changes
        # nothing: another word, a huge payload, a door that is not offered, bytes
        # that are no word at all.
        assert lock.config["command_topic"] == door_set
        light_set = light.config["command_topic"]
        watcher.command(door_set, b"OPEN")
        watcher.command(door_set, b"UNLOCK" * 20_000)
        watcher.command(f"{HA_BASE}/door-back/set", b"UNLOCK")
        watcher.command(light_set, b"\xff\xfe")
        wait_for(lambda: edge.ignored == 6, "six commands ignored")
        assert watcher.state(lock) == "LOCKED"

        # UNLOCK: a momentary open_door, logged by homeassistant; it relocks.
        watcher.command(door_set, b"UNLOCK")
        shows(watcher, lock, "UNLOCKED")
        shows(watcher, lock, "LOCKED")
        unlocked = [b for t, b in logged_events(caplog) if t == "door" and b["what"] == "unlocked"]
        assert unlocked == [{"door": "front", "what": "unlocked", "by": "homeassistant"}]

        # The light: on, then off.
        watcher.command(light_set, b"ON")
        shows(watcher, light, "ON")
        watcher.command(light_set, b"OFF")
        shows(watcher, light, "OFF")
        assert edge.ignored == 6

        # names = true: the decision carries the member's name, never the tag.
        bench = Bench(broker, rig.key)
        try:
            bench.send({"t": "present", "reader": "front-in", "credkind": "tag", "value": ADA_TAG})
            wait_for(lambda: watcher.received_on(access.state_topic), "the access event")
        finally:
            bench.close()
        event = watcher.received_on(access.state_topic)[0][0]
        assert '"name":"Ada"' in event and '"event_type":"granted"' in event
        no_secret_in(watcher)
    finally:
        rig.close()


def test_availability_drops_when_the_controller_is_killed(
    broker: Broker, tmp_path: Path, watcher: Watcher
) -> None:
    rig = make_rig(broker, tmp_path, "")
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "controller", "--config", str(rig.config_path)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        lock = found(watcher, "lock", "door-front")
        wait_for(lambda: watcher.available(lock) is True, "the device online")
        process.send_signal(signal.SIGKILL)
        process.wait()
        # The broker sees the socket close and publishes the adapter's will.
        wait_for(lambda: watcher.available(lock) is False, "the will: offline")
        assert watcher.received_on(f"{HA_BASE}/availability")[-1] == ("offline", False)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        rig.close()
