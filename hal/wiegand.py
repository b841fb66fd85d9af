"""Wiegand: pulses on D0 (a 0 bit) and D1 (a 1 bit), most significant bit first.

A frame ends after a quiet gap (no pulse for `gap_s`; bits come 1-2 ms apart,
frames are at least tens of ms apart). Frames understood, parity always checked:

- 26 bits, HID H10301: even parity over bits 1-12, facility code (8 bits), card
  number (16 bits), odd parity over bits 13-24. Value `"{facility}:{card:05d}"`.
- 34 bits, HID H10306: even parity over 1-16, facility (16 bits), card (16 bits),
  odd parity over 17-32. Value `"{facility}:{card:05d}"`, as for 26 bits.
- 37 bits, H10302/H10304 parity: even over bits 1-18, odd over bits 18-35. The
  35-bit payload's split differs between formats, so the value is the whole
  payload in decimal, without leading zeros.
- 4 bits: one keypad key (0-9, 10 = `*`, 11 = `#`).
- 8 bits: one keypad key, high nibble the complement of the low one (checked).

Anything else (other lengths, bad parity, a bad check nibble, keys 12-15) is a
`Fault`: a bad frame is reported, never guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence

from hal.frames import Credential, Decoded, Fault, Key

DEFAULT_GAP_S = 0.025
MAX_BITS = 64  # longer than any format: noise; the buffer stays bounded
_KEY_NAMES = {**{v: str(v) for v in range(10)}, 10: "*", 11: "#"}
_KEY_CODES = {name: code for code, name in _KEY_NAMES.items()}

Bits = tuple[int, ...]


def _int(bits: Sequence[int]) -> int:
    value = 0
    for bit in bits:
        value = value << 1 | bit
    return value


def _bits(value: int, width: int) -> Bits:
    return tuple((value >> shift) & 1 for shift in range(width - 1, -1, -1))


def _even(bits: Sequence[int]) -> int:
    """The parity bit that makes the group's count of ones even."""
    return sum(bits) % 2


def _odd(bits: Sequence[int]) -> int:
    """The parity bit that makes the group's count of ones odd."""
    return 1 - sum(bits) % 2


def decode(bits: Sequence[int]) -> Decoded:
    """One complete frame -> a card, a key or a fault."""
    n = len(bits)
    if n == 26:
        if bits[0] != _even(bits[1:13]) or bits[25] != _odd(bits[13:25]):
            return Fault("26-bit frame with bad parity")
        return Credential("card", f"{_int(bits[1:9])}:{_int(bits[9:25]):05d}")
    if n == 34:
        if bits[0] != _even(bits[1:17]) or bits[33] != _odd(bits[17:33]):
            return Fault("34-bit frame with bad parity")
        return Credential("card", f"{_int(bits[1:17])}:{_int(bits[17:33]):05d}")
    if n == 37:
        if bits[0] != _even(bits[1:19]) or bits[36] != _odd(bits[18:36]):
            return Fault("37-bit frame with bad parity")
        return Credential("card", str(_int(bits[1:36])))
    if n == 8:
        high, low = _int(bits[:4]), _int(bits[4:])
        if high != low ^ 0xF:
            return Fault("8-bit key with a bad check nibble")
        return _key(low)
    if n == 4:
        return _key(_int(bits))
    return Fault(f"{n}-bit frame not understood")


def _key(code: int) -> Decoded:
    name = _KEY_NAMES.get(code)
    return Key(name) if name is not None else Fault(f"keypad code {code} not understood")


def encode_26(facility: int, card: int) -> Bits:
    """An H10301 frame (for tests and the simulator)."""
    if not (0 <= facility < 1 << 8 and 0 <= card < 1 << 16):
        raise ValueError("26-bit: facility 0-255, card 0-65535")
    payload = _bits(facility, 8) + _bits(card, 16)
    return (_even(payload[:12]), *payload, _odd(payload[12:]))


def encode_34(facility: int, card: int) -> Bits:
    """An H10306 frame (for tests and the simulator)."""
    if not (0 <= facility < 1 << 16 and 0 <= card < 1 << 16):
        raise ValueError("34-bit: facility 0-65535, card 0-65535")
    payload = _bits(facility, 16) + _bits(card, 16)
    return (_even(payload[:16]), *payload, _odd(payload[16:]))


def encode_37(number: int) -> Bits:
    """A 37-bit frame with H10302 parity (for tests and the simulator)."""
    if not 0 <= number < 1 << 35:
        raise ValueError("37-bit: number 0 to 2**35-1")
    payload = _bits(number, 35)
    return (_even(payload[:18]), *payload, _odd(payload[17:]))


def encode_key(key: str, width: int = 4) -> Bits:
    """A keypad burst of 4 or 8 bits (for tests and the simulator)."""
    code = _KEY_CODES[key]
    if width == 4:
        return _bits(code, 4)
    if width == 8:
        return _bits(code ^ 0xF, 4) + _bits(code, 4)
    raise ValueError("keypad bursts are 4 or 8 bits")


def encode_card(value: str) -> Bits:
    """The frame a reader sends for a normalised card value: `"f:ccccc"` as 26 bits
    when the facility fits 8 bits, else 34; plain digits as 37 bits."""
    if ":" in value:
        facility, card = (int(part) for part in value.split(":"))
        return encode_26(facility, card) if facility < 256 else encode_34(facility, card)
    return encode_37(int(value))


class FrameAssembler:
    """Collects pulses into frames; a frame ends after `gap_s` without a pulse.
    Not thread-safe: the reader locks."""

    def __init__(self, *, gap_s: float = DEFAULT_GAP_S, max_bits: int = MAX_BITS) -> None:
        self.gap_s = gap_s
        self.max_bits = max_bits
        self._bits: list[int] = []
        self._overflow = False
        self._last: float | None = None

    def bit(self, bit: int, now: float) -> Decoded | None:
        """One pulse: 0 from D0, 1 from D1, seen at `now`. Returns the previous
        frame if the gap before this pulse ended it (the timer was late)."""
        previous = self.take(now)
        if len(self._bits) < self.max_bits:
            self._bits.append(bit)
        else:
            self._overflow = True
        self._last = now
        return previous

    @property
    def last(self) -> float | None:
        """When the last pulse of the frame in progress came, or None."""
        return self._last

    def deadline(self) -> float | None:
        """When the frame in progress ends if no pulse comes, or None."""
        return None if self._last is None else self._last + self.gap_s

    def take(self, now: float) -> Decoded | None:
        """The decoded frame if the quiet gap has passed by `now`, else None."""
        if self._last is None or now < self._last + self.gap_s:
            return None
        return self.end()

    def end(self) -> Decoded | None:
        """End the frame in progress now, whatever the gap."""
        if self._last is None:
            return None
        bits, overflow = tuple(self._bits), self._overflow
        self._bits.clear()
        self._overflow = False
        self._last = None
        if overflow:
            return Fault(f"frame longer than {self.max_bits} bits")
        return decode(bits)
