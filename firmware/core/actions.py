"""What the controller core hands back: plain, frozen actions for the runtime
to carry out (DESIGN.md "The core is sans-I/O"). Most are here; the disk work
of the data (`SaveDelta`, `SaveSnapshot`, in `sync`) and of the event outbox
(`AppendEvents`, `SendEvents`, ... in `outbox`) is with the bookkeeping it
belongs to. `Action` is every one of them. What the core takes in is `inputs`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from firmware.core.outbox import (
    AppendEvents,
    DeleteAcked,
    DropEvents,
    FoldEvents,
    ForgetDebits,
    SendEvents,
)
from firmware.core.sync import SaveDelta, SaveSnapshot


@dataclass(frozen=True, slots=True)
class Output:
    """Switch a physical output: `door:<id>` (on = unlocked), `light:<id>`, `warn:<id>`.

    `held`: a door unlocked for as long as a standing reason holds (its
    `open_schedule` or its mode `unlocked`), not for a moment. The HAL cuts a door
    output that stays on too long unless it is held, so a door that goes from
    held to momentary (or back) while it stays unlocked gets a new `Output`."""

    name: str
    on: bool
    held: bool = False


@dataclass(frozen=True, slots=True)
class Publish:
    """Seal `message` and publish it on `{base}/{suffix}`."""

    suffix: str
    message: dict[str, Any]
    retain: bool = False


@dataclass(frozen=True, slots=True)
class RememberCommand:
    """Record a command id durably until `exp`, before running it."""

    id: str
    exp: int


@dataclass(frozen=True, slots=True)
class CheckStorage:
    """Rehash the stored records against the stored digest (and drop expired
    command ids); answer with `StorageChecked`. Slow: off the loop."""


@dataclass(frozen=True, slots=True)
class LogEvent:
    """An event for the access and activity log (PROTOCOL.md s5)."""

    type: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class KioskSend:
    """Push one server-sent event to kiosk screen `screen` (None: to every screen):
    `kind` is the SSE event name (`board`, `session`, `reload`), `data` its JSON."""

    screen: str | None
    kind: str
    data: Any


@dataclass(frozen=True, slots=True)
class KioskAnswer:
    """The answer to `KioskRequest` `request`: `status` is "ok", "refused" (a
    wrong PIN, not enough credit...) or "bad" (a request that makes no sense);
    `body` is its JSON (with an `error` text unless ok)."""

    request: int
    status: str
    body: dict[str, Any]


FacilityAction: TypeAlias = Output | LogEvent
"""What the doors, lights and readers hand back: outputs to switch, events to log."""

Action: TypeAlias = (
    Publish
    | RememberCommand
    | CheckStorage
    | LogEvent
    | SaveDelta
    | SaveSnapshot
    | AppendEvents
    | SendEvents
    | DeleteAcked
    | ForgetDebits
    | FoldEvents
    | DropEvents
    | Output
    | KioskSend
    | KioskAnswer
)
