"""End to end on the simulator's hardware: the real `Runtime` with `[hal] backend =
"sim"` and real wiring, its loop in a thread, no broker (the runtime keeps trying
to reach one on a closed port, which is not fatal).

A tag presented at the RDM6300 reader (a frame on its `loop://` port) unlocks the
door relay's mock pin and relocks it; the door contact and the exit button (mock
pin levels) produce door events; every event lands in the outbox on disk; at
shutdown the relays go back to their safe levels. Waits are generous and no
assertion is about time.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from firmware.config import load_config
from firmware.core.model import digest_bytes, digest_part
from firmware.outbox_store import OutboxStore
from firmware.runtime import Runtime
from firmware.runtime.priorities import HIGH_NICE
from firmware.storage import DB_FILE, Storage
from hal.sim import SimBackend
from sim.bench import BenchEdge
from tests.waiting import WAIT_S, wait_for

ANN = "0a1b2c3d4e"  # tags as the RDM6300 reader reports them
CAT = "0a0a0a0a0a"


def free_closed_port() -> int:
    """A local port nobody listens on (the broker is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def seed(db: Path, now: float) -> None:
    """The stored dataset the controller boots with (as a finished full sync left it)."""
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        ("door", "front", {"unlock_s": 1, "extended_s": 120, "held_s": 600}),
        ("light", "court1", {"lead_s": 0, "lag_s": 0, "warn_s": 0}),
        ("group", "players", {"doors": ["front"], "lights": ["court1"]}),
        ("member", "ann", {"groups": ["players"], "creds": [["tag", ANN]]}),
        ("member", "cat", {"groups": ["players"], "creds": [["tag", CAT]], "extended": True}),
        # Court 1 is booked right now: its lights are on from boot.
        (
            "booking",
            "b1",
            {"lights": ["court1"], "start": int(now) - 600, "end": int(now) + 3600},
        ),
    ]
    records = [(kind, id, cbor2.dumps(body)) for kind, id, body in bodies]
    digest = digest_bytes(sum(digest_part(*r) for r in records))
    with Storage.open(db) as storage:
        storage.save_snapshot("e1", 7, records, digest, now)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    seed(data_dir / DB_FILE, time.time())
    key = tmp_path / "ctl1.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    path = tmp_path / "controller.toml"
    path.write_text(
        f"""
[controller]
site = "demo"
id = "ctl1"
data_dir = "{data_dir}"
key_file = "{key}"

[mqtt]
host = "127.0.0.1"
port = {free_closed_port()}

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

[[readers]]
id = "front-in"
kind = "rdm6300"
port = "/dev/serial0"
door = "front"
"""
    )
    return path


@pytest.fixture
def outbox(config_path: Path) -> Iterator[OutboxStore]:
    """The outbox on disk, read through a connection of its own."""
    storage = Storage.open(config_path.parent / "data" / DB_FILE)
    yield OutboxStore(storage)
    storage.close()


def logged(outbox: OutboxStore) -> list[tuple[str, dict[str, Any]]]:
    """Every door, access and light event in the outbox, in seq order."""
    stats = outbox.stats()
    # The boot numbers on from the clock: the seqs run on from the first one.
    rows = outbox.batch((stats.first_seq or 1) - 1, stats.last_seq)[:99]
    assert [row[0] for row in rows] == list(range(rows[0][0], rows[0][0] + len(rows)))
    return [(type, body) for _, _, type, body in rows if type in ("door", "access", "light")]


def door(what: str, by: str | None = None) -> tuple[str, dict[str, Any]]:
    return ("door", {"door": "front", "what": what, "by": by})


def access(member: str, value: str) -> tuple[str, dict[str, Any]]:
    body = {"door": "front", "reader": "front-in", "credkind": "tag", "value": value[-4:]}
    granted = {"member": member, "booking": None, "granted": True, "reason": "granted"}
    return ("access", {**body, **granted})


