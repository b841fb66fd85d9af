"""Serial readers' threads: frame timeout, fault rate limit, garbage, a missing or
lost port. Real threads on loop:// and pseudo-terminals; the test moves the clock."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal import rdm6300
from hal.events import CredentialRead, ReaderTrouble
from hal.serialport import SerialReader, serial_reader
from hal.wiring import ReaderSpec
from tests.hal.conftest import WAIT_S, Events, FakeClock, wait_until

TAG = "0a1b2c3d4e"


def reader_on(port: str, events: Events, clock: FakeClock, kind: str = "rdm6300") -> SerialReader:
    spec = ReaderSpec("r1", kind, port=port, gap_s=0.2, repeat_s=1.0)
    reader = serial_reader(spec, events, clock=clock)
    reader.start()
    return reader


@pytest.fixture
def loop(events: Events, clock: FakeClock) -> Iterator[SerialReader]:
    reader = reader_on("loop://", events, clock)
    assert reader.opened.wait(WAIT_S)
    yield reader
    reader.close()


def sync(reader: SerialReader, events: Events) -> None:
    """Wait until the reader has handled everything written so far: a tag nobody
    else presents comes out after it."""
    before = len(events.of(CredentialRead))
    reader.connection.write(rdm6300.encode("ffffffffff"))
    events.wait_count(CredentialRead, before + 1)


def test_a_half_frame_is_dropped_after_the_gap(
    loop: SerialReader, events: Events, clock: FakeClock
) -> None:
    loop.connection.write(rdm6300.encode(TAG)[:6])
    wait_until(lambda: loop.bytes_read == 6, "the reader read 6 bytes")
    assert events.seen == []
    clock.advance(0.2)
    events.wait_count(ReaderTrouble, 1)
    assert events.seen == [ReaderTrouble("r1", "incomplete frame dropped (timed out)")]
    loop.connection.write(rdm6300.encode(TAG)[6:])  # the rest alone is noise
    clock.advance(1.5)
    loop.connection.write(rdm6300.encode(TAG))
    events.wait_count(CredentialRead, 1)
    assert events.seen[-1] == CredentialRead("r1", "tag", TAG)


def test_faults_are_rate_limited_with_a_count(
    loop: SerialReader, events: Events, clock: FakeClock
) -> None:
    bad = b"\x020A1B2C3D4E4F\x03"
    loop.connection.write(bad * 3)
    sync(loop, events)
    assert events.of(ReaderTrouble) == [ReaderTrouble("r1", "frame with a bad checksum")]
    clock.advance(1.0)
    loop.connection.write(bad)
    sync(loop, events)
    assert events.of(ReaderTrouble)[1] == ReaderTrouble(
        "r1", "frame with a bad checksum (and 2 earlier faults not reported)"
    )


def test_a_held_tag_stays_one_read_as_long_as_frames_keep_coming(
    loop: SerialReader, events: Events, clock: FakeClock
) -> None:
    for _ in range(10):  # held for 5 s, a frame every half second
        loop.connection.write(rdm6300.encode(TAG))
        clock.advance(0.5)
    sync(loop, events)
    assert [e.value for e in events.of(CredentialRead)] == [TAG, "ffffffffff"]


def test_garbage_forever_costs_a_bounded_number_of_events(
    loop: SerialReader, events: Events
) -> None:
    noise = bytes(range(4, 256)) * 400  # ~100 kB without a frame start
    loop.connection.write(noise)
    sync(loop, events)
    assert len(events.of(ReaderTrouble)) == 1


def test_a_missing_port_is_reported_and_close_still_stops_the_retry(
    events: Events, clock: FakeClock
) -> None:
    reader = reader_on("/dev/alc-no-such-reader", events, clock)
    try:
        events.wait_count(ReaderTrouble, 1)
        fault = events.seen[0]
        assert isinstance(fault, ReaderTrouble) and "cannot open the port" in fault.detail
        assert not reader.opened.is_set()
    finally:
        reader.close()


def test_a_port_that_stays_missing_is_reported_once(
    events: Events, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="alc.hal")
    spec = ReaderSpec("r1", "rdm6300", port="/dev/alc-no-such-reader", gap_s=0.2)
    reader = serial_reader(spec, events, clock=clock)
    reader.retry_s = 0.01
    reader.start()
    try:
        wait_until(
            lambda: sum("cannot open" in r.getMessage() for r in caplog.records) >= 3,
            "the reader retried a few times",
        )
        assert len(events.of(ReaderTrouble)) == 1
    finally:
        reader.close()


def test_an_unplugged_reader_is_picked_up_again(
    tmp_path: Path, events: Events, clock: FakeClock
) -> None:
    link = tmp_path / "by-id-reader"  # like /dev/serial/by-id/...
    master, slave = os.openpty()
    link.symlink_to(os.ttyname(slave))
    reader = reader_on(str(link), events, clock)
    reader.retry_s = 0.01
    try:
        assert reader.opened.wait(WAIT_S)
        os.write(master, rdm6300.encode(TAG))
        events.wait_count(CredentialRead, 1)
        os.close(slave)
        os.close(master)  # unplugged
        events.wait_count(ReaderTrouble, 1)
        wait_until(lambda: not reader.opened.is_set(), "the reader closed the lost port")
        master, slave = os.openpty()  # plugged in again, under a new device name
        fresh = tmp_path / "fresh"
        fresh.symlink_to(os.ttyname(slave))
        fresh.replace(link)
        wait_until(reader.opened.is_set, "the reader reopened its port")
        os.write(master, rdm6300.encode("62e3086ced"))
        reads = events.wait_count(CredentialRead, 2)
        assert reads[-1] == CredentialRead("r1", "tag", "62e3086ced")
        assert len(events.of(ReaderTrouble)) <= 2  # lost, and perhaps one failed reopen
    finally:
        reader.close()
        os.close(slave)
        os.close(master)


def test_a_lost_port_is_reported(events: Events, clock: FakeClock) -> None:
    master, slave = os.openpty()
    reader = reader_on(os.ttyname(slave), events, clock)
    try:
        assert reader.opened.wait(WAIT_S)
        os.write(master, rdm6300.encode(TAG))
        events.wait_count(CredentialRead, 1)
        os.close(slave)
        os.close(master)  # the USB reader is unplugged
        events.wait_count(ReaderTrouble, 1)
        fault = events.of(ReaderTrouble)[0]
        assert isinstance(fault, ReaderTrouble) and "port failed" in fault.detail
    finally:
        reader.close()


def test_line_reader_on_a_pty(pty: tuple[str, int], events: Events, clock: FakeClock) -> None:
    path, master = pty
    reader = reader_on(path, events, clock, kind="line")
    try:
        assert reader.opened.wait(WAIT_S)
        os.write(master, b"04A1B2C3\r\n")
        os.write(master, b"x" * 5000 + b"\n")
        os.write(master, b"0012345678\n")
        events.wait_count(CredentialRead, 2)
        assert events.seen == [
            CredentialRead("r1", "tag", "04a1b2c3"),
            ReaderTrouble("r1", "line longer than 128 characters"),
            CredentialRead("r1", "tag", "0012345678"),
        ]
    finally:
        reader.close()


def test_connection_before_start_raises(events: Events, clock: FakeClock) -> None:
    spec = ReaderSpec("r1", "rdm6300", port="loop://", gap_s=0.2)
    reader = serial_reader(spec, events, clock=clock)
    with pytest.raises(RuntimeError):
        _ = reader.connection
    reader.close()
    reader.start()  # closed readers stay closed
    assert not reader.opened.is_set()
