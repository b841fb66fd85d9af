"""What an OSDP reader reports, as libosdp hands it over (plain dicts), made into
the HAL's decoded items. Pure: no libosdp import, so it is tested on its own.

- A card read in raw bits (`format` 0 unspecified or 1 Wiegand, `length` bits,
  most significant first) of 26, 34 or 37 bits is a Wiegand frame, parity
  checked, and gets the Wiegand reader's value (`33:00119`); other lengths (a
  card's serial number, 32 or 56 bits, say) give the bits in lowercase hex,
  padded to whole bytes (`04a1b2c3`). A card read in ASCII (`format` 2) is its
  text, stripped and lowercased. All are `card` credentials.
- Keypad data is one byte per key: ASCII digits, `*` (or 0x7F) clears, `#` (or
  0x0D) enters, as OSDP defines them; `hal.keypad.PinEntry` makes them a PIN.
- A local status report's first entry is the tamper switch, the second the
  power monitor (1: tampered / power failed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from firmware.core.limits import MAX_VALUE_LEN
from hal.frames import Credential, Decoded, Fault, Key
from hal.wiegand import decode as wiegand_decode

FORMAT_RAW = 0
FORMAT_WIEGAND = 1
FORMAT_ASCII = 2
WIEGAND_LENGTHS = frozenset({26, 34, 37})
_KEYS = {**{ord(d): d for d in "0123456789"}, 0x2A: "*", 0x7F: "*", 0x23: "#", 0x0D: "#"}


def card(event: Mapping[str, Any]) -> Decoded:
    """A card-read event -> a `card` credential, or a fault saying what was wrong."""
    data = event.get("data")
    if not isinstance(data, bytes | bytearray) or not data:
        return Fault("card read without data")
    fmt = event.get("format")
    if fmt == FORMAT_ASCII:
        text = bytes(data).decode("ascii", "replace").strip().lower()
        if not 0 < len(text) <= MAX_VALUE_LEN or not text.isprintable():
            return Fault("card read in ASCII that is not a card number")
        return Credential("card", text)
    if fmt not in (FORMAT_RAW, FORMAT_WIEGAND):
        return Fault(f"card read in format {fmt!r} not understood")
    length = event.get("length")
    if not isinstance(length, int) or not 0 < length <= 8 * len(data):
        return Fault(f"card read of {length!r} bits in {len(data)} bytes")
    value = int.from_bytes(data, "big") >> (8 * len(data) - length)
    if length in WIEGAND_LENGTHS:
        bits = tuple((value >> shift) & 1 for shift in range(length - 1, -1, -1))
        return wiegand_decode(bits)
    text = value.to_bytes((length + 7) // 8, "big").hex()
    if len(text) > MAX_VALUE_LEN:
        return Fault(f"card read of {length} bits is too long")
    return Credential("card", text)


def keys(event: Mapping[str, Any]) -> list[Decoded]:
    """A keypress event -> its keys, in order; a byte that is no key is a fault."""
    data = event.get("data")
    if not isinstance(data, bytes | bytearray):
        return [Fault("keypad event without data")]
    out: list[Decoded] = []
    for byte in bytes(data):
        key = _KEYS.get(byte)
        out.append(Key(key) if key is not None else Fault(f"keypad code 0x{byte:02x} unknown"))
    return out


def local_status(event: Mapping[str, Any]) -> tuple[bool, bool] | None:
    """A local status report -> (tampered, power failed), or None if it is
    another kind of report or malformed."""
    report = event.get("report")
    if not isinstance(report, bytes | bytearray) or not report:
        return None
    tampered = report[0] != 0
    power_failed = len(report) > 1 and report[1] != 0
    return tampered, power_failed


def encode_card(bits: tuple[int, ...]) -> dict[str, Any]:
    """The card-read event a reader sends for raw Wiegand `bits` (the simulator
    and tests hand it to libosdp's peripheral device)."""
    value = 0
    for bit in bits:
        value = value << 1 | bit
    size = (len(bits) + 7) // 8
    data = (value << (8 * size - len(bits))).to_bytes(size, "big")
    return {
        "reader_no": 0,
        "format": FORMAT_WIEGAND,
        "direction": 0,
        "length": len(bits),
        "data": data,
    }
