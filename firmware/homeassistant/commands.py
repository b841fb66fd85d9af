"""Home Assistant's commands: what a message on a `set` topic asks for, if anything.

Only a lock's `UNLOCK` (a momentary `open_door`, logged `by: homeassistant`)
and a light's `ON`/`OFF` (`set_light`) are taken. Anything else (another
payload, a retained message, an object we do not offer, a payload too long
to be one of those words) is ignored, with the reason, which the adapter logs
once a minute per reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.core.inputs import LocalCommand
from firmware.homeassistant.discovery import OFF, ON, UNLOCK
from firmware.homeassistant.mailbox import Command
from firmware.homeassistant.topics import Topics

BY = "homeassistant"
MAX_PAYLOAD = 16  # the longest word taken is 6 bytes
LIGHT_ON_S = 3600.0
"""How long Home Assistant's ON lights a court: the core's `set_light` always
has an end, so a forgotten switch costs an hour at most."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """Why a command message changed nothing (`kind` keys the log's rate limit)."""

    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Offered:
    """The doors and lights offered to Home Assistant, by object id."""

    doors: dict[str, str]
    lights: dict[str, str]


def command_of(message: Command, topics: Topics, offered: Offered) -> LocalCommand | Ignored:
    """The core's input for `message`, or why it is ignored."""
    object = topics.commanded(message.topic)
    if object is None:
        return Ignored("topic", f"not a command topic: {message.topic[:200]!r}")
    if message.retained:
        # A retained command would run again at every reconnect.
        return Ignored("retained", f"retained message on {message.topic}")
    if len(message.payload) > MAX_PAYLOAD:
        return Ignored("payload", f"{len(message.payload)}-byte payload on {message.topic}")
    word = message.payload.decode("ascii", errors="replace")
    if object in offered.doors:
        if word == UNLOCK:
            return LocalCommand(BY, "open_door", offered.doors[object])
        return Ignored("payload", f"{word!r} on {message.topic}: only {UNLOCK} is taken")
    if object in offered.lights:
        if word in (ON, OFF):
            light = offered.lights[object]
            return LocalCommand(BY, "set_light", light, on=word == ON, s=LIGHT_ON_S)
        return Ignored("payload", f"{word!r} on {message.topic}: only {ON} and {OFF} are taken")
    return Ignored("object", f"nothing to command on {message.topic}")
