"""Bench mode end to end: a real mosquitto, the reference hub, and the real
`Runtime` on the simulator backend with wiring, driven only through the bench
topics of PROTOCOL.md s8, as a technician with `alc sim send` would.

Each bench input goes through the HAL: a tag becomes an RDM6300 frame on a
`loop://` port, a card a Wiegand frame on mock pins, keys are typed on a serial
keypad or sent as Wiegand key bursts, a door contact and an exit button are pin
levels. What the controller switches comes back on `bench/out`; what it logs
reaches the hub. Waits are generous; nothing asserts a time.
"""

from __future__ import annotations

import logging
import queue
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.core.wire import unseal
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from hal.sim import SimBackend
from sim import main as sim_main
from tests.broker import Broker
from tests.harness import BASE, CONTROLLER, Rig, club, wait_for
from tests.sealing import seal
from tools import demo
from tools.hub.db import Event

WIRING = """
[[doors]]
id = "front"
relay = 17
fail = "secure"
contact = 27
rex = 22

[[readers]]
id = "front-in"
kind = "rdm6300"
port = "/dev/ttyAMA0"
door = "front"

[[readers]]
id = "front-keys"
kind = "wiegand"
d0 = 23
d1 = 24
door = "front"

[[readers]]
id = "front-pad"
kind = "keypad"
port = "/dev/ttyUSB1"
door = "front"

[[lights]]
id = "court1"
relay = 5
warn = 6

[[readers]]
id = "court1-in"
kind = "line"
port = "/dev/ttyUSB2"
light = "court1"

[[masters]]
credkind = "tag"
value = "c0ffee"
"""

ADA_TAG, ADA_PIN = "00000000a1", "4711"  # member m1 of the harness club
STRANGER_CARD = "33011:00119"


class Bench:
    """The technician's side: publishes sealed bench inputs, collects bench outputs."""

    def __init__(self, broker: Broker, key: bytes) -> None:
        self.key = key
        self._lock = threading.Lock()
        self.outputs: list[tuple[str, bool]] = []
        self._events: queue.Queue[LinkEvent] = queue.Queue()
        self.link = Link(
            "test-bench",
            BrokerSettings(broker.host, broker.port),
            self._deliver,
            subscriptions=[f"{BASE}/bench/out"],
            persistent=False,
        )
        self.link.start()
        assert self.link.wait_connected(20), "the bench could not connect"

    def _deliver(self, event: LinkEvent) -> None:
        if isinstance(event, Received):
            body = unseal({CONTROLLER.encode(): self.key}, event.topic, event.payload).body
            assert body["t"] == "output" and isinstance(body["time"], int)
            with self._lock:
                self.outputs.append((body["name"], body["on"]))

    def seen(self) -> list[tuple[str, bool]]:
        with self._lock:
            return list(self.outputs)

    def send(self, message: dict[str, Any], *, key: bytes | None = None) -> None:
        topic = f"{BASE}/bench/in"
        self.link.publish(topic, seal(key or self.key, CONTROLLER.encode(), topic, message))

    def close(self) -> None:
        self.link.stop()


