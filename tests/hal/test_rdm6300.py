"""RDM6300 frames: checksum checked, bad frames reported, the buffer bounded."""

from __future__ import annotations

import random

import pytest

from hal import rdm6300
from hal.frames import Credential, Fault
from hal.rdm6300 import Rdm6300Decoder

TAG = "0a1b2c3d4e"


def test_the_datasheet_example() -> None:
    # The RDM6300 datasheet's card 62 E3 08 6C ED: 62^E3^08^6C^ED = 08.
    frame = b"\x0262E3086CED08\x03"
    assert rdm6300.encode("62e3086ced") == frame
    assert Rdm6300Decoder().feed(frame) == [Credential("tag", "62e3086ced")]


def test_our_tag_worked_by_hand() -> None:
    # 0A ^ 1B = 11, ^ 2C = 3D, ^ 3D = 00, ^ 4E = 4E
    assert rdm6300.encode(TAG) == b"\x020A1B2C3D4E4E\x03"


def test_value_is_the_ten_digits_lowercased() -> None:
    assert Rdm6300Decoder().feed(rdm6300.encode("00FFA0B1C2".lower())) == [
        Credential("tag", "00ffa0b1c2")
    ]


def test_bad_checksum() -> None:
    assert Rdm6300Decoder().feed(b"\x020A1B2C3D4E4F\x03") == [Fault("frame with a bad checksum")]


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        (b"\x020A1B2C3D4G4E\x03", "frame with a non-hex character"),
        (b"\x020A1B2C\x03", "frame of 6 characters, not 12"),
        (b"\x020A1B2C3D4E4E4E\x03", "frame of 14 characters, not 12"),
        (b"\x020A1B2C3D4E4E4E4E4E\x03", "frame too long (no ETX)"),
    ],
)
def test_malformed_frames(frame: bytes, detail: str) -> None:
    assert Rdm6300Decoder().feed(frame) == [Fault(detail)]


def test_crlf_before_etx_is_accepted() -> None:
    assert Rdm6300Decoder().feed(b"\x020A1B2C3D4E4E\r\n\x03") == [Credential("tag", TAG)]


def test_a_new_stx_cuts_the_frame_and_starts_another() -> None:
    assert Rdm6300Decoder().feed(b"\x020A1B" + rdm6300.encode(TAG)) == [
        Fault("frame cut short by a new STX"),
        Credential("tag", TAG),
    ]


def test_noise_is_reported_once_per_run() -> None:
    decoder = Rdm6300Decoder()
    out = decoder.feed(b"garbage" * 10 + rdm6300.encode(TAG) + b"more")
    assert out == [
        Fault("bytes outside a frame (noise or wrong baud rate?)"),
        Credential("tag", TAG),
        Fault("bytes outside a frame (noise or wrong baud rate?)"),
    ]


def test_a_frame_split_across_reads() -> None:
    decoder = Rdm6300Decoder()
    frame = rdm6300.encode(TAG)
    out = []
    for i in range(len(frame)):
        assert decoder.pending() == (i > 0)
        out += decoder.feed(frame[i : i + 1])
    assert out == [Credential("tag", TAG)]
    assert not decoder.pending()


def test_reset_drops_a_half_frame() -> None:
    decoder = Rdm6300Decoder()
    decoder.feed(b"\x020A1B2C")
    decoder.reset()
    assert not decoder.pending()
    assert decoder.feed(b"3D4E4E\x03") == [
        Fault("bytes outside a frame (noise or wrong baud rate?)")
    ]


def test_garbage_forever_keeps_the_buffer_small() -> None:
    decoder = Rdm6300Decoder()
    rng = random.Random(7)
    faults = 0
    for _ in range(400):
        chunk = bytes(rng.randrange(256) for _ in range(256))
        out = decoder.feed(chunk)
        assert all(isinstance(item, Fault) for item in out)
        faults += len(out)
        assert len(decoder._body) <= 14
    assert faults > 0
    assert decoder.feed(rdm6300.encode(TAG))[-1] == Credential("tag", TAG)
