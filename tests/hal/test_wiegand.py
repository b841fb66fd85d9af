"""Wiegand: frames decoded with parity checked, keypad bursts, the quiet gap, and
the reader on mock D0/D1 pins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from hal import wiegand
from hal.events import CredentialRead, ReaderTrouble
from hal.frames import Credential, Fault, Key
from hal.gpio import GpioWiegandReader
from hal.wiegand import FrameAssembler, decode
from hal.wiring import ReaderSpec
from tests.hal.conftest import Events, FakeClock


def bits(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.replace(" ", ""))


def test_26_bit_frame_worked_by_hand() -> None:
    # Facility 10 = 00001010, card 1234 = 0000010011010010. Bits 1-12 hold two
    # ones: even parity 0. Bits 13-24 (010011010010) hold five: odd parity 0.
    frame = bits("0 00001010 0000010011010010 0")
    assert decode(frame) == Credential("card", "10:01234")
    assert wiegand.encode_26(10, 1234) == frame


def test_34_and_37_bit_frames() -> None:
    assert decode(wiegand.encode_34(33011, 119)) == Credential("card", "33011:00119")
    assert decode(wiegand.encode_37(12_345_678_901)) == Credential("card", "12345678901")
    assert decode(wiegand.encode_37(0)) == Credential("card", "0")


@pytest.mark.parametrize(
    "frame",
    [wiegand.encode_26(255, 65535), wiegand.encode_34(1, 2), wiegand.encode_37(2**35 - 1)],
    ids=["26", "34", "37"],
)
def test_any_single_flipped_bit_is_bad_parity(frame: tuple[int, ...]) -> None:
    # Every bit is covered by a parity group (bit 18 of a 37-bit frame by both),
    # so one flipped bit anywhere must be reported, never read as another card.
    for i in range(len(frame)):
        flipped = (*frame[:i], 1 - frame[i], *frame[i + 1 :])
        assert decode(flipped) == Fault(f"{len(frame)}-bit frame with bad parity"), i


@pytest.mark.parametrize("width", [4, 8])
def test_keypad_bursts(width: int) -> None:
    for key in "0123456789*#":
        assert decode(wiegand.encode_key(key, width)) == Key(key)


def test_keypad_codes_that_are_no_key_and_a_bad_check_nibble() -> None:
    assert decode(bits("1100")) == Fault("keypad code 12 not understood")
    assert decode(bits("1111 0000")) == Key("0")  # 0 with its complement
    assert decode(bits("1110 0000")) == Fault("8-bit key with a bad check nibble")


@pytest.mark.parametrize("n", [1, 3, 25, 27, 35, 64])
def test_other_lengths_are_faults(n: int) -> None:
    assert decode((0,) * n) == Fault(f"{n}-bit frame not understood")


def test_encode_card_picks_the_format_from_the_value() -> None:
    assert len(wiegand.encode_card("33:00119")) == 26
    assert len(wiegand.encode_card("33011:00119")) == 34
    assert len(wiegand.encode_card("12345678901")) == 37


def test_a_frame_ends_after_the_quiet_gap() -> None:
    frames = FrameAssembler(gap_s=0.025)
    t = 100.0
    for i, bit in enumerate(wiegand.encode_26(10, 1234)):
        assert frames.bit(bit, t + i * 0.002) is None
    last = t + 25 * 0.002
    assert frames.deadline() == pytest.approx(last + 0.025)
    assert frames.take(last + 0.024) is None
    assert frames.take(last + 0.025) == Credential("card", "10:01234")
    assert frames.deadline() is None
    assert frames.take(last + 1) is None


def test_a_pulse_after_the_gap_ends_the_previous_frame_even_unpolled() -> None:
    # The timer thread may be late; the timestamps still separate the frames.
    frames = FrameAssembler(gap_s=0.025)
    for bit in wiegand.encode_key("1"):
        assert frames.bit(bit, 10.0) is None
    first = wiegand.encode_key("2")
    assert frames.bit(first[0], 10.1) == Key("1")
    for bit in first[1:]:
        assert frames.bit(bit, 10.1) is None
    assert frames.take(10.2) == Key("2")


def test_an_endless_frame_stays_bounded_and_is_reported() -> None:
    frames = FrameAssembler(gap_s=0.025)
    for i in range(10_000):
        frames.bit(i % 2, 5.0)
    assert frames.take(6.0) == Fault("frame longer than 64 bits")


@pytest.fixture
def reader(factory: MockFactory, clock: FakeClock, events: Events) -> Iterator[GpioWiegandReader]:
    spec = ReaderSpec("gate", "wiegand", d0=23, d1=24, gap_s=0.025, repeat_s=1.0)
    reader = GpioWiegandReader(spec, events, clock=clock, pin_factory=factory)
    reader.start()
    yield reader
    reader.close()


def send(factory: MockFactory, clock: FakeClock, frame: tuple[int, ...]) -> None:
    for bit in frame:
        pin = factory.pin(24 if bit else 23)
        pin.drive_low()
        pin.drive_high()
        clock.advance(0.002)


def test_reader_on_mock_pins(
    reader: GpioWiegandReader, factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    send(factory, clock, wiegand.encode_26(33, 119))
    reader.poll()
    assert events.seen == []  # still inside the quiet gap
    clock.advance(0.03)
    reader.poll()
    assert events.seen == [CredentialRead("gate", "card", "33:00119")]


def test_reader_reports_bad_parity(
    reader: GpioWiegandReader, factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    frame = list(wiegand.encode_34(33011, 119))
    frame[5] ^= 1
    send(factory, clock, tuple(frame))
    clock.advance(0.03)
    reader.poll()
    assert events.seen == [ReaderTrouble("gate", "34-bit frame with bad parity")]


@pytest.mark.parametrize("width", [4, 8])
def test_reader_keypad_bursts_make_one_pin(
    reader: GpioWiegandReader,
    factory: MockFactory,
    clock: FakeClock,
    events: Events,
    width: int,
) -> None:
    for key in "9*1234#":
        send(factory, clock, wiegand.encode_key(key, width))
        clock.advance(0.5)  # a person between keys
    reader.poll()
    assert events.seen == [CredentialRead("gate", "pin", "1234")]


def test_pulses_before_start_are_ignored(
    factory: MockFactory, clock: FakeClock, events: Events
) -> None:
    spec = ReaderSpec("gate", "wiegand", d0=5, d1=6, gap_s=0.025)
    reader = GpioWiegandReader(spec, events, clock=clock, pin_factory=factory)
    try:
        for bit in wiegand.encode_26(1, 1):
            factory.pin(6 if bit else 5).drive_low()
            factory.pin(6 if bit else 5).drive_high()
        reader.start()
        clock.advance(1)
        reader.poll()
        assert events.seen == []
    finally:
        reader.close()
    reader.close()  # idempotent
