"""End-to-end rig: a real controller `Runtime` and the real hub loop, each in its own
thread, talking through the throwaway mosquitto of `tests.broker`.

`Rig` owns everything it starts and `close()` stops it all (controller, hub, test
links), joining every thread, so nothing outlives a test. Waits are polls with
generous timeouts; tests never assert how long anything took.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from firmware.config import Config, load_config
from firmware.core.controller import Controller
from firmware.core.errors import RemoteError
from firmware.core.wire import unseal
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from firmware.runtime import Runtime
from firmware.runtime.edge import EdgeContext
from sim.bench import BenchEdge
from tests.broker import Broker
from tests.sealing import seal
from tests.waiting import WAIT_S, wait_for
from tools.ctl import build_command
from tools.hub.db import HubDB
from tools.hub.keys import read_controller_key, write_new_key
from tools.hub.loop import HubLoop
from tools.hub.server import Hub

SITE = "demo"
CONTROLLER = "c1"
BASE = f"alc/{SITE}/{CONTROLLER}"
JOIN_S = 30.0

Triple = tuple[str | None, int, bytes]
R = TypeVar("R")

CLUB = """
[site]
tz = "UTC"
name = "Test club"

[[door]]
id = "front"
unlock_s = 4

[[group]]
id = "adults"
doors = ["front"]

[[member]]
id = "m1"
name = "Ada"
groups = ["adults"]
creds = [["tag", "00000000a1"], ["pin", "4711"]]

[[member]]
id = "m2"
name = "Bo"
groups = ["adults"]
creds = [["tag", "00000000b2"]]
"""


def member_toml(id: str, tag: str, *, groups: tuple[str, ...] = ("adults",)) -> str:
    """One `[[member]]` table."""
    listed = ", ".join(f'"{g}"' for g in groups)
    return f'\n[[member]]\nid = "{id}"\ngroups = [{listed}]\ncreds = [["tag", "{tag}"]]\n'


def bulk_tag(i: int) -> str:
    """The tag of generated member `g{i}` (none equals a tag of `CLUB`)."""
    return f"9{i:09x}"


def club(members: int = 0, extra: str = "") -> str:
    """The test club, plus `members` generated members (`g0`, `g1`, ... with tags
    `bulk_tag(i)`) and any `extra` TOML."""
    bulk = "".join(member_toml(f"g{i}", bulk_tag(i)) for i in range(members))
    return CLUB + bulk + extra


def write_atomically(path: Path, text: str) -> None:
    """Save the way an editor does: write aside, then rename over."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def logged_events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, Any]]]:
    """Every `(type, body)` the runtime logged on `alc.events` so far."""
    out = []
    for record in caplog.records:
        if record.name == "alc.events":
            _seq, type_, body = record.args  # type: ignore[misc]
            out.append((str(type_), json.loads(str(body))))
    return out


def _triple(controller: Controller) -> Triple:
    """The dataset the core holds: (epoch, v, digest)."""
    session = controller.session
    return (session.epoch, session.v, session.digest)


