"""`alc demo`: a small club on the simulator, end to end, narrated as it happens.

Starts a throwaway mosquitto, the reference hub with a demo club (one front door,
two courts, three members, one booking starting shortly), and a real controller
on the simulator backend. Then, through the bench topics only (as `alc sim send`
would): members let in and turned away with the reason, a court switched on with
credit and its warning before off, a change in the club's app (a new member)
arriving as a delta, "Synchronise data" with its progress, a booking PIN and the
booking's lights with their warning, the door held open, and "Purge data" while
the hub is away, with the events not yet uploaded kept and delivered after, and
"Refresh kiosk screens", which reloads the kiosk page the demo opens in a
headless Chromium (when one is installed; `make setup` installs Debian's).
Every output the controller switches and every event the hub receives is printed
as it happens.

Then everything keeps running, with the `alc sim send` lines to drive it by hand,
until Ctrl-C (`--once` ends after the scenario instead, for tests and CI).
Ctrl-C stops every process and thread it started; nothing outside a temporary
directory is written.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from firmware.config import load_config
from firmware.core.controller import Controller
from firmware.core.wire import IV_BYTES, seal, unseal
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from firmware.runtime import Runtime
from sim.bench import BenchEdge
from sim.report import money
from tools.broker import Broker, free_port
from tools.ctl import Target, send_command
from tools.hub.db import Event, HubDB
from tools.hub.keys import read_controller_key, write_new_key
from tools.hub.loop import HubLoop
from tools.hub.server import Hub

SITE, CONTROLLER = "demo", "ctl1"
BASE = f"alc/{SITE}/{CONTROLLER}"


CHROMIUM = Path("/usr/bin/chromium")
BOOKING_START_S, BOOKING_END_S, BOOKING_LAG_S = 18, 26, 5  # from the demo's start


def club(now: int) -> str:
    """The demo club's data file; the booking starts `BOOKING_START_S` from `now`."""
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
start = {now + BOOKING_START_S}
end = {now + BOOKING_END_S}
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
id = "front-keys"
kind = "wiegand"
d0 = 23
d1 = 24
door = "front"

[[readers]]
id = "court2-reader"
kind = "rdm6300"
port = "/dev/ttyUSB0"
light = "court2"

[[readers]]
id = "kiosk"
kind = "line"
port = "/dev/ttyUSB1"
kiosk = true

[kiosk]
listen = "127.0.0.1:{kiosk_port}"
"""


def kiosk_port() -> int:
    """8080, the kiosk's usual port, when it is free; else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8080))
        except OSError:
            return free_port()
    return 8080


