"""The sim backend's hands: doors, buttons and credentials through the same pins
and ports real hardware would use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from firmware.core.wiring import DoorSpec, LightSpec, ReaderSpec, Wiring
from hal.events import ContactSensed, CredentialRead, ExitPressed, ReaderTrouble
from hal.sim import SimBackend
from tests.hal.conftest import Events


@pytest.fixture
def sim(events: Events) -> Iterator[SimBackend]:
    wiring = Wiring(
        doors=(DoorSpec("front", relay=17, contact=27, rex=22),),
        lights=(LightSpec("court1", relay=5),),
        readers=(
            ReaderSpec("tag", "rdm6300", door="front", port="/dev/serial0"),
            ReaderSpec("card", "wiegand", door="front", d0=23, d1=24, credkind="card"),
            ReaderSpec("scan", "line", light="court1", port="/dev/ttyUSB0", gap_s=0.5),
            ReaderSpec("keys", "keypad", port="/dev/ttyUSB1", credkind="pin", gap_s=0.5),
        ),
    )
    # The simulator's clock stands still here: nothing may depend on it moving.
    backend = SimBackend(wiring, events, clock=lambda: 0.0)
    backend.start()
    yield backend
    backend.close()


def test_doors_start_shut_and_switches_settle_at_once(sim: SimBackend, events: Events) -> None:
    sim.set_contact("front", True)
    sim.press_rex("front")
    sim.set_contact("front", False)
    assert events.seen == [
        ContactSensed("front", False),
        ContactSensed("front", True),
        ExitPressed("front"),
        ContactSensed("front", False),
    ]


def test_present_speaks_each_readers_protocol(sim: SimBackend, events: Events) -> None:
    sim.present("card", "card", "33011:00119")
    sim.present("card", "pin", "4711")
    sim.present("tag", "tag", "0a1b2c3d4e")
    sim.present("scan", "tag", "04a1b2c3")
    sim.present("keys", "pin", "1234")
    reads = events.wait_count(CredentialRead, 5)
    assert sorted(reads, key=str) == sorted(
        [
            CredentialRead("card", "card", "33011:00119"),
            CredentialRead("card", "pin", "4711"),
            CredentialRead("tag", "tag", "0a1b2c3d4e"),
            CredentialRead("scan", "tag", "04a1b2c3"),
            CredentialRead("keys", "pin", "1234"),
        ],
        key=str,
    )


def test_raw_bytes_and_pulses_for_fault_scenarios(sim: SimBackend, events: Events) -> None:
    sim.pulses("card", (1, 0, 1))
    sim.write("tag", b"\x020A1B2C3D4E4F\x03")
    faults = events.wait_count(ReaderTrouble, 2)
    assert sorted(str(f) for f in faults) == sorted(
        [
            str(ReaderTrouble("card", "3-bit frame not understood")),
            str(ReaderTrouble("tag", "frame with a bad checksum")),
        ]
    )


def test_levels_follow_outputs(sim: SimBackend) -> None:
    assert sim.level("door:front") is True  # active-low board, relay off
    sim.set_output("door:front", True)
    assert sim.level("door:front") is False
