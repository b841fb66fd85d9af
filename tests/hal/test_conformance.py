"""One suite, every reader backend: gpio (Wiegand on MockFactory pins, cards and
keypad bursts) and pyserial (RDM6300, line and keypad readers on loop:// and on a
pseudo-terminal). Threads run for real; time moves only by the test's clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from hal.events import CredentialRead, ReaderTrouble
from tests.hal.conftest import Events, FakeClock
from tests.hal.rigs import PIN_TIMEOUT_S, READER, REPEAT_S, Rig, SerialRig, WiegandRig

RIGS = [
    "wiegand-card",
    "wiegand-keys4",
    "wiegand-keys8",
    "rdm6300-loop",
    "rdm6300-pty",
    "line-loop",
    "line-pty",
    "keypad-loop",
    "keypad-pty",
]


KEYPAD_RIGS = ["wiegand-keys4", "wiegand-keys8", "keypad-loop", "keypad-pty"]


def make_rig(
    name: str, events: Events, clock: FakeClock, factory: MockFactory, pty: tuple[str, int]
) -> Rig:
    kind, _, where = name.partition("-")
    if kind == "wiegand":
        width = {"card": 0, "keys4": 4, "keys8": 8}[where]
        return WiegandRig(events, clock, factory, width)
    return SerialRig(events, clock, kind, pty if where == "pty" else None)


@pytest.fixture(params=RIGS)
def rig(
    request: pytest.FixtureRequest,
    events: Events,
    clock: FakeClock,
    factory: MockFactory,
    pty: tuple[str, int],
) -> Iterator[Rig]:
    made = make_rig(request.param, events, clock, factory, pty)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(params=KEYPAD_RIGS)
def keypad(
    request: pytest.FixtureRequest,
    events: Events,
    clock: FakeClock,
    factory: MockFactory,
    pty: tuple[str, int],
) -> Iterator[Rig]:
    made = make_rig(request.param, events, clock, factory, pty)
    try:
        yield made
    finally:
        made.close()


def test_a_credential_is_reported_once_normalised(rig: Rig, events: Events) -> None:
    sent, expected = rig.samples[0]
    rig.present(sent)
    events.wait_count(CredentialRead, 1)
    assert events.seen == [CredentialRead(READER, rig.credkind, expected)]


def test_a_bad_frame_is_a_fault_never_a_guess(rig: Rig, events: Events) -> None:
    rig.garble()
    events.wait_count(ReaderTrouble, 1)
    rig.present(rig.samples[0][0])  # in order after the fault
    events.wait_count(CredentialRead, 1)
    assert [type(e) for e in events.seen] == [ReaderTrouble, CredentialRead]
    fault = events.seen[0]
    assert isinstance(fault, ReaderTrouble) and fault.reader_id == READER and fault.detail


def test_held_tag_is_one_read_and_pins_are_never_suppressed(
    rig: Rig, events: Events, clock: FakeClock
) -> None:
    (a, a_value), (b, b_value) = rig.samples
    rig.present(a)
    rig.present(a)  # the same credential again at once: still held
    rig.present(b)
    held = [a_value, a_value, b_value] if rig.credkind == "pin" else [a_value, b_value]
    events.wait_count(CredentialRead, len(held))
    assert [e.value for e in events.of(CredentialRead)] == held
    clock.advance(REPEAT_S + 0.5)  # taken away and presented again
    rig.present(b)
    events.wait_count(CredentialRead, len(held) + 1)
    assert [e.value for e in events.of(CredentialRead)] == [*held, b_value]


def test_keypad_star_clears_and_a_pause_discards(
    keypad: Rig, events: Events, clock: FakeClock
) -> None:
    keypad.keys("99*1234#")
    events.wait_count(CredentialRead, 1)
    keypad.keys("55")
    clock.advance(PIN_TIMEOUT_S + 1)
    keypad.keys("66#")
    events.wait_count(CredentialRead, 2)
    assert [e.value for e in events.of(CredentialRead)] == ["1234", "66"]


def test_a_bad_frame_clears_a_half_typed_pin(keypad: Rig, events: Events) -> None:
    keypad.keys("12")
    keypad.garble()
    keypad.keys("34#")
    events.wait_count(CredentialRead, 1)
    assert [type(e) for e in events.seen] == [ReaderTrouble, CredentialRead]
    assert [e.value for e in events.of(CredentialRead)] == ["34"]


def test_close_stops_everything_and_is_idempotent(rig: Rig, events: Events) -> None:
    rig.present(rig.samples[0][0])
    events.wait_count(CredentialRead, 1)
    rig.close()
    rig.close()
    assert rig.reader.closed
    # The autouse fixture fails the test if a reader or timer thread survived.
