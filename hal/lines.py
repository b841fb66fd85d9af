"""Decoders for line-per-scan USB-serial readers and serial keypads.

Line readers send one credential per line, ended by CR, LF or CR LF. The value
is the line without surrounding spaces, lowercased (so an uppercase hex UID equals
the hub's lowercase one). Empty lines are skipped; a line longer than the longest
credential value, or with control or non-ASCII bytes, is a `Fault`. The buffer
holds at most one line: a reader sending garbage without line ends costs nothing.

Serial keypads send one ASCII character per key: `0`-`9`, `*`, `#`. CR, LF and
spaces are ignored; any other byte is a `Fault`.
"""

from __future__ import annotations

from firmware.core.limits import MAX_VALUE_LEN
from hal.frames import KEYS, Credential, Decoded, Fault, Key

_ENDS = frozenset(b"\r\n")
_IGNORED_BY_KEYPAD = frozenset(b"\r\n ")


class LineDecoder:
    """Bytes in, one credential of `credkind` per line out (a `StreamDecoder`)."""

    def __init__(self, credkind: str = "tag", *, max_len: int = MAX_VALUE_LEN) -> None:
        self.credkind = credkind
        self.max_len = max_len
        self._line = bytearray()
        self._too_long = False

    def pending(self) -> bool:
        return bool(self._line) or self._too_long

    def reset(self) -> None:
        self._line.clear()
        self._too_long = False

    def feed(self, data: bytes) -> list[Decoded]:
        out: list[Decoded] = []
        for byte in data:
            if byte in _ENDS:
                item = self._end()
                if item is not None:
                    out.append(item)
            elif len(self._line) < self.max_len + 2:  # room for spaces around it
                self._line.append(byte)
            else:
                self._too_long = True
                self._line.clear()
        return out

    def _end(self) -> Decoded | None:
        line, too_long = bytes(self._line), self._too_long
        self.reset()
        if too_long:
            return Fault(f"line longer than {self.max_len} characters")
        if not line.isascii() or not all(0x20 <= c < 0x7F for c in line):
            return Fault("line with control or non-ASCII bytes")
        value = line.decode().strip().lower()
        if not value:
            return None
        if len(value) > self.max_len:
            return Fault(f"line longer than {self.max_len} characters")
        return Credential(self.credkind, value)


class KeypadDecoder:
    """Bytes in, keys out (a `StreamDecoder` with nothing ever pending)."""

    def pending(self) -> bool:
        return False

    def reset(self) -> None:
        pass

    def feed(self, data: bytes) -> list[Decoded]:
        out: list[Decoded] = []
        for byte in data:
            char = chr(byte)
            if char in KEYS:
                out.append(Key(char))
            elif byte not in _IGNORED_BY_KEYPAD:
                out.append(Fault(f"keypad sent byte 0x{byte:02x}, not a key"))
        return out
