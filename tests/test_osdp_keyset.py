"""Keying an OSDP reader (hal/osdp_keyset.py, `alc ctl osdp-keyset`): against
libosdp's own peripheral device, in process. The reader takes the new key and
answers only to it from then on; the key file is replaced only once it did."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.config.wiring import read_scbk
from hal import osdp_channel
from hal.events import HalEvent
from hal.osdp_bus import BusReader, OsdpBus
from hal.osdp_channel import Loopback
from hal.osdp_keyset import KeysetFailed, set_key
from hal.osdp_peer import OsdpPeer
from hal.osdp_reader import OsdpReader
from tests.waiting import wait_for
from tools import ctl

OLD = bytes(range(16))
NEW = bytes(range(16, 32))
ADDRESS = 9


@pytest.fixture
def link() -> Iterator[Loopback]:
    link = Loopback()
    yield link
    link.close()


def peer_on(link: Loopback, key: bytes | None, *, install: bool = False) -> OsdpPeer:
    peer = OsdpPeer(link.ends[1], ADDRESS, key, install=install)
    peer.start()
    return peer


class LoopbackPort:
    """Stands in for the reader's serial port: the control panel's end of `link`,
    which outlives each control panel (its `close` leaves the loopback open)."""

    def __init__(self, link: Loopback) -> None:
        self.end = link.ends[0]

    def __call__(self, port: str, baud: int, **_: Any) -> LoopbackPort:
        assert (port, baud) == ("/dev/ttyUSB9", 9600)
        return self

    problem: str | None = None

    @property
    def received(self) -> int:
        return self.end.received

    def read(self, max_bytes: int) -> bytes:
        return self.end.read(max_bytes)

    def write(self, data: bytes) -> int:
        return self.end.write(data)

    def flush(self) -> None:
        self.end.flush()

    def close(self) -> None:
        pass


def secure_with(link: Loopback, key: bytes) -> bool:
    """Whether a control panel with `key` gets a secure channel (or is refused)."""
    events: list[HalEvent] = []
    bus = OsdpBus("test", LoopbackPort(link), [BusReader("r", ADDRESS, key)])
    reader = OsdpReader("r", events.append, bus, address=ADDRESS)
    reader.start()
    try:
        wait_for(lambda: reader.secure.is_set() or events, "secure, or refused")
        return reader.secure.is_set()
    finally:
        reader.close()


def test_a_reader_takes_a_new_key_and_answers_only_to_it(link: Loopback) -> None:
    peer = peer_on(link, OLD)
    try:
        set_key(link.ends[0], ADDRESS, current=OLD, new=NEW)
        assert peer.saw({"type": 1, "data": NEW})
        assert secure_with(link, NEW)
        assert not secure_with(link, OLD)
    finally:
        peer.close()


def test_a_reader_in_install_mode_is_keyed_from_the_default_key(link: Loopback) -> None:
    peer = peer_on(link, None, install=True)
    try:
        set_key(link.ends[0], ADDRESS, current=None, new=NEW)
        assert secure_with(link, NEW)
    finally:
        peer.close()


def test_the_wrong_current_key_fails_before_anything_is_sent(link: Loopback) -> None:
    peer = peer_on(link, OLD)
    try:
        with pytest.raises(KeysetFailed) as e:
            set_key(link.ends[0], ADDRESS, current=NEW, new=NEW)
        assert not e.value.sent and not peer.commands
    finally:
        peer.close()


# --- the command ------------------------------------------------------------------


def config_with_reader(tmp: Path, key: bytes | None, kind: str = "osdp") -> Path:
    if key is not None:
        scbk = tmp / "front-in.scbk"
        scbk.write_text(key.hex() + "\n")
        scbk.chmod(0o600)
    config = tmp / "controller.toml"
    config.write_text(
        f'[[readers]]\nid = "front-in"\nkind = "{kind}"\nport = "/dev/ttyUSB9"\n'
        f'address = {ADDRESS}\nscbk_file = "front-in.scbk"\ndoor = "front"\n'
    )
    return config


def keyset(config: Path, *extra: str) -> int:
    return ctl.main(["osdp-keyset", "--config", str(config), "--reader", "front-in", *extra])


def test_the_command_keys_the_reader_and_then_replaces_the_key_file(
    tmp_path: Path, link: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_with_reader(tmp_path, OLD)
    monkeypatch.setattr(osdp_channel, "SerialChannel", LoopbackPort(link))
    peer = peer_on(link, OLD)
    try:
        assert keyset(config) == 0
    finally:
        peer.close()
    path = tmp_path / "front-in.scbk"
    key = read_scbk(path, where="test")
    assert key != OLD and peer.saw({"type": 1, "data": key})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "front-in.scbk.new").exists()


def test_a_failed_keyset_keeps_the_old_key(
    tmp_path: Path, link: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_with_reader(tmp_path, NEW)  # the reader has OLD
    monkeypatch.setattr(osdp_channel, "SerialChannel", LoopbackPort(link))
    peer = peer_on(link, OLD)
    try:
        assert keyset(config, "--timeout", "10") == 1
    finally:
        peer.close()
    assert read_scbk(tmp_path / "front-in.scbk", where="test") == NEW
    assert not (tmp_path / "front-in.scbk.new").exists()


def test_a_leftover_new_key_is_never_overwritten(tmp_path: Path) -> None:
    config = config_with_reader(tmp_path, OLD)
    (tmp_path / "front-in.scbk.new").write_text("the key the reader may have\n")
    assert keyset(config) == 2
    assert (tmp_path / "front-in.scbk.new").read_text() == "the key the reader may have\n"


def test_a_port_that_cannot_be_opened_changes_nothing(tmp_path: Path) -> None:
    config = config_with_reader(tmp_path, OLD)  # /dev/ttyUSB9 is not there
    assert keyset(config) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["controller.toml", "front-in.scbk"]


@pytest.mark.parametrize("kind", ["rdm6300", "osdp"])
def test_bad_tables_are_refused(tmp_path: Path, kind: str) -> None:
    config = config_with_reader(tmp_path, None, kind)
    assert keyset(config) == 2  # not an OSDP reader / no key file without --install
