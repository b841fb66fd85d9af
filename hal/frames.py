"""What a decoder makes of raw reader input, before the reader's policy sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Credential:
    """A complete, checked credential (`tag` or `card`), value normalised."""

    credkind: str
    value: str


@dataclass(frozen=True, slots=True)
class Key:
    """One keypad key: "0" to "9", "*" (clear) or "#" (enter)."""

    key: str


@dataclass(frozen=True, slots=True)
class Fault:
    """Input that is not a credential; `detail` says what was wrong with it."""

    detail: str


Decoded = Credential | Key | Fault

KEYS = frozenset("0123456789*#")


class StreamDecoder(Protocol):
    """Bytes from a serial reader in, decoded items out. Its buffer is bounded."""

    def feed(self, data: bytes) -> list[Decoded]:
        """Consume `data`; return what it completed, in order."""
        ...

    def pending(self) -> bool:
        """True while a frame or line is half received."""
        ...

    def reset(self) -> None:
        """Drop a half-received frame or line."""
        ...
