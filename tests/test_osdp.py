"""OSDP readers (hal/osdp_reader.py): our control panel against libosdp's own
peripheral device (hal/osdp_peer.py), in process, over a loopback.

The secure channel comes up, a card read and a PIN become credentials, a
decision shows on the reader's LED and buzzer; a reader on another key is
refused and its reads ignored; an unplugged one is reported; install mode keys
a reader on the default key. Then the same through a running controller on the
sim backend: a card at the OSDP reader opens the door and the reader turns green.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import cbor2
import osdp
import pytest

from firmware.config import Config
from firmware.config.wiring import parse_wiring
from firmware.core.wiring import Wiring
from firmware.runtime import Runtime
from firmware.runtime.notes import Logged
from firmware.storage import DB_FILE, Storage
from hal import osdp_reader, wiegand
from hal.events import CredentialRead, HalEvent, ReaderLink, ReaderTrouble
from hal.osdp_bus import BusReader, Channel, OsdpBus
from hal.osdp_channel import Loopback
from hal.osdp_peer import OsdpPeer, SimulatedOsdpReader
from hal.osdp_reader import OsdpReader
from hal.sim import SimBackend
from tests.loop_rig import DOOR, EPOCH, VERSION, Outputs, digest_of, make_config, records, running
from tests.waiting import wait_for

KEY = bytes(range(16))
OTHER = bytes(range(100, 116))
ADDRESS = 7
CARD = "33:00119"
GREEN = {"command": osdp.Command.LED, "on_color": osdp.CommandLEDColor.Green}
RED = {"command": osdp.Command.LED, "on_color": osdp.CommandLEDColor.Red}
BEEP = {"command": osdp.Command.Buzzer}


def reader_on(
    channel: Channel, events: list[HalEvent], *, key: bytes = KEY, install: bool = False
) -> OsdpReader:
    """Our reader `front-in` at `ADDRESS`, alone on a bus over `channel`."""
    bus = OsdpBus("test", channel, [BusReader("front-in", ADDRESS, key, install)])
    return OsdpReader("front-in", events.append, bus, address=ADDRESS, install=install)


class Pair:
    """Our reader and libosdp's peripheral device on one loopback."""

    def __init__(self, reader: OsdpReader, peer: OsdpPeer, link: Loopback) -> None:
        self.reader, self.peer, self.link = reader, peer, link
        self.events: list[HalEvent] = []

    def of(self, kind: type) -> list[HalEvent]:
        return [e for e in list(self.events) if isinstance(e, kind)]


@contextmanager
def pair(
    peer_key: bytes | None = KEY, *, install: bool = False, peer_install: bool = False
) -> Iterator[Pair]:
    link = Loopback()
    peer = OsdpPeer(link.ends[1], ADDRESS, peer_key, install=peer_install)
    events: list[HalEvent] = []
    reader = reader_on(link.ends[0], events, install=install)
    p = Pair(reader, peer, link)
    p.events = events
    peer.start()
    reader.start()
    try:
        yield p
    finally:
        reader.close()
        peer.close()


def test_secure_channel_then_a_card_then_a_grant_turns_the_reader_green() -> None:
    with pair() as p:
        wait_for(p.reader.secure.is_set, "the secure channel")
        assert p.peer.secure
        p.peer.card(wiegand.encode_26(33, 119))
        p.peer.keys("47")
        p.peer.keys("11#")
        wait_for(lambda: len(p.of(CredentialRead)) == 2, "the card and the PIN")
        assert p.of(CredentialRead) == [
            CredentialRead("front-in", "card", CARD),
            CredentialRead("front-in", "pin", "4711"),
        ]
        p.reader.indicate(True)
        wait_for(lambda: p.peer.saw(GREEN) and p.peer.saw(BEEP), "green and a beep")
        assert not p.peer.saw(RED)
        p.reader.indicate(False)
        wait_for(lambda: p.peer.saw(RED), "red for a denial")
        assert not p.of(ReaderLink) and not p.of(ReaderTrouble)


