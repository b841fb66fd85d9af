"""`alc hw test`: each relay of the controller's own config goes on and off, one
at a time, and never stays on; input changes and reads are printed as they come.

Run on gpiozero's MockFactory pins (the `gpio` backend, as on a Pi) and on the
`sim` backend. The pins' own histories are the evidence, not the printed lines.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from firmware.config import load_config
from hal.events import (
    ContactSensed,
    CredentialRead,
    ExitPressed,
    OutputCut,
    ReaderLink,
    ReaderTrouble,
)
from hal.sim import SimBackend
from tools import hw_test
from tools.hw_test import HwTest

REPO = Path(__file__).resolve().parent.parent
BACKSTOP_S = 20.0  # the watch ends by itself only if an expected line never came

WIRING = """
[controller]
site = "demo"
id = "ctl1"
data_dir = "{data}"
keys_dir = "{data}/keys"

[hal]
backend = "{backend}"

[[doors]]
id = "front"
relay = 17
active_high = false
fail = "secure"
contact = 27
rex = 22
debounce_ms = 10

[[doors]]
id = "back"
relay = 18
active_high = false
fail = "safe"

[[lights]]
id = "court1"
relay = 5
active_high = true
warn = 6

[[readers]]
id = "front-in"
kind = "rdm6300"
port = "/dev/serial0"
door = "front"

