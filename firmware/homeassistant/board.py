"""What the Home Assistant entities show, and which of it has not been sent yet.

Pure: the adapter's thread feeds it the outputs the loop switched, the events it
logged and the figures it read from the core, and publishes `changes()`. Only a
value that differs from the last one sent goes out, so a busy club costs Home
Assistant one message per real change, and a reconnect (`resend`) sends each
entity's latest state once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from firmware.core.outbox import LoggedEvent
from firmware.homeassistant.discovery import (
    DECISIONS,
    LAST_FULL,
    LOCKED,
    OFF,
    ON,
    OUTBOX,
    UNLOCKED,
    VERSION,
    Entity,
)

UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Figures:
    """What the adapter reads from the core every few seconds."""

    outbox: int
    v: int
    last_full: float | None
    zone: ZoneInfo  # the site's time zone: "today" is the club's day


@dataclass(frozen=True, slots=True)
class Decision:
    """An access decision for the event entity. `member` is the id, to look the
    name up when names are shown; it is never published itself."""

    granted: bool
    reason: str
    target: dict[str, str]  # {"door": id} or {"light": id}
    reader: str | None
    member: str | None

    def payload(self, name: str | None) -> dict[str, Any]:
        """The event entity's JSON: never the credential, its kind or value."""
        out: dict[str, Any] = {
            "event_type": "granted" if self.granted else "denied",
            "reason": self.reason,
            **self.target,
        }
        if self.reader is not None:
            out["reader"] = self.reader
        if name is not None:
            out["name"] = name
        return out


class Board:
    """The state of every entity, and what of it Home Assistant has not seen."""

    def __init__(self, entities: Iterable[Entity]) -> None:
        self._objects = {e.follows: e.object for e in entities}
        self._now: dict[str, str] = {}
        self._sent: dict[str, str] = {}
        self._zone = UTC
        self._day: dt.date | None = None
        self._decisions = 0
        self._set(DECISIONS, "0")

    # --- what happened ---------------------------------------------------------------

    def output(self, name: str, on: bool) -> None:
        """The loop switched output `name` (`door:<id>` on = released)."""
        kind, _, id = name.partition(":")
        if kind == "door":
            self._show(("door", id), UNLOCKED if on else LOCKED)

    def logged(self, event: LoggedEvent) -> Decision | None:
        """An event the core logged; an access decision is handed back for the
        event entity."""
        body = event.body
        if event.type == "door" and body.get("what") in ("opened", "closed"):
            self._show(("contact", str(body.get("door"))), ON if body["what"] == "opened" else OFF)
        elif event.type == "light" and body.get("what") in ("on", "off", "extended"):
            # Follows the circuit's events, not its relay: a circuit that flashes
            # to warn stays on for Home Assistant until it goes off.
            self._show(("light", str(body.get("light"))), OFF if body["what"] == "off" else ON)
        elif event.type == "access":
            self._count(event.time)
            target = {k: str(body[k]) for k in ("door", "light") if body.get(k) is not None}
            member, reader = body.get("member"), body.get("reader")
            return Decision(
                granted=bool(body.get("granted")),
                reason=str(body.get("reason")),
                target=target,
                reader=reader if isinstance(reader, str) else None,
                member=member if isinstance(member, str) else None,
            )
        return None

    def figures(self, figures: Figures, now: float) -> None:
        """The core's figures, read at `now`."""
        self._zone = figures.zone
        self._set(OUTBOX, str(figures.outbox))
        self._set(VERSION, str(figures.v))
        if figures.last_full is not None:
            when = dt.datetime.fromtimestamp(figures.last_full, dt.UTC)
            self._set(LAST_FULL, when.isoformat(timespec="seconds"))
        day = self._today(now)
        if day != self._day:  # midnight passed with no decision since
            self._day, self._decisions = day, 0
            self._set(DECISIONS, "0")

    # --- what to send ----------------------------------------------------------------

    def changes(self) -> list[tuple[str, str]]:
        """(object id, state) of every entity whose state was not sent yet."""
        return [(o, v) for o, v in self._now.items() if self._sent.get(o) != v]

    def sent(self, object: str, value: str) -> None:
        """`value` of `object` reached the broker's queue."""
        self._sent[object] = value

    def resend(self) -> None:
        """A new connection, or Home Assistant restarted: everything again."""
        self._sent.clear()

    def state(self, object: str) -> str | None:
        """The state `object` shows now (None: not known yet)."""
        return self._now.get(object)

    # --- inside ----------------------------------------------------------------------

    def _show(self, follows: tuple[str, str], value: str) -> None:
        object = self._objects.get(follows)
        if object is not None:  # an output or event of something not offered
            self._now[object] = value

    def _set(self, object: str, value: str) -> None:
        self._now[object] = value

    def _today(self, t: float) -> dt.date:
        return dt.datetime.fromtimestamp(t, self._zone).date()

    def _count(self, t: float) -> None:
        day = self._today(t)
        if self._day is None or day > self._day:
            self._day, self._decisions = day, 0
        self._decisions += 1
        self._set(DECISIONS, str(self._decisions))
