"""Unsealing a received payload: topic check, opening, CBOR limits and message parsing.

This is the heavy, stateless part of receiving a message. It is pure (no I/O, no
clock, no shared state), so the runtime may run it on another thread: a full
sync's snapshot pages are verified and decoded there, and the loop, which a member
at the door waits for, only files the parsed page. `Controller` runs it itself
for a raw `PayloadReceived` (tests, and the small messages the runtime does not
send aside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firmware.core import wire
from firmware.core.errors import RemoteError
from firmware.core.inputs import PayloadReceived
from firmware.core.messages import (
    Ack,
    Current,
    Delta,
    SnapPage,
    parse_ack,
    parse_current,
    parse_delta,
    parse_snap,
)

Parsed = Delta | SnapPage | Current | Ack | dict[str, Any]

# The hub's topics under the base topic. Anything else there (the simulator's
# bench topics, PROTOCOL.md s8) is an edge's, never the core's.
SUFFIXES = ("data", "cmd", "ack")


@dataclass(frozen=True, slots=True)
class Unsealed:
    """A received payload after unsealing: either a parsed message (`problem` None)
    or the problem to report about it (`what` is `error` or `auth_failed`)."""

    suffix: str
    type: str
    message: Parsed | None
    problem: tuple[str, str] | None = None


class Reception:
    """What a controller accepts, and how to unseal it. Immutable: safe on any thread."""

    def __init__(self, base_topic: str, keys: dict[bytes, bytes]):
        self._base = base_topic + "/"
        self._keys = dict(keys)

    def unseal(self, event: PayloadReceived) -> Unsealed | None:
        """The unsealed message; None for a topic of ours this controller ignores."""
        if not event.topic.startswith(self._base):
            return Unsealed("", "", None, ("error", f"message on foreign topic {event.topic!r}"))
        suffix = event.topic[len(self._base) :]
        if suffix not in SUFFIXES:
            return None
        if event.retained:
            # A stale retained command must never fire at boot (PROTOCOL.md s1).
            return Unsealed(suffix, "", None, ("error", f"retained message on {suffix} ignored"))
        try:
            message = wire.unseal(self._keys, event.topic, event.payload)
        except wire.AuthError as exc:
            return Unsealed(suffix, "", None, ("auth_failed", f"{suffix}: {exc}"))
        except RemoteError as exc:
            return Unsealed(suffix, "", None, ("error", f"{suffix}: {exc}"))
        type, body = message.type, message.body
        try:
            parsed: Parsed
            if suffix == "data" and type == "delta":
                parsed = parse_delta(body)
            elif suffix == "data" and type == "snap":
                parsed = parse_snap(body)
            elif suffix == "data" and type == "current":
                parsed = parse_current(body)
            elif suffix == "ack" and type == "ack":
                parsed = parse_ack(body)
            else:
                parsed = body  # commands are parsed where they run
        except RemoteError as exc:
            return Unsealed(suffix, type, None, ("error", f"{suffix} {type}: {exc}"))
        return Unsealed(suffix, type, parsed)
