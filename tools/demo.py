"""`alc demo`: a small club on the simulator, end to end, in about a minute.

Starts a throwaway mosquitto, the reference hub with a demo club (one front door,
two courts, four members, one booking starting shortly), and a real controller on
the simulator backend. Then members arrive: a tag at the door, an unknown card, a
switched-off member, a booking's PIN, a court switched on with credit, the door
held open, a change in the club's app (a new member) that reaches the controller
as a delta, and a "Synchronise data". Every output the controller switches and
every event the hub receives is printed as it happens.

Nothing is left running afterwards, and nothing outside a temporary directory is
written. Ctrl-C stops it early, cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from firmware.config import load_config
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from firmware.runtime import Runtime
from firmware.wire import seal, unseal
from tools.broker import Broker
from tools.ctl import Target, send_command
from tools.hub.db import Event, HubDB
from tools.hub.keys import read_controller_key, write_new_key
from tools.hub.loop import HubLoop
from tools.hub.server import Hub

SITE, CONTROLLER = "demo", "ctl1"
BASE = f"alc/{SITE}/{CONTROLLER}"


def club(now: int) -> str:
    """The demo club's data file; the booking starts 20 s from `now`."""
    return f"""
[site]
name = "Demo Tennis Club"
tz = "Europe/London"
pin_before_s = 30
pin_after_s = 10

[[door]]
id = "front"
unlock_s = 3
held_s = 6

[[light]]
id = "court1"
lead_s = 5
lag_s = 5
warn_s = 4

[[light]]
id = "court2"
price = 400
block_s = 8
max_s = 16
warn_s = 3

[[group]]
id = "adults"
doors = ["front"]
lights = ["court1", "court2"]

[[member]]
id = "anna"
name = "Anna Smith"
groups = ["adults"]
creds = [["tag", "0a1b2c3d4e"]]
credit = 1000

[[member]]
id = "ben"
name = "Ben Jones"
groups = ["adults"]
creds = [["card", "33011:00119"]]
active = false

[[member]]
id = "carla"
name = "Carla Diaz"
groups = ["adults"]
creds = [["tag", "5f5f5f5f5f"]]
credit = 200

[[booking]]
id = "b1"
lights = ["court1"]
doors = ["front"]
start = {now + 20}
end = {now + 32}
member = "carla"
pin = "2468"
"""


CONTROLLER_TOML = """
[controller]
site = "{site}"
id = "{controller}"
data_dir = "{data}"
key_file = "{key}"

[mqtt]
host = "127.0.0.1"
port = {port}
keepalive_s = 5

[hal]
backend = "sim"

[[doors]]
id = "front"
relay = 17
fail = "secure"
contact = 27
rex = 22

[[lights]]
id = "court1"
relay = 5
warn = 6

[[lights]]
id = "court2"
relay = 13

[[readers]]
id = "front-in"
kind = "rdm6300"
port = "/dev/ttyAMA0"
door = "front"

[[readers]]
id = "court2-reader"
kind = "rdm6300"
port = "/dev/ttyUSB0"
light = "court2"
"""


