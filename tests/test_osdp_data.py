"""What an OSDP reader reports, decoded (hal/osdp_data.py): card reads in raw
bits (Wiegand formats parity-checked, other lengths as hex) or ASCII, keypad
bytes, the tamper and power report. Pure: no libosdp."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal import osdp_data, wiegand
from hal.frames import Credential, Fault, Key


def raw(data: bytes, length: int, fmt: int = osdp_data.FORMAT_RAW) -> dict[str, object]:
    return {"format": fmt, "length": length, "data": data}


@pytest.mark.parametrize(
    ("bits", "value"),
    [
        (wiegand.encode_26(33, 119), "33:00119"),
        (wiegand.encode_34(33011, 119), "33011:00119"),
        (wiegand.encode_37(12345678901), "12345678901"),
    ],
)
def test_wiegand_frames_read_as_the_wiegand_reader_reads_them(
    bits: tuple[int, ...], value: str
) -> None:
    assert osdp_data.card(osdp_data.encode_card(bits)) == Credential("card", value)


def test_a_wiegand_frame_with_bad_parity_is_a_fault() -> None:
    bits = list(wiegand.encode_26(33, 119))
    bits[5] ^= 1
    assert isinstance(osdp_data.card(osdp_data.encode_card(tuple(bits))), Fault)


def test_other_lengths_are_the_bits_in_hex() -> None:
    assert osdp_data.card(raw(bytes.fromhex("04a1b2c3"), 32)) == Credential("card", "04a1b2c3")
    # 12 bits in two bytes, most significant first: the low nibble is padding.
    assert osdp_data.card(raw(bytes([0xAB, 0xC0]), 12)) == Credential("card", "0abc")


def test_ascii_reads_are_their_text() -> None:
    event = raw(b" AB12 ", 6, osdp_data.FORMAT_ASCII)
    assert osdp_data.card(event) == Credential("card", "ab12")


@pytest.mark.parametrize(
    "event",
    [
        {},
        raw(b"", 0),
        raw(b"\x01", 9),  # more bits than bytes
        raw(b"\x01", 0),
        raw(b"\x01", 8, 7),  # no such format
        raw(b"\x00\x01", 2, osdp_data.FORMAT_ASCII),  # not printable
        raw(bytes(80), 640),  # longer than any credential value
    ],
)
def test_reads_that_are_no_card_are_faults(event: dict[str, object]) -> None:
    assert isinstance(osdp_data.card(event), Fault)


def test_keys_in_ascii_and_in_osdp_codes() -> None:
    assert osdp_data.keys({"data": b"12*3#"}) == [Key(k) for k in "12*3#"]
    assert osdp_data.keys({"data": b"4\x7f5\x0d"}) == [Key(k) for k in "4*5#"]
    assert osdp_data.keys({"data": b"1A"})[1] == Fault("keypad code 0x41 unknown")
    assert isinstance(osdp_data.keys({})[0], Fault)


def test_the_local_status_report() -> None:
    assert osdp_data.local_status({"report": b"\x01\x00"}) == (True, False)
    assert osdp_data.local_status({"report": b"\x00\x01"}) == (False, True)
    assert osdp_data.local_status({"report": b"\x00"}) == (False, False)
    assert osdp_data.local_status({"report": b""}) is None


@given(
    st.dictionaries(
        st.sampled_from(["format", "length", "data"]),
        st.one_of(st.integers(-5, 600), st.binary(max_size=80), st.text(max_size=5), st.none()),
    )
)
def test_any_event_decodes_to_a_credential_or_a_fault(event: dict[str, object]) -> None:
    assert isinstance(osdp_data.card(event), Credential | Fault)
