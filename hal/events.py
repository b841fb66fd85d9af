"""What the hardware reports: plain, frozen events for the runtime's queue.

The HAL calls the runtime's sink with these from its own threads (gpiozero's
callback thread, the timer thread, one thread per serial reader); the sink is
expected to only enqueue them. They carry no time: the runtime stamps them when
the core handles them, as it does for every other event. Their names differ from
the core's events (`ContactSensed` here, `ContactChanged` there): the runtime
translates one into the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from firmware.core.limits import CREDKINDS, MAX_VALUE_LEN

MAX_DETAIL_LEN = 200  # a fault detail is a log line, not a dump


def _check_id(name: str, value: str) -> None:
    if not value:
        raise ValueError(f"{name} must not be empty")


@dataclass(frozen=True, slots=True)
class CredentialRead:
    """A reader read a credential: `tag` (125 kHz or line reader), `card` (Wiegand)
    or `pin` (a completed keypad entry). `value` is normalised as docs/hardware.md
    describes, so it compares equal to the hub's credential values."""

    reader_id: str
    credkind: str
    value: str

    def __post_init__(self) -> None:
        _check_id("reader_id", self.reader_id)
        if self.credkind not in CREDKINDS:
            raise ValueError(f"credkind must be one of {', '.join(CREDKINDS)}")
        if not 0 < len(self.value) <= MAX_VALUE_LEN or not self.value.isprintable():
            raise ValueError(f"value must be 1 to {MAX_VALUE_LEN} printable characters")


@dataclass(frozen=True, slots=True)
class ContactSensed:
    """A door contact settled open or closed (after debounce). One is also sent at
    start, with the state the door is in then."""

    door_id: str
    open: bool

    def __post_init__(self) -> None:
        _check_id("door_id", self.door_id)


@dataclass(frozen=True, slots=True)
class ExitPressed:
    """An exit (request-to-exit) button was pressed (after debounce)."""

    door_id: str

    def __post_init__(self) -> None:
        _check_id("door_id", self.door_id)


@dataclass(frozen=True, slots=True)
class ReaderTrouble:
    """A reader sent something that is not a credential (bad parity or checksum,
    a cut frame, noise) or its port failed. Reported, never guessed at."""

    reader_id: str
    detail: str

    def __post_init__(self) -> None:
        _check_id("reader_id", self.reader_id)
        if not 0 < len(self.detail) <= MAX_DETAIL_LEN:
            raise ValueError(f"detail must be 1 to {MAX_DETAIL_LEN} characters")


@dataclass(frozen=True, slots=True)
class ReaderLink:
    """A reader the HAL keeps a link with (OSDP) went offline, or was refused
    (no secure channel, a wrong key): `online` False, its reads are ignored; or
    it is back on its secure channel (`online` True). Sent on each change."""

    reader_id: str
    online: bool
    detail: str

    def __post_init__(self) -> None:
        _check_id("reader_id", self.reader_id)
        if not 0 < len(self.detail) <= MAX_DETAIL_LEN:
            raise ValueError(f"detail must be 1 to {MAX_DETAIL_LEN} characters")


@dataclass(frozen=True, slots=True)
class OutputCut:
    """The HAL switched a door output off by itself: it had been on (door released)
    for its `max_open_s` without the core holding it open (docs/hardware.md)."""

    name: str

    def __post_init__(self) -> None:
        _check_id("name", self.name)


HalEvent = CredentialRead | ContactSensed | ExitPressed | ReaderTrouble | ReaderLink | OutputCut

Sink = Callable[[HalEvent], None]
"""The runtime's callback. Called from HAL threads; it must not block for long."""
