"""The loop's one queue, in three lanes.

Every thread talks to the loop through this inbox, and only through it:

- **internal**: completions of the runtime's own threads (a step's events are
  durable, the disk changed, an outbox chore counted its rows) and questions
  asked through the loop (`Runtime.ask`). Never dropped: each producer has at
  most a bounded number in flight, so the lane cannot grow without end.
- **members**: a credential presented at a reader. It goes ahead of every hub
  message, so a burst of snapshot pages delays a decision by one page at most.
- **routine**: everything else from outside (hub messages, door contacts, exit
  buttons, kiosk requests), in arrival order.

The two outside lanes share one bound. When a flood fills it, what comes from
outside is dropped and counted (`dropped`); the loop reports the count to the
core, which puts it in `state` and a rate-limited `system` event. The decoder
is the one outside producer that waits instead (`deliver`): hub data must not
be lost to a flood, and while it waits paho stops reading, so the broker holds
the rest (MQTT flow control).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from firmware.runtime.priorities import MembersFirst

MAX_OUTSIDE = 10_000
"""Items from outside (both outside lanes) queued at most."""

T = TypeVar("T")
M = TypeVar("M")


@dataclass(slots=True)
class Taken(Generic[T, M]):
    """What one loop step takes: every internal item, then up to `most` member
    items, or else one routine item. Each outside item comes with the monotonic
    time it was queued (decision latency is measured from it)."""

    internal: list[M] = field(default_factory=list)
    members: list[tuple[T, float]] = field(default_factory=list)
    routine: tuple[T, float] | None = None

    def __bool__(self) -> bool:
        return bool(self.internal or self.members or self.routine)


class Inbox(Generic[T, M]):
    """Three lanes, one condition variable. `T` is what comes from outside
    (the core's inputs), `M` the runtime's own messages."""

    def __init__(self, bound: int = MAX_OUTSIDE) -> None:
        self._bound = bound
        self._ready = threading.Condition(threading.Lock())
        self._internal: deque[M] = deque()
        self._members: deque[tuple[T, float]] = deque()
        self._routine: deque[tuple[T, float]] = deque()
        self._woken = False
        self._closed = False
        self.dropped = 0
        """Outside items dropped since start because the inbox was full."""
        self.members_first = MembersFirst()
        """How many members wait for the loop, for background threads to step aside."""

    # --- any thread ------------------------------------------------------------

    def post(self, item: T, *, member: bool = False) -> bool:
        """Queue an item from outside; False (and counted) when the inbox is full."""
        with self._ready:
            if len(self._members) + len(self._routine) >= self._bound:
                self.dropped += 1
                return False
            (self._members if member else self._routine).append((item, time.monotonic()))
            if member:
                self.members_first.queued()
            self._ready.notify()
        return True

    def deliver(self, item: T, *, timeout: float = 1.0) -> bool:
        """Queue an item from the decoder, waiting while the inbox is full. Waits
        at most `timeout` at a time; False once the inbox is closed."""
        return self.deliver_all([item], timeout=timeout)

    def deliver_all(self, items: Sequence[T], *, timeout: float = 1.0) -> bool:
        """Queue the decoder's items in order, waiting while the inbox is full
        (then all go in at once: the bound is passed by at most their number,
        which the decoder keeps to a queue's worth). One lock and one wake-up
        for them all. Waits at most `timeout` at a time; False once closed."""
        with self._ready:
            while len(self._members) + len(self._routine) >= self._bound or self._closed:
                if self._closed:
                    return False
                self._ready.wait(timeout)
            at = time.monotonic()
            self._routine.extend((item, at) for item in items)
            self._ready.notify_all()
        return True

    def tell(self, item: M) -> None:
        """Queue an internal item: never dropped, never waits."""
        with self._ready:
            self._internal.append(item)
            self._ready.notify()

    def wake(self) -> None:
        """Make the loop's current or next `take` return at once."""
        with self._ready:
            self._woken = True
            self._ready.notify()

    def close(self) -> None:
        """Stop waiting producers (`deliver` returns False)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def depth(self) -> int:
        """Outside items queued now."""
        with self._ready:
            return len(self._members) + len(self._routine)

    # --- the loop --------------------------------------------------------------

    def take(self, timeout: float, most: int) -> Taken[T, M]:
        """Wait up to `timeout` for anything, then take one step's worth."""
        with self._ready:
            if not (self._internal or self._members or self._routine or self._woken):
                self._ready.wait(max(timeout, 0.0))
            self._woken = False
            taken: Taken[T, M] = Taken()
            taken.internal = list(self._internal)
            self._internal.clear()
            while self._members and len(taken.members) < most:
                taken.members.append(self._members.popleft())
            if not taken.members and self._routine:
                taken.routine = self._routine.popleft()
            if taken.members or taken.routine:
                self._ready.notify_all()  # room again for a waiting `deliver`
            return taken

    def take_internal(self) -> list[M]:
        """Internal items only, without waiting (between two slices of work)."""
        with self._ready:
            items = list(self._internal)
            self._internal.clear()
            return items

    def has_internal(self) -> bool:
        """True when an internal item waits (a plain read: cheap enough to ask
        between two pieces of a build)."""
        return bool(self._internal)

    def served(self, members: int) -> None:
        """The loop decided for `members` taken from the members lane."""
        if members:
            self.members_first.served(members)