class Show:
    """Prints a timeline: seconds since start, then what happened."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, who: str, what: str) -> None:
        with self._lock:
            print(f"{time.monotonic() - self.start:6.1f}s  {who:<10} {what}", flush=True)


def describe(event: Event) -> str:
    """One event the hub stored, in words."""
    body = event.body
    if event.type == "access":
        verdict = "granted" if body.get("granted") else "turned away"
        where = body.get("door") or body.get("light")
        who = body.get("member") or f"...{body.get('value')}"
        reason = str(body.get("reason"))
        why = f"{reason}: {REASONS[reason]}" if reason in REASONS else reason
        return f"access   {where}: {who} {verdict} ({why})"
    if event.type == "debit":
        return (
            f"debit    {body.get('member')} paid {money(body.get('amount'))} for "
            f"{body.get('light')}, credit left {money(body.get('balance'))}"
        )
    fields = " ".join(f"{k}={_plain(k, v)}" for k, v in body.items() if v is not None)
    return f"{event.type:<8} {fields}"


def _plain(key: str, value: object) -> object:
    """`until` as a local clock time rather than Unix seconds."""
    if key == "until" and isinstance(value, int):
        return time.strftime("%H:%M:%S", time.localtime(value))
    return value


@contextlib.contextmanager
def running(target: Callable[[], object], stop: Callable[[], None], name: str) -> Iterator[None]:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop()
        thread.join(timeout=30)


REASONS = {
    "granted": "a member of a group that opens it, in its hours",
    "booking": "the booking's PIN, within its time",
    "master": "a master credential",
    "unknown_credential": "nobody holds this credential",
    "inactive": "membership switched off",
    "not_yet_valid": "membership not started yet",
    "expired": "membership ended",
    "no_access": "no group of hers opens this",
    "outside_schedule": "outside the hours",
    "door_locked": "the door is in lockdown",
    "insufficient_credit": "not enough credit for the court",
    "pin_lockout": "too many wrong PINs",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alc demo`."""
    parser = argparse.ArgumentParser(prog="alc demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--once", action="store_true", help="end after the narrated scenario (tests and CI)"
    )
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    show = Show()
    with tempfile.TemporaryDirectory(prefix="alc-demo-") as tmp, Broker.temporary() as broker:
        root = Path(tmp)
        show("broker", f"mosquitto on 127.0.0.1:{broker.port}")
        keys = root / "keys"
        write_new_key(keys, CONTROLLER)
        key = read_controller_key(keys, CONTROLLER)
        data_file = root / "site.toml"
        started = int(time.time())
        data_file.write_text(club(started))
        (root / "data").mkdir()
        config_file = root / "controller.toml"
        config_file.write_text(
            CONTROLLER_TOML.format(
                site=SITE,
                controller=CONTROLLER,
                data=root / "data",
                key=keys / f"{CONTROLLER}.key",
                port=broker.port,
                kiosk_port=kiosk_port(),
            )
        )
        settings = BrokerSettings("127.0.0.1", broker.port)

        def on_events(controller: str, events: list[Event]) -> None:
            for event in events:
                show("hub", f"#{event.seq} {describe(event)}")

        db = HubDB(root / "hub.sqlite3")
        hub = Hub(db, site=SITE, keys={}, on_events=on_events)

        def hub_loop() -> HubLoop:
            # One fixed client id with a persistent session: while the hub is
            # away, the broker keeps what the controller sends it.
            return HubLoop(
                hub, data_file=data_file, keys_dir=keys, settings=settings, client_id="alc-demo-hub"
            )

        hub_thread = Background(hub_loop(), "demo-hub")
        runtime = Runtime(load_config(config_file), edges=[BenchEdge])
        if runtime.kiosk is not None:
            show("kiosk", f"the club's kiosk screen: open {runtime.kiosk.address} in a browser")
        outputs: queue.Queue[LinkEvent | None] = queue.Queue()
        bench = Link("alc-demo-bench", settings, outputs.put, subscriptions=[f"{BASE}/bench/out"])
        target = Target(settings, "alc", SITE, CONTROLLER, key)

        def to_bench(message: dict[str, object]) -> None:
            topic = f"{BASE}/bench/in"
            iv = os.urandom(IV_BYTES)
            bench.publish(topic, seal(key, CONTROLLER.encode(), topic, message, iv=iv))

        def present(reader: str, credkind: str, value: str, who: str) -> None:
            show("member", f"{who} presents {credkind} {value} at {reader}")
            to_bench(_present(reader, value, credkind))

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

        def command(name: str, args: dict[str, object] | None = None) -> None:
            send_command(target, name, args or {}, out=_Printer(show))

        with (
            running(runtime.run, runtime.stop, "demo-controller"),
            running(watch_outputs, stop_watch, "demo-outputs"),
            kiosk_screen(runtime.kiosk.address if runtime.kiosk else None, show),
        ):
            bench.start()
            try:
                bench.wait_connected(10)
                hub_thread.loop.wait_connected(10)
                show("demo", "hub and controller running; the controller fetches the club's data")
                deadline = time.monotonic() + 20
                # The core is the loop's alone: the demo asks the loop (`Runtime.ask`).
                while runtime.ask(_epoch) is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                members, v = runtime.ask(lambda c: (len(c.store.members), c.session.v))
                show("demo", f"controller has {members} members, data version {v}")
                lights_off = started + BOOKING_END_S + BOOKING_LAG_S
                hubs = (hub_thread, hub_loop)
                play(present, contact, command, wait, show, runtime, data_file, hubs, lights_off)
                if not ns.once:
                    hand_driving(show, config_file, broker.port, key, root / "bench-in")
                    wait_for_ctrl_c()
            except KeyboardInterrupt:
                show("demo", "stopping")
            finally:
                bench.stop()
                hub_thread.stop()
        db.close()
        show("demo", "everything stopped")
    return 0