[[readers]]
id = "front-out"
kind = "wiegand"
d0 = 23
d1 = 24
door = "front"
"""

# BCM pin -> the level it rests at (relay idle): active-low boards rest high.
RELAYS = {17: True, 18: True, 5: False, 6: False}


def write_config(tmp_path: Path, backend: str) -> Path:
    path = tmp_path / "controller.toml"
    path.write_text(WIRING.format(data=tmp_path, backend=backend))
    return path


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """gpiozero's default pins are mock pins for the test (serial readers too
    need no hardware: they open their port in their own thread and retry)."""
    previous = Device.pin_factory
    Device.pin_factory = MockFactory()
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.reset()
        Device.pin_factory = previous


class Technician:
    """The `say` of a run: records every line; when a line in `acts` is printed,
    does what a technician does at the door next; stops the run once `expected`
    lines were all printed (or never: the backstop ends the watch)."""

    def __init__(self, acts: dict[str, Callable[[], None]], expected: set[str]) -> None:
        self.lines: list[str] = []
        self.acts = acts
        self.expected = expected
        self.hw: HwTest | None = None

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        for start, act in self.acts.items():
            if line.startswith(start):
                act()
        if self.hw is not None and self.expected <= set(self.lines):
            self.hw.stop()


def on_intervals(factory: MockFactory) -> dict[int, tuple[float, float]]:
    """Each relay pin's one energised interval, in seconds since its history was
    cleared, after checking it went rest -> energised -> rest exactly once."""
    intervals = {}
    for pin, rest in RELAYS.items():
        states = factory.pin(pin).states
        assert [s.state for s in states] == [rest, not rest, rest], f"GPIO {pin}: {states}"
        times = list(itertools.accumulate(s.timestamp for s in states))
        intervals[pin] = (times[1], times[2])
    return intervals


def relay_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if ": relay " in line]


def test_each_relay_goes_on_then_off_one_at_a_time_and_inputs_print_as_they_change(
    tmp_path: Path, factory: MockFactory
) -> None:
    config = load_config(write_config(tmp_path, "gpio"))

    def at_the_door() -> None:
        factory.pin(22).drive_low()  # the exit button held down
        factory.pin(27).drive_high()  # the door opened (NC contact: the loop breaks)

    acts = {"watching": at_the_door, "rex:front  pressed": factory.pin(22).drive_high}
    tech = Technician(acts, {"rex:front  pressed", "contact:front  open"})
    hw = tech.hw = HwTest(config, tech, pin_factory=factory)
    factory.pin(27).drive_low()  # the door is shut when the test starts
    for pin in RELAYS:  # every relay at rest now: history from here
        assert factory.pin(pin).state == RELAYS[pin]
        factory.pin(pin).clear_states()
    try:
        hw.run(relay_s=0.05, seconds=BACKSTOP_S)
    finally:
        hw.close()

    assert relay_lines(tech.lines) == [
        "door:front (GPIO 17), door released while on: relay on for 0.05 s",
        "door:front: relay off",
        "door:back (GPIO 18), door locked while on: relay on for 0.05 s",
        "door:back: relay off",
        "light:court1 (GPIO 5): relay on for 0.05 s",
        "light:court1: relay off",
        "warn:court1 (GPIO 6): relay on for 0.05 s",
        "warn:court1: relay off",
    ]
    # The pins themselves: each relay energised once, never two at a time, in
    # the order printed, and each at rest at the end.
    intervals = on_intervals(factory)
    order = [intervals[pin] for pin in (17, 18, 5, 6)]
    for (_, off), (on, _) in itertools.pairwise(order):
        assert off <= on
    assert "contact:front  closed" in tech.lines  # its state at start
    watch = tech.lines.index(next(x for x in tech.lines if x.startswith("watching")))
    assert {"rex:front  pressed", "contact:front  open"} <= set(tech.lines[watch:])


def test_on_the_sim_backend_reads_and_inputs_print_and_no_relay_stays_on(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "sim"))
    sim: list[SimBackend] = []

    def at_the_door() -> None:
        sim[0].set_contact("front", True)
        sim[0].press_rex("front")
        sim[0].present("front-in", "tag", "0a1b2c3d4e")
        sim[0].present("front-out", "card", "33:00119")

    expected = {
        "contact:front  open",
        "rex:front  pressed",
        "reader front-in  tag 0a1b2c3d4e",
        "reader front-out  card 33:00119",
    }
    tech = Technician({"watching": at_the_door}, expected)
    hw = tech.hw = HwTest(config, tech)
    assert isinstance(hw.backend, SimBackend)
    sim.append(hw.backend)
    try:
        hw.run(relay_s=0.01, seconds=BACKSTOP_S)
        assert [hw.backend.level(f"door:{d}") for d in ("front", "back")] == [True, True]
    finally:
        hw.close()
    assert [x for x in relay_lines(tech.lines) if x.endswith("off")] == [
        "door:front: relay off",
        "door:back: relay off",
        "light:court1: relay off",
        "warn:court1: relay off",
    ]
    assert expected <= set(tech.lines)
    # At rest after close: active-low doors high, active-high light relays low.
    pins = hw.backend.pin_factory
    assert {pin: pins.pin(pin).state for pin in RELAYS} == RELAYS


def test_stopping_while_a_relay_is_on_switches_it_off_and_no_other_on(
    tmp_path: Path, factory: MockFactory
) -> None:
    config = load_config(write_config(tmp_path, "gpio"))
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if "relay on" in line:
            hw.stop()  # Ctrl-C's path in main() ends the same wait

    hw = HwTest(config, say, pin_factory=factory)
    for pin in RELAYS:
        factory.pin(pin).clear_states()
    try:
        hw.run(relay_s=600, seconds=None)  # returns only because it was stopped
    finally:
        hw.close()
    assert relay_lines(lines) == [
        "door:front (GPIO 17), door released while on: relay on for 600 s",
        "door:front: relay off",
    ]
    assert [s.state for s in factory.pin(17).states] == [True, False, True]
    for pin in (18, 5, 6):
        assert [s.state for s in factory.pin(pin).states] == [RELAYS[pin]], f"GPIO {pin}"


TWICE = "doors[1].relay: GPIO 17 is already doors[0].relay"


def test_the_command_runs_from_the_config_and_refuses_beside_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "sim")
    argv = ["test", "--config", str(path), "--relay-s", "0.01", "--seconds", "0"]
    assert hw_test.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("alc hw test: backend sim: 4 relays, 2 inputs, 2 readers\n")
    assert out.count("relay off") == 4

    monkeypatch.setattr(hw_test, "service_active", lambda name=hw_test.SERVICE: True)
    assert hw_test.main(argv) == 2
    assert "alc-controller.service is running" in capsys.readouterr().err

    # A wiring mistake is the config's one line; the simulator would run without
    # pins, but there is nothing to test then.
    path.write_text(path.read_text().replace("relay = 18", "relay = 17"))
    assert hw_test.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"alc hw test: no hardware wiring to test: {path}: {TWICE}\n"
    write_config(tmp_path, "gpio")
    path.write_text(path.read_text().replace("relay = 18", "relay = 17"))
    assert hw_test.main(argv) == 2
    assert capsys.readouterr().err == f"alc hw test: {path}: {TWICE}\n"


def test_ctrl_c_ends_the_command_with_the_relay_off(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sim")
    command = ["hw", "test", "--config", str(path), "--relay-s", "600"]
    child = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", *command],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().startswith("alc hw test: backend sim")
        assert "relay on for 600 s" in child.stdout.readline()
        child.send_signal(signal.SIGINT)
        rest, _ = child.communicate(timeout=BACKSTOP_S)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 130
    # (The door's contact state at start may come in between.)
    assert rest.splitlines()[-2:] == ["door:front: relay off", "stopped"]
    assert "relay on" not in rest


def test_every_kind_of_hal_event_has_its_line() -> None:
    lines = [
        hw_test.describe(event)
        for event in (
            ContactSensed("front", open=False),
            ExitPressed("front"),
            CredentialRead("front-in", "pin", "4711"),
            ReaderTrouble("front-out", "bad parity"),
            ReaderLink("front-osdp", online=False, detail="no secure channel"),
            OutputCut("door:front"),
        )
    ]
    assert lines == [
        "contact:front  closed",
        "rex:front  pressed",
        "reader front-in  pin 4711",
        "reader front-out  trouble: bad parity",
        "reader front-osdp  offline: no secure channel",
        "door:front  cut at its max_open_s",
    ]
