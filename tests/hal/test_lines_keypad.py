"""Line-per-scan and keypad decoders, and PIN entry."""

from __future__ import annotations

import pytest

from hal.frames import Credential, Fault, Key
from hal.keypad import PinEntry
from hal.lines import KeypadDecoder, LineDecoder


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"])
def test_one_credential_per_line(end: bytes) -> None:
    decoder = LineDecoder("tag")
    data = b"04A1B2C3D4E5F6" + end + b"  0012345678 " + end
    assert decoder.feed(data) == [
        Credential("tag", "04a1b2c3d4e5f6"),
        Credential("tag", "0012345678"),
    ]
    assert not decoder.pending()


def test_card_credkind_and_blank_lines() -> None:
    assert LineDecoder("card").feed(b"\r\n\r\n  \r\n12:00034\n") == [Credential("card", "12:00034")]


def test_a_line_split_across_reads() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"abc") == []
    assert decoder.pending()
    assert decoder.feed(b"def\n") == [Credential("tag", "abcdef")]


def test_control_and_non_ascii_bytes_are_faults() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"ab\x01cd\n\xffx\nok\n") == [
        Fault("line with control or non-ASCII bytes"),
        Fault("line with control or non-ASCII bytes"),
        Credential("tag", "ok"),
    ]


def test_an_overlong_line_is_a_fault_and_memory_stays_bounded() -> None:
    decoder = LineDecoder(max_len=128)
    for _ in range(1000):
        assert decoder.feed(b"x" * 1000) == []
        assert len(decoder._line) <= 130
    assert decoder.feed(b"\nnext\n") == [
        Fault("line longer than 128 characters"),
        Credential("tag", "next"),
    ]


def test_keypad_decoder() -> None:
    assert KeypadDecoder().feed(b"12 3\r\n*#A") == [
        Key("1"),
        Key("2"),
        Key("3"),
        Key("*"),
        Key("#"),
        Fault("keypad sent byte 0x41, not a key"),
    ]


def press(entry: PinEntry, keys: str, now: float = 0.0) -> list[object]:
    return [out for key in keys if (out := entry.key(key, now)) is not None]


def test_pin_entry() -> None:
    entry = PinEntry(timeout_s=10)
    assert press(entry, "1234#") == [Credential("pin", "1234")]
    assert press(entry, "12*34#") == [Credential("pin", "34")]
    assert press(entry, "#") == []  # nothing typed: nothing entered
    assert press(entry, "5*#") == []


def test_a_half_typed_pin_times_out() -> None:
    entry = PinEntry(timeout_s=10)
    press(entry, "12", now=100.0)
    assert entry.typed == 2
    assert press(entry, "34#", now=109.9) == [Credential("pin", "1234")]
    press(entry, "12", now=200.0)
    assert press(entry, "34#", now=210.0) == [Credential("pin", "34")]


def test_an_overlong_pin_is_a_fault_and_bounded() -> None:
    entry = PinEntry(timeout_s=10, max_digits=12)
    assert press(entry, "1" * 1000) == []
    assert entry.typed == 12
    assert press(entry, "#") == [Fault("PIN entry longer than 12 digits")]
    assert press(entry, "42#") == [Credential("pin", "42")]


def test_pin_entry_rejects_a_non_key() -> None:
    with pytest.raises(ValueError):
        PinEntry().key("A", 0.0)