class Show:
    """Prints a timeline: seconds since start, then what happened."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, who: str, what: str) -> None:
        with self._lock:
            print(f"{time.monotonic() - self.start:6.1f}s  {who:<10} {what}", flush=True)


def describe(event: Event) -> str:
    body = event.body
    if event.type == "access":
        verdict = "granted" if body.get("granted") else "denied"
        where = body.get("door") or body.get("light")
        who = body.get("member") or f"...{body.get('value')}"
        return f"access   {where}: {who} {verdict} ({body.get('reason')})"
    if event.type == "debit":
        return (
            f"debit    {body.get('member')} paid {body.get('amount')} for {body.get('light')},"
            f" balance {body.get('balance')}"
        )
    fields = " ".join(f"{k}={v}" for k, v in body.items() if v is not None)
    return f"{event.type:<8} {fields}"


@contextlib.contextmanager
def running(target: Callable[[], None], stop: Callable[[], None], name: str) -> Iterator[None]:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop()
        thread.join(timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alc demo`."""
    parser = argparse.ArgumentParser(prog="alc demo", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    show = Show()
    with tempfile.TemporaryDirectory(prefix="alc-demo-") as tmp, Broker.temporary() as broker:
        root = Path(tmp)
        show("broker", f"mosquitto on 127.0.0.1:{broker.port}")
        keys = root / "keys"
        write_new_key(keys, CONTROLLER)
        key = read_controller_key(keys, CONTROLLER)
        data_file = root / "site.toml"
        data_file.write_text(club(int(time.time())))
        (root / "data").mkdir()
        config_file = root / "controller.toml"
        config_file.write_text(
            CONTROLLER_TOML.format(
                site=SITE,
                controller=CONTROLLER,
                data=root / "data",
                key=keys / f"{CONTROLLER}.key",
                port=broker.port,
            )
        )
        settings = BrokerSettings("127.0.0.1", broker.port)

        def on_events(controller: str, events: list[Event]) -> None:
            for event in events:
                show("hub", f"#{event.seq} {describe(event)}")

        hub = Hub(HubDB(root / "hub.sqlite3"), site=SITE, keys={}, on_events=on_events)
        hub_loop = HubLoop(hub, data_file=data_file, keys_dir=keys, settings=settings)
        runtime = Runtime(load_config(config_file))
        outputs: queue.Queue[LinkEvent | None] = queue.Queue()
        bench = Link("alc-demo-bench", settings, outputs.put, subscriptions=[f"{BASE}/bench/out"])

        def to_bench(message: dict[str, object]) -> None:
            topic = f"{BASE}/bench/in"
            bench.publish(topic, seal(key, CONTROLLER.encode(), topic, message))

        def present(reader: str, credkind: str, value: str, who: str) -> None:
            show("member", f"{who} presents {credkind} {value} at {reader}")
            to_bench({"t": "present", "reader": reader, "credkind": credkind, "value": value})

        def contact(open: bool) -> None:
            show("door", "front door opened" if open else "front door closed")
            to_bench({"t": "contact", "door": "front", "open": open})

        def watch_outputs() -> None:
            while True:
                event = outputs.get()
                if event is None:
                    return
                if isinstance(event, Received):
                    try:
                        body = unseal({CONTROLLER.encode(): key}, event.topic, event.payload).body
                    except Exception:
                        continue
                    show("output", f"{body['name']:<14} {'ON' if body['on'] else 'off'}")

        def stop_watch() -> None:
            outputs.put(None)

        def wait(seconds: float) -> None:
            time.sleep(seconds)

        with (
            running(hub_loop.run, hub_loop.stop, "demo-hub"),
            running(runtime.run, runtime.stop, "demo-controller"),
            running(watch_outputs, stop_watch, "demo-outputs"),
        ):
            bench.start()
            bench.wait_connected(10)
            hub_loop.wait_connected(10)
            show("demo", "hub and controller running; the controller fetches the club's data")
            deadline = time.monotonic() + 20
            while runtime.controller.session.epoch is None and time.monotonic() < deadline:
                time.sleep(0.1)
            members, v = len(runtime.controller.store.members), runtime.controller.session.v
            show("demo", f"controller has {members} members, data version {v}")
            try:
                present("front-in", "tag", "0a1b2c3d4e", "Anna")
                wait(1.0)
                contact(True)
                wait(0.5)
                contact(False)
                wait(1.5)
                present("front-in", "card", "99999:00001", "A stranger")
                wait(1.0)
                present("front-in", "card", "33011:00119", "Ben (membership paused)")
                wait(1.0)
                present("court2-reader", "tag", "0a1b2c3d4e", "Anna")
                wait(2.0)
                present("court2-reader", "tag", "5f5f5f5f5f", "Carla (200 cents, court costs 400)")
                wait(2.0)
                show("app", "the club adds a new member, Dan, in its app")
                dan = '[[member]]\nid = "dan"\ngroups = ["adults"]\ncreds = [["tag", "d4d4d4d4d4"]]'
                data_file.write_text(data_file.read_text() + "\n" + dan + "\n")
                wait(2.0)
                present("front-in", "tag", "d4d4d4d4d4", "Dan")
                wait(1.0)
                show("technician", "Synchronise data (alc ctl sync)")
                target = Target(settings, "alc", SITE, CONTROLLER, key)
                send_command(target, "sync", {}, out=_Printer(show))
                show(
                    "demo", "the booking's lights come on 5 s before it starts, and warn before off"
                )
                present("front-in", "pin", "2468", "Carla with the booking PIN")
                wait(1.0)
                contact(True)
                show("door", "...and the front door is left standing open")
                wait(12.0)
                contact(False)
                wait(max(0.0, show.start + 60 - time.monotonic()))
            except KeyboardInterrupt:
                show("demo", "stopped")
            finally:
                bench.stop()
        show("demo", "everything stopped")
    return 0


class _Printer(io.StringIO):
    """A text stream that sends `alc ctl` output lines to the timeline."""

    def __init__(self, show: Show) -> None:
        super().__init__()
        self._show = show
        self._line = ""

    def write(self, text: str) -> int:
        self._line += text
        while "\n" in self._line:
            line, self._line = self._line.split("\n", 1)
            if line.strip():
                self._show("ctl", line.strip().split("\r")[-1])
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
