"""What the loop tells the edges as it happens (`Edge.observed`).

Adapters that watch the controller (Home Assistant, metrics) learn of it through
these notes, never by reading the core themselves: a note is made on the loop's
thread at the moment the loop knows it, and costs the loop one call per edge.
An edge that needs more than a note says (a member's name, the `state` report)
asks for it with `EdgeContext.ask`, from its own thread.

Notes are immutable and hold no reference into the core's live data.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.core.outbox import LoggedEvent


@dataclass(frozen=True, slots=True)
class Logged:
    """Events the core just logged, in order (access decisions, door, light and
    system events; PROTOCOL.md s5). Told before they are durable: an observer
    shows what happened, the outbox is what the hub is told."""

    events: tuple[LoggedEvent, ...]


@dataclass(frozen=True, slots=True)
class Decided:
    """A member's access decision was made `latency_s` after its input was queued."""

    latency_s: float


@dataclass(frozen=True, slots=True)
class TimerRan:
    """The core's timers ran `late_s` after their deadline (a relock, a light off)."""

    late_s: float


Note = Logged | Decided | TimerRan
