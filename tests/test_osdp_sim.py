"""The simulator's OSDP reader (`kind = "osdp"` on the sim backend): libosdp's
peripheral device on a loopback, so the bench's presentations and keys go
through the real OSDP stack and its secure channel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config.wiring import parse_wiring
from hal.events import CredentialRead, HalEvent, ReaderLink
from hal.sim import SimBackend
from sim.bench import BenchHands, Keys, Present, Refused
from tests.waiting import wait_for

KEY = bytes(range(16))


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[tuple[SimBackend, list[HalEvent]]]:
    key = tmp_path / "kiosk.scbk"
    key.write_text(KEY.hex())
    key.chmod(0o600)
    reader = {
        "id": "kiosk",
        "kind": "osdp",
        "port": "/dev/ttyUSB0",
        "scbk_file": str(key),
        "kiosk": True,
    }
    wiring = parse_wiring(tmp_path / "controller.toml", {"readers": [reader]})
    events: list[HalEvent] = []
    with SimBackend(wiring, events.append) as backend:
        backend.start()
        yield backend, events


def reads(events: list[HalEvent]) -> list[HalEvent]:
    return [e for e in list(events) if isinstance(e, CredentialRead)]


def test_bench_presentations_and_keys_go_through_osdp(
    sim: tuple[SimBackend, list[HalEvent]],
) -> None:
    backend, events = sim
    hands = BenchHands(backend)
    hands.drive(Present("kiosk", "card", "33:00119"))
    hands.drive(Present("kiosk", "card", "04a1b2c3"))  # a card's serial number
    hands.drive(Present("kiosk", "pin", "4711"))
    hands.drive(Keys("kiosk", "12*9#"))
    wait_for(lambda: len(reads(events)) == 4, "four reads")
    assert [(e.credkind, e.value) for e in reads(events) if isinstance(e, CredentialRead)] == [
        ("card", "33:00119"),
        ("card", "04a1b2c3"),
        ("pin", "4711"),
        ("pin", "9"),
    ]


def test_a_tag_is_not_something_an_osdp_reader_reads(
    sim: tuple[SimBackend, list[HalEvent]],
) -> None:
    backend, _ = sim
    with pytest.raises(Refused):
        BenchHands(backend).drive(Present("kiosk", "tag", "0a1b2c3d4e"))


def test_on_the_gpio_backend_readers_on_one_port_share_a_bus_and_a_missing_port_is_reported(
    tmp_path: Path,
) -> None:
    from gpiozero.pins.mock import MockFactory

    from hal.gpio import GpioBackend
    from hal.osdp_reader import OsdpReader

    key = tmp_path / "k.scbk"
    key.write_text(KEY.hex())
    key.chmod(0o600)
    port = str(tmp_path / "ttyUSB-not-there")
    tables = [
        {"id": r, "kind": "osdp", "port": port, "address": a, "scbk_file": str(key), "kiosk": True}
        for r, a in (("in", 1), ("out", 2))
    ]
    wiring = parse_wiring(tmp_path / "controller.toml", {"readers": tables})
    events: list[HalEvent] = []
    with GpioBackend(wiring, events.append, pin_factory=MockFactory()) as backend:
        readers = [backend.readers["in"], backend.readers["out"]]
        assert all(isinstance(r, OsdpReader) for r in readers)
        assert isinstance(readers[0], OsdpReader) and isinstance(readers[1], OsdpReader)
        assert readers[0].bus is readers[1].bus
        assert backend.indicating == {"in", "out"}
        backend.start()
        wait_for(lambda: len(links(events)) == 2, "both readers reported offline")
        assert {e.reader_id for e in links(events)} == {"in", "out"}
        assert all("cannot open" in e.detail and not e.online for e in links(events))


def links(events: list[HalEvent]) -> list[ReaderLink]:
    return [e for e in list(events) if isinstance(e, ReaderLink)]