def test_a_reader_on_another_key_is_refused_and_its_reads_ignored() -> None:
    with pair(OTHER) as p:
        p.peer.card(wiegand.encode_26(33, 119))  # waits in the reader: never sent
        wait_for(lambda: p.of(ReaderLink), "the refusal")
        (refused,) = p.of(ReaderLink)
        assert isinstance(refused, ReaderLink) and not refused.online
        assert refused.detail.startswith("refused") and "key" in refused.detail
        assert not p.reader.secure.is_set() and not p.of(CredentialRead)
        p.reader.indicate(True)  # nothing to show on a refused reader
        assert not p.peer.commands


def test_a_reader_unplugged_is_reported_offline() -> None:
    with pair() as p:
        wait_for(p.reader.secure.is_set, "the secure channel")
        p.link.close()
        wait_for(lambda: p.of(ReaderLink), "the reader reported offline")
        (offline,) = p.of(ReaderLink)
        assert isinstance(offline, ReaderLink) and not offline.online
        assert "unplugged" in offline.detail
        assert not p.reader.secure.is_set()


def test_tamper_is_reported() -> None:
    with pair() as p:
        wait_for(p.reader.secure.is_set, "the secure channel")
        p.peer.tamper(True)
        wait_for(lambda: p.of(ReaderTrouble), "the tamper report")
        (tamper,) = p.of(ReaderTrouble)
        assert isinstance(tamper, ReaderTrouble) and "tamper" in tamper.detail


def test_install_mode_keys_a_reader_on_the_default_key() -> None:
    with pair(None, install=True, peer_install=True) as p:
        wait_for(p.reader.secure.is_set, "the secure channel on our key")
        keyset = {"command": osdp.Command.Keyset, "type": 1, "data": KEY}
        assert p.peer.saw(keyset)
        (said,) = p.of(ReaderTrouble)  # at every start
        assert isinstance(said, ReaderTrouble) and "install mode" in said.detail
        p.peer.card(wiegand.encode_26(33, 119))
        wait_for(lambda: p.of(CredentialRead), "the card")


def test_without_install_mode_a_reader_on_the_default_key_is_refused() -> None:
    with pair(None, peer_install=True) as p:
        wait_for(lambda: p.of(ReaderLink), "the refusal")
        assert not p.reader.secure.is_set()
        assert not p.peer.saw({"command": osdp.Command.Keyset})


def test_a_reader_that_answers_late_is_reported_then_called_again_and_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libosdp gives up on a silent reader after 8 s, and calls it again 5 minutes
    # later; the reader's own timers are much shorter, and shorter still here.
    monkeypatch.setattr(osdp_reader, "START_GRACE_S", 0.5)
    monkeypatch.setattr(osdp_reader, "RETRY_FIRST_S", 0.2)
    link = Loopback()
    events: list[HalEvent] = []
    reader = reader_on(link.ends[0], events)
    peer = OsdpPeer(link.ends[1], ADDRESS, KEY)
    reader.start()
    try:
        wait_for(lambda: events, "the reader reported offline")
        assert events == [
            ReaderLink(
                "front-in", False, "offline: no answer (unplugged, or wrong port, address or baud)"
            )
        ]
        peer.start()  # plugged in
        wait_for(reader.secure.is_set, "the secure channel once the reader answers")
        wait_for(lambda: len(events) == 2, "the reader reported back")
        assert events[1] == ReaderLink("front-in", True, "back online")
    finally:
        reader.close()
        peer.close()


