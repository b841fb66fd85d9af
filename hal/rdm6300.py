"""RDM6300-style 125 kHz (EM4100) reader frames, 9600 baud 8N1:

    STX (0x02), 10 hex digits (version byte + 4-byte card id), 2 hex digits of
    checksum (XOR of the five data bytes), ETX (0x03)

Some readers of the same family (ID-12/ID-20 style) put CR LF before ETX; that is
accepted too. The value is the 10 hex digits as read, lowercased ("0a1b2c3d4e").
A frame with a bad checksum, a non-hex digit, the wrong length, or an STX inside
it is a `Fault`. Bytes outside frames (noise, a wrong baud rate) are dropped and
reported once per run. The buffer never holds more than one frame.
"""

from __future__ import annotations

from functools import reduce
from operator import xor

from hal.frames import Credential, Decoded, Fault

STX, ETX = 0x02, 0x03
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_BODY = 14  # 10 + 2 + CR LF


def checksum(data: bytes) -> int:
    """XOR of the bytes."""
    return reduce(xor, data, 0)


def encode(tag: str) -> bytes:
    """The frame a reader sends for a 10-hex-digit tag (for tests and the simulator)."""
    data = bytes.fromhex(tag)
    if len(data) != 5:
        raise ValueError("an RDM6300 tag is 10 hex digits")
    return bytes([STX]) + f"{tag.upper()}{checksum(data):02X}".encode() + bytes([ETX])


class Rdm6300Decoder:
    """Bytes in, tags and faults out (a `StreamDecoder`)."""

    def __init__(self) -> None:
        self._body = bytearray()
        self._in_frame = False
        self._in_noise = False

    def pending(self) -> bool:
        return self._in_frame

    def reset(self) -> None:
        self._body.clear()
        self._in_frame = False

    def feed(self, data: bytes) -> list[Decoded]:
        out: list[Decoded] = []
        for byte in data:
            if byte == STX:
                if self._in_frame:
                    out.append(Fault("frame cut short by a new STX"))
                self._body.clear()
                self._in_frame = True
                self._in_noise = False
            elif not self._in_frame:
                if not self._in_noise:
                    self._in_noise = True
                    out.append(Fault("bytes outside a frame (noise or wrong baud rate?)"))
            elif byte == ETX:
                out.append(self._frame(bytes(self._body)))
                self.reset()
            elif len(self._body) >= _MAX_BODY:
                out.append(Fault("frame too long (no ETX)"))
                self.reset()
                self._in_noise = True  # the rest of this run is noise too
            else:
                self._body.append(byte)
        return out

    @staticmethod
    def _frame(body: bytes) -> Decoded:
        if body.endswith(b"\r\n"):
            body = body[:-2]
        if len(body) != 12:
            return Fault(f"frame of {len(body)} characters, not 12")
        if not all(c in _HEX for c in body):
            return Fault("frame with a non-hex character")
        data = bytes.fromhex(body[:10].decode())
        if checksum(data) != int(body[10:], 16):
            return Fault("frame with a bad checksum")
        return Credential("tag", body[:10].decode().lower())
