"""What the controller core takes in: plain, frozen inputs, each handled by
`Controller.handle(input, now)` (DESIGN.md "The core is sans-I/O"). The runtime
makes them from the MQTT link, the HAL, the kiosk server and its own disk work;
no behaviour here. What the core hands back is in `actions`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class Connected:
    """The broker session is up."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The broker session dropped."""


@dataclass(frozen=True, slots=True)
class PayloadReceived:
    """Raw bytes arrived on an MQTT topic."""

    topic: str
    payload: bytes
    retained: bool = False


@dataclass(frozen=True, slots=True)
class Presented:
    """A credential was presented at a reader."""

    reader: str
    credkind: str
    value: str


@dataclass(frozen=True, slots=True)
class ContactChanged:
    """A door contact opened or closed."""

    door: str
    open: bool


@dataclass(frozen=True, slots=True)
class RexPressed:
    """A door's exit button was pressed."""

    door: str


@dataclass(frozen=True, slots=True)
class ReaderFault:
    """A reader sent something that is not a credential (bad parity, noise...)."""

    reader: str
    detail: str


@dataclass(frozen=True, slots=True)
class ReaderLinkChanged:
    """A reader the controller keeps a link with (OSDP) went offline or was
    refused (`online` False), or is back on its secure channel (True); `detail`
    says what happened."""

    reader: str
    online: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: run whatever timers are due."""


@dataclass(frozen=True, slots=True)
class StorageChecked:
    """The daily check of the stored records ended: `intact` when they still hash
    to the stored digest."""

    intact: bool


@dataclass(frozen=True, slots=True)
class OutboxCounted:
    """What the outbox on disk holds after acks, folds or drops."""

    count: int
    oldest: int | None


@dataclass(frozen=True, slots=True)
class EventsRemoved:
    """Events were folded (outbox over its bound) or dropped (purge with
    `events: true`); `ranges` are their seqs, for the hub to skip."""

    why: str  # "folded" | "dropped"
    ranges: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class ScreenJoined:
    """A kiosk screen opened its live stream (a page loaded or reconnected).
    `local`: the page runs on the controller itself (it came in on the
    kiosk's loopback listener), the touchscreen beside the kiosk's reader: the
    only kind of screen a tag at that reader signs in on."""

    screen: str
    local: bool = False
    # Every screen with a stream open at that moment, this one included, as of
    # the server's `generation` of its list of streams: the loop forgets any
    # other (its `ScreenLeft` may have been dropped from a full queue), unless a
    # newer list already came. None: not known (tests).
    open: frozenset[str] | None = None
    generation: int = 0


@dataclass(frozen=True, slots=True)
class ScreenLeft:
    """A kiosk screen's live stream ended (page closed, reloading or cut off)."""

    screen: str


@dataclass(frozen=True, slots=True)
class KioskRequest:
    """A kiosk screen asks something (sign in, check in, quote, pay, sign out,
    confirm a reload); answered with a `KioskAnswer` carrying the same `request`.
    `args` are already checked for type and size by the kiosk server."""

    request: int
    screen: str
    what: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LocalCommand:
    """A command from an adapter on the controller itself (Home Assistant's
    `set` topics, docs/homeassistant.md): `open_door` (a momentary unlock for
    the door's `unlock_s`, its `door` event logged with `by`) or `set_light`
    (`on` for `s` seconds, or off). No id and no reply: the adapter checked who
    may send it; an unknown door or light is reported, rate-limited."""

    by: str  # who asked, as logged: "homeassistant"
    what: str  # "open_door" | "set_light"
    target: str  # the door's or light's id
    on: bool = True  # set_light: on or off
    s: float | None = None  # set_light on: for how long


@dataclass(frozen=True, slots=True)
class DiskStatus:
    """Whether the card takes the controller's writes (`ok`), and what is wrong
    with it when not (`detail`). Sent by the runtime when that changes; the core
    takes the card to be fine until told otherwise."""

    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class InputsDropped:
    """The runtime dropped `count` inputs from outside (a presentation, a message,
    a screen's request) because the loop's queue was full."""

    count: int


@dataclass(frozen=True, slots=True)
class StepFailed:
    """Handling an input or carrying out an action raised (our bug): the runtime
    dropped that step and goes on; `detail` names what failed, for a
    rate-limited `system`/`error` event."""

    detail: str


@dataclass(frozen=True, slots=True)
class OutputFailed:
    """Switching output `name` to `on` raised in the runtime (a relay driver's
    fault): the core takes the output to be as it was before."""

    name: str
    on: bool


@dataclass(frozen=True, slots=True)
class StorageTrouble:
    """What the boot found wrong with the card (`problems`, one line each) and
    the event seqs that may have gone with a damaged file (`lost`, inclusive
    ranges). The data may be gone: a full sync is asked for."""

    problems: tuple[str, ...]
    lost: tuple[tuple[int, int], ...]
    disk_ok: bool = True  # False: running from memory (`disk_ok` in the state)


Input: TypeAlias = (
    Connected
    | Disconnected
    | PayloadReceived
    | Presented
    | ContactChanged
    | RexPressed
    | ReaderFault
    | ReaderLinkChanged
    | Tick
    | StorageChecked
    | OutboxCounted
    | EventsRemoved
    | ScreenJoined
    | ScreenLeft
    | KioskRequest
    | LocalCommand
    | DiskStatus
    | InputsDropped
    | StepFailed
    | StorageTrouble
    | OutputFailed
)