@pytest.fixture
def rig(broker: Broker, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(broker, tmp_path, extra=WIRING)
    try:
        r.data_file.write_text(club())
        r.start_hub()
        yield r
    finally:
        r.close()


class HubLog:
    """Every event the hub stores, as `(type, body)`, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []

    def __call__(self, _controller: str, events: list[Event]) -> None:
        with self._lock:
            self.events.extend(events)

    def of(self, *types: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e.body for e in self.events if e.type in types]


def door(what: str, by: str | None = None) -> dict[str, Any]:
    return {"door": "front", "what": what, "by": by}


def test_bench_topics_drive_the_controller_through_the_hal(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="alc.bench")
    hub_log = HubLog()
    assert rig.hub is not None
    rig.hub.on_events = hub_log
    runtime = rig.run_controller()
    assert isinstance(runtime.hardware, SimBackend)
    rig.wait_converged()
    bench = Bench(rig.broker, rig.key)
    try:
        # The first contact report is the door's initial state (shut).
        wait_for(lambda: door("closed") in hub_log.of("door"), "the door's first report")

        # A member's tag at the RDM6300 reader: door:front on; she opens the door
        # and shuts it: relock on close, door:front off.
        bench.send({"t": "present", "reader": "front-in", "credkind": "tag", "value": ADA_TAG})
        wait_for(lambda: ("door:front", True) in bench.seen(), "door:front on")
        bench.send({"t": "contact", "door": "front", "open": True})
        wait_for(lambda: door("opened") in hub_log.of("door"), "the door to open")
        bench.send({"t": "contact", "door": "front", "open": False})
        wait_for(lambda: ("door:front", False) in bench.seen(), "door:front off")
        wait_for(lambda: door("locked", "closed") in hub_log.of("door"), "the relock on close")
        access = hub_log.of("access")
        assert access == [
            {
                "door": "front",
                "reader": "front-in",
                "credkind": "tag",
                "value": ADA_TAG[-4:],
                "member": "m1",
                "booking": None,
                "granted": True,
                "reason": "granted",
            }
        ]

        # Bad bench input: a PIN at a tag reader, a malformed body and a wrong key
        # are refused by the bench edge (logged, nothing changes, the core never
        # sees them).
        bench.send({"t": "present", "reader": "front-in", "credkind": "pin", "value": "1234"})
        bench.send({"t": "present", "reader": "front-in", "credkind": "tag", "value": 7})
        bench.send({"t": "rex", "door": "front"}, key=bytes(32))
        edge = rig.bench
        assert edge is not None
        wait_for(lambda: edge.refused == 3, "the bench edge's refusals")
        assert "reads tags, not pins" in caplog.text
        assert len(hub_log.of("access")) == 1
        assert bench.seen() == [("door:front", True), ("door:front", False)]

        # The exit button: unlocked by rex; the door is used and relocks on close.
        bench.send({"t": "rex", "door": "front"})
        wait_for(lambda: door("unlocked", "rex") in hub_log.of("door"), "the exit button")
        bench.send({"t": "contact", "door": "front", "open": True})
        bench.send({"t": "contact", "door": "front", "open": False})
        wait_for(lambda: hub_log.of("door").count(door("locked", "closed")) == 2, "relock")

        # A PIN typed on the serial keypad, then on the Wiegand keypad (a typo
        # cleared with `*` first); an unknown Wiegand card is refused.
        bench.send({"t": "keys", "reader": "front-pad", "keys": "4711#"})
        wait_for(lambda: len(hub_log.of("access")) == 2, "the keypad PIN")
        bench.send({"t": "keys", "reader": "front-keys", "keys": "99*4711#"})
        wait_for(lambda: len(hub_log.of("access")) == 3, "the Wiegand PIN")
        bench.send(
            {"t": "present", "reader": "front-keys", "credkind": "card", "value": STRANGER_CARD}
        )
        wait_for(lambda: len(hub_log.of("access")) == 4, "the stranger's card")
        pins, card = hub_log.of("access")[1:3], hub_log.of("access")[3]
        assert [(a["reader"], a["credkind"], a["member"], a["reason"]) for a in pins] == [
            ("front-pad", "pin", "m1", "granted"),
            ("front-keys", "pin", "m1", "granted"),
        ]
        assert (card["reader"], card["credkind"], card["value"], card["reason"]) == (
            "front-keys",
            "card",
            STRANGER_CARD[-4:],
            "unknown_credential",
        )
        assert not card["granted"]
        # A court light: the master tag scanned at the court's line reader lights
        # it for a free block; bench/out shows the relay.
        bench.send({"t": "present", "reader": "court1-in", "credkind": "tag", "value": "c0ffee"})
        wait_for(lambda: ("light:court1", True) in bench.seen(), "light:court1 on")
        wait_for(lambda: len(hub_log.of("light")) == 1, "the light event")
        light = hub_log.of("light")[0]
        assert (light["light"], light["what"], light["why"]) == ("court1", "on", "activation")
        # Only those three were refused; the core reported none of them (the
        # events since reached the hub, in order).
        assert edge.refused == 3
        assert not {"auth_failed", "error"} & {b["what"] for b in hub_log.of("system")}
    finally:
        bench.close()


def test_alc_sim_send_seals_and_publishes(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    hub_log = HubLog()
    assert rig.hub is not None
    rig.hub.on_events = hub_log
    rig.run_controller()
    rig.wait_converged()
    watched: list[int] = []
    watch = threading.Thread(
        target=lambda: watched.append(
            sim_main.main(["watch", "--config", str(rig.config_path), "--count", "2"])
        ),
        name="test-watch",
    )
    watch.start()
    try:
        # The watcher subscribes before the door moves (its first line says so).
        wait_for(lambda: "watching" in capsys.readouterr().out, "the watcher to start")
        message = '{"t": "present", "reader": "front-in", "credkind": "tag", "value": "00000000b2"}'
        assert sim_main.main(["send", "--config", str(rig.config_path), message]) == 0
        wait_for(lambda: any(a["member"] == "m2" for a in hub_log.of("access")), "the access")
    finally:
        watch.join(20)
    assert watched == [0]
    out = capsys.readouterr().out
    assert "sent to alc/demo/c1/bench/in" in out
    assert re.search(r"\d\d:\d\d:\d\d  door:front ON\n.*door:front off", out), out

    assert sim_main.main(["send", "--config", str(rig.config_path), "{not json"]) == 2
    assert "not JSON" in capsys.readouterr().err


def test_alc_sim_refuses_a_config_that_is_not_the_simulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "controller.toml"
    key = tmp_path / "k.key"
    key.write_text("00" * 32)
    key.chmod(0o600)
    config.write_text(
        f'[controller]\nsite = "s"\nid = "c"\ndata_dir = "{tmp_path}"\nkey_file = "{key}"\n'
        '[hal]\nbackend = "gpio"\n'
    )
    assert sim_main.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'backend is "gpio"' in err


def test_the_demos_mosquitto_pub_lines_drive_the_controller(rig: Rig, tmp_path: Path) -> None:
    """`make demo` prints `mosquitto_pub` lines with ready-sealed bench inputs:
    they work as printed, and the same sealed file may be sent again."""
    hub_log = HubLog()
    assert rig.hub is not None
    rig.hub.on_events = hub_log
    rig.run_controller()
    rig.wait_converged()
    printed: list[str] = []
    demo.hand_driving(
        lambda _who, line: printed.append(line.strip()),
        rig.config_path,
        rig.broker.port,
        rig.key,
        tmp_path / "sealed",
        base=BASE,
    )
    commands = [shlex.split(line) for line in printed if line.startswith("mosquitto_pub ")]
    assert len(commands) == 5
    tag_at_front, door_open, door_shut = commands[0], commands[1], commands[2]
    # The same sealed contact files twice: a bench input carries no id to replay.
    for command in (tag_at_front, door_open, door_shut, door_open, door_shut):
        subprocess.run(command, check=True, timeout=30, capture_output=True)
    wait_for(lambda: hub_log.of("door").count(door("opened")) == 2, "the door opened twice")
    wait_for(lambda: hub_log.of("door").count(door("closed")) >= 3, "and shut twice")
    assert [(a["reader"], a["value"], a["granted"]) for a in hub_log.of("access")] == [
        ("front-in", "3d4e", False)  # the demo's member is a stranger to this club
    ]
