"""What the loop and paho's thread hand the Home Assistant adapter's thread.

`output_switched` and `observed` run on the loop, paho's callbacks on its
network thread: each only puts here and returns. Everything is bounded: outputs
keep only their latest state (one entry per output name), events and commands
drop their oldest when full and count it, and a resend is one flag however often
it is asked for.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from firmware.core.outbox import LoggedEvent

EVENTS_MAX = 1000
COMMANDS_MAX = 16
STALE_MAX = 256  # retained discovery topics of our node to look at


@dataclass(frozen=True, slots=True)
class Command:
    """A message on a command topic, as paho handed it over."""

    topic: str
    payload: bytes
    retained: bool


@dataclass
class Batch:
    """Everything put since the last `take`."""

    outputs: dict[str, bool] = field(default_factory=dict)
    events: list[LoggedEvent] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    # Discovery topics of our node that hold a document (ours, or a removed entity's).
    configs: list[str] = field(default_factory=list)
    resend: bool = False
    dropped: int = 0  # events and commands lost to a full mailbox
    closed: bool = False


class Mailbox:
    """A bounded, thread-safe hand-over to one consumer thread."""

    def __init__(self, events_max: int = EVENTS_MAX, commands_max: int = COMMANDS_MAX) -> None:
        self._wake = threading.Condition()
        self._outputs: dict[str, bool] = {}
        self._events: deque[LoggedEvent] = deque(maxlen=events_max)
        self._commands: deque[Command] = deque(maxlen=commands_max)
        self._configs: dict[str, None] = {}  # ordered, each topic once
        self._configs_max = STALE_MAX
        self._resend = False
        self._dropped = 0
        self._closed = False

    def output(self, name: str, on: bool) -> None:
        """An output's latest state (an earlier one not yet taken is replaced)."""
        with self._wake:
            self._outputs[name] = on
            self._wake.notify()

    def events(self, events: tuple[LoggedEvent, ...]) -> None:
        """Logged events; the oldest go when more than `events_max` wait."""
        with self._wake:
            room = self._events.maxlen or 0
            self._dropped += max(0, len(self._events) + len(events) - room)
            self._events.extend(events)
            self._wake.notify()

    def command(self, command: Command) -> None:
        """A command message; the oldest goes when `commands_max` wait."""
        with self._wake:
            if len(self._commands) == self._commands.maxlen:
                self._dropped += 1
            self._commands.append(command)
            self._wake.notify()

    def config(self, topic: str) -> None:
        """A discovery topic of our node holds a document; past `STALE_MAX`
        waiting, the rest wait for the next connect's retained copies."""
        with self._wake:
            if topic in self._configs or len(self._configs) < self._configs_max:
                self._configs[topic] = None
                self._wake.notify()

    def resend(self) -> None:
        """Everything is to be sent again (connected, or Home Assistant restarted)."""
        with self._wake:
            self._resend = True
            self._wake.notify()

    def close(self) -> None:
        """The consumer's next `take` says `closed`."""
        with self._wake:
            self._closed = True
            self._wake.notify()

    def take(self, timeout: float) -> Batch:
        """What was put, waiting up to `timeout` seconds for something."""
        with self._wake:
            if not self._has_any():
                self._wake.wait(timeout)
            batch = Batch(
                dict(self._outputs),
                list(self._events),
                list(self._commands),
                list(self._configs),
                self._resend,
                self._dropped,
                self._closed,
            )
            self._outputs.clear()
            self._events.clear()
            self._commands.clear()
            self._configs.clear()
            self._resend, self._dropped = False, 0
            return batch

    def _has_any(self) -> bool:
        return bool(
            self._outputs
            or self._events
            or self._commands
            or self._configs
            or self._resend
            or self._closed
        )