@contextlib.contextmanager
def kiosk_screen(address: str | None, show: Show) -> Iterator[None]:
    """The club's wall screen: the kiosk page in a headless Chromium while the
    demo runs, so "Refresh kiosk screens" has a screen to reload. Skipped, with a
    note, where no Chromium or Playwright is installed."""
    if address is None:
        yield
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = True
    else:
        missing = not CHROMIUM.exists()
    if missing:
        show("kiosk", f"no headless screen here ({CHROMIUM} or Playwright missing)")
        yield
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(address)
            show("kiosk", "a headless Chromium shows the kiosk page, as a wall screen would")
            yield
        finally:
            browser.close()


class Background:
    """The hub's loop in a thread, stoppable and restartable (a new loop each time)."""

    def __init__(self, loop: HubLoop, name: str) -> None:
        self.loop = loop
        self.thread = threading.Thread(target=loop.run, name=name, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.stop()
        self.thread.join(timeout=30)


def play(
    present: Callable[[str, str, str, str], None],
    contact: Callable[[bool], None],
    command: Callable[..., None],
    wait: Callable[[float], None],
    show: Show,
    runtime: Runtime,
    data_file: Path,
    hubs: tuple[Background, Callable[[], HubLoop]],
    lights_off: float,
) -> None:
    """The narrated scenario: every input goes through the bench topics."""
    show("demo", "members at the front door: let in, or turned away with the reason")
    present("front-in", "tag", "0a1b2c3d4e", "Anna")
    wait(1.0)
    contact(True)
    wait(0.5)
    contact(False)
    show("demo", "the door relocks as soon as it shuts")
    wait(1.5)
    present("front-keys", "card", "201:04321", "A stranger")
    wait(1.0)
    present("front-keys", "card", "33011:00119", "Ben (membership paused)")
    wait(1.0)
    show("demo", "a court for credit: 4.00 per 8 s block, warned 3 s before it goes off")
    present("court2-reader", "tag", "5f5f5f5f5f", "Carla (2.00 of credit, the court costs 4.00)")
    wait(1.0)
    present("court2-reader", "tag", "0a1b2c3d4e", "Anna (10.00 of credit)")
    wait(2.0)
    show("app", "the club adds a new member, Dan, in its app")
    before = runtime.ask(_version)
    dan = '[[member]]\nid = "dan"\ngroups = ["adults"]\ncreds = [["tag", "d4d4d4d4d4"]]'
    data_file.write_text(data_file.read_text() + "\n" + dan + "\n")
    deadline = time.monotonic() + 10
    while runtime.ask(_version) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    after = runtime.ask(_version)
    show("demo", f"the edit arrived as a delta: data version {before} -> {after}")
    present("front-in", "tag", "d4d4d4d4d4", "Dan")
    wait(1.0)
    show("technician", "System > Maintenance > Synchronise data (alc ctl sync)")
    command("sync")
    show("demo", "Carla's booking on court 1: lights 5 s before it, a warning 4 s before off")
    present("front-keys", "pin", "2468", "Carla with the booking PIN")
    wait(1.0)
    contact(True)
    show("door", "...and the front door is left standing open")
    wait(10.0)
    contact(False)
    wait(max(0.0, lights_off + 1 - time.time()))
    hub_thread, new_hub = hubs
    show("technician", "the hub goes away for a moment; members keep coming")
    hub_thread.stop()
    present("front-in", "tag", "0a1b2c3d4e", "Anna")
    wait(1.0)
    contact(True)
    wait(0.5)
    contact(False)
    wait(1.0)
    waiting = runtime.ask(lambda c: c.outbox.count)
    show("demo", f"the controller holds {waiting} events the hub has not acknowledged")
    show("technician", "System > Maintenance > Purge data (alc ctl purge), the hub comes back")
    purge = threading.Thread(target=command, args=("purge",), name="demo-purge", daemon=True)
    purge.start()
    wait(2.0)
    hub_thread.loop = new_hub()
    hub_thread.thread = threading.Thread(target=hub_thread.loop.run, name="demo-hub", daemon=True)
    hub_thread.thread.start()
    purge.join(timeout=60)
    wait(2.0)
    show("demo", "purged and re-synced; the events kept on disk reached the hub (above)")
    show("technician", "System > Maintenance > Refresh kiosk screens (alc ctl refresh-kiosks)")
    command("refresh_kiosks")


def _epoch(controller: Controller) -> str | None:
    return controller.session.epoch


def _version(controller: Controller) -> int:
    return controller.session.v


def hand_driving(
    show: Callable[[str, str], None],
    config_file: Path,
    port: int,
    key: bytes,
    folder: Path,
    base: str = BASE,
) -> None:
    """Print how to drive the running demo from another terminal: `mosquitto_pub`
    lines with ready-sealed bench inputs (bench topics are sealed, so a plain JSON
    payload is refused; a sealed one may be sent again and again), and the
    `alc sim send` line that seals any other input."""
    alc = Path(sys.executable).with_name("alc")
    send = f"{alc} sim send --config {config_file}"
    inputs: list[tuple[str, str, dict[str, object]]] = [
        ("anna-at-front", "Anna's tag at the front door", _present("front-in", "0a1b2c3d4e")),
        ("door-open", "the front door opens", {"t": "contact", "door": "front", "open": True}),
        ("door-shut", "the front door shuts", {"t": "contact", "door": "front", "open": False}),
        ("exit-button", "the exit button", {"t": "rex", "door": "front"}),
        ("anna-at-court2", "Anna's tag at court 2 (paid)", _present("court2-reader", "0a1b2c3d4e")),
    ]
    topic = f"{base}/bench/in"
    kid = base.rsplit("/", 1)[-1].encode()
    folder.mkdir(parents=True, exist_ok=True)
    show("demo", "everything keeps running; drive it from another terminal:")
    for name, what, message in inputs:
        sealed = folder / f"{name}.cbor"
        sealed.write_bytes(seal(key, kid, topic, message, iv=os.urandom(IV_BYTES)))
        show("demo", f"  # {what}")
        show("demo", f"  mosquitto_pub -h 127.0.0.1 -p {port} -t {topic} -f {sealed}")
    show("demo", "or any bench input (PROTOCOL.md s8), sealed for you:")
    show("demo", f"  {send} '{json.dumps(inputs[0][2])}'")
    show("demo", "watch the outputs (door, lights, warn lamps) with:")
    show("demo", f"  {Path(sys.executable).with_name('alc')} sim watch --config {config_file}")
    show("demo", "Ctrl-C stops everything.")


def wait_for_ctrl_c() -> None:
    """Sleep until Ctrl-C (KeyboardInterrupt); nothing polls meanwhile."""
    forever = threading.Event()
    while not forever.wait(3600):
        pass


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


def _present(reader: str, value: str, credkind: str = "tag") -> dict[str, object]:
    """A bench input: `value` held to `reader` (PROTOCOL.md s8)."""
    return {"t": "present", "reader": reader, "credkind": credkind, "value": value}