def test_the_sim_hardware_drives_the_real_runtime(config_path: Path, outbox: OutboxStore) -> None:
    runtime = Runtime(load_config(config_path), edges=[BenchEdge])
    sim = runtime.hardware
    assert isinstance(sim, SimBackend)
    # Active-low relay boards: a released relay reads high. Safe before the loop runs.
    locked, unlocked = True, False
    lit, dark = False, True
    assert sim.level("door:front") is locked and sim.level("light:court1") is dark

    failed: list[BaseException] = []

    def run() -> None:
        try:
            runtime.run()
        except BaseException as exc:  # reported by the test, not lost in the thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="test-runtime", daemon=True)
    thread.start()
    try:
        wait_for(lambda: sim.level("light:court1") is lit, "the booked court's lights")
        wait_for(lambda: door("closed") in logged(outbox), "the door's first contact report")

        # A member's tag at the reader: the relay releases the strike, then relocks.
        sim.present("front-in", "tag", ANN)
        wait_for(lambda: sim.level("door:front") is unlocked, "the door to unlock")
        wait_for(lambda: sim.level("door:front") is locked, "the door to relock")
        wait_for(lambda: logged(outbox).count(door("locked", "timer")) == 1, "the relock event")

        # The door opened while locked: forced; then shut.
        sim.set_contact("front", True)
        wait_for(lambda: door("forced") in logged(outbox), "the forced event")
        sim.set_contact("front", False)
        wait_for(lambda: logged(outbox).count(door("closed")) == 2, "the door to be shut")

        # The exit button: unlocked, then relocked after unlock_s.
        sim.press_rex("front")
        wait_for(lambda: door("unlocked", "rex") in logged(outbox), "the exit button to unlock")
        wait_for(lambda: logged(outbox).count(door("locked", "timer")) == 2, "the relock")

        # An extended member: unlocked for two minutes; the door opens and stays
        # open, unlocked, while the controller shuts down.
        sim.present("front-in", "tag", CAT)
        wait_for(lambda: sim.level("door:front") is unlocked, "the door to unlock")
        sim.set_contact("front", True)
        wait_for(lambda: logged(outbox).count(door("opened")) == 2, "the door to open")
    finally:
        runtime.stop()
        thread.join(WAIT_S)
    assert not thread.is_alive() and not failed

    # Back to safe: strike locked, court lights off (and each output closed).
    assert sim.level("door:front") is locked and sim.level("light:court1") is dark
    assert not sim.outputs["door:front"].value and not sim.outputs["light:court1"].value

    events = logged(outbox)
    until = events[0][1].pop("until")  # the booking's end, from the wall clock
    assert isinstance(until, int)
    booking = {"member": None, "booking": "b1"}
    light_on = ("light", {"light": "court1", "what": "on", "why": "booking", **booking})
    assert events == [
        light_on,
        door("closed"),  # the first contact report: the door's initial state
        access("ann", ANN),
        door("unlocked", "ann"),
        door("locked", "timer"),
        door("opened"),
        door("forced"),
        door("closed"),
        door("unlocked", "rex"),
        door("locked", "timer"),
        access("cat", CAT),
        door("unlocked", "cat"),
        door("opened"),
    ]
    stats = outbox.stats()
    rows = outbox.batch((stats.first_seq or 1) - 1, stats.last_seq)
    boot = rows[0][3]
    # A fresh controller numbers from the clock too, naming the seqs below dropped.
    assert rows[0][2] == "system" and boot["what"] == "boot"
    assert boot["dropped"] == [[1, rows[0][0] - 1]]


def test_only_the_loop_thread_runs_at_the_loop_priority(config_path: Path) -> None:
    """The loop raises its own priority once the reader, network and kiosk threads
    are started (threads inherit their creator's); background threads keep the
    process's; where no priority may be raised, nothing is."""
    config_path.write_text(
        config_path.read_text().replace("[controller]\n", '[controller]\nloop_priority = "high"\n')
    )
    runtime = Runtime(load_config(config_path), edges=[BenchEdge])
    loop = threading.Thread(target=runtime.run, name="test-loop", daemon=True)
    loop.start()
    try:
        wait_for(lambda: runtime.loop_priority is not None, "the loop to take its priority")
        wait_for(
            lambda: any("reader" in t.name for t in threading.enumerate()), "the reader thread"
        )
        nice = {
            t.name: os.getpriority(os.PRIO_PROCESS, t.native_id)
            for t in threading.enumerate()
            if t.native_id is not None and t.is_alive()
        }
        base = nice[threading.current_thread().name]
        raised = runtime.loop_priority == "high"
        assert nice["test-loop"] == (base - HIGH_NICE if raised else base)
        # Every other thread keeps the process's priority, the background ones
        # too: lowered, one holding the interpreter lock held up the loop.
        others = [n for n in nice if n != "test-loop"]
        assert {"alc-decoder", "alc-storage"} <= set(others)
        assert any(n.startswith("paho") for n in others) and any("reader" in n for n in others)
        for name in others:
            assert nice[name] == base, name
    finally:
        runtime.stop()
        loop.join(WAIT_S)
    assert not loop.is_alive()