def test_two_readers_share_one_bus_each_on_its_own_key() -> None:
    link = Loopback(readers=3)
    keys = {1: KEY, 2: OTHER, 3: OTHER}  # the third reader has another reader's key
    peers = {a: OsdpPeer(link.ends[a], a, key) for a, key in keys.items()}
    bus_keys = {1: KEY, 2: OTHER, 3: KEY}
    bus = OsdpBus("bus", link.ends[0], [BusReader(f"r{a}", a, k) for a, k in bus_keys.items()])
    events: list[HalEvent] = []
    readers = {a: OsdpReader(f"r{a}", events.append, bus, address=a) for a in keys}
    for peer in peers.values():
        peer.start()
    for reader in readers.values():
        reader.start()
    try:
        wait_for(lambda: readers[1].secure.is_set() and readers[2].secure.is_set(), "both up")
        peers[2].card(wiegand.encode_26(33, 119))
        wait_for(lambda: any(isinstance(e, CredentialRead) for e in list(events)), "the card")
        reads = [e for e in list(events) if isinstance(e, CredentialRead)]
        assert reads == [CredentialRead("r2", "card", CARD)]
        readers[1].indicate(True)
        wait_for(lambda: peers[1].saw(GREEN), "the first reader green")
        wait_for(lambda: any(isinstance(e, ReaderLink) for e in list(events)), "the refusal")
        (refused,) = [e for e in list(events) if isinstance(e, ReaderLink)]
        assert isinstance(refused, ReaderLink) and refused.reader_id == "r3"
        assert not readers[3].secure.is_set()
        assert not peers[2].saw({"command": osdp.Command.LED})  # not its address
    finally:
        for reader in readers.values():
            reader.close()  # the last one stops the bus
        for peer in peers.values():
            peer.close()


# --- through a running controller on the sim backend ----------------------------


def osdp_config(tmp: Path) -> Config:
    """loop_rig's controller, its reader an OSDP one, and a member with a card."""
    now = time.time()
    config = make_config(tmp, now, inputs=False)
    recs = [
        *records(),
        ("member", "dan", cbor2.dumps({"groups": ["players"], "creds": [["card", CARD]]})),
    ]
    with Storage.open(config.controller.data_dir / DB_FILE) as storage:
        storage.save_snapshot(EPOCH, VERSION, recs, digest_of(recs), now)
    key_file = tmp / "front-in.scbk"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    reader = {
        "id": "front-in",
        "kind": "osdp",
        "port": "/dev/ttyUSB0",
        "address": ADDRESS,
        "scbk_file": str(key_file),
        "door": "front",
    }
    door = {"id": "front", "relay": 17, "fail": "secure"}
    wiring = parse_wiring(tmp / "controller.toml", {"doors": [door], "readers": [reader]})
    return replace(config, wiring=Wiring(wiring.doors, (), wiring.readers))


def test_a_card_at_an_osdp_reader_opens_the_door_and_the_reader_shows_green(
    tmp_path: Path,
) -> None:
    outputs = Outputs()
    runtime = Runtime(osdp_config(tmp_path), edges=[outputs])
    hardware = runtime.hardware
    assert isinstance(hardware, SimBackend)
    assert hardware.indicating == {"front-in"}
    reader = hardware.readers["front-in"]
    assert isinstance(reader, SimulatedOsdpReader)
    with running(runtime):
        hardware.present("front-in", "card", CARD)
        wait_for(lambda: outputs.count(DOOR, True) == 1, "the door released")
        wait_for(lambda: reader.peer.saw(GREEN) and reader.peer.saw(BEEP), "green, a beep")
        assert not reader.peer.saw(RED)
        hardware.present("front-in", "card", "33:00120")
        wait_for(lambda: reader.peer.saw(RED), "the reader red for an unknown card")
        reader.link.close()  # unplugged
        wait_for(lambda: system_events(outputs), "the reader reported offline")
        (event,) = system_events(outputs)
        assert event["what"] == "reader" and "unplugged" in event["detail"]
    assert outputs.count(DOOR, True) == 1


def system_events(outputs: Outputs) -> list[dict[str, object]]:
    notes = list(outputs.notes)
    events = [e for n in notes if isinstance(n, Logged) for e in n.events if e.type == "system"]
    return [e.body for e in events if e.body.get("what") == "reader"]
