"""The runtime's own messages to the loop (the inbox's internal lane).

Each is a completion or a question from one of the runtime's threads; none is
ever dropped. Inputs for the core from outside (a presentation, a hub message)
are the core's own types (`firmware.core.inputs`) and travel the other lanes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from firmware.core.inputs import Input


@dataclass(frozen=True, slots=True)
class Asked:
    """Run `fn` on the loop's thread, between two steps, and answer through
    `reply` (`Runtime.ask`): the one way another thread reads the core."""

    fn: Callable[[Any], Any]
    reply: Future[Any]


@dataclass(frozen=True, slots=True)
class Written:
    """The event thread wrote (or gave up writing, for now) every durable step
    numbered up to `upto`: the loop may carry out their actions."""

    upto: int


@dataclass(frozen=True, slots=True)
class DiskChanged:
    """The card started or stopped taking the controller's writes: `where` is
    "events" (the event thread's writes fail or work again) or "files" (the
    data moved to memory, or back to the card)."""

    where: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ForCore:
    """A completion the core hears about as an input: outbox rows counted,
    folded or dropped, the stored dataset checked."""

    input: Input


Internal = Asked | Written | DiskChanged | ForCore