class _Thread:
    """A thread that remembers the exception that ended it."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self.error: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, name=name)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # handed to the test thread by join()
            self.error = exc

    def join(self) -> None:
        self.thread.join(JOIN_S)
        assert not self.thread.is_alive(), f"{self.thread.name} did not stop"
        if self.error is not None:
            raise self.error


class Observer:
    """A test client that holds the controller key: it sees `state`, `sync` and
    `reply` as the hub would (and `cmd`, to know the broker has a command), and can
    publish anything on any topic."""

    def __init__(self, broker: Broker, key: bytes) -> None:
        self.key = key
        self._lock = threading.Lock()
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._inbox: queue.Queue[LinkEvent] = queue.Queue()
        self.link = Link(
            "test-observer",
            BrokerSettings(broker.host, broker.port),
            self._deliver,
            subscriptions=[f"{BASE}/{leaf}" for leaf in ("state", "sync", "reply", "cmd")],
            persistent=False,
        )
        self.link.start()
        if not self.link.wait_connected(WAIT_S):
            self.link.stop()
            pytest.fail("the observer could not connect to the broker")

    def _deliver(self, event: LinkEvent) -> None:
        if not isinstance(event, Received):
            return
        leaf = event.topic.rsplit("/", 1)[-1]
        try:
            body = unseal({CONTROLLER.encode(): self.key}, event.topic, event.payload).body
        except RemoteError:
            if leaf != "cmd":  # tests publish bad commands on purpose; nothing else is bad
                raise
            body = {"t": "unverified"}
        with self._lock:
            self.messages.append((leaf, body))

    def of(self, leaf: str) -> list[dict[str, Any]]:
        with self._lock:
            return [body for got, body in self.messages if got == leaf]

    def replies(self, id: str) -> list[dict[str, Any]]:
        """Replies to command `id`, in arrival order."""
        return [r for r in self.of("reply") if r.get("id") == id]

    def statuses(self, id: str) -> list[str]:
        return [r["status"] for r in self.replies(id)]

    def wait_final(self, id: str, timeout: float = WAIT_S) -> list[dict[str, Any]]:
        """Every reply to `id` up to and including the first final one."""
        final = ("done", "failed", "rejected")
        wait_for(lambda: any(s in final for s in self.statuses(id)), f"reply to {id}", timeout)
        return self.replies(id)

    def publish_raw(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.link.publish(topic, payload, retain=retain)

    def sealed(
        self,
        leaf: str,
        body: dict[str, Any],
        *,
        key: bytes | None = None,
        kid: bytes = CONTROLLER.encode(),
        sealed_for: str | None = None,
    ) -> bytes:
        """`body` sealed as if for `sealed_for` (default: our `{BASE}/{leaf}`)."""
        return seal(key or self.key, kid, sealed_for or f"{BASE}/{leaf}", body)

    def command(self, cmd: str, *, ttl: int = 60, **fields: Any) -> dict[str, Any]:
        """Publish a fresh command; return its body. `fields` override `iat`/`exp`/`id`."""
        body = build_command(cmd, now=time.time(), ttl=ttl) | fields
        self.publish_raw(f"{BASE}/cmd", self.sealed("cmd", body))
        return body

    def close(self) -> None:
        self.link.stop()


class Rig:
    """Everything one integration test runs; `close()` stops all of it."""

    def __init__(
        self,
        broker: Broker,
        tmp: Path,
        *,
        controller_port: int | None = None,
        extra: str = "",
        mqtt: str | None = None,
        hub_settings: BrokerSettings | None = None,
    ) -> None:
        """`controller_port`: where the controller connects (a proxy in front of the
        broker) instead of the broker itself; `extra`: more controller.toml; `mqtt`
        and `hub_settings`: the controller's `[mqtt]` lines and the hub's broker
        settings, for a broker with TLS and accounts."""
        self.broker = broker
        self.hub_settings = hub_settings or BrokerSettings(broker.host, broker.port)
        self.tmp = tmp
        self.keys_dir = tmp / "keys"
        write_new_key(self.keys_dir, CONTROLLER)
        self.key = read_controller_key(self.keys_dir, CONTROLLER)
        self.data_file = tmp / "site.toml"
        self.config_path = tmp / "controller.toml"
        self.config_path.write_text(
            "[controller]\n"
            f'site = "{SITE}"\nid = "{CONTROLLER}"\n'
            f'data_dir = "{tmp / "data"}"\n'
            f'key_file = "{self.keys_dir / (CONTROLLER + ".key")}"\n'
            "outage_s = 600\n"
            "\n[mqtt]\n"
            + (mqtt or f'host = "127.0.0.1"\nport = {controller_port or broker.port}\n')
            + "keepalive_s = 5\n"
            '\n[hal]\nbackend = "sim"\n' + extra
        )
        self.db: HubDB | None = None
        self.hub: Hub | None = None
        self.hub_loop: HubLoop | None = None
        self._hub_thread: _Thread | None = None
        self.runtime: Runtime | None = None
        # The simulator's bench on the running controller (its `refused` count).
        self.bench: BenchEdge | None = None
        self._runtime_thread: _Thread | None = None
        self._observer: Observer | None = None

    # --- hub -------------------------------------------------------------------------

    def start_hub(self, *, page_size: int = 1000, poll_s: float = 0.05) -> Hub:
        """Run the reference hub (fresh `Hub`, the same database across restarts)."""
        assert self._hub_thread is None
        if self.db is None:
            self.db = HubDB(self.tmp / "hub.sqlite3")
        self.hub = Hub(self.db, site=SITE, keys={}, page_size=page_size)
        self.hub_loop = HubLoop(
            self.hub,
            data_file=self.data_file,
            keys_dir=self.keys_dir,
            settings=self.hub_settings,
            client_id="test-hub",
            poll_s=poll_s,
        )
        self._hub_thread = _Thread(self.hub_loop.run, "test-hub")
        if not self.hub_loop.wait_connected(WAIT_S):
            pytest.fail("the hub could not connect to the broker")
        return self.hub

    def stop_hub(self) -> None:
        if self._hub_thread is not None:
            assert self.hub_loop is not None
            self.hub_loop.stop()
            thread, self._hub_thread = self._hub_thread, None
            thread.join()

    def hub_triple(self) -> Triple:
        assert self.db is not None
        return (self.db.epoch, self.db.v, self.db.digest)

    # --- controller ------------------------------------------------------------------

    def config(self) -> Config:
        return load_config(self.config_path)

    def boot(self) -> Runtime:
        """Construct the controller (boots from SQLite) without running its loop,
        with the simulator's bench plugged in (`bench`)."""
        assert self.runtime is None
        self.runtime = Runtime(self.config(), edges=[self._bench_edge])
        return self.runtime

    def _bench_edge(self, context: EdgeContext) -> BenchEdge:
        self.bench = BenchEdge(context)
        return self.bench

    def run_controller(self) -> Runtime:
        """Run the controller's loop in a thread (booting it first if needed)."""
        runtime = self.runtime or self.boot()
        assert self._runtime_thread is None
        self._runtime_thread = _Thread(runtime.run, "test-controller")
        return runtime

    def loop_alive(self) -> bool:
        """True while the controller's loop thread runs (False once it died)."""
        thread = self._runtime_thread
        return thread is not None and thread.thread.is_alive()

    def stop_controller(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is None:
            return
        thread, self._runtime_thread = self._runtime_thread, None
        runtime.stop()
        if thread is None:
            # Booted but never run: `run` sees the stop flag at once and shuts
            # down the storage thread and the link like any other stop.
            runtime.run()
        else:
            thread.join()

    def core(self, fn: Callable[[Controller], R]) -> R:
        """`fn(controller)`, run by the controller's loop between two steps
        (`Runtime.ask`; at once when the loop is not running). The loop thread
        alone owns the core: a test reads it only this way, and `fn` returns
        plain values, never a part of the core to read later."""
        assert self.runtime is not None
        # The loop answers between two steps: a slice of a full sync's build
        # gives way at once, and a loaded machine gets the suite's usual wait.
        return self.runtime.ask(fn, timeout=WAIT_S)

    def triple(self) -> Triple:
        return self.core(_triple)

    def wait_converged(self, what: str = "the controller to match the hub") -> float:
        """Wait until the controller holds exactly the hub's dataset and is idle."""

        def converged() -> bool:
            if self.runtime is None:
                return False
            # One question: idle and the dataset read in the same moment.
            phase, triple = self.core(lambda c: (c.session.progress()[0], _triple(c)))
            return phase == "idle" and triple == self.hub_triple()

        return wait_for(converged, what)

    def settle(self) -> None:
        """Wait until the controller's loop has acted on everything it received so
        far: a `status` command is answered only after all of that. (The live data
        is visible to the test a moment before the loop has logged its events.)"""
        id = self.observer.command("status")["id"]
        assert [r["status"] for r in self.observer.wait_final(id)] == ["done"]

    # --- test client -----------------------------------------------------------------

    @property
    def observer(self) -> Observer:
        if self._observer is None:
            self._observer = Observer(self.broker, self.key)
        return self._observer

    def close(self) -> None:
        errors: list[BaseException] = []
        for step in (self.stop_controller, self.stop_hub, self._close_rest):
            try:
                step()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _close_rest(self) -> None:
        if self._observer is not None:
            self._observer.close()
            self._observer = None
        if self.db is not None:
            self.db.close()
            self.db = None
