"""Actions held until their events are on the card, and the exceptions to that.

A step's events are made durable before its actions are carried out: a door
unlocks after its access event is written, so a power cut can never leave an
opened door without its log line. `HeldSteps` keeps each step's actions, in
order, until the event thread says `Written(upto)`.

Two exceptions keep the card from holding a door:

- **the safe direction never waits.** An output switched off (a relock, a light
  off, a warning's end) is carried out at once, its event following; unless an
  earlier switch-on of the same output is still held, because then the order
  is what matters (the off must come after the on);
- **patience.** No step waits longer than `PATIENCE_S` on a card that makes
  no progress (no step written meanwhile). Past it, every held step is carried
  out and, until the card writes again, later steps are not held at all: their
  events are written when the card lets them. A hung card must not keep a door
  shut to its master tag (the watchdog reports the card). A card that is only
  busy (a flood of presentations, each write taking its turn) keeps writing,
  and the steps keep waiting for it: event-first holds.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from firmware.core.actions import Action, Output, RememberCommand
from firmware.core.outbox import AppendEvents
from firmware.core.sync import SaveDelta, SaveSnapshot
from firmware.runtime.disk import DurableStep

log = logging.getLogger("alc.controller")

PATIENCE_S = 1.0
"""Longest an action waits for its events to reach the card."""


@dataclass(slots=True)
class _Held:
    number: int
    since: float
    actions: list[Action]


class HeldSteps:
    """The loop's steps in flight to the card (loop thread only)."""

    def __init__(
        self,
        perform: Callable[[Action], None],
        write: Callable[[DurableStep], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`perform` carries out one action; `write` hands a step's durable part
        to the event thread."""
        self._perform = perform
        self._write = write
        self._clock = clock
        self._numbers = itertools.count(1)
        self._held: deque[_Held] = deque()
        self._pending_on: Counter[str] = Counter()
        self._stalled = False  # the card kept a step past PATIENCE_S
        self._progress_at = clock()  # when the event thread last wrote a step

    def __len__(self) -> int:
        return len(self._held)

    def carry_out(self, actions: list[Action]) -> None:
        """One step's actions: safe outputs at once, the events to the card, the
        rest held behind them (see the module docstring)."""
        events = [e for a in actions if isinstance(a, AppendEvents) for e in a.events]
        debits = [d for a in actions if isinstance(a, AppendEvents) for d in a.debits]
        commands = [(a.id, a.exp) for a in actions if isinstance(a, RememberCommand)]
        rest: list[Action] = []
        switched_on: set[str] = set()
        for action in actions:
            if isinstance(action, AppendEvents | RememberCommand):
                continue
            if isinstance(action, Output):
                if action.on:
                    switched_on.add(action.name)
                elif action.name not in switched_on and not self._pending_on[action.name]:
                    self._perform(action)  # the safe direction never waits
                    continue
            rest.append(action)
        if events or commands:
            number = next(self._numbers)
            self._write(DurableStep(number, events, debits, commands))
            if self._stalled:
                self._perform_all(rest)  # the card hangs: nothing waits for it now
            else:
                self._hold(number, rest)
        elif self._held:
            # Nothing to write, but earlier steps wait: keep the order.
            self._hold(self._held[-1].number, rest)
        else:
            self._perform_all(rest)

    def written(self, upto: int) -> None:
        """The event thread wrote every step up to `upto`: carry them out."""
        self._stalled = False
        self._progress_at = self._clock()
        while self._held and self._held[0].number <= upto:
            self._unhold(self._held.popleft())

    def deadline(self) -> float | None:
        """When the oldest held step runs out of patience, unless a step is
        written first (the loop wakes then)."""
        return self._waited_from() + PATIENCE_S if self._held else None

    def _waited_from(self) -> float:
        """Since when the oldest held step has waited with no step written."""
        return max(self._held[0].since, self._progress_at)

    def overdue(self) -> None:
        """Carry out every held step if the oldest has waited past `PATIENCE_S`
        with no step written meanwhile."""
        if not self._held or self._clock() - self._waited_from() <= PATIENCE_S:
            return
        log.error(
            "the card has not written events for %.1f s: carrying out %d steps before"
            " their events are durable",
            PATIENCE_S,
            len(self._held),
        )
        self._stalled = True
        while self._held:
            self._unhold(self._held.popleft())

    def abandon(self) -> int:
        """Stopping: forget the held actions but the dataset's saves (their
        events are still written); returns how many steps were dropped."""
        count = len(self._held)
        # The dataset's saves still go to the storage thread (which finishes its
        # queue before the files close): a full sync received before the stop
        # must be on the card at the next boot, offline included.
        for held in self._held:
            for action in held.actions:
                if isinstance(action, SaveDelta | SaveSnapshot):
                    self._perform(action)
        self._held.clear()
        self._pending_on.clear()
        return count

    def _hold(self, number: int, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Output) and action.on:
                self._pending_on[action.name] += 1
        self._held.append(_Held(number, self._clock(), actions))

    def _unhold(self, held: _Held) -> None:
        for action in held.actions:
            if isinstance(action, Output) and action.on:
                self._pending_on[action.name] -= 1
                if not self._pending_on[action.name]:
                    del self._pending_on[action.name]
        self._perform_all(held.actions)

    def _perform_all(self, actions: list[Action]) -> None:
        for action in actions:
            self._perform(action)
